"""Replay a recorded or live workflow history against the current code.

A workflow change that commands something different from what a running job's history holds
breaks that job on its next workflow task. Replaying the history here says so before a deploy, and
where the code and the history part ways; with ``debug`` the replay runs without the deadlock
detector and outside the sandbox, so a debugger can stop inside workflow code.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from google.protobuf.json_format import ParseError
from pydantic import ValidationError
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter
from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner
from temporalio.workflow import NondeterminismError

from app.plato.workflows.catalog import WORKFLOWS


class HistoryError(Exception):
    """The history could not be read or fetched; the message is one line for the user."""


@dataclass(frozen=True)
class ReplayReport:
    workflow_id: str
    events: int
    deterministic: bool
    divergence: str | None = None
    """Where the code and the history part ways (the SDK's message, trimmed), when they do."""
    failure: Exception | None = field(default=None, repr=False)

    @property
    def nondeterministic(self) -> bool:
        """The code commands something else than the history holds (not, say, a decode error)."""
        return isinstance(self.failure, NondeterminismError)


def load_history(path: Path, workflow_id: str | None = None) -> WorkflowHistory:
    """Reads the Web UI's download or ``temporal workflow show --output json``: both are
    ``{"events": [...]}`` (some UI versions write the bare list, accepted too). The JSON holds no
    workflow id, so the file's stem stands in for it."""
    try:
        data: Any = json.loads(path.read_text())
        if isinstance(data, list):
            data = {"events": data}
        history = WorkflowHistory.from_json(workflow_id or path.stem, data)
    except (OSError, UnicodeDecodeError, ValueError, ParseError) as err:
        raise HistoryError(f"cannot read history {path}: {_first_line(err)}") from err
    if not history.events:
        raise HistoryError(f"cannot read history {path}: it has no events")
    return history


async def fetch_history(workflow_id: str) -> tuple[WorkflowHistory, DataConverter]:
    """The latest run's history, with the client's data converter to decode its payloads."""
    from app.core.settings import get_settings
    from app.core.temporal import connect

    try:
        settings = get_settings()
        client = await connect(settings)
        history = await client.get_workflow_handle(workflow_id).fetch_history()
    except ValueError as err:  # settings or payload keys that do not parse
        raise HistoryError(_bad_configuration(err)) from err
    except RPCError as err:
        if err.status is RPCStatusCode.NOT_FOUND:
            raise HistoryError(f"no workflow {workflow_id} in {settings.namespace}") from err
        raise HistoryError(f"cannot fetch {workflow_id}: {_first_line(err)}") from err
    except RuntimeError as err:  # the client's connect failure
        # Exiting right after a failed connect can crash the interpreter while core's threads
        # wind down (temporalio 1.35); letting them settle first avoids that.
        await asyncio.sleep(0.2)
        raise HistoryError(
            f"cannot reach Temporal at {settings.temporal_address}: {_core_message(err)}"
        ) from err
    return history, client.data_converter


async def replay_history(
    history: WorkflowHistory,
    *,
    workflows: Sequence[type] = WORKFLOWS,
    data_converter: DataConverter = pydantic_data_converter,
    debug: bool = False,
) -> ReplayReport:
    """``workflows`` lets tests replay a modified workflow registered under the same name."""
    replayer = Replayer(
        workflows=workflows,
        data_converter=data_converter,
        runtime=_runtime(),
        # A debugger stopped in workflow code trips the deadlock detector (``debug_mode`` turns it
        # off) and the sandbox, which forbids what pdb uses (readline): debug outside it.
        debug_mode=debug,
        workflow_runner=UnsandboxedWorkflowRunner() if debug else SandboxedWorkflowRunner(),
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    failure = result.replay_failure
    return ReplayReport(
        workflow_id=history.workflow_id,
        events=len(history.events),
        deterministic=failure is None,
        divergence=None if failure is None else divergence(failure),
        failure=failure,
    )


async def replay(target: str, *, debug: bool = False) -> ReplayReport:
    """``target`` is an existing ``.json`` file, else a workflow id to fetch from Temporal. A file
    is decoded as a client would (pydantic, decrypted with ``COSMOS_PAYLOAD_KEYS`` when set)."""
    path = Path(target)
    if path.suffix == ".json" and path.is_file():
        from app.core.settings import get_settings
        from app.core.temporal import data_converter

        try:
            converter = data_converter(get_settings())
        except ValueError as err:  # settings or payload keys that do not parse
            raise HistoryError(_bad_configuration(err)) from err
        return await replay_history(load_history(path), data_converter=converter, debug=debug)
    history, converter = await fetch_history(target)
    return await replay_history(history, data_converter=converter, debug=debug)


_CORE_MESSAGE = re.compile(r'message: "((?:[^"\\]|\\.)*)"')
_CODE_PREFIX = re.compile(r"^\[TMPRL\d+\]\s*(Nondeterminism error:\s*)?")


def divergence(failure: Exception) -> str:
    """The SDK wraps core's message (which names the event id and the command that does not
    match it) in a debug dump of a Rust struct; keep only that message. Any other failure (the
    workflow code raised, a payload did not decode) is named by its type."""
    if isinstance(failure, NondeterminismError):
        return _CODE_PREFIX.sub("", _core_message(failure)) or type(failure).__name__
    return f"{type(failure).__name__}: {_core_message(failure)}"


def _core_message(err: Exception) -> str:
    """Core's errors arrive as Rust debug dumps; the innermost ``message: "..."`` says it."""
    found = _CORE_MESSAGE.findall(str(err))
    return _first_line(found[-1].replace('\\"', '"') if found else err)


def _bad_configuration(err: ValueError) -> str:
    if isinstance(err, ValidationError) and err.errors():
        first = err.errors()[0]
        name = "COSMOS_" + "_".join(str(part) for part in first["loc"]).upper()
        return f"bad configuration: {name}: {first['msg']}"
    return f"bad configuration: {_first_line(err)}"


def _first_line(err: object) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


@lru_cache(maxsize=1)
def _runtime() -> Runtime:
    """Core logs a failed replay as a WARN with the same message, a duplicate on stderr."""
    return Runtime(
        telemetry=TelemetryConfig(
            logging=LoggingConfig(filter=TelemetryFilter(core_level="ERROR", other_level="ERROR"))
        )
    )
