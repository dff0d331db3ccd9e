"""EncodeWorkflow: probe → plan → encode (fan-out) → package → publish, with saga cleanup."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
)

with workflow.unsafe.imports_passed_through():
    from app.core.models import (
        AudioRendition,
        ChunkPlan,
        ChunkProgress,
        ChunkRangeInput,
        ChunkRangeResult,
        CleanupInput,
        Codec,
        EncodeAudioInput,
        EncodedMedia,
        EncodeJob,
        EncodeRenditionsInput,
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
        QualityComparison,
        QualityFile,
        QualityJob,
        QualityResult,
        Rendition,
        RenditionState,
        Route,
        RouteInput,
        SubtitleInput,
        SubtitleMedia,
        SubtitleRendition,
        ThumbnailInput,
        ThumbnailMedia,
        WebhookEventType,
        WebhookTarget,
        WholeSourceInput,
        WorkflowState,
    )
    from app.core.progress import overall_progress
    from app.media.chunking import (
        chunk_decision,
        chunk_progress,
        ranges,
        window_share,
        worth_chunking,
    )
    from app.media.quality import display_size, rendition_views
    from app.observability.search import STATUS as STATUS_KEY
    from app.plato.workflows.calls import (
        LONG,
        all_or_none,
        call,
        call_routed,
        cancelled,
        error_info,
    )
    from app.plato.workflows.chunks import (
        PROGRESS_SIGNAL,
        ChunkRangeWorkflow,
        assemble_request,
        split_request,
    )
    from app.plato.workflows.ladder import per_title_ladder
    from app.plato.workflows.quality import QualityWorkflow, published, quality_details
    from app.plato.workflows.webhooks import JobEvents
    from app.storage.object_store import join
    from app.stratum.functions.analyze import AnalyzeActivities
    from app.stratum.functions.audio import AudioActivities
    from app.stratum.functions.chunks import ChunkActivities
    from app.stratum.functions.encode import EncodeActivities
    from app.stratum.functions.lifecycle import LifecycleActivities
    from app.stratum.functions.package import PackageActivities
    from app.stratum.functions.routing import RoutingActivities
    from app.stratum.functions.subtitles import SubtitleActivities
    from app.stratum.functions.thumbnails import ThumbnailActivities
    from app.stratum.queues import CPU_QUEUE, WORKFLOW_QUEUE

T = TypeVar("T")

ROUTING_PATCH = "stratum-routing"
"""Histories recorded before routing existed replay without the route step."""
VISIBILITY_PATCH = "visibility"
"""Histories recorded before the CosmosStatus search attribute replay without its upserts."""
CHUNK_PATCH = "chunked"
"""Histories recorded before chunked encoding replay with one activity per rendition."""
THUMBNAIL_PATCH = "thumbnails"
"""Histories recorded before thumbnails replay without the thumbnail activity."""
QUALITY_PATCH = "quality"
"""Histories recorded before per-job quality replay without asking for it."""
WEBHOOK_PATCH = "webhook-events"
"""Histories recorded before webhook events replay with one notify activity at the end."""
WHOLE_LADDER_PATCH = "whole-ladder"
"""Histories recorded before chunking was decided by the pool's slots replay as they ran:
chunked when the title was long enough, else one activity per rendition."""
EARLY_ROUTE_PATCH = "route-with-probe"
"""The pools are read while the probe runs (routing needs only the job's codecs), which takes
the route and its workflow task off every job's critical path; histories recorded before
route after the plan."""


@dataclass
class Tracks:
    """What is encoded beside the video: the audio tracks, the subtitles, the thumbnails."""

    audio: list[EncodedMedia] = field(default_factory=list)
    subtitles: list[SubtitleMedia] = field(default_factory=list)
    thumbnails: ThumbnailMedia | None = None
    legacy_audio: EncodedMedia | None = None
    """The one track of a plan from before audio tracks (recorded histories)."""


@workflow.defn
class EncodeWorkflow:
    def __init__(self) -> None:
        self._state = WorkflowState()
        self._job: EncodeJob | None = None
        self._visible = False
        self._chunks_done: dict[str, dict[str, int]] = {}
        """codec -> chunk-range child workflow ID -> chunks it finished"""
        self._events: JobEvents | None = None
        """None: a run from before webhook events (see ``WEBHOOK_PATCH``)."""
        self._whole_ladder = False
        """Chunking decided by the pool's slots (see ``WHOLE_LADDER_PATCH``)."""
        self._one_decode = False
        """A title not chunked is encoded by one activity per codec (one slot polls), not one
        per rendition (side by side on several slots)."""

    @workflow.query
    def state(self) -> WorkflowState:
        return self._state

    @workflow.signal(name=PROGRESS_SIGNAL)
    def chunk_progress(self, progress: ChunkProgress) -> None:
        """Chunk-range children report chunks finished; renditions of that codec advance."""
        self._count_chunks(progress.codec, progress.child_id, progress.done)

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
        if workflow.patched(WEBHOOK_PATCH):
            self._events = JobEvents(job.job_id, _webhook_target(job), job.webhook_progress_step)
            self._state.webhook_workflow = self._events.workflow_id
            self._events.emit("job.accepted", source=job.source_uri, codec=job.codec)
        early_route: asyncio.Task[list[Route]] | None = None
        if job.ladder != "auto" and workflow.patched(EARLY_ROUTE_PATCH):
            # not for per-title ladders: their analysis runs for minutes before the encode
            early_route = asyncio.ensure_future(self._route(job, _job_codecs(job)))
        try:
            probe = await self._stage(
                "probe",
                self._call(
                    AnalyzeActivities.probe_source,
                    ProbeInput(source_uri=job.source_uri, job_id=job.job_id),
                ),
            )
            self._state.source = probe
            self._emit(
                "job.started",
                duration_s=probe.duration_s,
                width=probe.video.width,
                height=probe.video.height,
            )
            ladder = None
            if job.ladder == "auto":  # the title's own rungs, from its rate-quality hull
                ladder = await self._stage("ladder", per_title_ladder(job, probe))
                job = self._job = job.model_copy(update={"profiles": ladder.profiles})
            plan = await self._stage(
                "plan", self._call(AnalyzeActivities.plan, PlanInput(job=job, probe=probe))
            )
            self._state.dropped = plan.dropped
            self._state.not_carried = plan.not_carried
            self._state.renditions = [
                RenditionState(name=r.name, codec=r.codec, width=r.width, height=r.height)
                for r in plan.renditions
            ]
            routes: dict[str, Route] = {}
            codecs = sorted({r.codec for r in plan.renditions})
            if early_route is not None:
                decided = await self._stage("route", self._routed(job, early_route, codecs))
                routes = {route.codec: route for route in decided if route.codec in codecs}
            elif workflow.patched(ROUTING_PATCH):
                decided = await self._stage("route", self._route(job, codecs))
                routes = {route.codec: route for route in decided}
            chunks = None
            self._whole_ladder = workflow.patched(WHOLE_LADDER_PATCH)
            if self._whole_ladder:
                decision = self._state.chunking = chunk_decision(
                    probe.duration_s,
                    probe.video.variable_frame_rate,
                    job.chunk_seconds,
                    job.min_chunk_seconds,
                    auto=job.chunk_auto,
                    slots=_slots(routes),
                )
                self._one_decode = decision.slots is not None and decision.slots <= 1
                if decision.chunked:
                    chunks = await self._stage("split", self._split(job, probe))
            elif worth_chunking(
                probe.duration_s,
                probe.video.variable_frame_rate,
                job.chunk_seconds,
                job.min_chunk_seconds,
            ) and workflow.patched(CHUNK_PATCH):
                chunks = await self._stage("split", self._split(job, probe))
            if chunks is not None and chunks.count > 1:
                tracks = await self._stage(
                    "encode", self._encode_chunked(job, probe, plan, routes, chunks)
                )
                videos = await self._stage("assemble", self._assemble(job, probe, plan, chunks))
            else:
                videos, tracks = await self._stage(
                    "encode", self._encode_all(job, probe, plan, routes)
                )
            package = await self._stage(
                "package",
                self._call(
                    PackageActivities.package,
                    PackageInput(
                        job_id=job.job_id,
                        scratch_uri=job.scratch_uri,
                        videos=videos,
                        audio=tracks.legacy_audio,
                        segment_seconds=plan.segment_seconds,
                        plan=plan if plan.audio is not None else None,
                        audio_tracks=tracks.audio,
                        subtitles=tracks.subtitles,
                        thumbnails=tracks.thumbnails,
                        program_date_time=job.program_date_time,
                    ),
                    timeout=LONG,
                    heartbeat=True,
                ),
            )
            quality = None
            if job.quality is not None and workflow.patched(QUALITY_PATCH):
                quality = await self._stage(
                    "quality", self._quality(job, plan, videos, package.staging_uri)
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
                        audio=tracks.legacy_audio,
                        package=package,
                        stage_seconds=dict(self._state.stage_seconds),
                        audio_tracks=tracks.audio,
                        subtitles=tracks.subtitles,
                        quality=quality,
                        ladder_analysis=ladder,
                        chunking=self._state.chunking,
                    ),
                ),
            )
        except (asyncio.CancelledError, ActivityError, ApplicationError, ChildWorkflowError) as err:
            await _settled(early_route)
            if cancelled(err):
                await self._finish(JobStatus.CANCELLED)
                self._set_status(JobStatus.CANCELLED)
                raise
            error = error_info(err)
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
            source=probe,
            not_carried=plan.not_carried,
            webhook_workflow=self._state.webhook_workflow,
            quality=quality,
        )

    # ------------------------------------------------------------------ fan-out / fan-in

    async def _encode_all(
        self, job: EncodeJob, probe: ProbeResult, plan: Plan, routes: dict[str, Route]
    ) -> tuple[list[EncodedMedia], Tracks]:
        """The renditions of each codec from one decode where one encode slot polls, else
        one activity per rendition, side by side; the audio and subtitles, once, alongside."""
        if self._one_decode:
            codecs = sorted({r.codec for r in plan.renditions})
            groups = [[r for r in plan.renditions if r.codec == codec] for codec in codecs]
        else:
            groups = [[r] for r in plan.renditions]
        work: list[Coroutine[Any, Any, Any]] = [
            self._encode_renditions(job, probe, group, routes.get(group[0].codec))
            for group in groups
        ]
        results: list[Any] = await all_or_none([*work, self._tracks(job, probe, plan)])
        return [v for group in results[:-1] if group for v in group], results[-1]

    async def _tracks(self, job: EncodeJob, probe: ProbeResult, plan: Plan) -> Tracks:
        """Audio, subtitles and thumbnails, beside the video. Plans from before audio tracks
        (recorded histories) have ``audio`` None: their one AAC track is encoded as it was
        then. A thumbnail failure fails the job like any other output's: whole or nothing."""
        if plan.audio is None:
            return Tracks(legacy_audio=await self._encode_audio(job, probe, None))
        audio = [self._encode_audio(job, probe, track) for track in plan.audio]
        texts = [self._prepare_subtitles(job, probe, track) for track in plan.subtitles]
        images: list[Coroutine[Any, Any, Any]] = []
        if job.thumbnails is not None and workflow.patched(THUMBNAIL_PATCH):
            images.append(self._thumbnails(job, probe, plan))
        results = await all_or_none([*audio, *texts, *images])
        return Tracks(
            audio=[r for r in results[: len(audio)] if isinstance(r, EncodedMedia)],
            subtitles=[r for r in results[len(audio) :] if isinstance(r, SubtitleMedia)],
            thumbnails=next((r for r in results if isinstance(r, ThumbnailMedia)), None),
        )

    async def _thumbnails(self, job: EncodeJob, probe: ProbeResult, plan: Plan) -> ThumbnailMedia:
        """Sprite sheets and the poster, from the whole source, once per job."""
        assert job.thumbnails is not None
        media: ThumbnailMedia = await self._call(
            ThumbnailActivities.generate,
            ThumbnailInput(
                job_id=job.job_id,
                source_uri=job.source_uri,
                container=probe.container,
                scratch_uri=job.scratch_uri,
                duration_s=probe.duration_s,
                video=probe.video,
                rendition=plan.renditions[0],
                options=job.thumbnails,
            ),
            timeout=LONG,
            heartbeat=True,
        )
        return media

    async def _encode_audio(
        self, job: EncodeJob, probe: ProbeResult, track: AudioRendition | None
    ) -> EncodedMedia | None:
        """Once per job and track, from the whole source (or the track's own file)."""
        if track is None and probe.audio is None:
            return None
        media: EncodedMedia = await self._call(
            AudioActivities.encode_audio,
            EncodeAudioInput(
                job_id=job.job_id,
                source_uri=job.source_uri,
                container=probe.container,
                scratch_uri=job.scratch_uri,
                duration_s=probe.duration_s,
                track=track,
            ),
            timeout=LONG,
            heartbeat=True,
        )
        return media

    async def _prepare_subtitles(
        self, job: EncodeJob, probe: ProbeResult, track: SubtitleRendition
    ) -> SubtitleMedia:
        media: SubtitleMedia = await self._call(
            SubtitleActivities.prepare,
            SubtitleInput(
                job_id=job.job_id,
                source_uri=track.source_uri or job.source_uri,
                container=None if track.source_uri else probe.container,
                scratch_uri=job.scratch_uri,
                track=track,
                duration_s=probe.duration_s,
            ),
            timeout=LONG,  # an embedded track is read from the whole source
            heartbeat=True,
        )
        return media

    async def _quality(
        self, job: EncodeJob, plan: Plan, videos: list[EncodedMedia], staging_uri: str
    ) -> QualityResult:
        """Every rendition against the source, chunked over the pools (a QualityWorkflow
        child); quality.json and frames/ land in the package's staging, published with it."""
        assert job.quality is not None
        metrics = job.quality.metrics
        top = plan.renditions[0]
        display = display_size(top.width, top.height, top.sample_aspect_ratio)
        files = {m.name: m.uri for m in videos}
        comparisons = [
            QualityComparison(
                name=r.name,
                distorted=QualityFile(uri=files[r.name], kind="scratch"),
                views=rendition_views(r.width, r.height, display, metrics),
                frame_rate=r.settings.frame_rate,
                encoded_with=r.settings,
            )
            for r in plan.renditions
            if r.name in files
        ]
        result: QualityResult = await workflow.execute_child_workflow(
            QualityWorkflow.run,
            QualityJob(
                job_id=job.job_id,
                reference=QualityFile(uri=job.source_uri, kind="source"),
                comparisons=comparisons,
                align="auto",
                chunk_seconds=job.quality.chunk_seconds,
                output_uri=job.output_uri,
                scratch_uri=job.scratch_uri,
                retry=job.retry,
                heartbeat_timeout_s=job.heartbeat_timeout_s,
                window=job.window,
                target_uri=staging_uri,
                cleanup=False,
            ),
            id=f"{job.job_id}-quality",
            task_queue=WORKFLOW_QUEUE,
        )
        workflow.set_current_details(quality_details(result))
        return published(result, staging_uri, join(job.output_uri, job.job_id))

    # ------------------------------------------------------------------ chunked encoding

    async def _split(self, job: EncodeJob, probe: ProbeResult) -> ChunkPlan:
        plan: ChunkPlan = await self._call(
            ChunkActivities.split, split_request(job, probe), timeout=LONG, heartbeat=True
        )
        return plan

    async def _encode_chunked(
        self,
        job: EncodeJob,
        probe: ProbeResult,
        plan: Plan,
        routes: dict[str, Route],
        chunks: ChunkPlan,
    ) -> Tracks:
        """Per codec, child workflows over ranges of chunks (each chunk decoded once for all
        renditions of the codec), sharing the job's window; audio and subtitles alongside."""
        codecs = sorted({r.codec for r in plan.renditions})
        spans = ranges(chunks.count)
        window = window_share(job.window, len(codecs) * len(spans))
        children = []
        for codec in codecs:
            renditions = [r for r in plan.renditions if r.codec == codec]
            route = routes.get(codec)
            for state in self._state.renditions:
                if state.codec == codec:
                    state.status, state.queue = "encoding", route.queue if route else CPU_QUEUE
                    state.chunks_done, state.chunks_total = 0, chunks.count
            for first, last in spans:
                child_id = f"{job.job_id}-chunks-{codec}-{first:05d}"
                request = ChunkRangeInput(
                    job=job,
                    renditions=renditions,
                    route=route,
                    chunks=[chunks.chunk(i) for i in range(first, last)],
                    segment_seconds=plan.segment_seconds,
                    rotation=probe.video.rotation,
                    window=window,
                )
                children.append(self._chunk_range(child_id, request))
        results = await all_or_none([*children, self._tracks(job, probe, plan)])
        self._record_ranges([r for r in results[:-1] if isinstance(r, ChunkRangeResult)])
        tracks = results[-1]
        assert isinstance(tracks, Tracks)
        return tracks

    async def _chunk_range(self, child_id: str, request: ChunkRangeInput) -> ChunkRangeResult:
        self._state.chunk_workflows[child_id] = request.renditions[0].codec
        try:
            result: ChunkRangeResult = await workflow.execute_child_workflow(
                ChunkRangeWorkflow.run, request, id=child_id, task_queue=WORKFLOW_QUEUE
            )
        except asyncio.CancelledError:
            self._mark(request, "cancelled")
            raise
        except ChildWorkflowError as err:
            cause = err.cause.cause if isinstance(err.cause, ActivityError) else err.cause
            self._mark(request, "cancelled" if isinstance(cause, CancelledError) else "failed")
            raise
        finally:
            self._state.chunk_workflows.pop(child_id, None)
        self._count_chunks(result.codec, child_id, result.chunks)
        return result

    def _mark(self, request: ChunkRangeInput, status: Any) -> None:
        names = {r.name for r in request.renditions}
        for state in self._state.renditions:
            if state.name in names and state.status == "encoding":
                state.status = status

    def _record_ranges(self, results: list[ChunkRangeResult]) -> None:
        """Totals over the children; ``queue`` names every pool that encoded chunks."""
        for state in self._state.renditions:
            mine = [r for r in results if state.name in r.frames]
            state.frames = sum(r.frames[state.name] for r in mine)
            state.size_bytes = sum(r.size_bytes[state.name] for r in mine)
            state.encoder = next((r.encoders[state.name] for r in mine if r.encoders), None)
            queues = sorted({q for r in mine for q in r.queues})
            state.queue = ",".join(queues) or state.queue

    def _count_chunks(self, codec: str, child_id: str, done: int) -> None:
        """Renditions of ``codec`` advance with the chunks its children report finished."""
        children = self._chunks_done.setdefault(codec, {})
        children[child_id] = max(done, children.get(child_id, 0))
        finished = sum(children.values())
        for state in self._state.renditions:
            if state.codec == codec:
                state.chunks_done = finished
                state.progress = chunk_progress(finished, state.chunks_total or 0)
        self._advanced()

    async def _assemble(
        self, job: EncodeJob, probe: ProbeResult, plan: Plan, chunks: ChunkPlan
    ) -> list[EncodedMedia]:
        """Per rendition, join the chunks and check the result is the whole title."""

        async def one(rendition: Rendition) -> EncodedMedia:
            state = next(r for r in self._state.renditions if r.name == rendition.name)
            media: EncodedMedia = await self._call(
                ChunkActivities.assemble,
                assemble_request(job, probe, rendition, chunks),
                timeout=LONG,
                heartbeat=True,
            )
            state.status, state.progress = "done", 1.0
            state.frames, state.size_bytes = media.frames, media.size_bytes
            self._advanced()
            return media.model_copy(update={"encoder": state.encoder, "queue": state.queue})

        results = await all_or_none([one(r) for r in plan.renditions])
        return [r for r in results if r is not None]

    async def _encode_renditions(
        self, job: EncodeJob, probe: ProbeResult, renditions: list[Rendition], route: Route | None
    ) -> list[EncodedMedia]:
        """One activity for the renditions of a codec: a title not chunked. Histories from
        before one decode fed every rendition ran ``encode_video`` per rendition instead."""
        names = {r.name for r in renditions}
        states = [r for r in self._state.renditions if r.name in names]
        whole = WholeSourceInput(
            job_id=job.job_id,
            source_uri=job.source_uri,
            container=probe.container,
            scratch_uri=job.scratch_uri,
            duration_s=probe.duration_s,
            rotation=probe.video.rotation,
            decode_check=job.quality is None,
        ).model_dump()
        for state in states:
            state.status, state.queue = "encoding", route.queue if route else CPU_QUEUE
        label = "+".join(r.name for r in renditions)
        try:
            media: list[EncodedMedia]
            if self._one_decode:
                request = EncodeRenditionsInput(**whole, renditions=renditions)
                media, queue = await call_routed(
                    job, EncodeActivities.encode_renditions, request, route, label
                )
            else:
                (rendition,) = renditions
                single = EncodeVideoInput(**whole, rendition=rendition)
                done, queue = await call_routed(
                    job, EncodeActivities.encode_video, single, route, label
                )
                media = [done]
        except BaseException as err:
            cancelled = isinstance(err, asyncio.CancelledError) or (
                isinstance(err, ActivityError) and isinstance(err.cause, CancelledError)
            )
            for state in states:
                state.status = "cancelled" if cancelled else "failed"
            raise
        for state, done in zip(states, media, strict=True):
            state.status, state.progress = "done", 1.0
            state.frames, state.size_bytes = done.frames, done.size_bytes
            state.queue, state.encoder = done.queue or queue, done.encoder
        self._advanced()
        return media

    # ------------------------------------------------------------------ helpers

    def _set_status(self, status: JobStatus) -> None:
        """CosmosStatus for visibility queries; a terminal value goes out in the same workflow
        task as the completion, so it never says SUCCEEDED of a job still running."""
        if self._visible:
            workflow.upsert_search_attributes([STATUS_KEY.value_set(status.value)])

    def _emit(self, type: WebhookEventType, **data: Any) -> None:
        if self._events is not None:
            self._events.emit(type, **data)

    def _advanced(self) -> None:
        if self._events is not None:
            self._events.progress(overall_progress(self._state.stage, self._state.renditions))

    async def _stage(self, name: str, step: Awaitable[T]) -> T:
        self._state.stage = name
        if name != "probe":  # the probe starts with the job: job.accepted says so
            self._emit("job.stage", stage=name)
            self._advanced()
        started = workflow.time()
        result = await step
        self._state.stage_seconds[name] = round(workflow.time() - started, 3)
        if _cancel_requested():
            raise asyncio.CancelledError(f"cancelled during {name}")
        return result

    async def _route(self, job: EncodeJob, codecs: list[Codec]) -> list[Route]:
        route_input = RouteInput(codecs=codecs, accelerator=job.accelerator)
        routes: list[Route] = await self._call(RoutingActivities.route, route_input)
        return routes

    async def _routed(
        self, job: EncodeJob, early: asyncio.Task[list[Route]], codecs: list[Codec]
    ) -> list[Route]:
        """The routes read beside the probe. Where the job's codecs had no capable pool but
        the plan dropped the codec that had none, the plan's codecs are routed again."""
        try:
            return await early
        except ActivityError as err:
            if cancelled(err) or codecs == _job_codecs(job):
                raise
            return await self._route(job, codecs)

    def _call(self, fn: Any, arg: Any, **options: Any) -> Any:
        assert self._job is not None
        return call(self._job, fn, arg, **options)

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
        if self._events is not None:
            self._events.emit(
                FINAL[status],
                status=status.value,
                error=error and error.model_dump(mode="json"),
                manifests=manifests and manifests.model_dump(mode="json"),
            )
            await self._events.flush()
        else:
            await self._notify(status, error, manifests)
        self._state.stage = "done" if status is JobStatus.SUCCEEDED else previous

    async def _notify(
        self, status: JobStatus, error: ErrorInfo | None, manifests: Manifests | None
    ) -> None:
        assert self._job is not None
        job = self._job
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


