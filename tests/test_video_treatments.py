"""Video that comes out right from interlaced, HDR and VFR sources: the plan's decisions, and
real encodes of tiny generated media measured with ffmpeg (idet, showinfo, psnr) and PyAV."""

from __future__ import annotations

import re
import struct
import subprocess
from fractions import Fraction
from itertools import pairwise
from pathlib import Path
from typing import Any

import av
import pytest
from temporalio.testing import ActivityEnvironment

from app.cli.samples import make_video
from app.core.models import (
    AssembleInput,
    ChunkPlan,
    ContentLight,
    CustomProfile,
    EncodeChunkInput,
    EncodedMedia,
    EncodeJob,
    EncodeVideoInput,
    MasteringDisplay,
    Plan,
    PlanInput,
    ProbeInput,
    ProbeResult,
    Rendition,
    SplitInput,
    VideoInfo,
)
from app.core.settings import Settings
from app.media.chunking import output_frames
from app.media.ladder import PlanError, check_invariants, plan_renditions
from app.storage.local import path_to_uri, uri_to_path
from app.stratum.functions.analyze import AnalyzeActivities
from app.stratum.functions.chunks import ChunkActivities, chunk_output_uri
from app.stratum.functions.encode import (
    EncodeActivities,
    Neighbours,
    _input_filters,
    hwaccel_args,
    video_output_args,
)

# ---------------------------------------------------------------- plans (no media)

P3 = MasteringDisplay(
    red=(0.68, 0.32), green=(0.265, 0.69), blue=(0.15, 0.06), white_point=(0.3127, 0.329),
    max_luminance=1000.0, min_luminance=0.005,
)  # fmt: skip
CLL = ContentLight(max_cll=1000, max_fall=400)


def source(
    width: int = 1920, height: int = 1080, frame_rate: str = "25/1", **video: Any
) -> ProbeResult:
    """A probe as the probe reports one, with the treatment-relevant facts given."""
    return ProbeResult(
        container="mov",
        duration_s=10.0,
        size_bytes=1_000_000,
        video=VideoInfo(
            codec="hevc",
            width=width,
            height=height,
            sample_aspect_ratio="1:1",
            display_aspect_ratio=f"{width}:{height}",
            rotation=0,
            frame_rate=frame_rate,
            display_width=width,
            display_height=height,
            **video,
        ),
        audio=None,
        streams=["#0 video hevc"],
    )


HDR10: dict[str, Any] = {"dynamic_range": "HDR10", "bit_depth": 10, "color_primaries": "bt2020",
         "color_transfer": "smpte2084", "color_matrix": "bt2020nc",
         "mastering_display": P3, "content_light": CLL}  # fmt: skip
HLG: dict[str, Any] = {"dynamic_range": "HLG", "bit_depth": 10, "color_primaries": "bt2020",
       "color_transfer": "arib-std-b67", "color_matrix": "bt2020nc"}  # fmt: skip
INTERLACED: dict[str, Any] = {
    "interlaced": True,
    "field_order": "tff",
    "measured_field_order": "bff",
}


def job(profiles: list[str | CustomProfile] | None = None, **fields: Any) -> EncodeJob:
    return EncodeJob(
        job_id="job-1",
        source_uri="file:///data/in.mp4",
        profiles=profiles or ["720p"],
        codec=fields.pop("codec", "h264"),
        segment_seconds=fields.pop("segment_seconds", 4),
        output_uri="file:///out",
        scratch_uri="file:///scratch",
        **fields,
    )


def by_name(plan: Plan) -> dict[str, Rendition]:
    return {r.name: r for r in plan.renditions}


def test_interlaced_source_is_deinterlaced_with_the_measured_parity() -> None:
    plan = plan_renditions(job(), source(**INTERLACED))
    s = plan.renditions[0].settings
    assert (s.deinterlace, s.field_order) == ("frame", "bff"), "measured beats the flag"
    assert (s.frame_rate, s.gop_frames) == ("25/1", 100)
    off = plan_renditions(job(deinterlace="off"), source(**INTERLACED)).renditions[0]
    assert off.settings.deinterlace is None
    progressive = plan_renditions(job(), source()).renditions[0].settings
    assert (progressive.deinterlace, progressive.field_order) == (None, None)
    forced = plan_renditions(job(deinterlace="on"), source(field_order="bff")).renditions[0]
    assert (forced.settings.deinterlace, forced.settings.field_order) == ("frame", "bff")
    unknown = plan_renditions(job(deinterlace="on"), source()).renditions[0]
    assert unknown.settings.field_order == "tff", "nothing known: top field first"


@pytest.mark.parametrize(
    ("rate", "doubled", "gop"), [("25/1", "50/1", 200), ("30000/1001", "60000/1001", 240)]
)
def test_field_rate_doubles_the_frame_rate_and_the_gop(rate: str, doubled: str, gop: int) -> None:
    plan = plan_renditions(job(deinterlace_rate="field"), source(frame_rate=rate, **INTERLACED))
    s = plan.renditions[0].settings
    assert (s.deinterlace, s.frame_rate, s.gop_frames) == ("field", doubled, gop)
    assert output_frames(250, rate, s.frame_rate) == 500


