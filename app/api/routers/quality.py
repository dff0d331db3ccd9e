"""POST /v1/quality (any two files) and POST /v1/jobs/{id}/quality (a finished encode job's
renditions against its source, from the published files): each starts a QualityWorkflow as a
job of its own, reported at ``GET /v1/jobs/{id}`` like every job."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import PurePosixPath
from typing import Annotated, Any
from urllib.parse import unquote, urlsplit

from fastapi import APIRouter, Body, Header, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from app.api.deps import ClientDep, SettingsDep
from app.api.errors import documented
from app.api.routers.jobs import WORKFLOW_TYPE, JobId
from app.api.source_checks import checked_source
from app.api.starts import start_job
from app.core.models import (
    DEFAULT_QUALITY_CHUNK_SECONDS,
    EncodeResult,
    EncoderSettings,
    QualityComparison,
    QualityFile,
    QualityJob,
    QualityMetric,
    QualityRecomputeRequest,
    QualityRequest,
    QualityView,
    RetryOptions,
    SubmitResponse,
    TrackName,
)
from app.core.settings import Settings
from app.media.quality import SAFE_NAME, display_size, rendition_views
from app.plato.workflows.quality import QualityWorkflow
from app.storage.object_store import store_for

router = APIRouter(prefix="/v1", tags=["quality"], responses=documented(401, 413, 502, 503))

MANIFEST_LIMIT = 16 << 20
TONEMAP_SOURCES = (None, "smpte2084", "arib-std-b67")
"""The transfers a rendition may have been tone-mapped from (the value reaches a filter)."""


class PublishedRendition(BaseModel):
    """What a published ``manifest.json`` says of a rendition, as far as quality needs it."""

    model_config = ConfigDict(extra="ignore")

    name: TrackName
    width: int = Field(ge=16, le=8192)
    height: int = Field(ge=16, le=8192)
    sample_aspect_ratio: str = Field("1:1", pattern=r"^[1-9][0-9]{0,4}:[1-9][0-9]{0,4}$")
    hls_playlist: str = Field(pattern=SAFE_NAME.pattern)
    settings: dict[str, Any] = {}


class PublishedManifest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    source: dict[str, Any]
    renditions: list[PublishedRendition] = Field(min_length=1, max_length=64)


def _name(uri: str) -> str:
    return PurePosixPath(unquote(urlsplit(uri).path)).name or uri


def _hash(canonical: dict[str, Any]) -> str:
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def quality_job_id(body: QualityRequest, reference: str, distorted: str, key: str | None) -> str:
    """The same comparison is the same job (or the Idempotency-Key names it)."""
    if key is not None:
        return "qual-k-" + hashlib.sha256(key.encode()).hexdigest()[:32]
    canonical: dict[str, Any] = {
        "reference": reference,
        "distorted": distorted,
        "metrics": sorted(body.metrics),
        "align": body.align,
    }
    if body.chunk_seconds != DEFAULT_QUALITY_CHUNK_SECONDS:
        canonical["chunk_seconds"] = body.chunk_seconds
    return "qual-" + _hash(canonical)


def _job(settings: Settings, job_id: str, **fields: Any) -> QualityJob:
    return QualityJob(
        job_id=job_id,
        output_uri=settings.resolved_output_uri,
        scratch_uri=settings.resolved_scratch_uri,
        retry=RetryOptions(max_attempts=settings.activity_max_attempts),
        heartbeat_timeout_s=settings.heartbeat_timeout_s,
        window=settings.chunk_window,
        **fields,
    )


@router.post(
    "/quality",
    status_code=202,
    response_model=SubmitResponse,
    summary="Measure a file's quality against a reference",
    description=(
        "VMAF, PSNR (Y, U, V, average) and SSIM of `distorted` against `reference`, both "
        "through the usual source checks. The distorted is scaled to the reference's size "
        "(bicubic); frames are matched on the reference's frame grid. A frame-rate or "
        'duration mismatch fails the job (`QualityMismatch`) unless `align` is `"auto"`. '
        "The result is at `GET /v1/jobs/{job_id}` (`quality`) and in `quality.json`."
    ),
)
async def submit_quality(
    body: QualityRequest,
    request: Request,
    response: Response,
    client: ClientDep,
    settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=255)] = None,
) -> SubmitResponse:
    reference = await asyncio.to_thread(checked_source, body.reference, settings, "reference")
    distorted = await asyncio.to_thread(checked_source, body.distorted, settings, "distorted")
    job_id = quality_job_id(body, reference, distorted, idempotency_key)
    job = _job(
        settings,
        job_id,
        reference=QualityFile(uri=reference),
        comparisons=[
            QualityComparison(
                name="distorted",
                distorted=QualityFile(uri=distorted),
                views=[QualityView(at="reference", metrics=body.metrics)],
            )
        ],
        align=body.align,
        chunk_seconds=body.chunk_seconds,
    )
    return await start_job(
        client, settings, request, response, QualityWorkflow.run, job, job_id,
        static_summary=f"quality {_name(distorted)} vs {_name(reference)}"[:400],
    )  # fmt: skip


async def _finished_encode(client: ClientDep, job_id: str) -> EncodeResult:
    handle = client.get_workflow_handle(job_id, result_type=EncodeResult)
    try:
        desc = await handle.describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise HTTPException(404, detail=f"no job {job_id!r}") from None
        raise
    if desc.workflow_type != WORKFLOW_TYPE:
        raise HTTPException(404, detail=f"no encode job {job_id!r}")
    if desc.status != WorkflowExecutionStatus.COMPLETED:
        state = desc.status.name if desc.status else "RUNNING"
        raise HTTPException(409, detail=f"job {job_id!r} has not succeeded ({state})")
    result: EncodeResult = await handle.result()
    return result


def _read_manifest(uri: str, settings: Settings) -> PublishedManifest:
    try:
        raw = store_for(uri, settings).read_bytes(uri, MANIFEST_LIMIT)
        return PublishedManifest.model_validate_json(raw)
    except FileNotFoundError:
        raise HTTPException(409, detail="the job's outputs are gone (no manifest.json)") from None
    except (ValueError, ValidationError) as err:
        raise HTTPException(409, detail=f"the job's manifest.json cannot be read: {err}") from None


def _comparisons(
    manifest: PublishedManifest, folder: str, metrics: list[QualityMetric]
) -> list[QualityComparison]:
    """Each rendition at its own size (the source scaled down to it) and, for VMAF, at the
    top rung's display size (the rendition scaled up to it)."""
    top = max(manifest.renditions, key=lambda r: r.width * r.height)
    display = display_size(top.width, top.height, top.sample_aspect_ratio)
    found = []
    for rendition in manifest.renditions:
        try:
            settings: EncoderSettings | None = EncoderSettings.model_validate(rendition.settings)
        except ValidationError:  # a manifest of another version: no treatment to repeat
            settings = None
        if settings is not None and settings.tonemap_from not in TONEMAP_SOURCES:
            raise HTTPException(409, detail=f"{rendition.name}: unknown tone-mapping source")
        views = rendition_views(rendition.width, rendition.height, display, metrics)
        rate = rendition.settings.get("frame_rate")
        found.append(
            QualityComparison(
                name=rendition.name,
                distorted=QualityFile(uri=f"{folder}/{rendition.hls_playlist}", kind="hls"),
                views=views,
                frame_rate=rate if isinstance(rate, str) and len(rate) < 32 else None,
                encoded_with=settings,
            )
        )
    return found


