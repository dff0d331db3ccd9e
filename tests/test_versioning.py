"""A workflow change that would break running jobs is caught by replaying recorded histories.

Two versions of the same change to ``EncodeWorkflow`` (an extra timer before the probe) are
registered under its name: unguarded, it commands a timer where every history holds the probe
activity and replay fails with a nondeterminism error; guarded by ``workflow.patched`` it replays
cleanly, because the marker is absent from old histories and the old path is taken.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

# The sandbox re-imports this module to run the workflows below: let the rest through as is.
with workflow.unsafe.imports_passed_through():
    from typer.testing import CliRunner

    from app.cli.main import app
    from app.cli.replay import HistoryError, load_history, replay_history
    from app.core.models import EncodeJob, EncodeResult
    from app.plato.workflows.encode import EncodeWorkflow

ROOT = Path(__file__).parent.parent


def _workflow_type(path: Path) -> str:
    first = json.loads(path.read_text())["events"][0]
    return str(first["workflowExecutionStartedEventAttributes"]["workflowType"]["name"])


# The demo change is to EncodeWorkflow: its histories (a chunk-range child's are replayed by
# tests/test_replay.py).
HISTORIES = [
    p
    for p in sorted((ROOT / "tests" / "histories").glob("*.json"))
    if _workflow_type(p) == "EncodeWorkflow"
]
IDS = [p.stem for p in HISTORIES]


@workflow.defn(name="EncodeWorkflow")
class UnguardedChange(EncodeWorkflow):
    """The change as one would first write it: breaks every job already past its first task."""

    @workflow.run
    async def run(self, job: EncodeJob) -> EncodeResult:
        await workflow.sleep(1)
        return await super().run(job)


@workflow.defn(name="EncodeWorkflow")
class GuardedChange(EncodeWorkflow):
    """The same change behind a patch: new runs take it, recorded ones keep their path."""

    @workflow.run
    async def run(self, job: EncodeJob) -> EncodeResult:
        if workflow.patched("demo-extra-step"):
            await workflow.sleep(1)
        return await super().run(job)


def _history(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, json.loads(path.read_text()))


async def _replay(workflow_class: type, path: Path) -> Exception | None:
    replayer = Replayer(workflows=[workflow_class], data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(_history(path), raise_on_replay_failure=False)
    return result.replay_failure


@pytest.mark.parametrize("path", HISTORIES, ids=IDS)
async def test_current_code_replays(path: Path) -> None:
    assert await _replay(EncodeWorkflow, path) is None


@pytest.mark.parametrize("path", HISTORIES, ids=IDS)
async def test_change_guarded_by_patched_replays(path: Path) -> None:
    assert await _replay(GuardedChange, path) is None


@pytest.mark.parametrize("path", HISTORIES, ids=IDS)
async def test_unguarded_change_is_caught(path: Path) -> None:
    assert isinstance(await _replay(UnguardedChange, path), NondeterminismError)


@pytest.mark.parametrize("path", HISTORIES, ids=IDS)
async def test_report_says_where_it_diverges(path: Path) -> None:
    report = await replay_history(load_history(path), workflows=[UnguardedChange])
    assert not report.deterministic
    assert report.nondeterministic
    assert report.divergence
    assert "Failure {" not in report.divergence  # the Rust dump is trimmed away
    assert "event" in report.divergence.lower() or "command" in report.divergence.lower()
    assert report.events == len(json.loads(path.read_text())["events"])


@pytest.mark.parametrize("debug", [False, True], ids=["sandboxed", "debug"])
async def test_debug_replay_judges_the_same(debug: bool) -> None:
    """``--debug`` replays outside the sandbox, so that pdb works; the verdicts do not change."""
    history = load_history(HISTORIES[0])
    assert (await replay_history(history, debug=debug)).deterministic
    assert (
        await replay_history(history, workflows=[UnguardedChange], debug=debug)
    ).nondeterministic


@pytest.mark.parametrize("debug", [[], ["--debug"]], ids=["plain", "debug"])
def test_cli_replays_a_history_file(debug: list[str]) -> None:
    path = HISTORIES[0]
    result = CliRunner().invoke(app, ["replay", *debug, str(path)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"deterministic: {path.stem} (")


@pytest.mark.parametrize("content", ["{not json", '{"events": "nope"}', "[]"])
def test_cli_refuses_a_corrupted_file_in_one_line(tmp_path: Path, content: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    result = CliRunner().invoke(app, ["replay", str(bad)])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert "Traceback" not in result.output


def test_console_script_without_temporal_exits_2_in_one_line() -> None:
    """A workflow id with Temporal away: one line, no traceback, and a clean interpreter exit."""
    cosmos = Path(sys.executable).with_name("cosmos")
    done = subprocess.run(
        [str(cosmos), "replay", "enc-no-such-job"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "COSMOS_TEMPORAL_ADDRESS": "127.0.0.1:1"},
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "cannot reach Temporal at 127.0.0.1:1: Connection refused"
    ]


def test_a_history_file_that_is_not_json_is_a_history_error(tmp_path: Path) -> None:
    bad = tmp_path / "h.json"
    bad.write_bytes(b"\x00\xff")
    with pytest.raises(HistoryError, match="cannot read history"):
        load_history(bad)
