"""POST /v1/encode: validate, derive the job's identity, start (or find) its workflow."""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Annotated
from urllib.parse import unquote, urlsplit

from fastapi import APIRouter, Header, Request, Response

from app.api.deps import ClientDep, SettingsDep
from app.api.errors import documented, field_error
from app.api.security import requester
from app.api.source_checks import checked_source
from app.api.starts import start_job
from app.core.models import (
    DEFAULT_CHUNK_SECONDS,
    EncodeJob,
    EncodeRequest,
    LadderOptions,
    RetryOptions,
    SidecarAudio,
    SidecarSubtitle,
    SubmitResponse,
    ThumbnailOptions,
)
from app.core.settings import Settings
from app.media.ladder import PlanError, resolve_profiles
from app.media.tracks import sidecar_subtitle_format
from app.observability.search import registered, start_attributes
from app.plato.workflows.encode import EncodeWorkflow
from app.stratum.webhooks import WebhookRefused, check_webhook

router = APIRouter(prefix="/v1", tags=["encode"], responses=documented(401, 413, 502, 503))


@dataclass(frozen=True)
class Sidecars:
    """The request's sidecar files with their sources resolved (checked) to URIs."""

    audio: list[SidecarAudio] = field(default_factory=list)
    subtitles: list[SidecarSubtitle] = field(default_factory=list)


def resolve_sidecars(request: EncodeRequest, settings: Settings) -> Sidecars:
    """Every sidecar goes through the same source checks as the video: allowed roots or
    buckets, no schemes, no ``..``; subtitle files must be SubRip or WebVTT."""
    audio = [
        t.model_copy(
            update={"source": checked_source(t.source, settings, f"audio.tracks.{i}.source")}
        )
        for i, t in enumerate(request.audio.tracks)
    ]
    subtitles = []
    for i, sub in enumerate(request.subtitles):
        try:
            sidecar_subtitle_format(sub.source)
        except PlanError as err:
            raise field_error(f"subtitles.{i}.source", str(err)) from None
        subtitles.append(
            sub.model_copy(
                update={"source": checked_source(sub.source, settings, f"subtitles.{i}.source")}
            )
        )
    return Sidecars(audio=audio, subtitles=subtitles)


def job_id_for(
    request: EncodeRequest,
    source_uri: str,
    idempotency_key: str | None,
    sidecars: Sidecars = Sidecars(),
) -> str:
    """The same work gets the same ID: a hash of what determines the outputs.

    The webhook is left out: asking to be told differently is not a different encode.
    """
    if idempotency_key is not None:
        return "enc-k-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
    # Chunking places keyframes at chunk starts; the defaults are left out so that IDs of
    # requests that do not mention it stay what they were before chunking existed.
    defaults = EncodeRequest.model_fields
    optional = {
        name: getattr(request, name)
        for name in (
            "chunk_seconds",
            "min_chunk_seconds",
            "deinterlace",
            "deinterlace_rate",
            "hdr",
            "pixel_aspect",
            "ladder",
        )
        if getattr(request, name) != defaults[name].default
    }
    ladder_options = request.ladder_options.model_dump(exclude_defaults=True)
    if ladder_options:
        optional["ladder_options"] = ladder_options
    # Audio and subtitle options, likewise only where set, with the sidecars as resolved URIs.
    audio = request.audio.model_dump(exclude_defaults=True)
    if request.audio.languages is not None:  # a set: the order picks nothing
        audio["languages"] = sorted(request.audio.languages)
    if request.audio.tracks:
        audio["tracks"] = [t.model_dump(exclude_defaults=True) for t in sidecars.audio]
    if audio:
        optional["audio"] = audio
    if sidecars.subtitles:
        optional["subtitles"] = [s.model_dump(exclude_defaults=True) for s in sidecars.subtitles]
    if request.program_date_time is not None:
        optional["program_date_time"] = request.program_date_time.isoformat()
    if request.quality is not None:
        optional["quality"] = request.quality.model_dump()
    if request.thumbnails != ThumbnailOptions():  # off, or other than the default tiling
        optional["thumbnails"] = request.thumbnails and request.thumbnails.model_dump()
    canonical = json.dumps(
        {
            "source": source_uri,
            "profiles": [p if isinstance(p, str) else p.model_dump() for p in request.profiles],
            "codec": request.codec,
            "segment_seconds": request.segment_seconds,
            "accelerator": request.accelerator,
        }
        | optional,
        sort_keys=True,
        separators=(",", ":"),
    )
    return "enc-" + hashlib.sha256(canonical.encode()).hexdigest()[:32]


