"""The CLI, the events stream and job visibility, against the real stack (API and worker
processes, the dev server with the Cosmos search attributes registered)."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from rich.console import Console
from temporalio.client import WorkflowExecutionStatus
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from app.cli.follow import follow, parse_events
from app.cli.main import _profile
from app.observability.search import KEYS, REQUESTER, key_id
from tests.conftest import BIN
from tests.stack import Stack

pytestmark = pytest.mark.e2e
HISTORIES = Path(__file__).parent / "histories"
ANSI = re.compile(r"\x1b\[")


def cosmos(stack: Stack, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "cosmos"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COSMOS_API_URL": stack.api_url, "COLUMNS": "80"},
    )


def submitted_id(stdout: str) -> str:
    found = re.search(r'"job_id": "(enc-[0-9a-f]+)"', stdout)
    assert found, stdout
    return found.group(1)


def temporal_list(dev_server: WorkflowEnvironment, query: str) -> list[str]:
    address = dev_server.client.service_client.config.target_host
    result = subprocess.run(
        [str(BIN / "temporal"), "workflow", "list", "--address", address, "--query", query,
         "--output", "json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [wf["execution"]["workflowId"] for wf in json.loads(result.stdout or "[]")]


@pytest.fixture(scope="module")
def done_job(stack: Stack, media_dir: Path) -> str:
    """One job submitted and followed by ``cosmos submit --wait``, shared by the tests below."""
    result = cosmos(stack, "submit", str(media_dir / "basic.mp4"), "-p", "tiny:144:150", "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "SUCCEEDED" in out and "master.m3u8" in out, out
    job_id = submitted_id(out)
    assert f"/namespaces/default/workflows/{job_id}" in out, out
    assert not ANSI.search(out), "no escape codes when the output is not a terminal"
    assert re.search(r"^RUNNING\s+encode\s", out, re.M) or "SUCCEEDED done" in out, out
    return job_id


# ---------------------------------------------------------------- the CLI


def test_submit_wait_succeeds_with_outputs_and_link(done_job: str) -> None:
    assert done_job.startswith("enc-")


def test_submit_wait_on_a_bad_file_exits_1_with_the_reason(stack: Stack, media_dir: Path) -> None:
    result = cosmos(stack, "submit", str(media_dir / "text.mp4"), "-p", "tiny:144:150", "--wait")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAILED" in result.stdout
    assert "InvalidSource" in result.stdout and "not a readable media file" in result.stdout
    assert "Traceback" not in result.stderr


def test_jobs_lists_the_job(stack: Stack, done_job: str) -> None:
    result = cosmos(stack, "jobs")
    assert result.returncode == 0, result.stderr
    assert done_job in result.stdout
    line = next(line for line in result.stdout.splitlines() if done_job in line)
    assert "SUCCEEDED" in line and "h264" in line and "basic.mp4" in line

    filtered = cosmos(stack, "jobs", "--status", "SUCCEEDED", "--codec", "h264", "--limit", "200")
    assert done_job in filtered.stdout, filtered.stdout + filtered.stderr
    none = cosmos(stack, "jobs", "--status", "SUCCEEDED", "--codec", "av1")
    assert done_job not in none.stdout
    running = cosmos(stack, "jobs", "--status", "RUNNING")
    assert running.returncode == 0 and done_job not in running.stdout


def test_status_shows_the_job(stack: Stack, done_job: str) -> None:
    result = cosmos(stack, "status", done_job)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert done_job in out and "SUCCEEDED" in out and "master.m3u8" in out
    assert re.search(r"tiny\s.*256x144\s.*h264\s.*done\s.*100%", out), out
    as_json = json.loads(cosmos(stack, "status", done_job, "--json").stdout)
    assert as_json["status"] == "SUCCEEDED"

    unknown = cosmos(stack, "status", "enc-nothing")
    assert unknown.returncode == 1 and "404" in unknown.stderr


def test_progress_bars_on_a_terminal(stack: Stack, done_job: str) -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120)
    view = follow(stack.api_url, done_job, console=console)
    assert view.status == "SUCCEEDED"
    out = buffer.getvalue()
    assert "━" in out and "tiny 256x144" in out and "100%" in out, out


def test_profiles_are_presets_or_inline() -> None:
    assert _profile("720p") == "720p"
    assert _profile("low:360:600") == {"name": "low", "height": 360, "bitrate_kbps": 600}
    for bad in ("low:360", "low:tall:600", "a:1:2:3"):
        with pytest.raises(typer.BadParameter):
            _profile(bad)


# ---------------------------------------------------------------- the events stream


def test_sse_parser() -> None:
    lines = [": heartbeat", "", 'data: {"a": 1}', "", "event: end", "data: x", "data: y", ""]
    assert list(parse_events(iter(lines))) == [("message", '{"a": 1}'), ("end", "x\ny")]


def read_events(stack: Stack, job_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
    with (
        stack.http() as http,
        http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=httpx.Timeout(10, read=60)) as r,
    ):
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for event, data in parse_events(r.iter_lines()):
            yield event, json.loads(data)


def test_events_stream_progress_until_the_end(stack: Stack, media_dir: Path) -> None:
    job = stack.submit(
        source=str(media_dir / "basic.mp4"),
        profiles=[
            {"name": "sse-a", "height": 180, "bitrate_kbps": 200},
            {"name": "sse-b", "height": 144, "bitrate_kbps": 120},
        ],
    )
    events = list(read_events(stack, job["job_id"]))
    assert len(events) >= 2, events
    assert [name for name, _ in events[:-1]] == ["message"] * (len(events) - 1)
    name, final = events[-1]
    assert name == "end" and final["status"] == "SUCCEEDED" and final["progress"] == 1.0
    progress = [view["progress"] for _, view in events]
    assert progress == sorted(progress), progress
    assert len({json.dumps(view) for _, view in events}) == len(events), "only changes are sent"

    # A finished job: its final view at once, then the stream ends.
    again = list(read_events(stack, job["job_id"]))
    assert [name for name, _ in again] == ["end"]


def test_events_for_an_unknown_job_is_404(stack: Stack) -> None:
    with stack.http() as http:
        response = http.get("/v1/jobs/enc-unknown/events")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"


# ---------------------------------------------------------------- job visibility


async def test_visibility_attributes_summary_and_filters(
    stack: Stack, done_job: str, dev_server: WorkflowEnvironment, media_dir: Path
) -> None:
    assert done_job in temporal_list(dev_server, 'CosmosStatus="SUCCEEDED"')
    assert done_job in temporal_list(
        dev_server, 'CosmosCodec="h264" AND CosmosRequester="anonymous"'
    )
    assert done_job not in temporal_list(dev_server, 'CosmosStatus="RUNNING"')

    handle = dev_server.client.get_workflow_handle(done_job)
    desc = await handle.describe()
    assert desc.status == WorkflowExecutionStatus.COMPLETED
    attributes = {key.name: desc.typed_search_attributes.get(key) for key in KEYS}
    assert attributes == {
        "CosmosStatus": "SUCCEEDED",
        "CosmosSource": (media_dir / "basic.mp4").as_uri(),
        "CosmosCodec": "h264",
        "CosmosRequester": "anonymous",
    }
    assert await desc.static_summary() == "h264 tiny of basic.mp4"
    assert "requested by** anonymous" in (await desc.static_details() or "")

    def listed(**params: str) -> list[str]:
        with stack.http() as http:
            response = http.get("/v1/jobs", params={"limit": "200", **params})
        assert response.status_code == 200, response.text
        return [job["job_id"] for job in response.json()["jobs"]]

    assert done_job in listed(status="SUCCEEDED", codec="h264")
    assert done_job in listed(source=str(media_dir))
    assert done_job in listed(source=(media_dir / "basic.mp4").as_uri())
    assert done_job not in listed(codec="hevc")
    assert done_job not in listed(source=str(media_dir / "other"))
    assert done_job not in listed(status="RUNNING")
    assert done_job not in listed(status="FAILED")

    if os.environ.get("COSMOS_RECORD_HISTORY"):
        history = await handle.fetch_history()
        (HISTORIES / "encode_visibility.json").write_text(
            json.dumps(history.to_json_dict(), indent=1)
        )


async def test_the_requester_is_the_key_id_never_the_key(
    stack: Stack, media_dir: Path, dev_server: WorkflowEnvironment, tmp_path: Path
) -> None:
    key = "s3cret-key-for-visibility"
    keyed = Stack(
        data_dir=tmp_path,
        temporal_address=stack.temporal_address,
        source_roots=stack.source_roots,
        extra_env={"COSMOS_API_KEYS": key},
    )
    keyed.start_api()  # the session's worker runs the job
    try:
        with httpx.Client(base_url=keyed.api_url, timeout=30) as http:
            response = http.post(
                "/v1/encode",
                headers={"Authorization": f"Bearer {key}"},
                json={
                    "source": str(media_dir / "basic.mp4"),
                    "profiles": [{"name": "keyed", "height": 144, "bitrate_kbps": 150}],
                },
            )
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        assert stack.wait(job_id)["status"] == "SUCCEEDED"
    finally:
        keyed.stop_all()
    desc = await dev_server.client.get_workflow_handle(job_id).describe()
    assert desc.typed_search_attributes.get(REQUESTER) == key_id(key)
    shown = [str(pair.value) for pair in desc.typed_search_attributes]
    shown += [await desc.static_summary() or "", await desc.static_details() or ""]
    assert not any(key in text for text in shown), shown


async def test_jobs_run_on_a_server_without_the_attributes(media_dir: Path, tmp_path: Path) -> None:
    """A production server that nobody registered the attributes on: jobs start without
    them, the workflow never upserts, listing falls back to the execution status."""
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter, dev_server_existing_path=str(BIN / "temporal")
    )
    async with env:
        bare = Stack(
            data_dir=tmp_path,
            temporal_address=env.client.service_client.config.target_host,
            source_roots=[media_dir],
        )
        bare.start_worker()
        bare.start_api()
        try:
            job = bare.submit(
                source=str(media_dir / "basic.mp4"),
                profiles=[{"name": "bare", "height": 144, "bitrate_kbps": 150}],
            )
            assert bare.wait(job["job_id"])["status"] == "SUCCEEDED"
            with bare.http() as http:
                listed = http.get("/v1/jobs", params={"status": "SUCCEEDED"}).json()["jobs"]
                refused = http.get("/v1/jobs", params={"codec": "h264"})
            assert job["job_id"] in [j["job_id"] for j in listed]
            assert refused.status_code == 422 and "CosmosCodec" in refused.text
        finally:
            bare.stop_all()
        desc = await env.client.get_workflow_handle(job["job_id"]).describe()
        assert not [pair for pair in desc.typed_search_attributes if pair.key in KEYS]
        assert await desc.static_summary() == "h264 bare of basic.mp4"
