"""InspectWorkflow: the probe alone, for ``POST /v1/inspect`` and ``cosmos inspect``.

A workflow (not a direct call from the API) so the probe runs on a worker that can read the
source (allowed roots, S3 credentials), with the platform's retry policy; the history is one
activity long. Workflow code: deterministic.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from app.core.models import InspectInput, ProbeInput, ProbeResult
    from app.plato.workflows.calls import NON_RETRYABLE, SHORT
    from app.stratum.functions.analyze import AnalyzeActivities
    from app.stratum.queues import CPU_QUEUE

# idet and the VFR scan read a few seconds of video: well inside the encode's probe budget.
PROBE_TIMEOUT = SHORT


@workflow.defn
class InspectWorkflow:
    @workflow.run
    async def run(self, input: InspectInput) -> ProbeResult:
        """Every stream of the source as the probe reports it; InvalidSource is not retried."""
        retry = input.retry
        result: ProbeResult = await workflow.execute_activity_method(
            AnalyzeActivities.probe_source,
            ProbeInput(source_uri=input.source_uri, job_id=input.job_id, keep_copy=False),
            task_queue=CPU_QUEUE,
            start_to_close_timeout=PROBE_TIMEOUT,
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=retry.initial_interval_s),
                backoff_coefficient=2.0,
                maximum_interval=timedelta(seconds=retry.initial_interval_s * 60),
                maximum_attempts=retry.max_attempts,
                non_retryable_error_types=NON_RETRYABLE,
            ),
        )
        return result
