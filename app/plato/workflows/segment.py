"""EncodeSegmentWorkflow: the ``encode-segment`` function of a pipeline, chunked as
``POST /v1/encode`` chunks: split on keyframes, chunk ranges in child workflows over the pools,
then assemble. A title too short to cut (or chunking turned off) is one ``encode-segment``
activity, the same as before the function ran as a workflow.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from app.core.models import (
        ChunkPlan,
        ChunkProgress,
        ChunkRangeInput,
        ChunkRangeResult,
        EncodedMedia,
        EncodeJob,
        EncodeSegmentInput,
        EncodeSegmentOutput,
        RetryOptions,
        SegmentPlan,
    )
    from app.media.chunking import ranges, window_share, worth_chunking
    from app.plato.workflows.calls import LONG, SHORT, all_or_none, call
    from app.plato.workflows.chunks import (
        PROGRESS_SIGNAL,
        ChunkRangeWorkflow,
        assemble_request,
        split_request,
    )
    from app.plato.workflows.pipeline import FunctionCall, run_step
    from app.stratum.builtins import plan_segment
    from app.stratum.functions.chunks import ChunkActivities
    from app.stratum.queues import WORKFLOW_QUEUE


@workflow.defn
class EncodeSegmentWorkflow:
    def __init__(self) -> None:
        self._chunks_done: dict[str, int] = {}

    @workflow.signal(name=PROGRESS_SIGNAL)
    def chunk_progress(self, progress: ChunkProgress) -> None:
        self._chunks_done[progress.child_id] = progress.done

    @workflow.query
    def chunks_done(self) -> int:
        return sum(self._chunks_done.values())

    @workflow.run
    async def run(self, request: FunctionCall) -> EncodeSegmentOutput:
        segment = EncodeSegmentInput.model_validate(request.input)
        probe = segment.probe
        if not worth_chunking(
            probe.duration_s,
            probe.video.variable_frame_rate,
            segment.chunk_seconds,
            segment.min_chunk_seconds,
        ):
            return await self._whole(request)
        plan: SegmentPlan = await workflow.execute_activity(
            plan_segment,
            segment,
            start_to_close_timeout=SHORT,
            retry_policy=request.retry.policy(),
            task_queue=request.spec.task_queue,
        )
        if plan.rendition is None:
            return EncodeSegmentOutput(rendition=None, media=None, dropped=plan.dropped)
        # The rule's retry covers every activity of the call (backoff: the encode pipeline's).
        job = plan.job.model_copy(
            update={
                "retry": RetryOptions(
                    max_attempts=request.retry.max_attempts,
                    initial_interval_s=request.retry.initial_interval_s,
                )
            }
        )
        chunks: ChunkPlan = await call(
            job, ChunkActivities.split, split_request(job, probe), timeout=LONG, heartbeat=True
        )
        if chunks.count < 2:
            return await self._whole(request)
        results = await self._encode_chunks(request.id, job, plan, chunks, probe.video.rotation)
        media: EncodedMedia = await call(
            job,
            ChunkActivities.assemble,
            assemble_request(job, probe, plan.rendition, chunks),
            timeout=LONG,
            heartbeat=True,
        )
        name = plan.rendition.name
        queues = sorted({q for r in results for q in r.queues})
        encoder = next((r.encoders[name] for r in results if r.encoders), None)
        media = media.model_copy(update={"encoder": encoder, "queue": ",".join(queues) or None})
        return EncodeSegmentOutput(rendition=plan.rendition, media=media)

    async def _whole(self, request: FunctionCall) -> EncodeSegmentOutput:
        output = await run_step(
            request.step,
            request.input,
            request.spec.model_copy(update={"workflow": None}),
            request.retry,
            request.step,
            request.id,
        )
        return EncodeSegmentOutput.model_validate(output)

    async def _encode_chunks(
        self, me: str, job: EncodeJob, plan: SegmentPlan, chunks: ChunkPlan, rotation: int
    ) -> list[ChunkRangeResult]:
        """All ranges at once, sharing the job's window; the first failure cancels the rest."""
        assert plan.rendition is not None
        spans = ranges(chunks.count)
        window = window_share(job.window, len(spans))
        work = [
            workflow.execute_child_workflow(
                ChunkRangeWorkflow.run,
                ChunkRangeInput(
                    job=job,
                    renditions=[plan.rendition],
                    route=None,
                    chunks=[chunks.chunk(i) for i in range(first, last)],
                    segment_seconds=job.segment_seconds,
                    rotation=rotation,
                    window=window,
                ),
                id=f"{me}-chunks-{first:05d}",
                task_queue=WORKFLOW_QUEUE,
            )
            for first, last in spans
        ]
        return await all_or_none(work)
