"""ChunkRangeWorkflow: a range of chunks encoded with a sliding window of tasks in flight.

A child per range keeps every history small (see ``app.media.chunking.CHUNKS_PER_CHILD``) and the
window keeps the pending activities of a workflow task far under Temporal's 2,000.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from app.core.models import (
        Chunk,
        ChunkProgress,
        ChunkRangeInput,
        ChunkRangeResult,
        ChunkResult,
        EncodeChunkInput,
    )
    from app.plato.workflows.calls import call_routed
    from app.stratum.functions.chunks import ChunkActivities

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
