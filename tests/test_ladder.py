"""Unit tests of the rendition ladder: presets, custom profiles and fitting them to a source."""

from __future__ import annotations

from fractions import Fraction

import pytest
from pydantic import ValidationError

from app.api.main import create_app
from app.api.routers.encode import job_id_for
from app.core.models import (
    CustomProfile,
    EncodeJob,
    EncodeRequest,
    Plan,
    ProbeResult,
    VideoInfo,
)
from app.media.ladder import CODECS, H264_LADDER, PRESET_NAMES, PlanError, plan_renditions

ALL_PRESETS = ["2160p", "1440p", "1080p", "720p", "540p", "480p", "360p", "240p"]


def ratio(value: str) -> Fraction:
    num, den = value.split(":")
    return Fraction(int(num), int(den))


def probe(
    width: int,
    height: int,
    *,
    sar: str = "1:1",
    rotation: int = 0,
    frame_rate: str = "25/1",
    display: tuple[int, int] | None = None,
    dar: str | None = None,
) -> ProbeResult:
    """A probe of a video stream; display size and DAR follow from SAR and rotation by default."""
    if display is None:
        display_w = Fraction(width) * ratio(sar)
        display = (round(display_w), height)
        if rotation in (90, 270):
            display = (display[1], display[0])
    if dar is None:
        exact = Fraction(width, height) * ratio(sar)
        if rotation in (90, 270):
            exact = 1 / exact
        dar = f"{exact.numerator}:{exact.denominator}"
    return ProbeResult(
        container="mov,mp4,m4a,3gp,3g2,mj2",
        duration_s=10.0,
        size_bytes=1_000_000,
        video=VideoInfo(
            codec="h264",
            width=width,
            height=height,
            sample_aspect_ratio=sar,
            display_aspect_ratio=dar,
            rotation=rotation,
            frame_rate=frame_rate,
            pix_fmt="yuv420p",
            display_width=display[0],
            display_height=display[1],
        ),
        audio=None,
        streams=["video: h264"],
    )


def job(
    profiles: list[str | CustomProfile],
    *,
    codec: str = "h264",
    segment_seconds: int = 4,
    pixel_aspect: str = "square",
) -> EncodeJob:
    return EncodeJob(
        job_id="job-1",
        source_uri="file:///data/in.mp4",
        profiles=profiles,
        codec=codec,
        segment_seconds=segment_seconds,
        output_uri="file:///data/out/job-1",
        scratch_uri="file:///data/scratch/job-1",
        pixel_aspect=pixel_aspect,
    )


def plan(profiles: list[str | CustomProfile], source: ProbeResult, **kwargs: object) -> Plan:
    return plan_renditions(job(profiles, **kwargs), source)  # type: ignore[arg-type]


def sizes(result: Plan) -> dict[str, tuple[int, int]]:
    return {r.name: (r.width, r.height) for r in result.renditions}


# ---------------------------------------------------------------- presets and dimensions


def test_presets_are_the_ladder_rungs() -> None:
    assert list(PRESET_NAMES) == ALL_PRESETS
    assert set(H264_LADDER) == {int(n.removesuffix("p")) for n in ALL_PRESETS}


def test_16_9_1080p_source_full_ladder() -> None:
    result = plan(["1080p", "720p", "480p", "360p", "240p"], probe(1920, 1080))
    got = sizes(result)
    assert got["1080p"] == (1920, 1080)
    assert got["720p"] == (1280, 720)
    assert got["360p"] == (640, 360)
    # square pixels: 853.3 and 426.7 become the nearest multiples of 4 within 0.5%
    assert got["480p"] == (852, 480)
    assert got["240p"] == (428, 240)
    assert result.dropped == []


