"""The built-in functions: the encode pipeline's steps as a Plato rule names them.

``probe-source`` → ``encode-segment`` (one per profile) → ``mux-final`` → ``publish-manifest``
make the same HLS + DASH + ``manifest.json`` package as ``POST /v1/encode``: each one calls the
activity code ``EncodeWorkflow`` runs (``app/stratum/functions``), so the tuned built-in
pipeline and a rule set share every ffmpeg argument. ``notify-oncall`` logs a failure and
calls the job's webhook. The encode pipeline's own steps are declared under their names too:
``inspect`` (a probe that keeps nothing), ``split`` (cut the source into chunks) and
``assemble`` (join a rendition's chunks: the existing ``assemble`` activity itself).

``encode-segment`` runs as ``EncodeSegmentWorkflow`` (``app/plato/workflows/segment.py``):
long titles are chunked as ``EncodeWorkflow`` chunks them (``split`` → chunk-range children →
``assemble``), short ones are this module's activity, encoding the rendition whole.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path

from temporalio import activity
from temporalio.exceptions import ApplicationError

from app.core.models import (
    AssembleInput,
    AudioRendition,
    ChunkPlan,
    Codec,
    CustomProfile,
    DroppedProfile,
    EncodeAudioInput,
    EncodedMedia,
    EncodeJob,
    EncodeSegmentInput,
    EncodeSegmentOutput,
    EncodeVideoInput,
    Manifests,
    MuxFinalInput,
    MuxFinalOutput,
    NotCarried,
    NotifyOncallInput,
    NotifyOncallOutput,
    PackageInput,
    PackageResult,
    Plan,
    ProbeInput,
    ProbeResult,
    ProbeSourceInput,
    PublishInput,
    PublishManifestInput,
    Rendition,
    RetryOptions,
    SegmentPlan,
    SplitInput,
    SubtitleInput,
    SubtitleMedia,
    SubtitleRendition,
    ThumbnailInput,
    ThumbnailMedia,
    WebhookCall,
    WebhookEvent,
    WebhookTarget,
)
from app.core.settings import Settings
from app.media.ladder import PlanError, plan_renditions, resolve_profiles
from app.media.tracks import other_not_carried, plan_audio, plan_subtitles
from app.storage.local import uri_to_path
from app.storage.object_store import LocalStore, S3Store, join, store_for
from app.storage.sources import SourceError, resolve_source
from app.stratum.catalog import FunctionSpec, current_settings, declare, function, spec_of
from app.stratum.functions.analyze import AnalyzeActivities
from app.stratum.functions.audio import AudioActivities
from app.stratum.functions.chunks import ChunkActivities
from app.stratum.functions.common import INVALID_SOURCE
from app.stratum.functions.encode import EncodeActivities
from app.stratum.functions.lifecycle import LifecycleActivities
from app.stratum.functions.package import JOB_MANIFEST, PackageActivities
from app.stratum.functions.subtitles import SubtitleActivities
from app.stratum.functions.thumbnails import ThumbnailActivities
from app.stratum.resources import (
    ENCODE_CPU,
    ResourceShape,
    encode_slots,
    machine_share,
    threads_per_job,
)

log = logging.getLogger("cosmos.functions")

SHORT_S = 600.0
LONG_S = 6 * 3600.0
"""As ``EncodeWorkflow`` gives a whole-title encode or a package."""
HEARTBEAT_S = 60.0
"""ffmpeg heartbeats every 2 s; a worker's own watchdog (COSMOS_HEARTBEAT_TIMEOUT_S, 30 s by
default) kills a silent one first and reports why; this is the server's backstop."""
LIGHT = ResourceShape(cpu_threads=1, memory_mib=256)
PROBE = ResourceShape(cpu_threads=1, memory_mib=512)
PACKAGE = ResourceShape(cpu_threads=1, memory_mib=1024)
PLAN_ERROR = "PlanError"
FILES = "files"
"""``<output>/<job>/files/``: what functions wrote for people beside the package."""


def _refused(message: str, type: str = INVALID_SOURCE) -> ApplicationError:
    return ApplicationError(message, type=type, non_retryable=True)


