"""thumbnail-strip: frames evenly spaced through a video, side by side in one JPEG.

A Cosmos function from a package of its own, as a team writes one: the ``function`` decorator
states its name, typed input and output, shape and timeouts; the ``cosmos.functions`` entry
point (pyproject.toml) names ``functions``, the list of what this package declares. Workers
that have it installed serve it; the API lists it and checks definitions that use it.
"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, ConfigDict, Field
from temporalio.exceptions import ApplicationError

from app.core.models import ProbeResult
from app.storage.sources import SourceError, resolve_source
from app.stratum.catalog import current_settings, function, output_file_uri
from app.stratum.functions.common import (
    INVALID_SOURCE,
    ActivityBase,
    discarded_on_error,
    input_args,
    part_path,
)
from app.stratum.functions.probe import InvalidSource, probe_file
from app.stratum.resources import ResourceShape

NAME = "thumbnail-strip"


class StripInput(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: str
    scratch_uri: str
    output_uri: str
    source: str = Field(min_length=1, max_length=4096, description="Path, file:// or s3://.")
    probe: ProbeResult | None = Field(None, description="probe-source's report; else probed.")
    frames: int = Field(8, ge=2, le=16, description="Frames in the strip.")
    width: int = Field(160, ge=64, le=640, description="Width of one frame, in pixels.")


class StripOutput(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    uri: str = Field(description="The JPEG, under the job's output prefix.")
    width: int = Field(description="The strip's width: frames x the frame width.")
    height: int
    frames: int


def strip_filter(frames: int, duration_s: float, width: int, height: int) -> str:
    """``frames`` frames at 0, d/n, 2d/n, ... scaled to square pixels, tiled in one row."""
    return f"fps=fps={frames}/{duration_s:.6f},scale={width}:{height},setsar=1,tile={frames}x1"


@function(
    NAME,
    input=StripInput,
    output=StripOutput,
    shape=ResourceShape(cpu_threads=1, memory_mib=512),
    timeout_s=900,
    heartbeat_s=60,
    consumes={"probe": "probe-source"},
)
async def thumbnail_strip(input: StripInput) -> StripOutput:
    """A tile of frames from a video: one JPEG row of ``frames`` frames evenly spaced from the
    start, each ``width`` pixels wide at the display aspect ratio."""
    settings = current_settings()
    files = ActivityBase(settings)
    try:
        roots, buckets = settings.allowed_source_roots, settings.source_bucket_set
        uri = resolve_source(input.source, roots, buckets)
    except SourceError as err:
        raise ApplicationError(str(err), type=INVALID_SOURCE, non_retryable=True) from None
    src = await files.local_source(uri, input.job_id)
    probe = input.probe
    if probe is None:
        try:
            probe = await asyncio.to_thread(probe_file, src, settings.ffmpeg_path)
        except InvalidSource as err:
            raise ApplicationError(str(err), type=INVALID_SOURCE, non_retryable=True) from None
    video = probe.video
    width = input.width - input.width % 2
    height = max(2, round(width * video.display_height / video.display_width / 2) * 2)
    target = output_file_uri(input.output_uri, input.job_id, NAME, "strip.jpg")
    part = part_path(files.scratch_path(target, input.job_id))
    part.parent.mkdir(parents=True, exist_ok=True)
    args = [
        "-y", *input_args(src, probe.container), "-an", "-sn", "-dn",
        "-vf", strip_filter(input.frames, probe.duration_s, width, height),
        "-frames:v", "1", "-q:v", "3", "-c:v", "mjpeg", "-f", "image2", "-update", "1",
        str(part),
    ]  # fmt: skip
    with discarded_on_error(part):
        await files.ffmpeg(args, total_s=probe.duration_s, label=NAME, encodes=False)
    await files.place(part, target, input.job_id)
    files.drop_copy(target, input.job_id)
    return StripOutput(uri=target, width=input.frames * width, height=height, frames=input.frames)


functions = [thumbnail_strip]
