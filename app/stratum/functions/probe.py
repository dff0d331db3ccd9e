"""probe-source: the facts of a source file, read in-process with PyAV (FFmpeg's libraries)."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from fractions import Fraction
from itertools import pairwise
from pathlib import Path
from statistics import median
from typing import cast

import av
import av.error
from av.audio.stream import AudioStream
from av.container import InputContainer
from av.sidedata.sidedata import SideData
from av.stream import Stream
from av.subtitles.stream import SubtitleStream
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from app.core.models import (
    AudioInfo,
    ContentLight,
    DynamicRange,
    FieldOrder,
    MasteringDisplay,
    OtherStream,
    ProbeResult,
    SubtitleInfo,
    VideoInfo,
)
from app.media.colour import MATRICES, PRIMARIES, TRANSFERS
from app.media.formats import ALLOWED_CONTAINERS, OPEN_OPTIONS
from app.stratum.functions.idet import IDET_TIMEOUT_S, FieldOrderRun


class InvalidSource(ValueError):
    """The file is not video this platform can encode; the message is for people."""


MAX_DIMENSION = 8192


def _ratio(value: Fraction) -> str:
    return f"{value.numerator}:{value.denominator}"


def _rotation(degrees: float) -> int:
    return round(degrees / 90.0) % 4 * 90


COLOR_RANGES = {1: "tv", 2: "pc"}
# AVFieldOrder: TT/BB are coded and shown in the same order; TB is coded top first but shown
# bottom first (bff), BT the reverse (tff).
FIELD_ORDERS: dict[int, FieldOrder] = {1: "progressive", 2: "tff", 3: "bff", 4: "bff", 5: "tff"}
TEXT_SUBTITLES = frozenset({"subrip", "srt", "ass", "ssa", "webvtt", "mov_text", "text", "ttml"})
DOLBY_VISION_TAGS = frozenset({"dvh1", "dvhe", "dav1", "dva1", "dvav"})
VFR_PACKETS = 3000
"""Packets whose timing is read (demux only, no decode): 100 s at 30 fps, enough to tell
29.97 from 30 when counting dropped frames."""
VFR_TOLERANCE = 0.10
FRAMES_FOR_FLAGS = 5


def is_text_subtitle(codec: str) -> bool:
    """Text subtitles can be carried (as WebVTT); image ones (PGS, DVD, DVB) are only reported."""
    return codec in TEXT_SUBTITLES


def _language(stream: Stream) -> str | None:
    language = (stream.metadata.get("language") or "").strip()
    return None if language.lower() in ("", "und") else language


def _title(stream: Stream) -> str | None:
    # Matroska and most formats say "title"; the MP4 demuxer reports a track's udta name as "name".
    return stream.metadata.get("title") or stream.metadata.get("name") or None


def _disposition(stream: Stream, name: str) -> bool:
    flag = getattr(av.stream.Disposition, name, None)
    return bool(flag is not None and stream.disposition & flag)


def _chroma(fmt: av.VideoFormat) -> str | None:
    """4:2:0 / 4:2:2 / 4:4:4 / 4:0:0 from the pixel format's subsampling (None for RGB)."""
    if fmt.is_rgb:
        return "4:4:4"
    components = fmt.components
    if len(components) < 3:
        return "4:0:0" if components else None
    sub_w = fmt.chroma_width(1 << 10)
    sub_h = fmt.chroma_height(1 << 10)
    if sub_w == 1 << 10:
        return "4:4:4"
    if sub_w == 1 << 9:
        return "4:2:0" if sub_h == 1 << 9 else "4:2:2"
    if sub_w == 1 << 8:
        return "4:1:0" if sub_h == 1 << 8 else "4:1:1"
    return None


def _rationals(data: bytes, count: int) -> list[float]:
    values = struct.unpack(f"<{2 * count}i", data[: 8 * count])
    return [n / d if d else 0.0 for n, d in zip(values[::2], values[1::2], strict=True)]


def _mastering_display(data: bytes) -> MasteringDisplay | None:
    """AVMasteringDisplayMetadata: primaries[3][2] (R, G, B), white[2], min, max luminance as
    AVRationals, then has_primaries and has_luminance."""
    if len(data) < 88:
        return None
    values = _rationals(data, 10)
    has_primaries, has_luminance = struct.unpack("<ii", data[80:88])
    if not (has_primaries and has_luminance):
        return None
    return MasteringDisplay(
        red=(round(values[0], 5), round(values[1], 5)),
        green=(round(values[2], 5), round(values[3], 5)),
        blue=(round(values[4], 5), round(values[5], 5)),
        white_point=(round(values[6], 5), round(values[7], 5)),
        min_luminance=round(values[8], 6),
        max_luminance=round(values[9], 4),
    )


