"""How the workflows call activities: one retry policy, one routing rule with its CPU fallback.

Workflow code (deterministic): imported by EncodeWorkflow and ChunkRangeWorkflow alike.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any, Protocol, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    ChildWorkflowError,
    TimeoutError,
    TimeoutType,
    is_cancelled_exception,
)

with workflow.unsafe.imports_passed_through():
    from app.core.models import EncodeJob, ErrorInfo, RetryOptions, Route
    from app.stratum.queues import CPU_QUEUE

T = TypeVar("T")
NON_RETRYABLE = ["InvalidSource", "PlanError", "NoCapablePool", "AssemblyError", "ValidationError"]
SHORT = timedelta(minutes=2)
LONG = timedelta(hours=6)
CANCEL_PATCH = "activity-cancel-is-cancel"
"""Histories recorded before a cancel that came back as an activity's error counted as one
replay as they ran: failed."""


def heartbeat_timeout(stall_s: float) -> timedelta:
    """The server's backstop for a worker that died: later than the worker's own watchdog
    (an ffmpeg silent for ``stall_s`` is killed and reported with its reason), so a live
    worker's reason is what the job shows, not a bare timeout."""
    return timedelta(seconds=stall_s * 1.25 + 1)


class CallOptions(Protocol):
    """What ``call`` reads of a job: an encode job, a quality job."""

    @property
    def retry(self) -> RetryOptions: ...

    @property
    def heartbeat_timeout_s(self) -> float: ...


def call(
    job: CallOptions,
    fn: Any,
    arg: Any,
    *,
    timeout: timedelta = SHORT,
    heartbeat: bool = False,
    attempts: int | None = None,
    task_queue: str = CPU_QUEUE,
    schedule_to_start: timedelta | None = None,
) -> Any:
    """An activity with the job's retry policy. Cancellation waits for the activity to stop,
    so its ffmpeg is dead before anything (compensation) runs after it."""
    retry = job.retry
    return workflow.execute_activity_method(
        fn,
        arg,
        task_queue=task_queue,
        start_to_close_timeout=timeout,
        schedule_to_start_timeout=schedule_to_start,
        heartbeat_timeout=heartbeat_timeout(job.heartbeat_timeout_s) if heartbeat else None,
        cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        retry_policy=RetryPolicy(
            initial_interval=timedelta(seconds=retry.initial_interval_s),
            backoff_coefficient=2.0,
            maximum_interval=timedelta(seconds=retry.initial_interval_s * 60),
            maximum_attempts=attempts or retry.max_attempts,
            non_retryable_error_types=NON_RETRYABLE,
        ),
    )


async def call_routed(
    job: EncodeJob, fn: Any, arg: Any, route: Route | None, label: str
) -> tuple[Any, str]:
    """Encode work on its routed pool; returns the result and the queue that ran it.

    GPU work that no GPU worker starts within ``gpu_schedule_to_start_s`` goes to the CPU
    pool when the job said ``auto``; with ``gpu`` it fails with the reason.
    """
    queue = route.queue if route else CPU_QUEUE
    if queue == CPU_QUEUE:
        return await call(job, fn, arg, timeout=LONG, heartbeat=True), queue
    waited = timedelta(seconds=job.gpu_schedule_to_start_s)
    try:
        result = await call(
            job, fn, arg, timeout=LONG, heartbeat=True, task_queue=queue, schedule_to_start=waited
        )
        return result, queue
    except ActivityError as err:
        if not _not_picked_up(err):
            raise
        if job.accelerator == "gpu":
            raise ApplicationError(
                f"no GPU worker on {queue} took {label} within {job.gpu_schedule_to_start_s:g}s",
                type="NoCapablePool",
                non_retryable=True,
            ) from err
        workflow.logger.warning(
            "%s waited %gs on %s; falling back to %s",
            label,
            job.gpu_schedule_to_start_s,
            queue,
            CPU_QUEUE,
        )
    return await call(job, fn, arg, timeout=LONG, heartbeat=True), CPU_QUEUE


def _not_picked_up(err: ActivityError) -> bool:
    cause = err.cause
    return isinstance(cause, TimeoutError) and cause.type == TimeoutType.SCHEDULE_TO_START


def cancelled(err: BaseException) -> bool:
    """Whether ``err`` is the run's cancellation. A cancel that reaches an activity the run
    awaits comes back as that activity's error (``ActivityError`` caused by ``CancelledError``,
    as under ``WAIT_CANCELLATION_COMPLETED`` or before a worker took the task), not as
    asyncio's: it is a cancel all the same, never a failure."""
    if isinstance(err, asyncio.CancelledError):
        return True
    return is_cancelled_exception(err) and workflow.patched(CANCEL_PATCH)


def error_info(err: BaseException) -> ErrorInfo:
    """The innermost reason, in words a person can act on (through child workflows too)."""
    while isinstance(err, ActivityError | ChildWorkflowError) and err.cause is not None:
        if isinstance(err, ActivityError) and isinstance(err.cause, TimeoutError):
            return ErrorInfo(
                type="Timeout", message=f"{err.activity_type} timed out ({err.cause.type})"
            )
        err = err.cause
    if isinstance(err, ApplicationError):
        return ErrorInfo(type=err.type or "ApplicationError", message=err.message)
    return ErrorInfo(type=type(err).__name__, message=str(err))


async def all_or_none(work: list[Coroutine[Any, Any, T]]) -> list[T]:
    """Run all in parallel; on the first failure or a cancellation the others are cancelled
    and awaited, so their ffmpeg processes are dead before compensation removes their files."""
    if not work:
        return []
    tasks = [asyncio.create_task(w) for w in work]
    try:
        await workflow.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    except asyncio.CancelledError:
        await cancel_and_wait(tasks)
        raise
    failed = [t for t in tasks if t.done() and not t.cancelled() and t.exception()]
    if failed:
        await cancel_and_wait(tasks)
        raise failed[0].exception()  # type: ignore[misc]
    return [t.result() for t in tasks]


async def cancel_and_wait(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    await workflow.wait(tasks)