def summary(job: EncodeJob) -> str:
    """One line for the Web UI's workflow list, e.g. ``h264 720p/480p of sample.mp4``."""
    names = "/".join(p if isinstance(p, str) else p.name for p in job.profiles)
    name = PurePosixPath(unquote(urlsplit(job.source_uri).path)).name or job.source_uri
    return f"{job.codec} {names} of {name}"[:400]


def details(job: EncodeJob, requested_by: str) -> str:
    """The Web UI's details pane (Markdown)."""
    profiles = ", ".join(
        p if isinstance(p, str) else f"{p.name} ({p.height}p, {p.bitrate_kbps} kb/s)"
        for p in job.profiles
    )
    return "\n".join(
        [
            f"**source** `{job.source_uri}`",
            f"**profiles** {profiles}",
            f"**codec** {job.codec}, {job.segment_seconds} s segments,"
            f" accelerator {job.accelerator}",
            f"**requested by** {requested_by}",
        ]
    )


@router.post("/encode", status_code=202, response_model=SubmitResponse)
async def submit(
    body: EncodeRequest,
    request: Request,
    response: Response,
    client: ClientDep,
    settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=255)] = None,
) -> SubmitResponse:
    source_uri = await asyncio.to_thread(checked_source, body.source, settings)
    try:
        resolve_profiles(body.profiles, body.codec)
    except PlanError as err:
        raise field_error("profiles", str(err)) from None
    if body.ladder == "fixed" and body.ladder_options != LadderOptions():
        raise field_error("ladder_options", 'applies only with "ladder": "auto"')
    if body.webhook_url is not None:
        try:
            await asyncio.to_thread(check_webhook, str(body.webhook_url), settings.webhook_hosts)
        except WebhookRefused as err:
            raise field_error("webhook_url", str(err)) from None
        if body.webhook_secret is None and settings.webhook_secret is None:
            raise field_error(
                "webhook_secret",
                "events are signed: give webhook_secret, or set COSMOS_WEBHOOK_SECRET",
            )

    sidecars = await asyncio.to_thread(resolve_sidecars, body, settings)
    job_id = job_id_for(body, source_uri, idempotency_key, sidecars)
    job = EncodeJob(
        job_id=job_id,
        source_uri=source_uri,
        profiles=body.profiles,
        codec=body.codec,
        segment_seconds=body.segment_seconds,
        webhook_url=str(body.webhook_url) if body.webhook_url else None,
        webhook_secret=body.webhook_secret,
        webhook_retry_hours=settings.webhook_retry_hours,
        webhook_progress_step=settings.webhook_progress_step,
        output_uri=settings.resolved_output_uri,
        scratch_uri=settings.resolved_scratch_uri,
        retry=RetryOptions(max_attempts=settings.activity_max_attempts),
        heartbeat_timeout_s=settings.heartbeat_timeout_s,
        accelerator=body.accelerator,
        gpu_schedule_to_start_s=settings.gpu_schedule_to_start_s,
        chunk_seconds=DEFAULT_CHUNK_SECONDS if body.chunk_seconds is None else body.chunk_seconds,
        chunk_auto=body.chunk_seconds is None,
        min_chunk_seconds=body.min_chunk_seconds,
        window=settings.chunk_window,
        deinterlace=body.deinterlace,
        deinterlace_rate=body.deinterlace_rate,
        hdr=body.hdr,
        pixel_aspect=body.pixel_aspect,
        audio=body.audio.model_copy(update={"tracks": sidecars.audio}),
        subtitles=sidecars.subtitles,
        thumbnails=body.thumbnails or None,
        program_date_time=body.program_date_time,
        ladder=body.ladder,
        ladder_options=body.ladder_options,
        quality=body.quality,
    )
    search_attributes = start_attributes(
        await registered.names(client, settings.namespace),
        source_uri=source_uri,
        codec=body.codec,
        requester=requester(request),
    )
    return await start_job(
        client, settings, request, response, EncodeWorkflow.run, job, job_id,
        search_attributes=search_attributes,
        static_summary=summary(job),
        static_details=details(job, requester(request)),
    )  # fmt: skip
