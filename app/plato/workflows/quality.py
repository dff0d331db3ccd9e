"""QualityWorkflow: VMAF, PSNR and SSIM of distorted files against a reference, chunked.

probe (sources) → prepare (local, measured; a published rendition joined into one file) →
align (strict: a mismatch fails at once; auto: resample and compare the common duration) →
measure (a sliding window of chunk tasks over the CPU pool, each every comparison at once) →
assemble (``quality.json`` and per-frame JSON in the output location) → cleanup (scratch).
Workflow code: deterministic; the rules are ``app.media.quality``'s pure functions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from fractions import Fraction
from typing import TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from app.core.models import (
        CleanupInput,
        ProbeInput,
        ProbeResult,
        QualityAssembleInput,
        QualityChunk,
        QualityChunkInput,
        QualityChunkResult,
        QualityComparison,
        QualityFile,
        QualityJob,
        QualityMedia,
        QualityPair,
        QualityPrepareInput,
        QualityResult,
        QualityView,
        RenditionState,
        WorkflowState,
    )
    from app.core.progress import overall_progress
    from app.media.quality import QualityMismatch, align, compare_format, plan_chunks
    from app.plato.workflows.calls import LONG, call, cancelled, error_info
    from app.stratum.functions.analyze import AnalyzeActivities
    from app.stratum.functions.lifecycle import LifecycleActivities
    from app.stratum.functions.quality import QualityActivities

T = TypeVar("T")
QUALITY_TYPE = "QualityWorkflow"
QUALITY_MISMATCH = "QualityMismatch"
STAGE_WEIGHTS = {"probe": 0.04, "prepare": 0.04, "measure": 0.88, "assemble": 0.04}


def quality_progress(stage: str, renditions: list[RenditionState]) -> float:
    """A quality job's progress bar: measuring is nearly all of it, by chunks finished."""
    return overall_progress(stage, renditions, STAGE_WEIGHTS, busy="measure")


def quality_details(result: QualityResult) -> str:
    """The Web UI's details pane (Markdown): each comparison's headline numbers."""
    lines = []
    for c in result.comparisons:
        parts = []
        for view in c.views:
            where = f"{view.width}x{view.height}"
            if view.vmaf is not None and view.vmaf.mean is not None:
                parts.append(f"VMAF {view.vmaf.mean:.2f} at {where} ({view.at})")
            if view.psnr is not None and view.psnr.average.mean is not None:
                parts.append(f"PSNR {view.psnr.average.mean:.2f} dB")
            if view.ssim is not None and view.ssim.all.mean is not None:
                parts.append(f"SSIM {view.ssim.all.mean:.4f}")
        lines.append(f"**{c.name}** " + ", ".join(parts))
    return "\n".join(lines)


def published(result: QualityResult, staging_uri: str, target_uri: str) -> QualityResult:
    """URIs as they are once the package written in staging is published at ``target_uri``."""

    def moved(uri: str) -> str:
        return target_uri + uri[len(staging_uri) :] if uri.startswith(staging_uri) else uri

    return result.model_copy(
        update={
            "quality_uri": moved(result.quality_uri),
            "comparisons": [
                c.model_copy(update={"frames_uri": moved(c.frames_uri)}) for c in result.comparisons
            ],
        }
    )


def _label(comparison: QualityComparison) -> str:
    return "the distorted" if comparison.name == "distorted" else f"rendition {comparison.name}"