@pytest.mark.parametrize("name", ["1080p", "720p", "480p", "360p", "240p"])
def test_16_9_1080p_source_square_pixels_on_every_rung(name: str) -> None:
    result = plan([name], probe(1920, 1080))
    (rendition,) = result.renditions
    assert rendition.sample_aspect_ratio == "1:1"
    shown = Fraction(rendition.width, rendition.height)
    assert abs(shown / Fraction(16, 9) - 1) <= Fraction(5, 1000)
    assert rendition.display_aspect_change == round(float(shown / Fraction(16, 9) - 1), 6)
    exact_width = Fraction(rendition.height * 16, 9)
    if exact_width.denominator == 1 and exact_width % 4 == 0:
        assert rendition.width == exact_width
        assert rendition.display_aspect_change == 0


def test_square_default_16_9_ladder() -> None:
    """Issue 12: 854x480 with SAR 1280:1281 becomes 852x480 with square pixels, the 0.16%
    narrower picture recorded."""
    result = plan(["720p", "480p", "360p"], probe(1280, 720))
    by_name = {r.name: r for r in result.renditions}
    assert sizes(result) == {"720p": (1280, 720), "480p": (852, 480), "360p": (640, 360)}
    assert {r.sample_aspect_ratio for r in result.renditions} == {"1:1"}
    assert by_name["720p"].display_aspect_change == 0
    assert by_name["360p"].display_aspect_change == 0
    assert by_name["480p"].display_aspect_change == round(852 / 480 / (16 / 9) - 1, 6)
    assert -0.005 <= by_name["480p"].display_aspect_change < 0


def test_exact_pixel_aspect_keeps_the_old_non_square_fit() -> None:
    result = plan(["720p", "480p", "360p", "240p"], probe(1280, 720), pixel_aspect="exact")
    by_name = {r.name: r for r in result.renditions}
    assert sizes(result) == {
        "720p": (1280, 720), "480p": (854, 480), "360p": (640, 360), "240p": (426, 240)
    }  # fmt: skip
    assert by_name["480p"].sample_aspect_ratio == "1280:1281"
    assert by_name["240p"].sample_aspect_ratio == "640:639"
    assert by_name["720p"].sample_aspect_ratio == "1:1"
    assert {r.display_aspect_change for r in result.renditions} == {0}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # PAL 4:3, 720x576 at 16:15: shown 768x576
        pytest.param(
            probe(720, 576, sar="16:15"),
            {"sd": (768, 576), "480p": (640, 480), "360p": (480, 360), "240p": (320, 240)},
            id="pal-4:3",
        ),
        # PAL 16:9, 720x576 at 64:45: shown 1024x576
        pytest.param(
            probe(720, 576, sar="64:45"),
            {"sd": (1024, 576), "480p": (852, 480), "360p": (640, 360), "240p": (428, 240)},
            id="pal-16:9",
        ),
        # NTSC 4:3, 720x480 at 8:9: shown 640x480
        pytest.param(
            probe(720, 480, sar="8:9"),
            {"480p": (640, 480), "360p": (480, 360), "240p": (320, 240)},
            id="ntsc-4:3",
        ),
    ],
)
def test_anamorphic_source_gives_square_pixels_at_its_display_aspect(
    source: ProbeResult, expected: dict[str, tuple[int, int]]
) -> None:
    full = CustomProfile(name="sd", height=576, bitrate_kbps=2500)  # dropped for NTSC
    result = plan([full, "480p", "360p", "240p"], source)
    assert sizes(result) == expected
    dar = ratio(source.video.display_aspect_ratio)
    for rendition in result.renditions:
        assert rendition.sample_aspect_ratio == "1:1", rendition
        assert abs(Fraction(rendition.width, rendition.height) / dar - 1) <= Fraction(5, 1000)
    exact = plan(["480p"], probe(720, 576, sar="64:45"), pixel_aspect="exact").renditions[0]
    assert (exact.width, exact.height, exact.sample_aspect_ratio) == (854, 480, "1280:1281")


