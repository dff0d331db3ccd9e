"""ChunkRangeWorkflow: a range of chunks encoded with a sliding window of tasks in flight.

A child per range keeps every history small (see ``app.media.chunking.CHUNKS_PER_CHILD``) and the
window keeps the pending activities of a workflow task far under Temporal's 2,000.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from fractions import Fraction

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from app.core.models import (
        AssembleInput,
        Chunk,
        ChunkPlan,
        ChunkProgress,
        ChunkRangeInput,
        ChunkRangeResult,
        ChunkResult,
        EncodeChunkInput,
        EncodeJob,
        ProbeResult,
        Rendition,
        SplitInput,
    )
    from app.media.chunking import output_frames
    from app.plato.workflows.calls import call_routed
    from app.stratum.functions.chunks import ChunkActivities


def split_request(job: EncodeJob, probe: ProbeResult) -> SplitInput:
    """The split of a job's source (EncodeWorkflow's, and each chunked encode-segment's)."""
    return SplitInput(
        job_id=job.job_id,
        source_uri=job.source_uri,
        container=probe.container,
        scratch_uri=job.scratch_uri,
        duration_s=probe.duration_s,
        chunk_seconds=job.chunk_seconds,
        min_chunk_seconds=job.min_chunk_seconds,
        segment_seconds=job.segment_seconds,
    )


def assemble_request(
    job: EncodeJob, probe: ProbeResult, rendition: Rendition, chunks: ChunkPlan
) -> AssembleInput:
    """One rendition's join, checked against the whole title's frames and duration."""
    rate = probe.video.frame_rate
    return AssembleInput(
        job_id=job.job_id,
        scratch_uri=job.scratch_uri,
        rendition=rendition,
        chunks=chunks.count,
        expected_frames=output_frames(chunks.frames, rate, rendition.settings.frame_rate),
        expected_duration_s=float(chunks.frames / Fraction(rate)),
    )


PROGRESS_SIGNAL = "chunk_progress"
PROGRESS_REPORTS = 10
"""Progress signals a child sends its parent, at most, besides the final one."""


@workflow.defn
class ChunkRangeWorkflow:
    @workflow.run
    async def run(self, input: ChunkRangeInput) -> ChunkRangeResult:
        results: list[ChunkResult] = []
        queues: list[str] = []
        # A list, not a set: commands (cancellations) must go out in the same order on replay.
        pending: list[asyncio.Task[tuple[ChunkResult, str]]] = []
        peak = 0
        report_every = max(1, len(input.chunks) // PROGRESS_REPORTS)
        reported = 0

        async def collect() -> None:
            nonlocal pending, reported
            await workflow.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            done = [task for task in pending if task.done()]
            pending = [task for task in pending if not task.done()]
            for task in done:
                result, queue = task.result()  # a chunk out of attempts fails the range
                results.append(result)
                queues.append(queue)
            if len(results) - reported >= report_every:
                reported = len(results)
                await self._report(input, reported)

        try:
            for chunk in input.chunks:
                while len(pending) >= input.window:
                    await collect()
                pending.append(asyncio.create_task(self._encode(input, chunk)))
                peak = max(peak, len(pending))
            while pending:
                await collect()
        except BaseException:
            for task in pending:
                task.cancel()
            if pending:
                await workflow.wait(pending)
            raise
        if reported < len(results):
            await self._report(input, len(results))
        return ChunkRangeResult(
            codec=input.renditions[0].codec,
            chunks=len(results),
            reused=sum(r.reused for r in results),
            frames={
                r.name: sum(o.frames for c in results for o in c.outputs if o.name == r.name)
                for r in input.renditions
            },
            size_bytes={
                r.name: sum(o.size_bytes for c in results for o in c.outputs if o.name == r.name)
                for r in input.renditions
            },
            queues=dict(Counter(queues)),
            encoders={r.name: results[0].encoder for r in input.renditions} if results else {},
            peak_in_flight=peak,
        )

    async def _encode(self, input: ChunkRangeInput, chunk: Chunk) -> tuple[ChunkResult, str]:
        request = EncodeChunkInput(
            job_id=input.job.job_id,
            scratch_uri=input.job.scratch_uri,
            chunk=chunk,
            renditions=input.renditions,
            segment_seconds=input.segment_seconds,
            rotation=input.rotation,
            decode_check=input.job.quality is None,
        )
        result: ChunkResult
        result, queue = await call_routed(
            input.job, ChunkActivities.encode_chunk, request, input.route, f"chunk {chunk.index}"
        )
        return result, queue

    async def _report(self, input: ChunkRangeInput, done: int) -> None:
        parent = workflow.info().parent
        if parent is None:
            return
        handle = workflow.get_external_workflow_handle(parent.workflow_id, run_id=parent.run_id)
        await handle.signal(
            PROGRESS_SIGNAL,
            ChunkProgress(
                child_id=workflow.info().workflow_id,
                codec=input.renditions[0].codec,
                done=done,
            ),
        )
