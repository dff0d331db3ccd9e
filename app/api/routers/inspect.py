"""POST /v1/inspect: every stream of a source, probed by a worker, answered synchronously."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import timedelta
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

from fastapi import APIRouter, HTTPException
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import TimeoutError as TemporalTimeoutError

from app.api.deps import ClientDep, SettingsDep
from app.api.errors import ErrorBody, documented, field_error
from app.api.source_checks import checked_source
from app.core.models import InspectInput, InspectRequest, ProbeResult, RetryOptions
from app.plato.workflows.calls import error_info
from app.plato.workflows.inspect import InspectWorkflow
from app.stratum.queues import WORKFLOW_QUEUE

INSPECT_TIMEOUT_S = 120.0
"""The longest a client waits; the workflow is given the same, so none outlives its caller."""

RESPONSES: dict[int | str, dict[str, Any]] = {
    **documented(401, 413, 502, 503),
    504: {"model": ErrorBody, "description": "The probe did not finish in time"},
}

router = APIRouter(prefix="/v1", tags=["inspect"], responses=RESPONSES)


def inspection_id(source_uri: str) -> str:
    """A fresh ID per call: an inspection is cheap and a file replaced in place must be probed
    again, so nothing is deduplicated (the hash groups one source's inspections in the UI)."""
    digest = hashlib.sha256(source_uri.encode()).hexdigest()[:32]
    return f"inspect-{digest}-{uuid.uuid4().hex[:12]}"


@router.post(
    "/inspect",
    response_model=ProbeResult,
    summary="Inspect a source",
    description=(
        "Probe a source the way an encode would and report every stream: video (codec, profile,"
        " bit depth, chroma, field order from the flags and as ffmpeg's idet measured it,"
        " colour tags, dynamic range with HDR10 mastering display and content light, variable"
        " frame rate, timecode, captions), every audio and subtitle track with language and"
        " dispositions, and data or attachment streams. Nothing is encoded or stored. A source"
        " that is not allowed, missing, or not video this platform takes is a 422 with the"
        " reason, in the shape of a field error on `source`."
    ),
    response_description="The probe's report of the source.",
)
async def inspect(body: InspectRequest, client: ClientDep, settings: SettingsDep) -> ProbeResult:
    source_uri = await asyncio.to_thread(checked_source, body.source, settings)
    workflow_id = inspection_id(source_uri)
    name = PurePosixPath(unquote(urlsplit(source_uri).path)).name or source_uri
    handle = await client.start_workflow(
        InspectWorkflow.run,
        InspectInput(
            source_uri=source_uri,
            job_id=workflow_id,
            retry=RetryOptions(max_attempts=settings.activity_max_attempts),
        ),
        id=workflow_id,
        task_queue=WORKFLOW_QUEUE,
        execution_timeout=timedelta(seconds=INSPECT_TIMEOUT_S),
        static_summary=f"inspect {name}"[:400],
    )
    try:
        result: ProbeResult = await asyncio.wait_for(handle.result(), INSPECT_TIMEOUT_S + 5)
    except TimeoutError:
        raise _timed_out() from None
    except WorkflowFailureError as err:
        if isinstance(err.cause, TemporalTimeoutError):
            raise _timed_out() from None
        info = error_info(err.cause)
        if info.type == "InvalidSource":
            raise field_error("source", info.message) from None
        raise HTTPException(502, detail=f"inspection failed: {info.message}") from None
    return result


def _timed_out() -> HTTPException:
    return HTTPException(
        504, detail=f"the probe did not finish within {INSPECT_TIMEOUT_S:g}s; are workers running?"
    )