def test_portrait_source_gives_square_pixels() -> None:
    result = plan(["720p", "480p", "360p", "240p"], probe(720, 1280))
    assert sizes(result) == {
        "720p": (720, 1280), "480p": (480, 852), "360p": (360, 640), "240p": (240, 428)
    }  # fmt: skip
    assert {r.sample_aspect_ratio for r in result.renditions} == {"1:1"}
    for rendition in result.renditions:
        change = Fraction(rendition.width, rendition.height) / Fraction(9, 16) - 1
        assert abs(change) <= Fraction(5, 1000)
        assert rendition.display_aspect_change == round(float(change), 6)
    exact = plan(["480p"], probe(720, 1280), pixel_aspect="exact").renditions[0]
    assert (exact.width, exact.height, exact.sample_aspect_ratio) == (480, 854, "1281:1280")


def test_no_square_size_within_half_a_percent_falls_back_to_the_exact_fit() -> None:
    """At 144 lines a 145:144 picture is 145 wide: 144 and 146 are both 0.69% off, so the
    rung keeps the exact aspect with a non-square SAR (and records no change)."""
    source = probe(1450, 1440)
    small = CustomProfile(name="small", height=144, bitrate_kbps=200)
    (rendition,) = plan([small], source).renditions
    assert (rendition.width, rendition.height) == (144, 144)
    assert rendition.sample_aspect_ratio == "145:144"
    assert rendition.display_aspect_change == 0
    # where a taller rung has a square size, it gets it
    (tall,) = plan(["720p"], source).renditions
    assert (tall.width, tall.height, tall.sample_aspect_ratio) == (724, 720, "1:1")


def test_never_upscale_drops_larger_rungs_with_reason() -> None:
    result = plan(["1080p", "720p"], probe(1280, 720))
    assert sizes(result) == {"720p": (1280, 720)}
    assert [d.name for d in result.dropped] == ["1080p"]
    assert "upscale" in result.dropped[0].reason
    assert "720p" in result.dropped[0].reason


def test_all_rungs_dropped_raises() -> None:
    with pytest.raises(PlanError, match="upscale") as err:
        plan(["1080p", "720p"], probe(640, 360))
    assert "1080p" in str(err.value)
    assert "720p" in str(err.value)


def test_rung_equal_to_source_is_kept() -> None:
    result = plan(["360p"], probe(640, 360))
    assert sizes(result) == {"360p": (640, 360)}


def test_portrait_source_short_side_is_width() -> None:
    result = plan(["720p", "360p"], probe(1080, 1920))
    got = sizes(result)
    assert got["720p"] == (720, 1280)
    assert got["360p"] == (360, 640)


def test_portrait_never_upscales_on_short_side() -> None:
    # 1080 wide: a 1440p rung would need 1440 wide, even though 1920 > 1440.
    result = plan(["1440p", "1080p"], probe(1080, 1920))
    assert sizes(result) == {"1080p": (1080, 1920)}
    assert [d.name for d in result.dropped] == ["1440p"]


def test_rotated_source_gives_portrait_renditions() -> None:
    source = probe(1920, 1080, rotation=90, display=(1080, 1920), dar="9:16")
    assert source.video.display_aspect_ratio == "9:16"
    result = plan(["1080p", "720p", "480p"], source)
    got = sizes(result)
    assert got["1080p"] == (1080, 1920)
    assert got["720p"] == (720, 1280)
    for width, height in got.values():
        assert width < height


def test_non_square_pixels_pal_4_3() -> None:
    source = probe(720, 576, sar="16:15")
    assert source.video.display_aspect_ratio == "4:3"
    assert (source.video.display_width, source.video.display_height) == (768, 576)
    result = plan(["480p", "360p"], source)
    assert sizes(result) == {"480p": (640, 480), "360p": (480, 360)}
    for rendition in result.renditions:
        assert rendition.sample_aspect_ratio == "1:1"


# ---------------------------------------------------------------- frame rate and GOP


@pytest.mark.parametrize(("segment_seconds", "gop"), [(4, 120), (2, 60), (1, 30), (6, 180)])
def test_ntsc_gop_is_one_segment(segment_seconds: int, gop: int) -> None:
    result = plan(
        ["720p", "360p"],
        probe(1280, 720, frame_rate="30000/1001"),
        segment_seconds=segment_seconds,
    )
    assert result.segment_seconds == segment_seconds
    for rendition in result.renditions:
        assert rendition.settings.gop_frames == gop
        assert rendition.settings.frame_rate == "30000/1001"
        assert rendition.settings.closed_gop is True


