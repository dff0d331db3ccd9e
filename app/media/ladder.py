"""The rendition ladder: presets defined once, and the plan that fits them to a source."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from app.core.models import (
    Codec,
    CustomProfile,
    DeinterlaceRate,
    DroppedProfile,
    EncodeJob,
    EncoderSettings,
    NotCarried,
    PixelAspect,
    Plan,
    ProbeResult,
    Rendition,
    VideoInfo,
    VideoRange,
)


class PlanError(ValueError):
    """The request cannot be fitted to the source (a client error, never retried)."""


@dataclass(frozen=True)
class CodecSpec:
    encoder: str
    default_preset: str
    presets: tuple[str, ...]
    bitrate_factor: float
    """Bitrate relative to H.264 for the same rung: newer codecs need fewer bits."""
    vbv: bool = True
    """Whether the encoder caps peaks (maxrate/bufsize) in bitrate mode; SVT-AV1 does not."""


CODECS: dict[Codec, CodecSpec] = {
    "h264": CodecSpec(
        "libx264",
        "fast",
        ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower"),
        1.0,
    ),
    "hevc": CodecSpec(
        "libx265",
        "fast",
        ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower"),
        0.65,
    ),
    "av1": CodecSpec("libsvtav1", "8", tuple(str(p) for p in range(4, 13)), 0.55, vbv=False),
}

# H.264 bitrates (kb/s) per short side; other codecs scale them by their factor.
H264_LADDER: dict[int, int] = {
    2160: 16000,
    1440: 10000,
    1080: 5000,
    720: 3000,
    540: 2000,
    480: 1400,
    360: 800,
    240: 400,
}
PRESET_NAMES: tuple[str, ...] = tuple(f"{h}p" for h in H264_LADDER)

MAXRATE_FACTOR = 1.5
"""Constrained VBR: peaks up to 1.5x the target, over a buffer of 2x the target."""
BUFSIZE_FACTOR = 2.0


def preset_profile(name: str, codec: Codec) -> CustomProfile:
    if name not in PRESET_NAMES:
        raise PlanError(f"unknown profile {name!r}; presets are {', '.join(PRESET_NAMES)}")
    height = int(name.removesuffix("p"))
    bitrate = round(H264_LADDER[height] * CODECS[codec].bitrate_factor)
    return CustomProfile(name=name, height=height, bitrate_kbps=bitrate, codec=codec)


def resolve_profiles(profiles: list[str | CustomProfile], codec: Codec) -> list[CustomProfile]:
    """Presets by name, inline profiles checked against their codec's presets."""
    resolved: list[CustomProfile] = []
    for profile in profiles:
        if isinstance(profile, str):
            resolved.append(preset_profile(profile, codec))
            continue
        spec = CODECS[profile.codec or codec]
        if profile.preset is not None and profile.preset not in spec.presets:
            raise PlanError(
                f"profile {profile.name!r}: preset {profile.preset!r} is not one of "
                f"{', '.join(spec.presets)} for {spec.encoder}"
            )
        resolved.append(profile.model_copy(update={"codec": profile.codec or codec}))
    return resolved


def _even(value: Fraction) -> int:
    return max(2, 2 * round(value / 2))


def _floor_even(value: int) -> int:
    return max(2, value - value % 2)


MAX_SAR_TERM = 65535
"""H.264/HEVC signal the sample aspect ratio as two 16-bit numbers."""
LONG_SIDE_SLACK = 8
"""How far (pixels) the long side may move to find an exactly signalable aspect ratio."""


def _fit(short_side: int, dar: Fraction, max_w: int, max_h: int) -> tuple[int, int, Fraction]:
    """Even width and height with the given short side, no larger than the source, and the
    sample aspect ratio that makes width x SAR / height equal ``dar`` exactly.

    When the exact SAR needs terms above 16 bits (e.g. DCI scope, 1024:429), the long side moves
    by a few pixels to the nearest size whose SAR does fit.
    """
    portrait = dar < 1
    short = min(_even(Fraction(short_side)), _floor_even(max_w if portrait else max_h))
    limit = _floor_even(max_h if portrait else max_w)
    exact_long = short / dar if portrait else short * dar
    nearest = min(_even(exact_long), limit)
    candidates = sorted(
        (c for c in range(nearest - LONG_SIDE_SLACK, nearest + LONG_SIDE_SLACK + 1, 2)
         if 2 <= c <= limit),
        key=lambda c: (abs(c - exact_long), c),
    )  # fmt: skip
    for long in candidates:
        width, height = (short, long) if portrait else (long, short)
        sar = dar * height / width
        if sar.numerator <= MAX_SAR_TERM and sar.denominator <= MAX_SAR_TERM:
            return width, height, sar
    width, height = (short, nearest) if portrait else (nearest, short)
    return width, height, (dar * height / width).limit_denominator(MAX_SAR_TERM)