FINAL: dict[JobStatus, WebhookEventType] = {
    JobStatus.SUCCEEDED: "job.succeeded",
    JobStatus.FAILED: "job.failed",
    JobStatus.CANCELLED: "job.cancelled",
}


def _webhook_target(job: EncodeJob) -> WebhookTarget | None:
    if not job.webhook_url:
        return None
    return WebhookTarget(
        url=job.webhook_url, secret=job.webhook_secret, retry_hours=job.webhook_retry_hours
    )


async def _settled(task: asyncio.Task[Any] | None) -> None:
    """The route read beside a probe that failed or was cancelled, waited for rather than
    cancelled: it is a short read, a cancel racing its completion gains nothing, and the job
    ends with no activity of its own left behind. Its own error is not the job's reason."""
    if task is None:
        return
    await workflow.wait([task])  # a cancel of the job does not pass on to it here
    if not task.cancelled():
        task.exception()


def _job_codecs(job: EncodeJob) -> list[Codec]:
    """Every codec the job's profiles ask for: the plan's renditions use these or fewer."""
    asked = {job.codec} | {p.codec for p in job.profiles if not isinstance(p, str) and p.codec}
    return sorted(asked)


def _slots(routes: dict[str, Route]) -> int | None:
    """The fewest encode slots over the pools the job's codecs go to; None where unknown."""
    slots = [route.slots for route in routes.values()]
    if not slots or any(n is None for n in slots):
        return None
    return min(n for n in slots if n is not None)


def _cancel_requested() -> bool:
    """A cancel that arrives while an activity is completing anyway is not raised by the SDK
    (the activity's result wins); the run task still counts it, so it is not lost."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