@pytest.mark.parametrize(
    ("frame_rate", "expected"),
    [("25/1", "25/1"), ("24000/1001", "24000/1001"), ("50/2", "25/1"), ("60", "60/1")],
)
def test_frame_rate_is_kept_exact(frame_rate: str, expected: str) -> None:
    result = plan(["360p"], probe(640, 360, frame_rate=frame_rate))
    assert result.renditions[0].settings.frame_rate == expected


def test_gop_is_identical_across_renditions() -> None:
    result = plan(ALL_PRESETS, probe(3840, 2160, frame_rate="24000/1001"))
    gops = {r.settings.gop_frames for r in result.renditions}
    assert gops == {96}
    assert len(result.renditions) == len(ALL_PRESETS)


# ---------------------------------------------------------------- aspect ratio and evenness

ASPECT_SOURCES = [
    pytest.param(probe(1920, 1080), id="1920x1080"),
    pytest.param(probe(3840, 2160), id="3840x2160"),
    pytest.param(probe(1080, 1920), id="portrait-1080x1920"),
    pytest.param(probe(1920, 1080, rotation=90), id="rotated-1920x1080"),
    pytest.param(probe(720, 576, sar="16:15"), id="pal-anamorphic"),
    pytest.param(probe(720, 480, sar="8:9"), id="ntsc-4:3"),
    pytest.param(probe(1440, 1080, sar="4:3"), id="hdv-1440x1080"),
    pytest.param(probe(321, 241), id="odd-321x241"),
    pytest.param(probe(1366, 768), id="1366x768"),
    pytest.param(probe(2560, 1080), id="ultrawide-2560x1080"),
    pytest.param(probe(1080, 2400), id="phone-1080x2400"),
    # DCI 2K "scope": DAR 1024:429. The exact SAR of the 720p/480p rungs has a denominator
    # above 65535, and limit_denominator then changes the displayed aspect ratio.
    pytest.param(probe(2048, 858), id="dci-scope-2048x858"),
]


@pytest.mark.parametrize("source", ASPECT_SOURCES)
def test_exact_renditions_keep_the_exact_display_aspect_ratio(source: ProbeResult) -> None:
    dar = ratio(source.video.display_aspect_ratio)
    result = plan(ALL_PRESETS, source, pixel_aspect="exact")
    assert result.renditions
    for rendition in result.renditions:
        sar = ratio(rendition.sample_aspect_ratio)
        assert rendition.width * sar / rendition.height == dar, rendition
        assert sar.numerator <= 65535
        assert sar.denominator <= 65535


@pytest.mark.parametrize("source", ASPECT_SOURCES)
def test_square_renditions_are_within_half_a_percent_and_recorded(source: ProbeResult) -> None:
    """Every rung of every source is square at most 0.5% off the display aspect, the long
    side a multiple of 4 wherever one is within the 0.5% (and the source's size)."""
    dar = ratio(source.video.display_aspect_ratio)
    video = source.video
    portrait = dar < 1
    result = plan(ALL_PRESETS, source)
    assert result.renditions
    for rendition in result.renditions:
        assert rendition.sample_aspect_ratio == "1:1", rendition
        change = Fraction(rendition.width, rendition.height) / dar - 1
        assert abs(change) <= Fraction(5, 1000), rendition
        assert rendition.display_aspect_change == round(float(change), 6)
        if portrait:
            short, long = rendition.width, rendition.height
        else:
            short, long = rendition.height, rendition.width
        limit = video.display_height if portrait else video.display_width
        fours = [
            c for c in range(4, limit + 1, 4)
            if abs((Fraction(short, c) if portrait else Fraction(c, short)) / dar - 1)
            <= Fraction(5, 1000)
        ]  # fmt: skip
        assert long % 4 == 0 or not fours, (rendition, fours)