def source_uri(source: str, settings: Settings) -> str:
    """The source as a URI, checked as the API checks one: a path or ``file://`` URI under
    the allowed roots, or an object of an allowed bucket (the worker checks again, and an S3
    object's size, when it reads it)."""
    try:
        return resolve_source(source, settings.allowed_source_roots, settings.source_bucket_set)
    except SourceError as err:
        raise _refused(str(err)) from None


def encode_threads(settings: Settings) -> int:
    """Encoder threads per process, as the CPU worker sizes them (``registry.cpu_activities``)."""
    slots = encode_slots(settings.worker_max_activities, settings.worker_cores)
    return threads_per_job(slots, machine_share(settings.worker_cores)[0])


def job_of(
    settings: Settings,
    *,
    job_id: str,
    source_uri: str,
    profiles: list[str | CustomProfile],
    codec: Codec = "h264",
    segment_seconds: int = 4,
    scratch_uri: str | None = None,
    output_uri: str | None = None,
) -> EncodeJob:
    """The ``EncodeJob`` the planning and publishing code reads, from a step's own fields."""
    return EncodeJob(
        job_id=job_id,
        source_uri=source_uri,
        profiles=profiles,
        codec=codec,
        segment_seconds=segment_seconds,
        output_uri=output_uri or settings.resolved_output_uri,
        scratch_uri=scratch_uri or settings.resolved_scratch_uri,
    )