MAX_ASPECT_CHANGE = Fraction(5, 1000)
"""How far (relative) a square-pixel rendition's display aspect may move from the source's."""


def _square_fit(short_side: int, dar: Fraction, max_w: int, max_h: int) -> tuple[int, int] | None:
    """Even width and height with the given short side, no larger than the source, for square
    pixels (SAR 1:1): the long side whose display aspect is within ``MAX_ASPECT_CHANGE`` of
    ``dar``, a multiple of 4 where one is within it, else the nearest even one (1280x720 ->
    852x480, 428x240; 720x1280 -> 480x852). None where no even long side is close enough
    (short rungs of some aspects, e.g. 145:144 at 144p)."""
    portrait = dar < 1
    short = min(_even(Fraction(short_side)), _floor_even(max_w if portrait else max_h))
    limit = _floor_even(max_h if portrait else max_w)
    exact_long = short / dar if portrait else short * dar
    lowest = _floor_even(int(exact_long * (1 - 2 * MAX_ASPECT_CHANGE)))
    highest = min(limit, int(exact_long * (1 + 2 * MAX_ASPECT_CHANGE)) + 2)
    fits = []
    for long in range(lowest, highest + 1, 2):
        # the display aspect is long/short (landscape) or short/long (portrait)
        change = exact_long / long - 1 if portrait else long / exact_long - 1
        if abs(change) <= MAX_ASPECT_CHANGE:
            fits.append((long % 4 != 0, abs(change), long))
    if not fits:
        return None
    long = min(fits)[2]
    return (short, long) if portrait else (long, short)


def fit_rendition(
    short_side: int, dar: Fraction, max_w: int, max_h: int, pixel_aspect: PixelAspect
) -> tuple[int, int, Fraction, Fraction]:
    """Width, height, sample aspect ratio and the display aspect's relative change.

    ``square`` gives SAR 1:1 within ``MAX_ASPECT_CHANGE`` of the source's display aspect; a
    rung with no such size (only short ones: below 200 pixels the nearest even long side can
    be more than 0.5% off) falls back to the exact fit, so no rendition is ever distorted by more
    than 0.5%: its non-square SAR, with a change of 0, says so in the plan and manifest.
    ``exact`` is the exact fit (``_fit``) everywhere."""
    square = _square_fit(short_side, dar, max_w, max_h) if pixel_aspect == "square" else None
    if square is not None:
        width, height = square
        return width, height, Fraction(1), Fraction(width, height) / dar - 1
    width, height, sar = _fit(short_side, dar, max_w, max_h)
    return width, height, sar, width * sar / height / dar - 1


def _ratio(value: Fraction) -> str:
    return f"{value.numerator}:{value.denominator}"


def gop_frames(frame_rate: Fraction, segment_seconds: int) -> int:
    """A keyframe exactly every segment, identical in every rendition, so players can switch."""
    return max(1, round(frame_rate * segment_seconds))


def deinterlacing(job: EncodeJob, video: VideoInfo) -> tuple[DeinterlaceRate | None, str | None]:
    """bwdif's rate and parity for this job, or (None, None) for progressive output.

    The parity is the measured one: stream flags are often wrong (a 1080i file flagged
    progressive, or bff flagged tff), and the wrong parity makes motion judder."""
    on = job.deinterlace == "on" or (job.deinterlace == "auto" and video.interlaced)
    if not on:
        return None, None
    parity = next(
        (p for p in (video.measured_field_order, video.field_order) if p in ("tff", "bff")),
        "tff",
    )
    return job.deinterlace_rate, parity


