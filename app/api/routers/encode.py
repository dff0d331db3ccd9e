"""POST /v1/encode: validate, derive the job's identity, start (or find) its workflow."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from app.api.deps import ClientDep, SettingsDep
from app.api.errors import documented, field_error
from app.ladder import PlanError, resolve_profiles
from app.models import EncodeJob, EncodeRequest, RetryOptions, SubmitResponse
from app.queues import WORKFLOW_QUEUE
from app.sources import SourceError, resolve_source
from app.storage import StorageError, uri_to_path
from app.webhooks import WebhookRefused, check_webhook
from app.workflows.encode import EncodeWorkflow

router = APIRouter(prefix="/v1", tags=["encode"], responses=documented(401, 413, 502, 503))


def job_id_for(request: EncodeRequest, source_uri: str, idempotency_key: str | None) -> str:
    """The same work gets the same ID: a hash of what determines the outputs.

    The webhook is left out: asking to be told differently is not a different encode.
    """
    if idempotency_key is not None:
        return "enc-k-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
    canonical = json.dumps(
        {
            "source": source_uri,
            "profiles": [p if isinstance(p, str) else p.model_dump() for p in request.profiles],
            "codec": request.codec,
            "segment_seconds": request.segment_seconds,
            "accelerator": request.accelerator,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return "enc-" + hashlib.sha256(canonical.encode()).hexdigest()[:32]


@router.post("/encode", status_code=202, response_model=SubmitResponse)
async def submit(
    body: EncodeRequest,
    request: Request,
    response: Response,
    client: ClientDep,
    settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=255)] = None,
) -> SubmitResponse:
    try:
        source_uri = resolve_source(body.source, settings.allowed_source_roots)
    except SourceError as err:
        raise field_error("source", str(err)) from None
    try:
        resolve_profiles(body.profiles, body.codec)
    except PlanError as err:
        raise field_error("profiles", str(err)) from None
    if body.webhook_url is not None:
        try:
            await asyncio.to_thread(check_webhook, str(body.webhook_url), settings.webhook_hosts)
        except WebhookRefused as err:
            raise field_error("webhook_url", str(err)) from None
    try:
        uri_to_path(settings.resolved_output_uri)
    except StorageError as err:  # a deployment error, not the client's
        raise field_error("source", f"output storage not available: {err}", 503) from None

    job_id = job_id_for(body, source_uri, idempotency_key)
    job = EncodeJob(
        job_id=job_id,
        source_uri=source_uri,
        profiles=body.profiles,
        codec=body.codec,
        segment_seconds=body.segment_seconds,
        webhook_url=str(body.webhook_url) if body.webhook_url else None,
        output_uri=settings.resolved_output_uri,
        scratch_uri=settings.resolved_scratch_uri,
        retry=RetryOptions(max_attempts=settings.activity_max_attempts),
        heartbeat_timeout_s=settings.heartbeat_timeout_s,
        accelerator=body.accelerator,
        gpu_schedule_to_start_s=settings.gpu_schedule_to_start_s,
    )
    try:
        handle = await client.start_workflow(
            EncodeWorkflow.run,
            job,
            id=job_id,
            task_queue=WORKFLOW_QUEUE,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            # A finished job is found again; a failed or cancelled one may be run anew.
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
        )
        started_response = getattr(handle, "_start_workflow_response", None)
        deduplicated = not getattr(started_response, "started", True)
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