def ladder_order(videos: list[EncodeSegmentOutput]) -> list[tuple[Rendition, EncodedMedia]]:
    """The encoded renditions (dropped profiles left out) in the plan's order: largest first,
    as ``plan_renditions`` sorts them, so the package is the one ``POST /v1/encode`` makes."""
    pairs = [(v.rendition, v.media) for v in videos if v.rendition and v.media]
    if not pairs:
        reasons = "; ".join(f"{v.dropped.name}: {v.dropped.reason}" for v in videos if v.dropped)
        raise _refused(f"no requested profile fits the source ({reasons})", PLAN_ERROR)
    names = [r.name for r, _ in pairs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise _refused(f"renditions named twice: {', '.join(twice)}", PLAN_ERROR)
    return sorted(pairs, key=lambda p: (-p[0].height * p[0].width, p[0].name))


# ---------------------------------------------------------------- probe-source, inspect


@function(
    "probe-source",
    input=ProbeSourceInput,
    output=ProbeResult,
    shape=PROBE,
    timeout_s=SHORT_S,
)
async def probe_source(input: ProbeSourceInput) -> ProbeResult:
    """What the source is: container, duration, every stream (video, audio, subtitles), the
    interlacing measured. An S3 source is downloaded once for the job's next steps."""
    settings = current_settings()
    probe = AnalyzeActivities(settings).probe_source
    return await probe(
        ProbeInput(source_uri=source_uri(input.source, settings), job_id=input.job_id)
    )


@function("inspect", input=ProbeSourceInput, output=ProbeResult, shape=PROBE, timeout_s=SHORT_S)
async def inspect_source(input: ProbeSourceInput) -> ProbeResult:
    """probe-source for an inspection: no job follows, so the worker keeps no copy."""
    settings = current_settings()
    request = ProbeInput(
        source_uri=source_uri(input.source, settings), job_id=input.job_id, keep_copy=False
    )
    return await AnalyzeActivities(settings).probe_source(request)


# ---------------------------------------------------------------- encode-segment


@function(
    "encode-segment",
    input=EncodeSegmentInput,
    output=EncodeSegmentOutput,
    shape=ENCODE_CPU,
    timeout_s=LONG_S,
    heartbeat_s=HEARTBEAT_S,
    consumes={"probe": "probe-source"},
    workflow="EncodeSegmentWorkflow",
)
async def encode_segment(input: EncodeSegmentInput) -> EncodeSegmentOutput:
    """One rendition of the job: the profile fitted to the source by the ladder (never
    upscaled: a profile taller than the source is returned as dropped), then encoded into
    ``<scratch>/<job>/video/<name>.mp4`` by the encode pipeline's encoder: in chunks over the
    pools where the title is long enough (``EncodeSegmentWorkflow``, as ``POST /v1/encode``
    chunks), else whole, here. A finished rendition is not encoded again."""
    settings = current_settings()
    plan = fit_segment(input, settings)
    if plan.rendition is None:
        return EncodeSegmentOutput(rendition=None, media=None, dropped=plan.dropped)
    encode = EncodeActivities(settings, "cpu", encode_threads(settings)).encode_video
    media = await encode(
        EncodeVideoInput(
            job_id=input.job_id,
            source_uri=plan.job.source_uri,
            container=input.probe.container,
            scratch_uri=input.scratch_uri,
            rendition=plan.rendition,
            duration_s=input.probe.duration_s,
            rotation=input.probe.video.rotation,
        )
    )
    return EncodeSegmentOutput(rendition=plan.rendition, media=media)


@activity.defn(name="plan_segment")
async def plan_segment(input: EncodeSegmentInput) -> SegmentPlan:
    """``encode-segment``'s planning alone, for ``EncodeSegmentWorkflow`` to chunk."""
    return fit_segment(input, current_settings())


def fit_segment(input: EncodeSegmentInput, settings: Settings) -> SegmentPlan:
    uri = source_uri(input.source, settings)
    try:
        (profile,) = resolve_profiles([input.profile], input.codec)
    except PlanError as err:
        raise _refused(str(err), PLAN_ERROR) from None
    job = job_of(
        settings,
        job_id=input.job_id,
        source_uri=uri,
        profiles=[input.profile],
        codec=input.codec,
        segment_seconds=input.segment_seconds,
        scratch_uri=input.scratch_uri,
    ).model_copy(
        update={
            "chunk_seconds": input.chunk_seconds,
            "min_chunk_seconds": input.min_chunk_seconds,
            "retry": RetryOptions(max_attempts=settings.activity_max_attempts),
            "heartbeat_timeout_s": settings.heartbeat_timeout_s,
            "window": settings.chunk_window,
        }
    )
    video = input.probe.video
    short = min(video.display_width, video.display_height)
    if profile.height > short:
        reason = f"{profile.height}p would upscale a {short}p source"
        return SegmentPlan(job=job, dropped=DroppedProfile(name=profile.name, reason=reason))
    try:
        (rendition,) = plan_renditions(job, input.probe).renditions
    except PlanError as err:
        raise _refused(str(err), PLAN_ERROR) from None
    return SegmentPlan(job=job, rendition=rendition)


# ---------------------------------------------------------------- mux-final


@function(
    "mux-final",
    input=MuxFinalInput,
    output=MuxFinalOutput,
    shape=PACKAGE,
    timeout_s=LONG_S,
    heartbeat_s=HEARTBEAT_S,
    consumes={"probe": "probe-source", "videos": "encode-segment"},
)
async def mux_final(input: MuxFinalInput) -> MuxFinalOutput:
    """The package: every source audio track encoded (AAC stereo, as ``POST /v1/encode``
    does; or the ``audio`` given), text subtitles converted to WebVTT, thumbnails where asked,
    then HLS + DASH over one set of CMAF segments, in the job's staging folder."""
    settings = current_settings()
    uri = source_uri(input.source, settings)
    pairs = ladder_order(input.videos)
    renditions = [r for r, _ in pairs]
    job = job_of(
        settings,
        job_id=input.job_id,
        source_uri=uri,
        profiles=[],
        segment_seconds=input.segment_seconds,
        scratch_uri=input.scratch_uri,
    )
    probe = input.probe
    try:
        subtitle_plan, skipped_subtitles = plan_subtitles(job, probe)
        if input.audio is None:
            audio_plan, skipped_audio = plan_audio(job, probe)
        else:
            audio_plan = [
                AudioRendition(name=m.name, default=i == 0) for i, m in enumerate(input.audio)
            ]
            skipped_audio = []
    except ValueError as err:  # PlanError, or an audio track name that is not a file name
        raise _refused(str(err), PLAN_ERROR) from None
    not_carried: list[NotCarried] = [*skipped_audio, *skipped_subtitles, *other_not_carried(probe)]
    audio_media = input.audio if input.audio is not None else []
    if input.audio is None:
        encode_audio = AudioActivities(settings).encode_audio
        for track in audio_plan:
            audio_media.append(
                await encode_audio(
                    EncodeAudioInput(
                        job_id=input.job_id,
                        source_uri=uri,
                        container=probe.container,
                        scratch_uri=input.scratch_uri,
                        duration_s=probe.duration_s,
                        track=track,
                    )
                )
            )
    subtitles = await _subtitles(settings, input, uri, subtitle_plan)
    thumbnails = await _thumbnails(settings, input, uri, renditions[0])
    plan = Plan(
        renditions=renditions,
        dropped=[],
        segment_seconds=input.segment_seconds,
        audio=audio_plan,
        subtitles=subtitle_plan,
    )
    package = await PackageActivities(settings).package(
        PackageInput(
            job_id=input.job_id,
            scratch_uri=input.scratch_uri,
            videos=[m for _, m in pairs],
            audio=None,
            segment_seconds=input.segment_seconds,
            plan=plan,
            audio_tracks=audio_media,
            subtitles=subtitles,
            thumbnails=thumbnails,
            audio_planned=input.audio is None,
        )
    )
    return MuxFinalOutput(
        **package.model_dump(),
        segment_seconds=input.segment_seconds,
        audio_tracks=audio_plan,
        audio_media=audio_media,
        subtitle_tracks=subtitle_plan,
        subtitle_media=subtitles,
        not_carried=not_carried,
    )


async def _subtitles(
    settings: Settings, input: MuxFinalInput, uri: str, tracks: list[SubtitleRendition]
) -> list[SubtitleMedia]:
    prepare = SubtitleActivities(settings).prepare
    return [
        await prepare(
            SubtitleInput(
                job_id=input.job_id,
                source_uri=track.source_uri or uri,
                container=None if track.source_uri else input.probe.container,
                scratch_uri=input.scratch_uri,
                track=track,
                duration_s=input.probe.duration_s,
            )
        )
        for track in tracks
    ]


async def _thumbnails(
    settings: Settings, input: MuxFinalInput, uri: str, top: Rendition
) -> ThumbnailMedia | None:
    if input.thumbnails is None:
        return None
    return await ThumbnailActivities(settings).generate(
        ThumbnailInput(
            job_id=input.job_id,
            source_uri=uri,
            container=input.probe.container,
            scratch_uri=input.scratch_uri,
            duration_s=input.probe.duration_s,
            video=input.probe.video,
            rendition=top,
            options=input.thumbnails,
        )
    )


# ---------------------------------------------------------------- publish-manifest


@function(
    "publish-manifest",
    input=PublishManifestInput,
    output=Manifests,
    shape=LIGHT,
    timeout_s=SHORT_S,
    consumes={"package": "mux-final", "videos": "encode-segment", "probe": "probe-source"},
)
async def publish_manifest(input: PublishManifestInput) -> Manifests:
    """Make the package public whole or not at all, at ``<output>/<job>/``, with
    ``manifest.json`` (renditions, tracks, checksums) written last. Files that functions put
    under ``<output>/<job>/files/`` before are kept."""
    settings = current_settings()
    uri = source_uri(input.source, settings)
    pairs = ladder_order(input.videos)
    package = input.package
    job = job_of(
        settings,
        job_id=input.job_id,
        source_uri=uri,
        profiles=[],
        segment_seconds=package.segment_seconds,
        output_uri=input.output_uri,
    )
    plan = Plan(
        renditions=[r for r, _ in pairs],
        dropped=[v.dropped for v in input.videos if v.dropped],
        segment_seconds=package.segment_seconds,
        audio=package.audio_tracks,
        subtitles=package.subtitle_tracks,
        not_carried=package.not_carried,
    )
    target = join(input.output_uri, input.job_id)
    await asyncio.to_thread(_carry_files, settings, target, package.staging_uri)
    staged = PackageResult.model_validate(
        package.model_dump(include=set(PackageResult.model_fields))
    )
    return await PackageActivities(settings).publish_manifest(
        PublishInput(
            job=job,
            probe=input.probe,
            plan=plan,
            videos=[m for _, m in pairs],
            audio=None,
            package=staged,
            stage_seconds=input.stage_seconds,
            audio_tracks=package.audio_media,
            subtitles=package.subtitle_media,
        )
    )


def _carry_files(settings: Settings, target: str, staging_uri: str) -> None:
    """Publishing replaces ``target`` whole: what functions already put in its ``files/``
    folder goes into the package first (blocking)."""
    source, dest = join(target, FILES), join(staging_uri, FILES)
    out_store, staging_store = store_for(target, settings), store_for(staging_uri, settings)
    if out_store.exists(join(target, JOB_MANIFEST)):
        return  # published already (an attempt whose completion was lost): nothing to carry
    if isinstance(out_store, LocalStore):
        folder = uri_to_path(source)
        if not folder.is_dir():
            return
        if isinstance(staging_store, LocalStore):
            shutil.copytree(folder, uri_to_path(dest), dirs_exist_ok=True)
        else:
            staging_store.upload_tree(folder, dest)
        return
    assert isinstance(out_store, S3Store)
    names = out_store.names(source)
    if not names:
        return
    if isinstance(staging_store, S3Store):
        out_store.copy_tree(source, dest)
        return
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            out_store.download(join(source, name), Path(tmp) / name)
        staging_store.upload_tree(Path(tmp), dest)


# ---------------------------------------------------------------- notify-oncall


@function(
    "notify-oncall",
    input=NotifyOncallInput,
    output=NotifyOncallOutput,
    shape=LIGHT,
    timeout_s=60.0,
    idempotent=False,
)
async def notify_oncall(input: NotifyOncallInput) -> NotifyOncallOutput:
    """Tell whoever is on call that the job failed: one line in the worker's log at ERROR,
    and the job's webhook (checked again, as every webhook is) where it has one."""
    settings = current_settings()
    where = f" in {input.step}" if input.step else ""
    reason = f"{input.error.type}: {input.error.message}" if input.error else "no reason given"
    log.error("job %s failed%s: %s", input.job_id, where, reason)
    if not input.webhook_url:
        return NotifyOncallOutput(notified=False)
    event = WebhookEvent(
        id=f"evt_{_attempt_key(input.job_id)}",
        type="job.failed",
        job_id=input.job_id,
        created_at=datetime.now(UTC),
        data={
            "status": "FAILED",
            "step": input.step,
            "error": input.error and input.error.model_dump(),
        },
    )
    await LifecycleActivities(settings).deliver_webhook(
        WebhookCall(target=WebhookTarget(url=input.webhook_url), event=event)
    )
    return NotifyOncallOutput(notified=True)


def _attempt_key(job_id: str) -> str:
    """The same on every attempt of one activity (a receiver drops the repeats by it)."""
    where = activity.info() if activity.in_activity() else None
    seed = f"{where.workflow_run_id}/{where.activity_id}" if where else f"{job_id}/{uuid.uuid4()}"
    return hashlib.sha256(seed.encode()).hexdigest()[:32]


# ---------------------------------------------------------------- split, assemble


@function(
    "split",
    input=SplitInput,
    output=ChunkPlan,
    shape=PROBE,
    timeout_s=LONG_S,
    heartbeat_s=HEARTBEAT_S,
)
async def split(input: SplitInput) -> ChunkPlan:
    """Cut the source into chunks on its keyframes (scene cuts preferred) for parallel
    encoding: ``<scratch>/<job>/chunks/<i>.mp4``, stream copy."""
    settings = current_settings()
    chunks = ChunkActivities(settings, "cpu", encode_threads(settings))
    checked = input.model_copy(update={"source_uri": source_uri(input.source_uri, settings)})
    return await chunks.split(checked)


FUNCTIONS = [probe_source, inspect_source, encode_segment, mux_final, publish_manifest,
             notify_oncall, split]  # fmt: skip


def builtins(settings: Settings) -> list[FunctionSpec]:
    """Every built-in declaration; ``assemble`` with the existing activity as its
    implementation (it already has the name)."""
    specs = [spec for fn in FUNCTIONS if (spec := spec_of(fn)) is not None]
    assemble = declare(
        "assemble",
        input=AssembleInput,
        output=EncodedMedia,
        shape=PACKAGE,
        timeout_s=LONG_S,
        heartbeat_s=HEARTBEAT_S,
        description="Join one rendition's encoded chunks and check the whole has the title's "
        "frames and duration.",
        implementation=ChunkActivities(settings, "cpu", encode_threads(settings)).assemble,
    )
    return [*specs, assemble]
