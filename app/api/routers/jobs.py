"""Jobs: read, list and cancel. Every answer comes from Temporal; nothing is kept here."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowHandle,
)
from temporalio.service import RPCError, RPCStatusCode

from app.api.deps import ClientDep, SettingsDep
from app.api.errors import documented
from app.api.job_view import STATUS, job_view
from app.models import JobList, JobStatus, JobSummary, JobView

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=documented(401, 502, 503))

JobId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,128}$")]
WORKFLOW_TYPE = "EncodeWorkflow"
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
    if desc.workflow_type != WORKFLOW_TYPE:
        raise HTTPException(status_code=404, detail=f"no job {job_id!r}")
    return handle, desc


@router.get("/{job_id}", response_model=JobView, name="get_job", responses=documented(404))
async def get_job(job_id: JobId, client: ClientDep, settings: SettingsDep) -> JobView:
    _, desc = await _describe(client, job_id)
    return await job_view(client, desc, settings.workflow_ui_link(job_id))


@router.post("/{job_id}/cancel", status_code=202, responses=documented(404, 409))
async def cancel_job(job_id: JobId, client: ClientDep) -> dict[str, str]:
    handle, desc = await _describe(client, job_id)
    if desc.status != WorkflowExecutionStatus.RUNNING:
        raise HTTPException(status_code=409, detail=f"job {job_id!r} has already ended")
    await handle.cancel()
    return {"job_id": job_id, "status": "CANCELLING"}


@router.get("", response_model=JobList)
async def list_jobs(
    client: ClientDep,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> JobList:
    query = f'WorkflowType = "{WORKFLOW_TYPE}"'
    if status is not None:
        names = ", ".join(f"'{s}'" for s in VISIBILITY_STATUS[status])
        query += f" AND ExecutionStatus IN ({names})"
    jobs: list[JobSummary] = []
    async for wf in client.list_workflows(query, limit=limit):
        jobs.append(
            JobSummary(
                job_id=wf.id,
                status=STATUS.get(wf.status or WorkflowExecutionStatus.RUNNING, JobStatus.RUNNING),
                created_at=wf.start_time,
                closed_at=wf.close_time,
            )
        )
    return JobList(jobs=jobs)
