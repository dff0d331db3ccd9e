"""probe-source: the facts of a source file, read in-process with PyAV (FFmpeg's libraries)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import av.error

from app.models import AudioInfo, ProbeResult, VideoInfo


class InvalidSource(ValueError):
    """The file is not video this platform can encode; the message is for people."""


# Demuxers that read one self-contained file. Playlists (hls, dash, concat) and image sequences
# would make FFmpeg open other files or URLs named inside the source, so they are refused.
ALLOWED_CONTAINERS = frozenset(
    {"mov", "matroska", "mpegts", "avi", "flv", "mxf", "mpeg", "ogg", "nut", "asf", "ivf",
     "yuv4mpegpipe", "h264", "hevc", "m4v", "dv", "gxf", "webm"}
)  # fmt: skip
MAX_DIMENSION = 8192
# libavformat refuses every other demuxer and protocol before reading a byte of the file.
OPEN_OPTIONS = {
    "protocol_whitelist": "file",
    "format_whitelist": ",".join(sorted(ALLOWED_CONTAINERS)),
}


def _ratio(value: Fraction) -> str:
    return f"{value.numerator}:{value.denominator}"


def _rotation(degrees: float) -> int:
    return round(degrees / 90.0) % 4 * 90


def probe_file(path: Path) -> ProbeResult:
    """Open, check and describe ``path``; raise :class:`InvalidSource` with a reason if unusable."""
    try:
        container = av.open(str(path), options=OPEN_OPTIONS)
    except (av.error.FFmpegError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or err.__class__.__name__
        raise InvalidSource(f"source is not a readable media file ({reason})") from None
    with container:
        fmt = container.format.name.split(",")[0]
        if fmt not in ALLOWED_CONTAINERS:
            raise InvalidSource(
                f"source container {container.format.long_name or fmt!r} is not a video file format"
            )
        if not container.streams.video:
            if container.streams.audio:
                raise InvalidSource("source is audio-only: it has no video stream")
            raise InvalidSource("source has no video stream")
        vstream = container.streams.video[0]
        ctx = vstream.codec_context
        width, height = ctx.width, ctx.height
        if width <= 0 or height <= 0:
            raise InvalidSource("source video has no picture size")
        if width > MAX_DIMENSION or height > MAX_DIMENSION:
            raise InvalidSource(
                f"source video is {width}x{height}; the most this platform takes is "
                f"{MAX_DIMENSION} pixels a side"
            )
        rate = vstream.guessed_rate or vstream.average_rate
        if vstream.average_rate and rate and rate > 2 * vstream.average_rate:
            rate = vstream.average_rate  # variable frame rate: the average is the honest one
        if not rate or rate <= 0 or rate > 240:
            raise InvalidSource("source video has no usable frame rate")
        frame_rate = Fraction(rate.numerator, rate.denominator)

        try:
            first = next(container.decode(vstream), None)
        except (av.error.FFmpegError, ValueError) as err:
            raise InvalidSource(
                f"source video cannot be decoded ({vstream.codec_context.name}): {err}"
            ) from None
        if first is None:
            raise InvalidSource("source video has no decodable frames")
        rotation = _rotation(float(getattr(first, "rotation", 0) or 0))

        duration = 0.0
        if container.duration:
            duration = container.duration / 1_000_000
        elif vstream.duration and vstream.time_base:
            duration = float(vstream.duration * vstream.time_base)
        if duration <= 0:
            raise InvalidSource("source has zero duration")

        sar = Fraction(1)
        if vstream.sample_aspect_ratio and vstream.sample_aspect_ratio > 0:
            sar = Fraction(
                vstream.sample_aspect_ratio.numerator, vstream.sample_aspect_ratio.denominator
            )
        dar = Fraction(width) * sar / height
        display_w, display_h = round(width * sar), height
        if rotation in (90, 270):
            dar, display_w, display_h = 1 / dar, display_h, display_w

        audio = None
        if container.streams.audio:
            astream = container.streams.audio[0]
            actx = astream.codec_context
            layout = actx.layout.name if actx.layout else ""
            audio = AudioInfo(
                codec=actx.name,
                channels=actx.channels,
                channel_layout=layout,
                sample_rate=actx.sample_rate,
            )

        streams = [
            f"#{s.index} {s.type} {s.codec_context.name if s.codec_context else 'unknown'}"
            for s in container.streams
        ]
        return ProbeResult(
            container=fmt,
            duration_s=round(duration, 6),
            size_bytes=path.stat().st_size,
            video=VideoInfo(
                codec=ctx.name,
                width=width,
                height=height,
                sample_aspect_ratio=_ratio(sar),
                display_aspect_ratio=_ratio(dar),
                rotation=rotation,
                frame_rate=f"{frame_rate.numerator}/{frame_rate.denominator}",
                pix_fmt=ctx.pix_fmt,
                display_width=display_w,
                display_height=display_h,
            ),
            audio=audio,
            streams=streams,
        )


def count_frames(path: Path) -> tuple[int, float]:
    """Frames and duration of an encoded stream, by demuxing (no decode): cheap and exact."""
    with av.open(str(path), options=OPEN_OPTIONS) as container:
        stream = container.streams[0]
        frames = sum(1 for packet in container.demux(stream) if packet.size)
        duration = container.duration / 1_000_000 if container.duration else 0.0
    return frames, duration
