"""Aggregate a job's state from Temporal alone: describe, query, heartbeats, result."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowFailureError,
)
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.service import RPCError

from app.core.models import (
    EncodeResult,
    ErrorInfo,
    JobStatus,
    JobView,
    Progress,
    QualityResult,
    RenditionState,
    WebhookDelivery,
    WorkflowState,
)
from app.core.progress import overall_progress
from app.plato.workflows.pipeline import PipelineResult
from app.plato.workflows.quality import QUALITY_TYPE, quality_progress

STATUS = {
    WorkflowExecutionStatus.RUNNING: JobStatus.RUNNING,
    WorkflowExecutionStatus.CONTINUED_AS_NEW: JobStatus.RUNNING,
    WorkflowExecutionStatus.COMPLETED: JobStatus.SUCCEEDED,
    WorkflowExecutionStatus.FAILED: JobStatus.FAILED,
    WorkflowExecutionStatus.TERMINATED: JobStatus.FAILED,
    WorkflowExecutionStatus.TIMED_OUT: JobStatus.FAILED,
    WorkflowExecutionStatus.CANCELED: JobStatus.CANCELLED,
}

QUERY_TIMEOUT = timedelta(seconds=3)
PIPELINE_TYPE = "PipelineWorkflow"


async def _heartbeats(client: Client, desc: WorkflowExecutionDescription) -> dict[str, Progress]:
    """Latest ffmpeg progress per rendition, from the pending activities' heartbeat details."""
    found: dict[str, Progress] = {}
    for pending in desc.raw_description.pending_activities:
        if not pending.heartbeat_details.payloads:
            continue
        try:
            (details,) = await client.data_converter.decode(
                pending.heartbeat_details.payloads, [dict]
            )
            progress = Progress.model_validate({k: v for k, v in details.items() if k != "label"})
            for name in str(details["label"]).split("+"):  # one run encodes "720p+480p+360p"
                found[name] = progress
        except (ValueError, KeyError, TypeError):
            continue
    return found


async def _chunk_heartbeats(client: Client, state: WorkflowState) -> dict[str, list[Progress]]:
    """Progress of the chunks in flight, per codec, from the chunk-range children."""

    async def one(workflow_id: str) -> list[Progress]:
        try:
            desc = await client.get_workflow_handle(workflow_id).describe(rpc_timeout=QUERY_TIMEOUT)
        except RPCError:
            return []  # just finished, or Temporal is busy: the counts still stand
        return list((await _heartbeats(client, desc)).values())

    children = list(state.chunk_workflows.items())
    beats = await asyncio.gather(*(one(workflow_id) for workflow_id, _ in children))
    found: dict[str, list[Progress]] = {}
    for (_, codec), progress in zip(children, beats, strict=True):
        found.setdefault(codec, []).extend(progress)
    return found


def _add_chunk_speed(renditions: list[RenditionState], beats: dict[str, list[Progress]]) -> None:
    """fps and speed add up over the chunks in flight. Progress stays the count of finished
    chunks the parent was told of, which only goes forward."""
    for r in renditions:
        running = beats.get(r.codec, [])
        if r.status == "encoding" and running:
            r.fps = sum(b.fps or 0.0 for b in running) or None
            r.speed = sum(b.speed or 0.0 for b in running) or None


async def _deliveries(client: Client, workflow_id: str | None) -> list[WebhookDelivery]:
    """The deliverer's record of each event; the attempt in flight (its retries are
    Temporal's) from its pending activity."""
    if workflow_id is None:
        return []
    handle = client.get_workflow_handle(workflow_id, result_type=list[WebhookDelivery])
    try:
        desc = await handle.describe(rpc_timeout=QUERY_TIMEOUT)
        if desc.status == WorkflowExecutionStatus.RUNNING:
            found: list[WebhookDelivery] = await handle.query(
                "deliveries", result_type=list[WebhookDelivery], rpc_timeout=QUERY_TIMEOUT
            )
        else:
            found = await handle.result()
    except Exception:  # not started yet, or no worker to answer now: nothing to report
        return []
    for pending in desc.raw_description.pending_activities:
        delivery = next((d for d in found if d.event_id == pending.activity_id), None)
        if delivery is None:
            continue
        running = pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
        delivery.attempts = pending.attempt if running else pending.attempt - 1
        failure = pending.last_failure
        if failure.message:
            delivery.last_error = failure.message
            details = failure.application_failure_info.details.payloads
            try:
                (info,) = await client.data_converter.decode(details, [dict])
                delivery.last_status = info.get("status")
            except (ValueError, TypeError):
                pass
    return found


def _started(desc: WorkflowExecutionDescription) -> bool:
    return any(
        p.state != PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED
        for p in desc.raw_description.pending_activities
    )


