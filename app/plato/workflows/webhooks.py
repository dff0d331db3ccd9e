"""Webhook events: a job emits them without waiting; a workflow of their own delivers them.

The job starts ``WebhookWorkflow`` as a child with its first event and signals the rest. The
child outlives the job (``ABANDON``), so an event is retried for ``retry_hours`` after the job
has ended, and a receiver that is down never blocks, slows or fails the job.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    FailureError,
    WorkflowAlreadyStartedError,
)

with workflow.unsafe.imports_passed_through():
    from app.core.models import (
        FINAL_EVENTS,
        WebhookCall,
        WebhookDelivery,
        WebhookEvent,
        WebhookEventType,
        WebhookRun,
        WebhookTarget,
    )
    from app.stratum.functions.lifecycle import LifecycleActivities
    from app.stratum.queues import NOTIFY_QUEUE, WORKFLOW_QUEUE

EVENT_SIGNAL = "webhook_event"
IDLE = timedelta(days=7)
"""A job that never sends its final event (terminated) leaves its deliverer this long."""
MAX_INTERVAL = timedelta(hours=1)


@workflow.defn
class WebhookWorkflow:
    """Delivers one job run's events in order, each with Temporal's retries for up to
    ``retry_hours``; ends after the final event (succeeded, failed or cancelled)."""

    def __init__(self) -> None:
        self._queue: list[WebhookEvent] = []
        self._deliveries: list[WebhookDelivery] = []

    @workflow.signal(name=EVENT_SIGNAL)
    def add(self, event: WebhookEvent) -> None:
        self._queue.append(event)
        self._deliveries.append(WebhookDelivery(event_id=event.id, type=event.type))

    @workflow.query
    def deliveries(self) -> list[WebhookDelivery]:
        return self._deliveries

    @workflow.run
    async def run(self, run: WebhookRun) -> list[WebhookDelivery]:
        self.add(run.first)
        while True:
            try:
                await workflow.wait_condition(lambda: bool(self._queue), timeout=IDLE)
            except TimeoutError:
                return self._deliveries
            event = self._queue.pop(0)
            await self._deliver(run.target, event)
            if event.type in FINAL_EVENTS and not self._queue:
                return self._deliveries

    async def _deliver(self, target: WebhookTarget, event: WebhookEvent) -> None:
        delivery = next(d for d in self._deliveries if d.event_id == event.id)
        delivery.state = "delivering"
        try:
            answer = await workflow.execute_activity_method(
                LifecycleActivities.deliver_webhook,
                WebhookCall(target=target, event=event),
                task_queue=NOTIFY_QUEUE,
                activity_id=event.id,
                summary=f"{event.type} to {target.url}"[:200],
                start_to_close_timeout=timedelta(seconds=30),
                schedule_to_close_timeout=timedelta(hours=target.retry_hours),
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=1),
                    backoff_coefficient=2.0,
                    maximum_interval=min(MAX_INTERVAL, timedelta(hours=target.retry_hours) / 4),
                    non_retryable_error_types=["WebhookRefused", "WebhookNoSecret"],
                ),
            )
        except ActivityError as err:
            delivery.state = "failed"
            last = _last_attempt(err)
            delivery.last_error = last.message if last else str(err.cause or err)
            details = _details(last)
            # the attempts whose answers are known: one cut short by the deadline is not
            delivery.attempts = int(details.get("attempt") or 0)
            delivery.last_status = details.get("status")
            workflow.logger.warning("webhook event %s not delivered: %s", event.id, err.cause)
            return
        delivery.state, delivery.delivered_at = "delivered", workflow.now()
        delivery.attempts, delivery.last_status = answer.attempt, answer.status_code


def _last_attempt(err: BaseException) -> ApplicationError | None:
    """The last attempt's failure, under a retry timeout where the hours ran out."""
    cause: BaseException | None = err
    while cause is not None and not isinstance(cause, ApplicationError):
        cause = cause.__cause__ if not isinstance(cause, FailureError) else cause.cause
    return cause


def _details(err: ApplicationError | None) -> dict[str, Any]:
    if err is None or not err.details or not isinstance(err.details[0], dict):
        return {}
    return err.details[0]


class JobEvents:
    """What a job workflow calls to emit events. ``emit`` returns at once (signal handlers
    may call it); one task sends them to the deliverer in order; ``flush`` before the run
    ends, so the final event is on its way before the job reports done."""

    def __init__(self, job_id: str, target: WebhookTarget | None, progress_step: int) -> None:
        self._job_id = job_id
        self._target = target
        self._step = progress_step
        self._bucket = 0
        self._pending: list[WebhookEvent] = []
        self._sender: asyncio.Task[None] | None = None
        self._child: workflow.ChildWorkflowHandle[Any, Any] | None = None
        self.workflow_id = (
            f"{job_id}-webhooks-{workflow.info().run_id}" if target is not None else None
        )

    def emit(self, type: WebhookEventType, **data: Any) -> None:
        if self._target is None:
            return
        self._pending.append(
            WebhookEvent(
                id=f"evt_{workflow.uuid4().hex}",
                type=type,
                job_id=self._job_id,
                created_at=workflow.now(),
                data=data,
            )
        )
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send())

    def progress(self, fraction: float) -> None:
        """One ``job.progress`` each time the job passes another ``progress_step`` percent
        (short of 100: that is ``job.succeeded``)."""
        bucket = int(fraction * 100 + 1e-6) // self._step
        if bucket > self._bucket and fraction < 1:
            self._bucket = bucket
            self.emit("job.progress", percent=round(fraction * 100, 1))

    async def flush(self) -> None:
        if self._sender is not None:
            await self._sender

    async def _send(self) -> None:
        assert self._target is not None and self.workflow_id is not None
        while self._pending:
            event = self._pending.pop(0)
            try:
                if self._child is None:
                    self._child = await workflow.start_child_workflow(
                        WebhookWorkflow.run,
                        WebhookRun(target=self._target, first=event),
                        id=self.workflow_id,
                        task_queue=WORKFLOW_QUEUE,
                        parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                        static_summary=f"webhook events of {self._job_id}",
                    )
                else:
                    await self._child.signal(EVENT_SIGNAL, event)
            except (FailureError, WorkflowAlreadyStartedError) as err:  # never the job's failure
                workflow.logger.warning("webhook event %s not queued: %s", event.id, err)
