"""Jobs: read, list and cancel. Every answer comes from Temporal; nothing is kept here."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import StreamingResponse
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowHandle,
)
from temporalio.service import RPCError, RPCStatusCode

from app.api.deps import ClientDep, SettingsDep
from app.api.errors import documented
from app.api.events import HEADERS, OPENAPI_200, EventStream, job_events
from app.api.job_view import PIPELINE_TYPE, STATUS, job_view
from app.core.models import Codec, JobList, JobStatus, JobSummary, JobView, Manifests
from app.observability.search import CODEC, SOURCE, quoted, registered, source_prefix
from app.observability.search import STATUS as STATUS_KEY
from app.plato.workflows.quality import QUALITY_TYPE
from app.storage.object_store import store_for

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=documented(401, 502, 503))

JobId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,128}$")]
WORKFLOW_TYPE = "EncodeWorkflow"
JOB_TYPES = (WORKFLOW_TYPE, PIPELINE_TYPE, QUALITY_TYPE)
"""Workflows that are jobs: an encode, a Plato pipeline run, a quality measurement."""
VISIBILITY_STATUS = {
    JobStatus.PENDING: ["Running"],
    JobStatus.RUNNING: ["Running"],
    JobStatus.SUCCEEDED: ["Completed"],
    JobStatus.FAILED: ["Failed", "Terminated", "TimedOut"],
    JobStatus.CANCELLED: ["Canceled"],
}


async def _describe(
    client: Client, job_id: str
) -> tuple[WorkflowHandle[Any, Any], WorkflowExecutionDescription]:
    handle = client.get_workflow_handle(job_id)
    try:
        desc = await handle.describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise HTTPException(status_code=404, detail=f"no job {job_id!r}") from None
        raise
    if desc.workflow_type not in JOB_TYPES:
        raise HTTPException(status_code=404, detail=f"no job {job_id!r}")
    return handle, desc


@router.get("/{job_id}", response_model=JobView, name="get_job", responses=documented(404))
async def get_job(
    job_id: JobId,
    client: ClientDep,
    settings: SettingsDep,
    presign: Annotated[bool, Query(description="Manifests as presigned HTTPS URLs (S3).")] = False,
) -> JobView:
    _, desc = await _describe(client, job_id)
    view = await job_view(client, desc, settings.workflow_ui_link(job_id))
    if presign and view.manifests is not None:
        urls = {
            name: await asyncio.to_thread(store_for(uri, settings).presign, uri)
            for name, uri in view.manifests.model_dump().items()
        }
        view.manifests = Manifests(**urls)
    return view


@router.get(
    "/{job_id}/events",
    # StreamingResponse has no media type of its own, so the errors stay documented as JSON
    response_class=StreamingResponse,
    responses={200: OPENAPI_200, **documented(404)},
)
async def job_events_stream(
    job_id: JobId, request: Request, client: ClientDep, settings: SettingsDep
) -> EventStream:
    """The job's progress as server-sent events until it ends (``curl -N``, ``EventSource``)."""
    _, desc = await _describe(client, job_id)  # 404 before the stream starts
    link = settings.workflow_ui_link(job_id)
    handle = client.get_workflow_handle(job_id)

    async def read() -> JobView:
        return await job_view(client, await handle.describe(), link)

    first = await job_view(client, desc, link)
    return EventStream(job_events(read, first, request.is_disconnected), headers=HEADERS)


@router.post("/{job_id}/cancel", status_code=202, responses=documented(404, 409))
async def cancel_job(job_id: JobId, client: ClientDep) -> dict[str, str]:
    handle, desc = await _describe(client, job_id)
    if desc.status != WorkflowExecutionStatus.RUNNING:
        raise HTTPException(status_code=409, detail=f"job {job_id!r} has already ended")
    await handle.cancel()
    return {"job_id": job_id, "status": "CANCELLING"}


def _status_query(status: JobStatus, visible: bool) -> str:
    """Temporal's ExecutionStatus alone cannot tell PENDING from RUNNING; CosmosStatus can.
    Jobs started before the attributes existed have none (counted as RUNNING), and a job
    terminated by an operator keeps its last CosmosStatus, so the execution status still
    decides which jobs are open or closed."""
    names = ", ".join(f"'{s}'" for s in VISIBILITY_STATUS[status])
    fallback = f"ExecutionStatus IN ({names})"
    if not visible:
        return fallback
    mine = f"{STATUS_KEY.name} = {quoted(status.value)}"
    if status is JobStatus.PENDING:
        return f"{fallback} AND {mine}"
    if status is JobStatus.RUNNING:
        return f"{fallback} AND ({mine} OR {STATUS_KEY.name} IS NULL)"
    return f"({mine} OR {fallback})"


def _unregistered(field: str, name: str) -> HTTPException:
    return HTTPException(
        status_code=422,
        detail=[
            {
                "loc": ["query", field],
                "msg": f"filtering by {field} needs the {name} search attribute registered"
                " on the Temporal server (README: Job visibility)",
                "type": "value_error",
            }
        ],
    )


@router.get("", response_model=JobList)
async def list_jobs(
    client: ClientDep,
    settings: SettingsDep,
    status: JobStatus | None = None,
    codec: Codec | None = None,
    source: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=1024,
            pattern=r"^[^\x00-\x1f\x7f]+$",
            description="Jobs whose source starts with this path or URI.",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> JobList:
    visible = await registered.names(client, settings.namespace)
    query = "(" + " OR ".join(f'WorkflowType = "{t}"' for t in JOB_TYPES) + ")"
    if status is not None:
        query += " AND " + _status_query(status, STATUS_KEY.name in visible)
    if codec is not None:
        if CODEC.name not in visible:
            raise _unregistered("codec", CODEC.name)
        query += f" AND {CODEC.name} = {quoted(codec)}"
    if source is not None:
        if SOURCE.name not in visible:
            raise _unregistered("source", SOURCE.name)
        query += f" AND {SOURCE.name} STARTS_WITH {quoted(source_prefix(source))}"
    jobs: list[JobSummary] = []
    async for wf in client.list_workflows(query, limit=limit):
        attributes = wf.typed_search_attributes
        state = STATUS.get(wf.status or WorkflowExecutionStatus.RUNNING, JobStatus.RUNNING)
        if state is JobStatus.RUNNING and attributes.get(STATUS_KEY) == JobStatus.PENDING:
            state = JobStatus.PENDING
        jobs.append(
            JobSummary(
                job_id=wf.id,
                status=state,
                codec=attributes.get(CODEC),
                source=attributes.get(SOURCE),
                created_at=wf.start_time,
                closed_at=wf.close_time,
            )
        )
    return JobList(jobs=jobs)