def _updated_at(desc: WorkflowExecutionDescription) -> datetime | None:
    times = [t for t in (desc.start_time, desc.close_time) if t]
    for pending in desc.raw_description.pending_activities:
        for stamp in (pending.last_heartbeat_time, pending.last_started_time):
            if stamp.seconds:
                times.append(stamp.ToDatetime().replace(tzinfo=desc.start_time.tzinfo))
    return max(times) if times else None


def _failure(err: BaseException) -> ErrorInfo:
    cause = err.cause if isinstance(err, WorkflowFailureError) else err
    if isinstance(cause, ApplicationError):
        return ErrorInfo(type=cause.type or "ApplicationError", message=cause.message)
    if isinstance(cause, CancelledError):
        return ErrorInfo(type="Cancelled", message="the job was cancelled")
    return ErrorInfo(type=type(cause).__name__, message=str(cause) or "the job did not finish")


def _as_encode_result(result: PipelineResult) -> EncodeResult | PipelineResult:
    """A pipeline run reports like an encode job: its manifests where it published some."""
    if result.manifests is None:
        return result
    return EncodeResult(
        job_id=result.job_id,
        manifests=result.manifests,
        renditions=[],
        dropped=[],
        stage_seconds=result.stage_seconds,
    )


async def job_view(client: Client, desc: WorkflowExecutionDescription, web_ui_url: str) -> JobView:
    status = STATUS.get(desc.status or WorkflowExecutionStatus.RUNNING, JobStatus.RUNNING)
    pipeline = desc.workflow_type == PIPELINE_TYPE
    quality = desc.workflow_type == QUALITY_TYPE
    kind = PipelineResult if pipeline else QualityResult if quality else EncodeResult
    handle = client.get_workflow_handle(desc.id, run_id=desc.run_id, result_type=kind)
    state: WorkflowState | None = None
    error: ErrorInfo | None = None
    result: EncodeResult | PipelineResult | QualityResult | None = None
    stage: str | None

    if status is JobStatus.SUCCEEDED:
        result = await handle.result()
        if isinstance(result, PipelineResult):
            result = _as_encode_result(result)
    elif status in (JobStatus.FAILED, JobStatus.CANCELLED):
        try:
            await handle.result()
        except (WorkflowFailureError, RPCError) as err:
            error = _failure(err)
    if status is not JobStatus.SUCCEEDED:
        try:
            state = await handle.query(
                "state", result_type=WorkflowState, rpc_timeout=QUERY_TIMEOUT
            )
        except Exception:  # no worker to answer right now: report what describe knows
            state = None

    webhook_workflow = (
        result.webhook_workflow
        if isinstance(result, EncodeResult)
        else state.webhook_workflow
        if state
        else None
    )
    if isinstance(result, PipelineResult | QualityResult):  # finished, nothing packaged
        renditions, stage, dropped, source, not_carried = [], "done", [], None, []
        manifests, progress, stage_seconds = None, 1.0, result.stage_seconds
    elif result is not None:
        renditions, stage, dropped = result.renditions, "done", result.dropped
        source, not_carried = result.source, result.not_carried
        manifests, progress = result.manifests, 1.0
        stage_seconds = result.stage_seconds
    else:
        renditions = state.renditions if state else []
        stage = state.stage if state else None
        dropped = state.dropped if state else []
        source = state.source if state else None
        not_carried = state.not_carried if state else []
        manifests = None
        stage_seconds = dict(state.stage_seconds) if state else {}
        if status is JobStatus.RUNNING:
            beats = await _heartbeats(client, desc)
            for r in renditions:
                if r.status == "encoding" and r.name in beats:
                    beat = beats[r.name]
                    r.progress = round(beat.done_s / beat.total_s, 4) if beat.total_s else 0.0
                    r.fps, r.speed, r.frames = beat.fps, beat.speed, beat.frames
            if state and state.chunk_workflows:
                _add_chunk_speed(renditions, await _chunk_heartbeats(client, state))
            # No answer to the query (no worker right now) is PENDING only for a job that no
            # worker has touched yet: its history holds just the start and the first task.
            queued = stage == "queued" or (stage is None and desc.history_length <= 2)
            if queued or (stage == "probe" and not _started(desc)):
                status = JobStatus.PENDING
        progress = (quality_progress if quality else overall_progress)(
            stage or "queued", renditions
        )
        if state is not None and state.progress is not None:  # a pipeline run's own
            progress = state.progress
    return JobView(
        job_id=desc.id,
        status=status,
        stage=stage,
        progress=progress,
        renditions=renditions,
        dropped=dropped,
        source=source,
        not_carried=not_carried,
        manifests=manifests,
        error=error,
        created_at=desc.start_time,
        updated_at=_updated_at(desc),
        web_ui_url=web_ui_url,
        stage_seconds=stage_seconds,
        webhooks=await _deliveries(client, webhook_workflow),
        quality=result
        if isinstance(result, QualityResult)
        else result.quality
        if isinstance(result, EncodeResult)
        else None,
    )