PQ, HLG = "smpte2084", "arib-std-b67"
HDR_TRANSFERS = {PQ: "PQ", HLG: "HLG"}
BT709 = {"color_primaries": "bt709", "color_transfer": "bt709", "color_matrix": "bt709"}
TEN_BIT = "yuv420p10le"
HD_SHORT_SIDE = 720
"""Untagged sources this tall (short side) are taken as BT.709, as players assume."""


def source_hdr(video: VideoInfo) -> VideoRange | None:
    """PQ or HLG where the source's pictures are coded so, else None.

    Dolby Vision is judged by its base layer's transfer (profile 8.1 is HDR10-compatible, 8.4
    HLG, 8.2 and 9 SDR); the pixel values decide the look, so a PQ or HLG transfer counts
    whatever the dynamic range label says. A Dolby Vision stream with no transfer at all is
    profile 5, whose pictures (IPTPQc2) only a Dolby Vision decoder can show: refused."""
    if video.dynamic_range == "HDR10":
        return "PQ"
    if video.dynamic_range == "HLG":
        return "HLG"
    if video.color_transfer == HLG:
        return "HLG"
    if video.color_transfer == PQ:
        return "PQ"
    if video.dynamic_range == "DolbyVision" and video.color_transfer is None:
        raise PlanError(
            "the source is Dolby Vision without a backward-compatible base layer (profile 5, "
            "IPTPQc2 pictures): it cannot be encoded without Dolby's tools"
        )
    return None


def colour(
    codec: Codec, job: EncodeJob, video: VideoInfo, name: str
) -> tuple[dict[str, object], VideoRange]:
    """The rendition's pixel format, colour tags, HDR metadata and tone-mapping.

    HDR is kept where the codec carries it here (HEVC, AV1: 10-bit, the source's tags and
    ST 2086 / CLL metadata); H.264 (8-bit High) is tone-mapped to BT.709 SDR, since an 8-bit
    PQ picture bands and most H.264 decoders ignore the tags. ``hdr: preserve`` refuses
    instead of tone-mapping; ``hdr: tonemap`` makes every rendition SDR."""
    hdr = source_hdr(video)
    if hdr is None:
        return _sdr_tags(video), "SDR"
    keep = job.hdr != "tonemap" and codec != "h264"
    if job.hdr == "preserve" and codec == "h264":
        kind = "HDR10" if hdr == "PQ" else "HLG"
        raise PlanError(
            f"profile {name!r}: H.264 cannot carry {kind} here; use codec hevc or av1, "
            "or hdr: tonemap"
        )
    if not keep:
        return {**BT709, "pix_fmt": "yuv420p", "tonemap": True,
                "tonemap_from": PQ if hdr == "PQ" else HLG}, "SDR"  # fmt: skip
    return {
        "pix_fmt": TEN_BIT,
        "color_primaries": video.color_primaries or "bt2020",
        "color_transfer": PQ if hdr == "PQ" else HLG,
        "color_matrix": video.color_matrix or "bt2020nc",
        "mastering_display": video.mastering_display if hdr == "PQ" else None,
        "content_light": video.content_light,
    }, hdr


def _sdr_tags(video: VideoInfo) -> dict[str, object]:
    """BT.709 where the source says so or says nothing and is HD; the source's own tags
    otherwise (SD BT.601 stays BT.601: the matrix is not converted, so the tag must match)."""
    tags: dict[str, object] = {
        "color_primaries": video.color_primaries,
        "color_transfer": video.color_transfer,
        "color_matrix": video.color_matrix,
    }
    if all(v in (None, "bt709") for v in tags.values()):
        short = min(video.display_width, video.display_height)
        if any(tags.values()) or short >= HD_SHORT_SIDE:
            return dict(BT709)
    return tags


def check_invariants(renditions: list[Rendition]) -> None:
    """What no plan may contain, whatever the rules above decide: a PQ/HLG transfer on an
    8-bit picture (it bands, and players would show a washed-out image), or a video range
    that disagrees with the tags."""
    for r in renditions:
        s = r.settings
        hdr = HDR_TRANSFERS.get(s.color_transfer or "")
        if hdr is not None and "10" not in s.pix_fmt:
            raise PlanError(f"{r.name}: transfer {s.color_transfer} needs 10-bit, not {s.pix_fmt}")
        if (hdr or "SDR") != r.video_range:
            raise PlanError(
                f"{r.name}: video range {r.video_range} but transfer {s.color_transfer}"
            )
        if s.tonemap and hdr is not None:
            raise PlanError(f"{r.name}: tone-mapped to SDR but tagged {s.color_transfer}")