def _content_light(data: bytes) -> ContentLight | None:
    """AVContentLightMetadata: unsigned MaxCLL, MaxFALL."""
    if len(data) < 8:
        return None
    max_cll, max_fall = struct.unpack("<II", data[:8])
    return ContentLight(max_cll=max_cll, max_fall=max_fall)


STANDARD_RATES = tuple(
    Fraction(r)
    for r in ("24000/1001", "24", "25", "30000/1001", "30", "48", "50", "60000/1001", "60")
)


def _frame_durations(path: Path, index: int) -> tuple[list[int], Fraction]:
    """Durations between the first packets' presentation times, and their time base. The file
    is opened again so the demux starts at the beginning whatever seeking the format allows."""
    times: list[int] = []
    time_base = Fraction(1)
    try:
        with av.open(str(path), options=OPEN_OPTIONS) as container:
            stream = container.streams[index]
            time_base = Fraction(stream.time_base or 1)
            for packet in container.demux(stream):
                if packet.pts is not None and packet.size:
                    times.append(packet.pts)
                if len(times) >= VFR_PACKETS:
                    break
    except (av.error.FFmpegError, ValueError):
        return [], time_base
    times.sort()
    return [b - a for a, b in pairwise(times) if b > a], time_base


GRID_MISFIT = 0.25
"""How far (in frames, on average) frame durations may sit off whole frames of a grid."""
SINGLE_FRAMES = 0.7
"""Share of durations one frame long on a grid that is the stream's own (drops are a few)."""