def test_hdr_auto_keeps_hdr_in_hevc_and_av1_and_tonemaps_h264() -> None:
    """One request, one source: an SDR H.264 ladder and an HDR HEVC/AV1 ladder."""
    profiles: list[str | CustomProfile] = [
        CustomProfile(name="avc", height=720, bitrate_kbps=3000, codec="h264"),
        CustomProfile(name="hevc", height=720, bitrate_kbps=2000, codec="hevc"),
        CustomProfile(name="av1", height=540, bitrate_kbps=1000, codec="av1"),
    ]
    plan = by_name(plan_renditions(job(profiles), source(**HDR10)))
    avc, hevc, av1 = plan["avc"], plan["hevc"], plan["av1"]
    assert avc.video_range == "SDR" and avc.settings.tonemap
    assert avc.settings.tonemap_from == "smpte2084"
    assert (avc.settings.pix_fmt, avc.settings.color_transfer) == ("yuv420p", "bt709")
    assert avc.settings.mastering_display is None and avc.settings.content_light is None
    for r in (hevc, av1):
        s = r.settings
        assert r.video_range == "PQ" and not s.tonemap
        assert (s.pix_fmt, s.color_primaries, s.color_transfer, s.color_matrix) == (
            "yuv420p10le", "bt2020", "smpte2084", "bt2020nc",
        )  # fmt: skip
        assert (s.mastering_display, s.content_light) == (P3, CLL)
    hlg = by_name(plan_renditions(job(profiles), source(**HLG)))
    assert hlg["hevc"].video_range == "HLG"
    assert hlg["hevc"].settings.color_transfer == "arib-std-b67"
    assert hlg["avc"].settings.tonemap_from == "arib-std-b67"


def test_hdr_tonemap_makes_every_rendition_sdr() -> None:
    plan = plan_renditions(job(["720p"], codec="hevc", hdr="tonemap"), source(**HDR10))
    r = plan.renditions[0]
    assert r.video_range == "SDR" and r.settings.tonemap and r.settings.pix_fmt == "yuv420p"
    assert (r.settings.color_primaries, r.settings.color_matrix) == ("bt709", "bt709")


def test_hdr_preserve_refuses_h264() -> None:
    with pytest.raises(PlanError, match=r"H\.264 cannot carry HDR10 here; use codec hevc or av1"):
        plan_renditions(job(["720p"], hdr="preserve"), source(**HDR10))
    kept = plan_renditions(job(["720p"], codec="hevc", hdr="preserve"), source(**HDR10))
    assert kept.renditions[0].video_range == "PQ"


def test_dolby_vision_is_kept_as_its_base_layer_and_reported() -> None:
    dv = {**HDR10, "dynamic_range": "DolbyVision"}
    plan = plan_renditions(job(["720p"], codec="hevc"), source(**dv))
    assert plan.renditions[0].video_range == "PQ"
    assert [n.kind for n in plan.not_carried] == ["video"]
    assert "Dolby Vision" in plan.not_carried[0].reason


def test_sdr_tags_bt709_for_hd_and_keep_the_sources_otherwise() -> None:
    hd = plan_renditions(job(), source()).renditions[0].settings
    assert (hd.color_primaries, hd.color_transfer, hd.color_matrix) == ("bt709",) * 3
    pal = {"color_primaries": "bt470bg", "color_transfer": "bt709", "color_matrix": "bt470bg"}
    sd = plan_renditions(job(["480p"]), source(720, 576, **pal)).renditions[0].settings
    assert (sd.color_primaries, sd.color_transfer, sd.color_matrix) == (
        "bt470bg", "bt709", "bt470bg",
    )  # fmt: skip
    untagged_sd = plan_renditions(job(["480p"]), source(720, 576)).renditions[0].settings
    assert untagged_sd.color_matrix is None, "an untagged SD picture is not called BT.709"


def test_no_8bit_output_is_ever_tagged_pq_or_hlg() -> None:
    """Whatever the rules decide, the plan's last check refuses a PQ/HLG tag on 8-bit."""
    eight_bit_pq: dict[str, Any] = {"color_transfer": "smpte2084", "bit_depth": 8}
    for mode in ("auto", "tonemap"):
        for codec in ("h264", "hevc", "av1"):
            for facts in (HDR10, HLG, eight_bit_pq):
                plan = plan_renditions(job(["720p"], codec=codec, hdr=mode), source(**facts))
                for r in plan.renditions:
                    if r.settings.color_transfer in ("smpte2084", "arib-std-b67"):
                        assert r.settings.pix_fmt == "yuv420p10le", r
    good = plan_renditions(job(["720p"], codec="hevc"), source(**HDR10)).renditions[0]
    bad = good.model_copy(update={"settings": good.settings.model_copy(
        update={"pix_fmt": "yuv420p"})})  # fmt: skip
    with pytest.raises(PlanError, match="needs 10-bit"):
        check_invariants([bad])


def test_a_gpu_job_that_needs_software_filters_decodes_in_software() -> None:
    hdr = plan_renditions(job(["720p"], codec="hevc"), source(**HDR10)).renditions
    sdr = plan_renditions(job(["720p"]), source()).renditions
    assert hwaccel_args("nvenc", 0, hdr) == []
    assert hwaccel_args("nvenc", 0, sdr) == ["-hwaccel", "cuda", "-hwaccel_output_format", "cuda"]
    args = video_output_args([(hdr[0], Path("out.mp4"))], mode="nvenc")
    assert "scale_cuda" not in " ".join(args) and "p010le" in args and "main10" in args


# ---------------------------------------------------------------- media helpers


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("treatments")