@workflow.defn
class QualityWorkflow:
    def __init__(self) -> None:
        self._state = WorkflowState()
        self._job: QualityJob | None = None

    @workflow.query
    def state(self) -> WorkflowState:
        return self._state

    @workflow.run
    async def run(self, job: QualityJob) -> QualityResult:
        self._job = job
        try:
            probes = await self._stage("probe", self._probe(job))
            media = await self._stage("prepare", self._prepare(job, probes))
            reference, distorted = media[0], media[1:]
            pairs = self._align(job, reference, distorted)
            rate = Fraction(reference.frame_rate)
            frames = min(p.frames // p.multiplier for p in pairs)
            chunks = plan_chunks(frames, rate, job.chunk_seconds)
            self._state.renditions = [
                RenditionState(
                    name=p.name,
                    codec="+".join(dict.fromkeys(m for v in p.views for m in v.metrics)),
                    width=p.views[0].width or 0,
                    height=p.views[0].height or 0,
                    status="encoding",
                    chunks_done=0,
                    chunks_total=len(chunks),
                )
                for p in pairs
            ]
            await self._stage("measure", self._measure(job, reference, pairs, chunks))
            result: QualityResult = await self._stage(
                "assemble",
                call(
                    job,
                    QualityActivities.assemble,
                    QualityAssembleInput(
                        job_id=job.job_id,
                        scratch_uri=job.scratch_uri,
                        output_uri=job.output_uri,
                        reference=reference,
                        pairs=pairs,
                        chunks=len(chunks),
                        of_job=job.of_job,
                        target_uri=job.target_uri,
                    ),
                    timeout=LONG,
                ),
            )
        except (asyncio.CancelledError, ActivityError, ApplicationError) as err:
            await self._cleanup(job, failed=True)
            if cancelled(err):
                raise
            error = error_info(err)
            raise ApplicationError(error.message, type=error.type, non_retryable=True) from err
        for state in self._state.renditions:
            state.status, state.progress = "done", 1.0
        await self._cleanup(job, failed=False)
        self._state.stage = "done"
        return result.model_copy(update={"stage_seconds": dict(self._state.stage_seconds)})

    # ------------------------------------------------------------------ stages

    async def _probe(self, job: QualityJob) -> list[ProbeResult | None]:
        """The platform's probe of every source file (a readable video, its rate, rotation,
        variable rate); published renditions are known already."""
        files = [job.reference, *(c.distorted for c in job.comparisons)]

        async def one(file: QualityFile) -> ProbeResult | None:
            if file.kind != "source":
                return None
            probe: ProbeResult = await call(
                job,
                AnalyzeActivities.probe_source,
                ProbeInput(source_uri=file.uri, job_id=job.job_id),
            )
            return probe

        return list(await asyncio.gather(*(one(f) for f in files)))

    async def _prepare(
        self, job: QualityJob, probes: list[ProbeResult | None]
    ) -> list[QualityMedia]:
        names = ["reference", *(f"distorted-{c.name}" for c in job.comparisons)]
        files = [job.reference, *(c.distorted for c in job.comparisons)]
        rates: list[str | None] = [None, *(c.frame_rate for c in job.comparisons)]

        async def one(name: str, file: QualityFile, probe: ProbeResult | None,
                      rate: str | None) -> QualityMedia:  # fmt: skip
            media: QualityMedia = await call(
                job,
                QualityActivities.prepare,
                QualityPrepareInput(
                    job_id=job.job_id,
                    scratch_uri=job.scratch_uri,
                    name=name,
                    file=file,
                    container=probe.container if probe else None,
                ),
                timeout=LONG,
                heartbeat=True,
            )
            if probe is None:
                return media.model_copy(update={"frame_rate": rate or media.frame_rate})
            video = probe.video
            turned = video.rotation in (90, 270)  # ffmpeg decodes it upright
            return media.model_copy(
                update={
                    "frame_rate": video.frame_rate,
                    "width": video.height if turned else video.width,
                    "height": video.width if turned else video.height,
                    "variable_frame_rate": video.variable_frame_rate,
                }
            )

        work = [one(*args) for args in zip(names, files, probes, rates, strict=True)]
        return list(await asyncio.gather(*work))

    def _align(
        self, job: QualityJob, reference: QualityMedia, distorted: list[QualityMedia]
    ) -> list[QualityPair]:
        pairs = []
        for comparison, media in zip(job.comparisons, distorted, strict=True):
            settings = comparison.encoded_with
            multiplier = 2 if settings is not None and settings.deinterlace == "field" else 1
            try:
                aligned = align(
                    reference, media, job.align, label=_label(comparison), multiplier=multiplier
                )
            except QualityMismatch as err:
                raise ApplicationError(
                    str(err), type=QUALITY_MISMATCH, non_retryable=True
                ) from None
            views = [
                QualityView(
                    at=v.at,
                    width=v.width or reference.width,
                    height=v.height or reference.height,
                    metrics=v.metrics,
                )
                for v in comparison.views
            ]
            pairs.append(
                QualityPair(
                    name=comparison.name,
                    distorted=media,
                    views=views,
                    multiplier=multiplier,
                    resample_reference=aligned.resample_reference,
                    resample_distorted=aligned.resample_distorted,
                    pix_fmt=compare_format(media.pix_fmt),
                    encoded_with=settings,
                    frames=aligned.frames,
                    notes=aligned.notes,
                )
            )
        return pairs

    async def _measure(
        self,
        job: QualityJob,
        reference: QualityMedia,
        pairs: list[QualityPair],
        chunks: list[QualityChunk],
    ) -> None:
        """Chunk tasks with a sliding window of ``job.window`` in flight; the first failure
        cancels the rest (and waits for their ffmpeg to be dead)."""
        pending: list[asyncio.Task[QualityChunkResult]] = []
        finished = 0

        async def collect() -> None:
            nonlocal pending, finished
            await workflow.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            done = [t for t in pending if t.done()]
            pending = [t for t in pending if not t.done()]
            for task in done:
                task.result()
                finished += 1
            for state in self._state.renditions:
                state.chunks_done = finished
                state.progress = round(finished / len(chunks), 4)

        try:
            for chunk in chunks:
                while len(pending) >= job.window:
                    await collect()
                request = QualityChunkInput(
                    job_id=job.job_id,
                    scratch_uri=job.scratch_uri,
                    reference=reference,
                    pairs=pairs,
                    chunk=chunk,
                )
                pending.append(asyncio.create_task(self._chunk(job, request)))
            while pending:
                await collect()
        except BaseException:
            for task in pending:
                task.cancel()
            if pending:
                await workflow.wait(pending)
            raise

    async def _chunk(self, job: QualityJob, request: QualityChunkInput) -> QualityChunkResult:
        result: QualityChunkResult = await call(
            job, QualityActivities.measure_chunk, request, timeout=LONG, heartbeat=True
        )
        return result

    # ------------------------------------------------------------------ helpers

    async def _stage(self, name: str, step: Awaitable[T]) -> T:
        self._state.stage = name
        started = workflow.time()
        result = await step
        self._state.stage_seconds[name] = round(workflow.time() - started, 3)
        return result

    async def _cleanup(self, job: QualityJob, *, failed: bool) -> None:
        """Scratch always goes; a failed or cancelled job's outputs too. Never the outcome.
        Inside an encode job (``cleanup`` false) that job's own saga does it."""
        if not job.cleanup:
            return
        previous = self._state.stage
        self._state.stage = "cleanup"
        if failed:
            for state in self._state.renditions:
                if state.status == "encoding":
                    state.status = "failed"
        try:
            await call(
                job,
                LifecycleActivities.cleanup,
                CleanupInput(
                    job_id=job.job_id,
                    output_uri=job.output_uri,
                    scratch_uri=job.scratch_uri,
                    remove_outputs=failed,
                ),
                attempts=10,
            )
        except ActivityError as err:
            workflow.logger.error("cleanup of %s failed: %s", job.job_id, err.cause or err)
        self._state.stage = previous