@pytest.mark.parametrize("pixel_aspect", ["square", "exact"])
@pytest.mark.parametrize("source", ASPECT_SOURCES)
def test_every_rendition_has_even_dimensions(source: ProbeResult, pixel_aspect: str) -> None:
    result = plan(ALL_PRESETS, source, pixel_aspect=pixel_aspect)
    for rendition in result.renditions:
        assert rendition.width % 2 == 0
        assert rendition.height % 2 == 0
        assert rendition.width >= 2
        assert rendition.height >= 2


def test_odd_source_gives_even_dimensions() -> None:
    result = plan(["240p"], probe(321, 241))
    (rendition,) = result.renditions
    assert (rendition.width, rendition.height, rendition.sample_aspect_ratio) == (320, 240, "1:1")
    assert rendition.display_aspect_change == round(320 / 240 / (321 / 241) - 1, 6)
    (rendition,) = plan(["240p"], probe(321, 241), pixel_aspect="exact").renditions
    assert (rendition.width, rendition.height) == (320, 240)
    sar = ratio(rendition.sample_aspect_ratio)
    assert rendition.width * sar / rendition.height == Fraction(321, 241)


def test_odd_custom_height_is_rounded_even() -> None:
    profile = CustomProfile(name="odd", height=201, bitrate_kbps=500)
    result = plan([profile], probe(640, 360))
    (rendition,) = result.renditions
    assert rendition.height % 2 == 0
    assert abs(rendition.height - 201) <= 1
    assert rendition.width % 2 == 0


@pytest.mark.parametrize(
    ("source", "profiles"),
    [
        pytest.param(probe(1920, 1080), ALL_PRESETS, id="1920x1080"),
        pytest.param(probe(853, 480), ["480p"], id="853x480"),
        # 480 * 855/480 = 855 is odd; round-half-to-even gives 856, one pixel wider than the source.
        pytest.param(probe(855, 480), ["480p"], id="855x480"),
        # A custom rung at an odd source short side: _even(243) == 244 > 243.
        pytest.param(
            probe(432, 243),
            [CustomProfile(name="full", height=243, bitrate_kbps=500)],
            id="custom-243-on-432x243",
        ),
    ],
)
@pytest.mark.parametrize("pixel_aspect", ["square", "exact"])
def test_renditions_never_exceed_the_source_display_size(
    source: ProbeResult, profiles: list[str | CustomProfile], pixel_aspect: str
) -> None:
    result = plan(profiles, source, pixel_aspect=pixel_aspect)
    for rendition in result.renditions:
        assert rendition.width <= source.video.display_width, rendition
        assert rendition.height <= source.video.display_height, rendition


# ---------------------------------------------------------------- codecs and bitrates


@pytest.mark.parametrize(
    ("codec", "encoder"), [("h264", "libx264"), ("hevc", "libx265"), ("av1", "libsvtav1")]
)
def test_codec_selects_encoder(codec: str, encoder: str) -> None:
    result = plan(["720p"], probe(1920, 1080), codec=codec)
    (rendition,) = result.renditions
    assert rendition.codec == codec
    assert rendition.settings.encoder == encoder
    assert rendition.settings.preset == CODECS[codec].default_preset  # type: ignore[index]


@pytest.mark.parametrize("name", ["1080p", "720p", "480p", "360p", "240p"])
def test_newer_codecs_use_lower_bitrates(name: str) -> None:
    source = probe(1920, 1080)
    h264 = plan([name], source, codec="h264").renditions[0].settings
    hevc = plan([name], source, codec="hevc").renditions[0].settings
    av1 = plan([name], source, codec="av1").renditions[0].settings
    assert h264.bitrate_kbps == H264_LADDER[int(name.removesuffix("p"))]
    assert av1.bitrate_kbps < hevc.bitrate_kbps < h264.bitrate_kbps