@pytest.fixture
def settings(tmp_path: Path, media: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", source_roots=str(media), heartbeat_timeout_s=30)


def run(ffmpeg: str, *args: str) -> str:
    """ffmpeg's stderr (its reports: idet, showinfo, psnr)."""
    proc = subprocess.run(
        [ffmpeg, "-hide_banner", "-nostdin", *args], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stderr


def idet(ffmpeg: str, path: Path) -> dict[str, int]:
    """idet's multi-frame verdicts over the whole file, at its default thresholds."""
    report = run(ffmpeg, "-i", str(path), "-an", "-vf", "idet", "-f", "null", "-")
    found = re.findall(
        r"Multi frame detection: TFF:\s*(\d+) BFF:\s*(\d+) Progressive:\s*(\d+) "
        r"Undetermined:\s*(\d+)", report,
    )  # fmt: skip
    tff, bff, progressive, undetermined = (int(n) for n in found[-1])
    return {"tff": tff, "bff": bff, "progressive": progressive, "undetermined": undetermined}


def first_frame(ffmpeg: str, path: Path) -> str:
    """showinfo's report of the first decoded frame: tags and side data as decoded."""
    return run(ffmpeg, "-i", str(path), "-an", "-vf", "showinfo", "-frames:v", "1",
               "-f", "null", "-")  # fmt: skip


def tags(report: str) -> tuple[str, str, str, str]:
    found = re.search(
        r"color_range:(\S+) color_space:(\S+) color_primaries:(\S+) color_trc:(\S+)", report
    )
    assert found, report[-1500:]
    return found.group(1), found.group(2), found.group(3), found.group(4)


def stream_facts(path: Path) -> tuple[str, str | None, str, int]:
    """Codec, profile, pixel format and frames of the first video stream."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        frames = sum(1 for p in container.demux(stream) if p.size)
        return ctx.name, ctx.profile, ctx.pix_fmt or "", frames


def keyframe_times(path: Path) -> list[float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sorted(
            round(float(p.pts * Fraction(stream.time_base or 1)), 3)
            for p in container.demux(stream)
            if p.size and p.is_keyframe and p.pts is not None
        )


def packet_times(path: Path) -> list[Fraction]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        tb = Fraction(stream.time_base or 1)
        return sorted(Fraction(p.pts) * tb for p in container.demux(stream) if p.pts is not None)


def psnr_per_frame(ffmpeg: str, a: Path, b: Path, stats: Path) -> list[float]:
    """Luma PSNR of every frame of ``a`` against ``b`` (same size and count)."""
    run(ffmpeg, "-i", str(a), "-i", str(b), "-lavfi", f"[0:v][1:v]psnr=stats_file={stats}",
        "-f", "null", "-")  # fmt: skip
    values = re.findall(r"psnr_y:(\S+)", stats.read_text())
    return [100.0 if v == "inf" else float(v) for v in values]


async def probe_of(settings: Settings, path: Path) -> ProbeResult:
    probe: ProbeResult = await ActivityEnvironment().run(
        AnalyzeActivities(settings).probe_source, ProbeInput(source_uri=path_to_uri(path))
    )
    return probe


def job_for(settings: Settings, path: Path, profiles: list[CustomProfile], **kw: Any) -> EncodeJob:
    return EncodeJob(
        job_id=kw.pop("job_id", "treat"),
        source_uri=path_to_uri(path),
        profiles=list(profiles),
        codec=kw.pop("codec", "h264"),
        segment_seconds=kw.pop("segment_seconds", 1),
        output_uri=settings.resolved_output_uri,
        scratch_uri=settings.resolved_scratch_uri,
        **kw,
    )


async def plan_of(settings: Settings, job: EncodeJob, probe: ProbeResult) -> Plan:
    plan: Plan = await ActivityEnvironment().run(
        AnalyzeActivities(settings).plan, PlanInput(job=job, probe=probe)
    )
    return plan


async def encode_whole(
    settings: Settings, job: EncodeJob, probe: ProbeResult, rendition: Rendition
) -> Path:
    media: EncodedMedia = await ActivityEnvironment().run(
        EncodeActivities(settings).encode_video,
        EncodeVideoInput(job_id=job.job_id, source_uri=job.source_uri, container=probe.container,
                         scratch_uri=job.scratch_uri, rendition=rendition,
                         duration_s=probe.duration_s),
    )  # fmt: skip
    return uri_to_path(media.uri)


async def split(
    settings: Settings, job: EncodeJob, probe: ProbeResult, plan: Plan, chunk_seconds: float
) -> ChunkPlan:
    cut: ChunkPlan = await ActivityEnvironment().run(
        ChunkActivities(settings).split,
        SplitInput(job_id=job.job_id, source_uri=job.source_uri, container=probe.container,
                   scratch_uri=job.scratch_uri, duration_s=probe.duration_s,
                   chunk_seconds=chunk_seconds, min_chunk_seconds=chunk_seconds / 2,
                   segment_seconds=plan.segment_seconds),
    )  # fmt: skip
    assert cut.count >= 3, cut
    return cut


async def encode_chunked(
    settings: Settings, job: EncodeJob, probe: ProbeResult, plan: Plan, chunk_seconds: float
) -> tuple[ChunkPlan, dict[str, Path]]:
    """split, encode_chunk for every chunk, assemble every rendition: the chunked path."""
    env = ActivityEnvironment()
    chunks = ChunkActivities(settings)
    cut = await split(settings, job, probe, plan, chunk_seconds)
    for i in range(cut.count):
        await env.run(
            chunks.encode_chunk,
            EncodeChunkInput(job_id=job.job_id, scratch_uri=job.scratch_uri, chunk=cut.chunk(i),
                             renditions=plan.renditions, segment_seconds=plan.segment_seconds),
        )  # fmt: skip
    out = {}
    rate = Fraction(probe.video.frame_rate)
    for r in plan.renditions:
        media: EncodedMedia = await env.run(
            chunks.assemble,
            AssembleInput(
                job_id=job.job_id, scratch_uri=job.scratch_uri, rendition=r, chunks=cut.count,
                # what the workflow must pass: frames at the rendition's rate (x2 at field rate)
                expected_frames=output_frames(cut.frames, probe.video.frame_rate,
                                              r.settings.frame_rate),
                expected_duration_s=float(cut.frames / rate),
            ),
        )  # fmt: skip
        out[r.name] = uri_to_path(media.uri)
    return cut, out


# ---------------------------------------------------------------- interlaced


def make_interlaced(ffmpeg: str, path: Path, seconds: float = 3) -> Path:
    """25i PAL (720x576, top field first): 50 fps moving pictures woven two fields a frame,
    coded as interlaced H.264 4:2:2 with a keyframe every second."""
    moving = f"testsrc=size=720x576:rate=50:duration={seconds},scroll=h=0.01:v=0.01"
    run(ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i", moving,
        "-vf", "tinterlace=interleave_top,fieldorder=tff", "-c:v", "libx264",
        "-preset", "veryfast", "-flags", "+ildct+ilme", "-pix_fmt", "yuv422p", "-g", "25",
        "-b:v", "4M", str(path))  # fmt: skip
    return path


@pytest.fixture(scope="module")
def interlaced(media: Path, ffmpeg: str) -> Path:
    return make_interlaced(ffmpeg, media / "interlaced.mp4")


FULL_SD = CustomProfile(name="sd", height=576, bitrate_kbps=4000)
"""At the source's own size: idet on a downscaled rendition sees blurred fields as progressive."""


async def test_an_interlaced_source_comes_out_progressive(
    settings: Settings, interlaced: Path, ffmpeg: str
) -> None:
    probe = await probe_of(settings, interlaced)
    job = job_for(settings, interlaced, [FULL_SD])
    plan = await plan_of(settings, job, probe)
    (r,) = plan.renditions
    assert probe.video.interlaced, probe.video
    assert (r.settings.deinterlace, r.settings.field_order) == ("frame", "tff")
    before = idet(ffmpeg, interlaced)
    out = await encode_whole(settings, job, probe, r)
    after = idet(ffmpeg, out)
    print(f"idet source {before}, output {after}")
    assert before["tff"] >= 0.9 * 75
    assert after["tff"] + after["bff"] <= 3, after
    assert stream_facts(out)[3] == 75


async def test_chunked_deinterlacing_matches_the_whole_title(
    settings: Settings, interlaced: Path, ffmpeg: str, tmp_path: Path
) -> None:
    """The chunks' edge frames see their neighbours' fields: chunked output is progressive,
    has every frame, and is frame by frame close to the whole encode, at the cuts too."""
    probe = await probe_of(settings, interlaced)
    job = job_for(settings, interlaced, [FULL_SD], segment_seconds=3)  # cuts off the grid
    plan = await plan_of(settings, job, probe)
    alone = job.model_copy(update={"job_id": "treat-whole"})  # its own video/sd.mp4
    whole = await encode_whole(settings, alone, probe, plan.renditions[0])
    cut, outputs = await encode_chunked(settings, job, probe, plan, chunk_seconds=1.0)
    chunked = outputs["sd"]
    assert stream_facts(chunked)[3] == stream_facts(whole)[3] == 75
    counts = idet(ffmpeg, chunked)
    assert counts["tff"] + counts["bff"] <= 3, counts
    psnr = psnr_per_frame(ffmpeg, chunked, whole, tmp_path / "psnr.log")
    edges = sorted({f for t in cut.starts_s[1:] for f in (round(t * 25) - 1, round(t * 25))})
    median = sorted(psnr)[len(psnr) // 2]
    at_cuts = [round(psnr[f], 1) for f in edges]
    print(f"cuts {cut.starts_s}; PSNR min {min(psnr):.1f} dB, at the cuts {at_cuts}, "
          f"median {median:.1f}")  # fmt: skip
    # the encodes differ (the chunks' own keyframes); the deinterlaced pictures do not (see
    # test_the_deinterlacer_sees_across_chunk_cuts_exactly for the bit-exact check)
    assert min(psnr) >= 40, psnr
    assert min(at_cuts) >= 45, at_cuts


async def test_the_deinterlacer_sees_across_chunk_cuts_exactly(
    settings: Settings, interlaced: Path, ffmpeg: str
) -> None:
    """Before any encoder: the chunk graph (neighbours joined, deinterlaced, trimmed) gives
    bit-identical frames to deinterlacing the whole title, the edges included."""
    probe = await probe_of(settings, interlaced)
    job = job_for(settings, interlaced, [FULL_SD], deinterlace_rate="field")
    plan = await plan_of(settings, job, probe)
    cut = await split(settings, job, probe, plan, chunk_seconds=1.0)
    renditions = plan.renditions

    def hashes(args: list[str], graph: str, label: str) -> list[str]:
        report = subprocess.run(
            [ffmpeg, "-v", "error", *args, "-filter_complex", graph, "-map", f"[{label}]",
             "-f", "framemd5", "-"], capture_output=True, text=True, check=True, timeout=60,
        ).stdout  # fmt: skip
        return [line.split(",")[-1].strip() for line in report.splitlines() if line[:1] != "#"]

    chains, label = _input_filters(renditions, None)
    whole = hashes(["-i", str(interlaced)], ";".join(chains), label)

    pieces: list[str] = []
    for i in range(cut.count):
        path = uri_to_path(f"{job.scratch_uri}/{job.job_id}/chunks/{i:05d}.mp4")
        frames = stream_facts(path)[3]
        args = ["-i", str(path)]
        before = after = None
        if i > 0:
            prev = uri_to_path(f"{job.scratch_uri}/{job.job_id}/chunks/{i - 1:05d}.mp4")
            args += ["-sseof", "-0.16", "-i", str(prev)]
            before = 1
        if i + 1 < cut.count:
            nxt = uri_to_path(f"{job.scratch_uri}/{job.job_id}/chunks/{i + 1:05d}.mp4")
            args += ["-t", "0.16", "-i", str(nxt)]
            after = 2 if before else 1
        chains, label = _input_filters(renditions, Neighbours(frames, before, after))
        got = hashes(args, ";".join(chains), label)
        assert len(got) == 2 * frames, (i, len(got), frames)
        if i == 1:  # the check can tell: alone, the chunk's edge frames are not the title's
            chains, label = _input_filters(renditions, None)
            alone = hashes(["-i", str(path)], ";".join(chains), label)
            assert alone[0] != got[0] and alone[-1] != got[-1]
            assert alone[2:-2] == got[2:-2]
        pieces += got
    assert len(whole) == 150
    assert pieces == whole


async def test_field_rate_doubles_the_frames_and_keeps_the_segment_grid(
    settings: Settings, interlaced: Path, ffmpeg: str
) -> None:
    probe = await probe_of(settings, interlaced)
    job = job_for(settings, interlaced, [FULL_SD], deinterlace_rate="field", codec="hevc")
    plan = await plan_of(settings, job, probe)
    (r,) = plan.renditions
    assert (r.settings.frame_rate, r.settings.gop_frames) == ("50/1", 50)
    _, outputs = await encode_chunked(settings, job, probe, plan, chunk_seconds=1.0)
    out = outputs["sd"]
    codec, _, _, frames = stream_facts(out)
    assert (codec, frames) == ("hevc", 150)
    times = packet_times(out)
    assert {b - a for a, b in pairwise(times)} == {Fraction(1, 50)}
    assert keyframe_times(out) == [0.0, 1.0, 2.0], "chunked HEVC: a keyframe per segment"
    counts = idet(ffmpeg, out)
    print(f"field rate idet {counts}")
    assert counts["tff"] + counts["bff"] <= 0.15 * 150, counts


# ---------------------------------------------------------------- chunked HEVC keyframes


async def test_chunked_hevc_keyframes_land_on_the_segment_grid(
    settings: Settings, media: Path, ffmpeg: str
) -> None:
    """x265 turns a forced keyframe into a plain I frame unless told (forced-idr): chunks that
    start off the grid then lose the grid's keyframes inside them."""
    path = media / "progressive.mp4"
    # keyframes every 0.6 s: cuts fall off the 1 s segment grid, so grid keyframes are forced
    run(ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25:d=4",
        "-c:v", "libx264", "-preset", "veryfast", "-g", "15", "-keyint_min", "15",
        "-sc_threshold", "0", str(path))  # fmt: skip
    probe = await probe_of(settings, path)
    profile = CustomProfile(name="h", height=180, bitrate_kbps=300, preset="ultrafast")
    job = job_for(settings, path, [profile], codec="hevc")
    plan = await plan_of(settings, job, probe)
    cut, outputs = await encode_chunked(settings, job, probe, plan, chunk_seconds=1.2)
    assert any(round(t % 1, 3) not in (0.0, 1.0) for t in cut.starts_s), cut.starts_s
    keys = keyframe_times(outputs["h"])
    print(f"cuts {cut.starts_s}, HEVC keyframes {keys}")
    assert {0.0, 1.0, 2.0, 3.0} <= set(keys)
    gop = plan.renditions[0].settings.gop_frames
    assert all(round(k * 25) % gop == 0 or k in cut.starts_s for k in keys), keys


# ---------------------------------------------------------------- HDR


MASTER_X265 = "G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,50)"


def make_hdr(ffmpeg: str, path: Path, transfer: str, seconds: float = 2) -> Path:
    """``seconds`` of a BT.709 test pattern converted to BT.2020 PQ (SDR white at 100 cd/m2) or HLG,
    coded as HEVC Main 10 with the HDR10 metadata (PQ) the media facts give."""
    params = f"colorprim=bt2020:transfer={transfer}:colormatrix=bt2020nc:keyint=25:log-level=error"
    if transfer == "smpte2084":
        params += f":master-display={MASTER_X265}:max-cll=1000,400:hdr10=1:repeat-headers=1"
    run(ffmpeg, "-v", "error", "-y", "-f", "lavfi",
        "-i", f"testsrc2=size=640x360:rate=25:duration={seconds},format=yuv444p,setparams="
        "color_primaries=bt709:color_trc=bt709:colorspace=bt709:range=tv,"
        f"zscale=t=linear:npl=100,format=gbrpf32le,zscale=p=bt2020:t={transfer}:m=bt2020nc:"
        "r=tv,format=yuv420p10le",
        "-c:v", "libx265", "-preset", "ultrafast", "-pix_fmt", "yuv420p10le",
        "-color_primaries", "bt2020", "-color_trc", transfer, "-colorspace", "bt2020nc",
        "-x265-params", params, str(path))  # fmt: skip
    return path


@pytest.fixture(scope="module")
def hdr10(media: Path, ffmpeg: str) -> Path:
    return make_hdr(ffmpeg, media / "hdr10.mp4", "smpte2084")


def picture_stats(ffmpeg: str, path: Path) -> dict[str, float]:
    """signalstats of the first frame: mean luma, the 10..90 % luma spread, mean saturation."""
    report = run(ffmpeg, "-i", str(path), "-vf", "signalstats,metadata=print", "-frames:v", "1",
                 "-f", "null", "-")  # fmt: skip
    values = dict(re.findall(r"lavfi\.signalstats\.(\w+)=([\d.]+)", report))
    return {k: float(values[k]) for k in ("YAVG", "YLOW", "YHIGH", "SATAVG")}


async def test_an_untagged_hd_source_keeps_its_colours(
    settings: Settings, media: Path, ffmpeg: str
) -> None:
    """An untagged HD source is BT.709 (as players take it) and is tagged so, not converted:
    swscale took "unknown" for BT.601 and went through RGB to BT.709, which shifted every
    colour (23.8 dB PSNR against the source at 4 Mb/s, against 49.8 dB without) and cost a
    tenth of the encode's CPU."""
    source = make_video(media / "untagged-hd.mp4", width=1280, height=720, seconds=1)
    probe = await probe_of(settings, source)
    assert probe.video.color_matrix is None, probe.video
    profile = CustomProfile(name="hd", height=720, bitrate_kbps=4000, preset="veryfast")
    job = job_for(settings, source, [profile], job_id="untagged-hd")
    (rendition,) = (await plan_of(settings, job, probe)).renditions
    assert rendition.settings.color_matrix == "bt709"
    out = await encode_whole(settings, job, probe, rendition)
    assert tags(first_frame(ffmpeg, out)) == ("tv", "bt709", "bt709", "bt709")
    neutral = "setparams=colorspace=unknown:range=unknown:color_primaries=unknown:color_trc=unknown"
    report = run(ffmpeg, "-i", str(out), "-i", str(source), "-lavfi",
                 f"[0:v]{neutral}[a];[1:v]{neutral}[b];[a][b]psnr", "-f", "null", "-")  # fmt: skip
    found = re.search(r"PSNR y:([\d.]+) u:([\d.]+) v:([\d.]+)", report)
    assert found, report[-1000:]
    assert min(float(v) for v in found.groups()) > 40, found.group(0)


LADDER = [
    CustomProfile(name="hdr", height=360, bitrate_kbps=800, codec="hevc", preset="ultrafast"),
    CustomProfile(name="sdr", height=360, bitrate_kbps=800, codec="h264", preset="veryfast"),
]


async def test_hdr10_is_kept_in_hevc_and_tonemapped_in_h264(
    settings: Settings, hdr10: Path, ffmpeg: str
) -> None:
    probe = await probe_of(settings, hdr10)
    assert probe.video.dynamic_range == "HDR10", probe.video
    job = job_for(settings, hdr10, LADDER)
    plan = await plan_of(settings, job, probe)
    hdr = await encode_whole(settings, job, probe, by_name(plan)["hdr"])
    sdr = await encode_whole(settings, job, probe, by_name(plan)["sdr"])
    codec, profile, pix_fmt, frames = stream_facts(hdr)
    assert (codec, profile, pix_fmt, frames) == ("hevc", "Main 10", "yuv420p10le", 50)
    report = first_frame(ffmpeg, hdr)
    assert tags(report) == ("tv", "bt2020nc", "bt2020", "smpte2084")
    mastering = re.search(r"side data - Mastering display metadata: (.*)", report)
    light = re.search(r"side data - Content light level metadata: (.*)", report)
    assert mastering and light, report[-2000:]
    print(f"HEVC: {mastering.group(1)}; {light.group(1)}")
    assert "r(0.6800,0.3200) g(0.2650,0.6900) b(0.1500 0.0600)" in mastering.group(1)
    assert "max_luminance=1000.0" in mastering.group(1)
    assert "min_luminance=0.005" in mastering.group(1)
    assert light.group(1).strip() == "MaxCLL=1000, MaxFALL=400"

    codec, profile, pix_fmt, _ = stream_facts(sdr)
    assert (codec, profile, pix_fmt) == ("h264", "High", "yuv420p")
    report = first_frame(ffmpeg, sdr)
    assert tags(report) == ("tv", "bt709", "bt709", "bt709")
    assert "Mastering display" not in report and "Content light" not in report
    stats = picture_stats(ffmpeg, sdr)
    print(f"tone-mapped H.264 {stats}")
    # a PQ picture shown as BT.709 is washed out: grey (saturation ~23), flat (spread ~60)
    assert 50 <= stats["YAVG"] <= 180, stats
    assert stats["SATAVG"] >= 40 and stats["YHIGH"] - stats["YLOW"] >= 80, stats


async def test_an_untagged_hdr10_source_is_tonemapped_from_the_plan_not_the_tags(
    settings: Settings, hdr10: Path, media: Path, ffmpeg: str
) -> None:
    """zscale cannot convert untagged frames: the tone-map states the input transfer."""
    bare = media / "hdr10-untagged.mkv"
    run(ffmpeg, "-v", "error", "-y", "-i", str(hdr10), "-c", "copy",
        "-bsf:v", "hevc_metadata=colour_primaries=2:transfer_characteristics=2:"
        "matrix_coefficients=2", str(bare))  # fmt: skip
    assert tags(first_frame(ffmpeg, bare))[3] == "unknown"
    probe = await probe_of(settings, hdr10)
    job = job_for(settings, bare, [LADDER[1]], job_id="untagged")
    plan = await plan_of(settings, job, probe.model_copy(update={"container": "matroska"}))
    out = await encode_whole(
        settings, job, probe.model_copy(update={"container": "matroska"}), plan.renditions[0]
    )
    stats = picture_stats(ffmpeg, out)
    assert stats["SATAVG"] >= 40 and stats["YHIGH"] - stats["YLOW"] >= 80, stats


async def test_hlg_is_kept_as_hlg(settings: Settings, media: Path, ffmpeg: str) -> None:
    hlg = make_hdr(ffmpeg, media / "hlg.mp4", "arib-std-b67")
    probe = await probe_of(settings, hlg)
    job = job_for(settings, hlg, LADDER, job_id="hlg")
    plan = await plan_of(settings, job, probe)
    assert by_name(plan)["hdr"].video_range == "HLG"
    out = await encode_whole(settings, job, probe, by_name(plan)["hdr"])
    assert stream_facts(out)[1:3] == ("Main 10", "yuv420p10le")
    assert tags(first_frame(ffmpeg, out)) == ("tv", "bt2020nc", "bt2020", "arib-std-b67")
    sdr = await encode_whole(settings, job, probe, by_name(plan)["sdr"])
    assert tags(first_frame(ffmpeg, sdr)) == ("tv", "bt709", "bt709", "bt709")
    stats = picture_stats(ffmpeg, sdr)
    print(f"HLG tone-mapped {stats}")
    assert 40 <= stats["YAVG"] <= 200 and stats["SATAVG"] >= 40, stats


async def test_av1_keeps_hdr10(settings: Settings, hdr10: Path, ffmpeg: str) -> None:
    probe = await probe_of(settings, hdr10)
    profile = CustomProfile(name="av1", height=180, bitrate_kbps=300, codec="av1", preset="12")
    job = job_for(settings, hdr10, [profile], job_id="av1")
    plan = await plan_of(settings, job, probe)
    out = await encode_whole(settings, job, probe, plan.renditions[0])
    codec, _, pix_fmt, _ = stream_facts(out)
    assert codec in ("av1", "libdav1d") and pix_fmt == "yuv420p10le"
    report = first_frame(ffmpeg, out)
    assert tags(report) == ("tv", "bt2020nc", "bt2020", "smpte2084")
    assert "max_luminance=1000.0" in report and "MaxCLL=1000, MaxFALL=400" in report


# ---------------------------------------------------------------- VFR

VFR_SECONDS = 60
FLASH_S = 58.0
"""Near the end of a minute: a drift of a frame's worth anywhere before it would show."""


def make_vfr(
    ffmpeg: str,
    path: Path,
    seconds: float = VFR_SECONDS,
    flash_s: float = FLASH_S,
    drops: bool = False,
) -> Path:
    """Nominally 30 fps, black but for a white flash with a loud beep at ``flash_s``. Every
    other frame 10 ms late (a jittery clock), or with ``drops`` every tenth frame missing and
    the rest 1 ms early or late (a phone dropping frames under load)."""
    end = flash_s + 0.1
    timing = (
        "select='not(eq(mod(n,10),5))',setpts='PTS+0.001*(2*mod(N,2)-1)/TB'"
        if drops
        else "setpts='(N/30+0.01*mod(N,2))/TB'"
    )
    video = (
        f"color=c=black:s=320x180:r=30:d={seconds},"
        f"drawbox=x=0:y=0:w=iw:h=ih:color=white:t=fill:enable='between(t,{flash_s},{end})',"
        f"settb=1/30000,{timing}"
    )
    audio = (
        f"aevalsrc='if(between(t,{flash_s},{end}),0.8*sin(2*PI*1000*t),0.01*sin(2*PI*440*t))'"
        f":s=48000:d={seconds}"
    )
    run(ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i", video, "-f", "lavfi", "-i", audio,
        "-fps_mode", "passthrough", "-enc_time_base", "1/30000", "-c:v", "libx264",
        "-preset", "ultrafast", "-g", "30", "-pix_fmt", "yuv420p",
        "-video_track_timescale", "30000", "-c:a", "aac", "-b:a", "96k", str(path))  # fmt: skip
    steps = {b - a for a, b in pairwise(packet_times(path))}
    assert len(steps) > 1, "the source's frame durations vary"
    return path


@pytest.fixture(scope="module")
def vfr(media: Path, ffmpeg: str) -> Path:
    return make_vfr(ffmpeg, media / "vfr.mp4")


async def test_a_vfr_source_comes_out_cfr_and_in_sync(
    settings: Settings, vfr: Path, ffmpeg: str
) -> None:
    from app.core.models import EncodeAudioInput
    from app.stratum.functions.audio import AudioActivities
    from tests.test_chunked_e2e import flash_and_beep

    probe = await probe_of(settings, vfr)
    assert probe.video.variable_frame_rate
    # the nominal rate, not r_frame_rate (45 here: the finest timestamp step)
    assert probe.video.frame_rate == "30/1"
    profile = CustomProfile(name="v", height=180, bitrate_kbps=300, preset="ultrafast")
    job = job_for(settings, vfr, [profile], job_id="vfr")
    plan = await plan_of(settings, job, probe)
    video = await encode_whole(settings, job, probe, plan.renditions[0])
    times = packet_times(video)
    assert {b - a for a, b in pairwise(times)} == {Fraction(1, 30)}
    assert abs(len(times) - 30 * VFR_SECONDS) <= 1
    audio: EncodedMedia = await ActivityEnvironment().run(
        AudioActivities(settings).encode_audio,
        EncodeAudioInput(job_id=job.job_id, source_uri=job.source_uri, container=probe.container,
                         scratch_uri=job.scratch_uri, duration_s=probe.duration_s),
    )  # fmt: skip
    both = video.with_name("both.mp4")
    run(ffmpeg, "-v", "error", "-y", "-i", str(video), "-i", str(uri_to_path(audio.uri)),
        "-map", "0:v", "-map", "1:a", "-c", "copy", str(both))  # fmt: skip
    flash, beep = flash_and_beep(both)
    assert flash is not None and beep is not None
    print(f"VFR: flash {flash:.4f}s, beep {beep:.4f}s")
    assert abs(flash - FLASH_S) <= 1 / 30 + 1e-6
    assert abs(flash - beep) <= 1 / 30 + 0.012


def test_chunk_output_keys_follow_the_treatment() -> None:
    """Resume never reuses a chunk encoded with another treatment."""
    a = plan_renditions(job(), source(**INTERLACED)).renditions[0]
    b = plan_renditions(job(deinterlace="off"), source(**INTERLACED)).renditions[0]
    c = plan_renditions(job(hdr="tonemap", codec="hevc"), source(**HDR10)).renditions[0]
    d = plan_renditions(job(codec="hevc"), source(**HDR10)).renditions[0]
    keys = {chunk_output_uri("file:///s", "j", r, 0) for r in (a, b, c, d)}
    assert len(keys) == 4


# ---------------------------------------------------------------- square pixels


def read_sar(ffmpeg: str, path: Path) -> tuple[Fraction, Fraction, tuple[int, int]]:
    """The SAR as the H.264 bitstream says it (the SPS, read from a raw Annex B copy), as the
    mp4 ``pasp`` box says it, and the coded size."""
    raw = path.with_suffix(".h264")
    run(ffmpeg, "-v", "error", "-y", "-i", str(path), "-c", "copy",
        "-bsf:v", "h264_mp4toannexb", "-f", "h264", str(raw))  # fmt: skip
    with av.open(str(raw), format="h264") as container:
        ctx = container.streams.video[0].codec_context
        bitstream, size = Fraction(ctx.sample_aspect_ratio or 0), (ctx.width, ctx.height)
    data = path.read_bytes()
    at = data.index(b"pasp")
    h_spacing, v_spacing = struct.unpack(">II", data[at + 4 : at + 12])
    return bitstream, Fraction(h_spacing, v_spacing), size


async def test_an_anamorphic_source_is_encoded_with_square_pixels(
    settings: Settings, media: Path, ffmpeg: str
) -> None:
    """PAL 16:9 (360x288 at SAR 64:45, shown 512x288): the 240 rung comes out 428x240 at SAR
    1:1 in the bitstream and the pasp box; ``pixel_aspect: exact`` gives 426x240 at 640:639."""
    path = make_video(media / "anamorphic-16x9.mp4", width=360, height=288, seconds=1,
                      sar="64:45", audio_channels=None, ffmpeg=ffmpeg)  # fmt: skip
    probe = await probe_of(settings, path)
    assert (probe.video.sample_aspect_ratio, probe.video.display_aspect_ratio) == ("64:45", "16:9")
    rung = CustomProfile(name="sd", height=240, bitrate_kbps=400, preset="ultrafast")
    for pixel_aspect, size, sar, change in [
        ("square", (428, 240), "1:1", 0.003125),  # 428/240 is 0.3125% wider than 16:9
        ("exact", (426, 240), "640:639", 0.0),
    ]:
        job = job_for(settings, path, [rung], job_id=f"sar-{pixel_aspect}",
                      pixel_aspect=pixel_aspect)  # fmt: skip
        (r,) = (await plan_of(settings, job, probe)).renditions
        assert ((r.width, r.height), r.sample_aspect_ratio) == (size, sar)
        assert r.display_aspect_change == change
        out = await encode_whole(settings, job, probe, r)
        written = Fraction(sar.replace(":", "/"))
        assert read_sar(ffmpeg, out) == (written, written, size), pixel_aspect


def test_chunk_output_keys_ignore_the_recorded_aspect_change() -> None:
    """The change is a record, not a setting: a rendition planned before the field existed
    (parsed with its default) keys its chunks as it did then."""
    r = plan_renditions(job(["480p"]), source(1280, 720)).renditions[0]
    assert r.display_aspect_change != 0
    old = Rendition.model_validate(r.model_dump(exclude={"display_aspect_change"}))
    assert old.display_aspect_change == 0
    assert chunk_output_uri("file:///s", "j", r, 0) == chunk_output_uri("file:///s", "j", old, 0)