def variable_rate(
    durations: list[int], time_base: Fraction, average: Fraction | None
) -> Fraction | None:
    """The nominal rate of a variable-frame-rate stream, or None if the rate is constant.

    VFR when more than a few frame durations stray from the typical one by over 10 %
    (container timestamp rounding, 1 ms in Matroska, stays well inside that). The nominal rate
    is the average with the dropped frames put back: on the lowest standard rate's grid where
    the durations are whole frames (mostly one), a duration of two frames is a dropped frame,
    so 30 fps with every tenth frame missing is 30, not its average 27 (a clock that jitters
    by a third of a frame fits no grid: its average stands). Then the standard rate within
    1 % is taken (a phone's 29.7 is 29.97). r_frame_rate is neither: it is the finest timestamp
    step (45 for a jittery 30)."""
    if len(durations) < 3:
        return None
    typical = median(durations)
    off = sum(1 for d in durations if abs(d - typical) > VFR_TOLERANCE * typical)
    if off <= max(1, len(durations) // 20):
        return None
    seconds = [d * time_base for d in durations]
    # the whole stream's average where known (a window's ends can sit on a jittered frame)
    rate: Fraction = average or Fraction(len(seconds)) / sum(seconds)
    for grid in STANDARD_RATES:
        slots = [max(1, round(s * grid)) for s in seconds]
        misfit = sum(abs(s * grid - n) for s, n in zip(seconds, slots, strict=True))
        if misfit <= GRID_MISFIT * len(seconds) and slots.count(1) >= SINGLE_FRAMES * len(slots):
            rate *= Fraction(sum(slots), len(slots))  # frames per slot: the drops put back
            break
    standard = min(STANDARD_RATES, key=lambda r: abs(r - rate))
    return standard if abs(standard - rate) <= standard / 100 else rate.limit_denominator(1001)


def _timecode(container: InputContainer, stream: VideoStream) -> str | None:
    """Stream tag, then the container's, then a tmcd (QuickTime timecode) data stream's."""
    for metadata in (stream.metadata, container.metadata):
        if metadata.get("timecode"):
            return str(metadata["timecode"])
    for other in container.streams:
        if other.metadata.get("timecode"):
            return str(other.metadata["timecode"])
    return None


def _codec_name(stream: Stream) -> str:
    """FFmpeg's name of the codec as ffprobe says it (subrip, mp3), not the decoder's (srt,
    mp3float). Data streams often have no decoder: a QuickTime timecode track is named "tmcd"."""
    ctx = stream.codec_context
    if ctx is not None and ctx.name:
        return str(getattr(ctx.codec, "canonical_name", None) or ctx.name)
    if stream.metadata.get("timecode"):
        return "tmcd"
    return getattr(stream, "name", None) or "unknown"


def _dynamic_range(transfer: str | None, dolby_vision: bool) -> DynamicRange:
    if dolby_vision:
        return "DolbyVision"
    if transfer == "smpte2084":
        return "HDR10"
    if transfer == "arib-std-b67":
        return "HLG"
    return "SDR"


def _stream_line(stream: Stream) -> str:
    codec = _codec_name(stream)
    line = f"#{stream.index} {stream.type} {codec}"
    language = _language(stream)
    return f"{line} ({language})" if language else line


def probe_file(
    path: Path, ffmpeg: str | None = None, idet_timeout_s: float = IDET_TIMEOUT_S
) -> ProbeResult:
    """Open, check and describe ``path``; raise :class:`InvalidSource` with a reason if unusable.
    ``ffmpeg`` (the configured binary) runs the idet measurement, given ``idet_timeout_s``."""
    try:
        container = av.open(str(path), options=OPEN_OPTIONS)
    except (av.error.FFmpegError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or err.__class__.__name__
        raise InvalidSource(f"source is not a readable media file ({reason})") from None
    with container, ExitStack() as background:
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
        # the pictures' field order, measured while the rest is read
        idet = background.enter_context(
            FieldOrderRun(path, fmt, ffmpeg=ffmpeg, timeout_s=idet_timeout_s)
        )
        rate = vstream.guessed_rate or vstream.average_rate
        if vstream.average_rate and rate and rate > 2 * vstream.average_rate:
            rate = vstream.average_rate  # variable frame rate: the average is the honest one
        if not rate or rate <= 0 or rate > 240:
            raise InvalidSource("source video has no usable frame rate")
        frame_rate = Fraction(rate.numerator, rate.denominator)
        average = Fraction(vstream.average_rate) if vstream.average_rate else None
        nominal = variable_rate(*_frame_durations(path, vstream.index), average)
        if nominal is not None:
            frame_rate = nominal

        frames = container.decode(vstream)
        try:
            first = next(frames, None)
        except (av.error.FFmpegError, ValueError) as err:
            raise InvalidSource(
                f"source video cannot be decoded ({vstream.codec_context.name}): {err}"
            ) from None
        if first is None:
            raise InvalidSource("source video has no decodable frames")
        flags = _frame_flags(first, frames)
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

        audio_streams = [_audio_info(a) for a in container.streams.audio]
        subtitles = [_subtitle_info(t) for t in container.streams.subtitles]
        other_streams = [
            OtherStream(
                index=o.index,
                type=o.type,
                codec=_codec_name(o),
            )
            for o in container.streams
            if o.type not in ("video", "audio", "subtitle")
        ]
        facts = _video_facts(container, vstream, first, flags)
        measured = idet.result()
        flagged = facts["field_order"] in ("tff", "bff") or (
            facts["field_order"] is None and flags.interlaced
        )
        video = VideoInfo.model_validate(
            {
                "codec": ctx.name,
                "width": width,
                "height": height,
                "sample_aspect_ratio": _ratio(sar),
                "display_aspect_ratio": _ratio(dar),
                "rotation": rotation,
                "frame_rate": f"{frame_rate.numerator}/{frame_rate.denominator}",
                "pix_fmt": ctx.pix_fmt,
                "display_width": display_w,
                "display_height": display_h,
                "index": vstream.index,
                **facts,
                "measured_field_order": measured,
                # Either saying interlaced decides it: idet catches unflagged (or mis-flagged
                # progressive) interlaced video, and a flag is trusted where idet, which can
                # miss low-motion interlaced content, says progressive. Both are reported.
                "interlaced": measured in ("tff", "bff") or flagged,
                "variable_frame_rate": nominal is not None,
            }
        )
        streams = [_stream_line(s) for s in container.streams]
        return ProbeResult(
            container=fmt,
            duration_s=round(duration, 6),
            size_bytes=path.stat().st_size,
            video=video,
            audio=audio_streams[0] if audio_streams else None,
            streams=streams,
            audio_streams=audio_streams,
            subtitles=subtitles,
            other_streams=other_streams,
            timecode=video.timecode,
        )


class _Flags:
    """What the first decoded frames say: interlacing, side data."""

    def __init__(self) -> None:
        self.interlaced = False
        self.captions = False
        self.dolby_vision = False
        self.mastering: MasteringDisplay | None = None
        self.light: ContentLight | None = None


def _frame_flags(first: VideoFrame, rest: Iterator[VideoFrame]) -> _Flags:
    """Read the first few frames' flags and side data; a decode error past the first frame is
    not this probe's business (the encode finds it), so it ends the reading quietly."""
    flags = _Flags()
    frame: VideoFrame | None = first
    for _ in range(FRAMES_FOR_FLAGS):
        if frame is None:
            break
        flags.interlaced = flags.interlaced or bool(frame.interlaced_frame)
        # PyAV's stubs type the container's iteration as keys; it yields SideData objects.
        for side in cast(Iterable[SideData], frame.side_data):
            kind = side.type.name
            if kind == "A53_CC":
                flags.captions = True
            elif kind in ("DOVI_RPU_BUFFER", "DOVI_METADATA"):
                flags.dolby_vision = True
            elif kind == "MASTERING_DISPLAY_METADATA" and flags.mastering is None:
                flags.mastering = _mastering_display(bytes(side))
            elif kind == "CONTENT_LIGHT_LEVEL" and flags.light is None:
                flags.light = _content_light(bytes(side))
        try:
            frame = next(rest, None)
        except (av.error.FFmpegError, ValueError):
            break
    return flags


def _video_facts(
    container: InputContainer, stream: VideoStream, first: VideoFrame, flags: _Flags
) -> dict[str, object]:
    """Profile, sampling, colour, HDR and captions of the video stream."""
    ctx = stream.codec_context
    bit_depth = chroma = None
    if ctx.pix_fmt:
        fmt = av.VideoFormat(ctx.pix_fmt)
        if fmt.components:
            bit_depth = max(c.bits for c in fmt.components)
        chroma = _chroma(fmt)
    # The frame's tags where the stream's say nothing (some demuxers leave codecpar unset).
    primaries = PRIMARIES.get(int(ctx.color_primaries)) or PRIMARIES.get(int(first.color_primaries))
    transfer = TRANSFERS.get(int(ctx.color_trc)) or TRANSFERS.get(int(first.color_trc))
    matrix = MATRICES.get(int(ctx.colorspace)) if int(ctx.colorspace) != 2 else None
    matrix = matrix or (MATRICES.get(int(first.colorspace)) if int(first.colorspace) != 2 else None)
    color_range = COLOR_RANGES.get(int(ctx.color_range)) or COLOR_RANGES.get(int(first.color_range))
    tag = (ctx.codec_tag or "").strip("\x00").lower()
    dolby_vision = flags.dolby_vision or tag in DOLBY_VISION_TAGS
    properties = int(getattr(ctx, "properties", 0) or 0)
    return {
        "profile": ctx.profile or None,
        "bit_depth": bit_depth,
        "chroma_format": chroma,
        "field_order": FIELD_ORDERS.get(int(ctx.field_order or 0)),
        "color_primaries": primaries,
        "color_transfer": transfer,
        "color_matrix": matrix,
        "color_range": color_range,
        "dynamic_range": _dynamic_range(transfer, dolby_vision),
        "mastering_display": flags.mastering,
        "content_light": flags.light,
        "timecode": _timecode(container, stream),
        # AV_CODEC_PROP_CLOSED_CAPTIONS (0x10000): the decoder saw A53 captions.
        "closed_captions": flags.captions or bool(properties & 0x10000),
    }


def _audio_info(stream: AudioStream) -> AudioInfo:
    ctx = stream.codec_context
    layout = ctx.layout.name if ctx.layout else ""
    return AudioInfo(
        codec=_codec_name(stream),
        channels=ctx.channels,
        channel_layout=layout,
        sample_rate=ctx.sample_rate,
        index=stream.index,
        language=_language(stream),
        title=_title(stream),
        default=_disposition(stream, "default"),
        forced=_disposition(stream, "forced"),
    )


def _subtitle_info(stream: SubtitleStream) -> SubtitleInfo:
    codec = _codec_name(stream)
    return SubtitleInfo(
        index=stream.index,
        codec=codec,
        text=is_text_subtitle(codec),
        language=_language(stream),
        title=_title(stream),
        default=_disposition(stream, "default"),
        forced=_disposition(stream, "forced"),
        hearing_impaired=_disposition(stream, "hearing_impaired"),
    )