def test_h264_and_hevc_are_constrained_vbr() -> None:
    source = probe(1920, 1080)
    for codec in ("h264", "hevc"):
        settings = plan(["720p"], source, codec=codec).renditions[0].settings
        assert settings.rate_control == "constrained-vbr"
        assert settings.maxrate_kbps == round(settings.bitrate_kbps * 1.5)
        assert settings.bufsize_kbps == round(settings.bitrate_kbps * 2)
        assert settings.maxrate_kbps > settings.bitrate_kbps


def test_av1_has_no_vbv() -> None:
    settings = plan(["720p"], probe(1920, 1080), codec="av1").renditions[0].settings
    assert settings.maxrate_kbps is None
    assert settings.bufsize_kbps is None
    assert settings.rate_control == "vbr"


def test_bitrate_decreases_down_the_ladder() -> None:
    result = plan(ALL_PRESETS, probe(3840, 2160))
    bitrates = [r.settings.bitrate_kbps for r in result.renditions]
    assert bitrates == sorted(bitrates, reverse=True)
    assert len(set(bitrates)) == len(bitrates)


# ---------------------------------------------------------------- profiles


def test_unknown_profile_name_lists_presets() -> None:
    with pytest.raises(PlanError, match="unknown profile '999p'") as err:
        plan(["720p", "999p"], probe(1920, 1080))
    for name in ALL_PRESETS:
        assert name in str(err.value)


def test_custom_profile_is_used_as_given() -> None:
    profile = CustomProfile(name="mid", height=600, bitrate_kbps=2500, preset="slow")
    result = plan([profile], probe(1920, 1080))
    (rendition,) = result.renditions
    assert rendition.name == "mid"
    assert rendition.height == 600
    assert rendition.width == 1066 or rendition.width == 1068
    assert rendition.settings.bitrate_kbps == 2500
    assert rendition.settings.preset == "slow"
    assert rendition.codec == "h264"


def test_custom_profile_codec_overrides_the_job_codec() -> None:
    profile = CustomProfile(name="av1-720", height=720, bitrate_kbps=1500, codec="av1", preset="10")
    result = plan(["720p", profile], probe(1920, 1080), codec="h264")
    by_name = {r.name: r for r in result.renditions}
    assert by_name["720p"].codec == "h264"
    assert by_name["720p"].settings.encoder == "libx264"
    assert by_name["av1-720"].codec == "av1"
    assert by_name["av1-720"].settings.encoder == "libsvtav1"
    assert by_name["av1-720"].settings.preset == "10"
    assert by_name["av1-720"].settings.maxrate_kbps is None


@pytest.mark.parametrize(
    ("codec", "preset"),
    [("h264", "placebo"), ("h264", "8"), ("hevc", "veryslow-ish"), ("av1", "fast"), ("av1", "13")],
)
def test_custom_profile_with_bad_preset_is_refused(codec: str, preset: str) -> None:
    profile = CustomProfile(name="bad", height=360, bitrate_kbps=800, preset=preset)
    with pytest.raises(PlanError, match="preset") as err:
        plan([profile], probe(1920, 1080), codec=codec)
    assert repr(preset) in str(err.value)
    assert CODECS[codec].encoder in str(err.value)  # type: ignore[index]


def test_custom_profile_bad_preset_is_refused_even_if_it_would_be_dropped() -> None:
    profile = CustomProfile(name="big", height=2160, bitrate_kbps=8000, preset="nope")
    with pytest.raises(PlanError, match="preset"):
        plan(["360p", profile], probe(1920, 1080))


@pytest.mark.parametrize(
    "fields",
    [
        {"height": 143, "bitrate_kbps": 800},
        {"height": 100, "bitrate_kbps": 800},
        {"height": 4321, "bitrate_kbps": 800},
        {"height": 360, "bitrate_kbps": 0},
        {"height": 360, "bitrate_kbps": 63},
        {"height": 360, "bitrate_kbps": 10**12},
        {"height": 360, "bitrate_kbps": 100_001},
    ],
)
def test_custom_profile_bounds(fields: dict[str, int]) -> None:
    with pytest.raises(ValidationError):
        CustomProfile(name="x", **fields)