@router.post(
    "/jobs/{job_id}/quality",
    status_code=202,
    response_model=SubmitResponse,
    responses=documented(404, 409),
    summary="Measure a finished encode job's renditions",
    description=(
        "Every rendition of a succeeded encode job against its source, read from the "
        "published package (nothing is encoded again): VMAF at the rendition's size and at "
        "the top rung's display size, PSNR and SSIM at the rendition's size. 409 while the "
        "job has not succeeded or when its outputs or source are gone."
    ),
)
async def recompute_quality(
    job_id: JobId,
    request: Request,
    response: Response,
    client: ClientDep,
    settings: SettingsDep,
    body: Annotated[QualityRecomputeRequest | None, Body()] = None,
) -> SubmitResponse:
    options = body or QualityRecomputeRequest()
    result = await _finished_encode(client, job_id)
    manifest_uri = result.manifests.manifest
    manifest = await asyncio.to_thread(_read_manifest, manifest_uri, settings)
    source = manifest.source.get("uri")
    if not isinstance(source, str):
        raise HTTPException(409, detail="the job's manifest.json names no source")
    try:
        reference = await asyncio.to_thread(checked_source, source, settings, "source")
    except HTTPException as err:
        if err.status_code != 422:
            raise
        reason = err.detail[0]["msg"] if isinstance(err.detail, list) else err.detail
        raise HTTPException(409, detail=f"the job's source cannot be read: {reason}") from None
    folder = manifest_uri.rsplit("/", 1)[0]
    canonical: dict[str, Any] = {"of_job": job_id, "metrics": sorted(options.metrics)}
    if options.chunk_seconds != DEFAULT_QUALITY_CHUNK_SECONDS:
        canonical["chunk_seconds"] = options.chunk_seconds
    quality_id = "qual-" + _hash(canonical)
    job = _job(
        settings,
        quality_id,
        reference=QualityFile(uri=reference),
        comparisons=_comparisons(manifest, folder, options.metrics),
        align="auto",  # a variable-rate source was made constant: resampled, and noted
        chunk_seconds=options.chunk_seconds,
        of_job=job_id,
    )
    return await start_job(
        client, settings, request, response, QualityWorkflow.run, job, quality_id,
        static_summary=f"quality of {job_id}"[:400],
    )  # fmt: skip
