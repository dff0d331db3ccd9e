"""EncodeWorkflow: probe → plan → encode (fan-out) → package → publish, with saga cleanup."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    TimeoutError,
    TimeoutType,
)

with workflow.unsafe.imports_passed_through():
    from app.activities.analyze import AnalyzeActivities
    from app.activities.encode import EncodeActivities
    from app.activities.lifecycle import LifecycleActivities
    from app.activities.package import PackageActivities
    from app.activities.routing import RoutingActivities
    from app.models import (
        CleanupInput,
        EncodeAudioInput,
        EncodedMedia,
        EncodeJob,
        EncodeResult,
        EncodeVideoInput,
        ErrorInfo,
        JobStatus,
        Manifests,
        NotifyInput,
        PackageInput,
        Plan,
        PlanInput,
        ProbeInput,
        ProbeResult,
        PublishInput,
        Rendition,
        RenditionState,
        Route,
        RouteInput,
        WorkflowState,
    )
    from app.queues import CPU_QUEUE
    from app.search import STATUS as STATUS_KEY

T = TypeVar("T")

NON_RETRYABLE = ["InvalidSource", "PlanError", "NoCapablePool"]
ROUTING_PATCH = "stratum-routing"
"""Histories recorded before routing existed replay without the route step."""
VISIBILITY_PATCH = "visibility"
"""Histories recorded before the CosmosStatus search attribute replay without its upserts."""
SHORT = timedelta(minutes=2)
LONG = timedelta(hours=6)


@workflow.defn
class EncodeWorkflow:
    def __init__(self) -> None:
        self._state = WorkflowState()
        self._job: EncodeJob | None = None
        self._visible = False

    @workflow.query
    def state(self) -> WorkflowState:
        return self._state

    @workflow.run
    async def run(self, job: EncodeJob) -> EncodeResult:
        self._job = job
        # Only where the API could set the attributes at start, i.e. the server has them
        # registered: upserting an unregistered attribute would fail every workflow task.
        self._visible = (
            workflow.patched(VISIBILITY_PATCH)
            and workflow.info().typed_search_attributes.get(STATUS_KEY) is not None
        )
        self._set_status(JobStatus.RUNNING)
        try:
            probe = await self._stage(
                "probe",
                self._call(
                    AnalyzeActivities.probe_source,
                    ProbeInput(source_uri=job.source_uri, job_id=job.job_id),
                ),
            )
            plan = await self._stage(
                "plan", self._call(AnalyzeActivities.plan, PlanInput(job=job, probe=probe))
            )
            self._state.dropped = plan.dropped
            self._state.renditions = [
                RenditionState(name=r.name, codec=r.codec, width=r.width, height=r.height)
                for r in plan.renditions
            ]
            routes: dict[str, Route] = {}
            if workflow.patched(ROUTING_PATCH):
                decided: list[Route] = await self._stage(
                    "route",
                    self._call(
                        RoutingActivities.route,
                        RouteInput(
                            codecs=sorted({r.codec for r in plan.renditions}),
                            accelerator=job.accelerator,
                        ),
                    ),
                )
                routes = {route.codec: route for route in decided}
            videos, audio = await self._stage("encode", self._encode_all(job, probe, plan, routes))
            package = await self._stage(
                "package",
                self._call(
                    PackageActivities.package,
                    PackageInput(
                        job_id=job.job_id,
                        scratch_uri=job.scratch_uri,
                        videos=videos,
                        audio=audio,
                        segment_seconds=plan.segment_seconds,
                    ),
                    timeout=LONG,
                    heartbeat=True,
                ),
            )
            manifests = await self._stage(
                "publish",
                self._call(
                    PackageActivities.publish_manifest,
                    PublishInput(
                        job=job,
                        probe=probe,
                        plan=plan,
                        videos=videos,
                        audio=audio,
                        package=package,
                        stage_seconds=dict(self._state.stage_seconds),
                    ),
                ),
            )
        except asyncio.CancelledError:
            await self._finish(JobStatus.CANCELLED)
            self._set_status(JobStatus.CANCELLED)
            raise
        except (ActivityError, ApplicationError) as err:
            error = _error_info(err)
            await self._finish(JobStatus.FAILED, error=error)
            self._set_status(JobStatus.FAILED)
            raise ApplicationError(error.message, type=error.type, non_retryable=True) from err

        self._state.manifests = manifests
        await self._finish(JobStatus.SUCCEEDED, manifests=manifests)
        self._set_status(JobStatus.SUCCEEDED)
        return EncodeResult(
            job_id=job.job_id,
            manifests=manifests,
            renditions=self._state.renditions,
            dropped=plan.dropped,
            stage_seconds=self._state.stage_seconds,
        )

    # ------------------------------------------------------------------ fan-out / fan-in

    async def _encode_all(
        self, job: EncodeJob, probe: ProbeResult, plan: Plan, routes: dict[str, Route]
    ) -> tuple[list[EncodedMedia], EncodedMedia | None]:
        """Every rendition (and the audio, once) in parallel; on the first failure or a
        cancellation the others are cancelled and awaited, so their ffmpeg processes are dead
        before compensation removes their files."""
        videos = [
            asyncio.create_task(
                self._encode_rendition(job, probe, rendition, routes.get(rendition.codec))
            )
            for rendition in plan.renditions
        ]
        tasks: list[asyncio.Task[EncodedMedia]] = list(videos)
        audio = None
        if probe.audio is not None:
            audio = asyncio.create_task(
                self._call(
                    EncodeActivities.encode_audio,
                    EncodeAudioInput(
                        job_id=job.job_id,
                        source_uri=job.source_uri,
                        container=probe.container,
                        scratch_uri=job.scratch_uri,
                        duration_s=probe.duration_s,
                    ),
                    timeout=LONG,
                    heartbeat=True,
                )
            )
            tasks.append(audio)
        try:
            await workflow.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        except asyncio.CancelledError:
            await _cancel_and_wait(tasks)
            raise
        failed = [t for t in tasks if t.done() and not t.cancelled() and t.exception()]
        if failed:
            await _cancel_and_wait(tasks)
            raise failed[0].exception()  # type: ignore[misc]
        return [t.result() for t in videos], audio.result() if audio else None

    async def _encode_rendition(
        self, job: EncodeJob, probe: ProbeResult, rendition: Rendition, route: Route | None
    ) -> EncodedMedia:
        """One activity per rendition today; the seam where chunked encoding will plug in.

        GPU work that no GPU worker starts within ``gpu_schedule_to_start_s`` goes to the CPU
        pool when the job said ``auto``; with ``gpu`` it fails with the reason.
        """
        state = next(r for r in self._state.renditions if r.name == rendition.name)
        request = EncodeVideoInput(
            job_id=job.job_id,
            source_uri=job.source_uri,
            container=probe.container,
            scratch_uri=job.scratch_uri,
            rendition=rendition,
            duration_s=probe.duration_s,
            rotation=probe.video.rotation,
        )
        queue = route.queue if route else CPU_QUEUE
        state.status, state.queue = "encoding", queue
        try:
            try:
                media: EncodedMedia = await self._call(
                    EncodeActivities.encode_video,
                    request,
                    timeout=LONG,
                    heartbeat=True,
                    task_queue=queue,
                    schedule_to_start=(
                        timedelta(seconds=job.gpu_schedule_to_start_s)
                        if queue != CPU_QUEUE
                        else None
                    ),
                )
            except ActivityError as err:
                if queue == CPU_QUEUE or not _not_picked_up(err):
                    raise
                waited = f"{job.gpu_schedule_to_start_s:g}s"
                if job.accelerator == "gpu":
                    raise ApplicationError(
                        f"no GPU worker on {queue} took {rendition.name} within {waited}",
                        type="NoCapablePool",
                        non_retryable=True,
                    ) from err
                workflow.logger.warning(
                    "%s waited %s on %s; falling back to %s",
                    rendition.name,
                    waited,
                    queue,
                    CPU_QUEUE,
                )
                state.queue = CPU_QUEUE
                media = await self._call(
                    EncodeActivities.encode_video, request, timeout=LONG, heartbeat=True
                )
        except asyncio.CancelledError:
            state.status = "cancelled"
            raise
        except ActivityError as err:
            state.status = "cancelled" if isinstance(err.cause, CancelledError) else "failed"
            raise
        except ApplicationError:
            state.status = "failed"
            raise
        state.status, state.progress = "done", 1.0
        state.frames, state.size_bytes = media.frames, media.size_bytes
        state.queue, state.encoder = media.queue or state.queue, media.encoder
        return media

    # ------------------------------------------------------------------ helpers

    def _set_status(self, status: JobStatus) -> None:
        """CosmosStatus for visibility queries; a terminal value goes out in the same workflow
        task as the completion, so it never says SUCCEEDED of a job still running."""
        if self._visible:
            workflow.upsert_search_attributes([STATUS_KEY.value_set(status.value)])

    async def _stage(self, name: str, step: Awaitable[T]) -> T:
        self._state.stage = name
        started = workflow.time()
        result = await step
        self._state.stage_seconds[name] = round(workflow.time() - started, 3)
        if _cancel_requested():
            raise asyncio.CancelledError(f"cancelled during {name}")
        return result

    def _call(
        self,
        fn: Any,
        arg: Any,
        *,
        timeout: timedelta = SHORT,
        heartbeat: bool = False,
        attempts: int | None = None,
        task_queue: str = CPU_QUEUE,
        schedule_to_start: timedelta | None = None,
    ) -> Any:
        assert self._job is not None
        retry = self._job.retry
        return workflow.execute_activity_method(
            fn,
            arg,
            task_queue=task_queue,
            start_to_close_timeout=timeout,
            schedule_to_start_timeout=schedule_to_start,
            heartbeat_timeout=(
                timedelta(seconds=self._job.heartbeat_timeout_s) if heartbeat else None
            ),
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=retry.initial_interval_s),
                backoff_coefficient=2.0,
                maximum_interval=timedelta(seconds=retry.initial_interval_s * 60),
                maximum_attempts=attempts or retry.max_attempts,
                non_retryable_error_types=NON_RETRYABLE,
            ),
        )

    async def _finish(
        self,
        status: JobStatus,
        *,
        error: ErrorInfo | None = None,
        manifests: Manifests | None = None,
    ) -> None:
        """Saga end: compensate (remove everything a failed job wrote), then notify.

        Neither may change the job's outcome: their own failures are logged, not raised.
        """
        assert self._job is not None
        job = self._job
        previous = self._state.stage
        self._state.stage = "cleanup"
        if status is not JobStatus.SUCCEEDED:
            for r in self._state.renditions:
                if r.status in ("pending", "encoding"):
                    r.status = "cancelled"
        try:
            await self._call(
                LifecycleActivities.cleanup,
                CleanupInput(
                    job_id=job.job_id,
                    output_uri=job.output_uri,
                    scratch_uri=job.scratch_uri,
                    remove_outputs=status is not JobStatus.SUCCEEDED,
                ),
                attempts=10,
            )
        except ActivityError as err:
            workflow.logger.error("cleanup of %s failed: %s", job.job_id, err.cause or err)
        try:
            await self._call(
                LifecycleActivities.notify,
                NotifyInput(
                    job_id=job.job_id,
                    status=status.value,
                    webhook_url=job.webhook_url,
                    error=error,
                    manifests=manifests,
                ),
                attempts=5,
            )
        except ActivityError as err:
            workflow.logger.warning("notify of %s failed: %s", job.job_id, err.cause or err)
        self._state.stage = "done" if status is JobStatus.SUCCEEDED else previous


def _cancel_requested() -> bool:
    """A cancel that arrives while an activity is completing anyway is not raised by the SDK
    (the activity's result wins); the run task still counts it, so it is not lost."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def _cancel_and_wait(tasks: list[asyncio.Task[EncodedMedia]]) -> None:
    for task in tasks:
        task.cancel()
    await workflow.wait(tasks)


def _not_picked_up(err: ActivityError) -> bool:
    cause = err.cause
    return isinstance(cause, TimeoutError) and cause.type == TimeoutType.SCHEDULE_TO_START


def _error_info(err: ActivityError | ApplicationError) -> ErrorInfo:
    """The innermost reason, in words a person can act on."""
    if isinstance(err, ApplicationError):
        return ErrorInfo(type=err.type or "ApplicationError", message=err.message)
    cause = err.cause
    if isinstance(cause, ApplicationError):
        return ErrorInfo(type=cause.type or "ApplicationError", message=cause.message)
    if isinstance(cause, TimeoutError):
        return ErrorInfo(type="Timeout", message=f"{err.activity_type} timed out ({cause.type})")
    return ErrorInfo(type=type(cause or err).__name__, message=str(cause or err))