@pytest.mark.parametrize(
    "fields", [{"height": 144, "bitrate_kbps": 64}, {"height": 4320, "bitrate_kbps": 100_000}]
)
def test_custom_profile_bounds_inclusive(fields: dict[str, int]) -> None:
    profile = CustomProfile(name="x", **fields)
    assert profile.height == fields["height"]


@pytest.mark.parametrize("name", ["", "-leading-dash", "has space", "a" * 33, "semi;colon", "../x"])
def test_custom_profile_name_pattern(name: str) -> None:
    with pytest.raises(ValidationError):
        CustomProfile(name=name, height=360, bitrate_kbps=800)


@pytest.mark.parametrize(
    "profiles",
    [
        ["720p", "720p"],
        ["720p", {"name": "720p", "height": 700, "bitrate_kbps": 2000}],
        [
            {"name": "a", "height": 700, "bitrate_kbps": 2000},
            {"name": "a", "height": 400, "bitrate_kbps": 900},
        ],
    ],
)
def test_duplicate_profile_names_are_refused(profiles: list[object]) -> None:
    with pytest.raises(ValidationError, match="duplicate profiles"):
        EncodeRequest(source="/data/in.mp4", profiles=profiles)


def test_distinct_profile_names_are_accepted() -> None:
    request = EncodeRequest(
        source="/data/in.mp4",
        profiles=["720p", {"name": "720p-hq", "height": 720, "bitrate_kbps": 6000}],
    )
    assert len(request.profiles) == 2
    assert isinstance(request.profiles[1], CustomProfile)


def test_default_request_profiles() -> None:
    request = EncodeRequest(source="/data/in.mp4")
    assert request.profiles == ["720p", "480p", "360p"]
    assert request.codec == "h264"
    assert request.segment_seconds == 4
    assert request.pixel_aspect == "square"


def test_pixel_aspect_values() -> None:
    assert EncodeRequest(source="/data/in.mp4", pixel_aspect="exact").pixel_aspect == "exact"
    for bad in ("anamorphic", "Square", "", 1):
        with pytest.raises(ValidationError, match="pixel_aspect"):
            EncodeRequest(source="/data/in.mp4", pixel_aspect=bad)
    # older payloads (recorded histories, queued jobs) have no such field: square
    old = job(["720p"]).model_dump(exclude={"pixel_aspect"})
    assert EncodeJob.model_validate(old).pixel_aspect == "square"
    schema = create_app().openapi()["components"]["schemas"]["EncodeRequest"]
    field = schema["properties"]["pixel_aspect"]
    assert field["enum"] == ["square", "exact"] and field["default"] == "square"
    assert "0.5%" in field["description"]


def test_pixel_aspect_keys_the_job_id_only_when_set() -> None:
    """A request that does not mention it keeps the job ID it had before the option."""
    uri = "file:///data/in.mp4"
    plain = job_id_for(EncodeRequest(source="/data/in.mp4"), uri, None)
    square = job_id_for(EncodeRequest(source="/data/in.mp4", pixel_aspect="square"), uri, None)
    exact = job_id_for(EncodeRequest(source="/data/in.mp4", pixel_aspect="exact"), uri, None)
    assert plain == square != exact


# ---------------------------------------------------------------- ordering


def test_renditions_are_sorted_largest_first() -> None:
    result = plan(["240p", "1080p", "360p", "720p", "480p"], probe(1920, 1080))
    names = [r.name for r in result.renditions]
    assert names == ["1080p", "720p", "480p", "360p", "240p"]
    areas = [r.width * r.height for r in result.renditions]
    assert areas == sorted(areas, reverse=True)


def test_equal_size_renditions_are_ordered_by_name() -> None:
    profiles: list[str | CustomProfile] = [
        CustomProfile(name="b-hi", height=720, bitrate_kbps=4000),
        "360p",
        CustomProfile(name="a-lo", height=720, bitrate_kbps=2000),
    ]
    result = plan(profiles, probe(1920, 1080))
    assert [r.name for r in result.renditions] == ["a-lo", "b-hi", "360p"]