def plan_renditions(job: EncodeJob, probe: ProbeResult) -> Plan:
    """Fit the requested rungs to the source: never upscale, keep the display aspect ratio.

    A rung's height is the short side of the picture, so "720p" of a portrait source is 720 wide.
    Dimensions are even (4:2:0). By default (``pixel_aspect: square``) pixels are square, also
    for anamorphic sources, and the long side is rounded so that the display aspect moves by at
    most 0.5% (recorded as ``display_aspect_change``); see ``fit_rendition``. With
    ``pixel_aspect: exact`` the sample aspect ratio absorbs rounding so that every rendition
    shows the source's exact display aspect ratio.
    Each rendition also carries its treatment (deinterlacing, HDR or tone-mapping, colour
    tags): the plan is what the encoder reads, and what keys a chunk's output.
    """
    video = probe.video
    dar = Fraction(video.display_aspect_ratio.replace(":", "/"))
    source_short = min(video.display_width, video.display_height)
    deinterlace, parity = deinterlacing(job, video)
    # field rate: one frame per field, so 50i becomes 50p (30000/1001 frames: 60000/1001)
    frame_rate = Fraction(video.frame_rate) * (2 if deinterlace == "field" else 1)
    gop = gop_frames(frame_rate, job.segment_seconds)

    renditions: list[Rendition] = []
    dropped: list[DroppedProfile] = []
    for profile in resolve_profiles(job.profiles, job.codec):
        if profile.height > source_short:
            dropped.append(
                DroppedProfile(
                    name=profile.name,
                    reason=f"{profile.height}p would upscale a {source_short}p source",
                )
            )
            continue
        width, height, sar, change = fit_rendition(
            profile.height, dar, video.display_width, video.display_height, job.pixel_aspect
        )
        codec = profile.codec or job.codec
        spec = CODECS[codec]
        tags, video_range = colour(codec, job, video, profile.name)
        renditions.append(
            Rendition(
                name=profile.name,
                codec=codec,
                width=width,
                height=height,
                sample_aspect_ratio=_ratio(sar),
                settings=EncoderSettings(
                    encoder=spec.encoder,
                    preset=profile.preset or spec.default_preset,
                    rate_control="constrained-vbr" if spec.vbv else "vbr",
                    bitrate_kbps=profile.bitrate_kbps,
                    maxrate_kbps=round(profile.bitrate_kbps * MAXRATE_FACTOR) if spec.vbv else None,
                    bufsize_kbps=round(profile.bitrate_kbps * BUFSIZE_FACTOR) if spec.vbv else None,
                    gop_frames=gop,
                    frame_rate=f"{frame_rate.numerator}/{frame_rate.denominator}",
                    deinterlace=deinterlace,
                    field_order=parity,
                    **tags,
                ),
                video_range=video_range,
                display_aspect_change=round(float(change), 6),
            )
        )
    if not renditions:
        reasons = "; ".join(f"{d.name}: {d.reason}" for d in dropped)
        raise PlanError(f"no requested profile fits the source ({reasons})")
    check_invariants(renditions)
    renditions.sort(key=lambda r: (-r.height * r.width, r.name))
    return Plan(
        renditions=renditions,
        dropped=dropped,
        segment_seconds=job.segment_seconds,
        not_carried=dolby_vision_not_carried(video),
    )


def dolby_vision_not_carried(video: VideoInfo) -> list[NotCarried]:
    """Dolby Vision's RPU (the dynamic metadata) is not carried: the outputs are its base
    layer, HDR10 or HLG by its transfer. Reported so nobody expects Dolby Vision out."""
    if video.dynamic_range != "DolbyVision":
        return []
    base = {HLG: "HLG", PQ: "HDR10"}.get(video.color_transfer or "", "SDR")
    return [
        NotCarried(
            stream=f"#{video.index} video {video.codec} (Dolby Vision RPU)",
            kind="video",
            reason=f"Dolby Vision metadata is not carried; the outputs keep its {base} base "
            "layer (or its SDR tone-map)",
        )
    ]
