"""Starting a job's workflow, the one way every kind of job is started: idempotently."""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from app.core.models import SubmitResponse
from app.core.settings import Settings
from app.stratum.queues import WORKFLOW_QUEUE


async def start_job(
    client: Client,
    settings: Settings,
    request: Request,
    response: Response,
    run: Any,
    arg: Any,
    job_id: str,
    **options: Any,
) -> SubmitResponse:
    """Start ``run(arg)`` as job ``job_id``, or find it: a running or finished job with that
    ID is the answer (``deduplicated``); a failed or cancelled one may be run anew."""
    try:
        handle = await client.start_workflow(
            run,
            arg,
            id=job_id,
            task_queue=WORKFLOW_QUEUE,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
            **options,
        )
        started = getattr(handle, "_start_workflow_response", None)
        deduplicated = not getattr(started, "started", True)
    except WorkflowAlreadyStartedError:
        deduplicated = True
    status_url = str(request.url_for("get_job", job_id=job_id))
    response.headers["Location"] = status_url
    return SubmitResponse(
        job_id=job_id,
        status_url=status_url,
        web_ui_url=settings.workflow_ui_link(job_id),
        deduplicated=deduplicated,
    )
