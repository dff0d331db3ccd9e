"""Inspection: what probe_file reports of real sources made here by ffmpeg (interlaced, lying
flags, HDR10, HLG, several tracks, VFR), the inspect workflow, ``POST /v1/inspect`` and
``cosmos inspect``."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import uuid
from fractions import Fraction
from itertools import pairwise
from pathlib import Path

import av
import httpx
import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from app.api.main import create_app
from app.core.models import InspectInput, ProbeResult, RetryOptions, SubtitleInfo
from app.core.settings import Settings
from app.plato.workflows.inspect import InspectWorkflow
from app.stratum.functions.analyze import AnalyzeActivities
from app.stratum.functions.idet import idet_verdict, parse_idet
from app.stratum.functions.probe import is_text_subtitle, probe_file, variable_rate
from app.stratum.queues import CPU_QUEUE, WORKFLOW_QUEUE
from tests.conftest import BIN
from tests.stack import Stack

X265_HDR10 = (
    "log-level=error:colorprim=bt2020:transfer=smpte2084:colormatrix=bt2020nc:"
    "master-display=G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,1):"
    "max-cll=1000,400:hdr10=1:repeat-headers=1"
)
X265_HLG = "log-level=error:colorprim=bt2020:transfer=arib-std-b67:colormatrix=bt2020nc"
# lavfi testsrc2 is sharp enough that idet calls even its progressive frames combed; softened,
# it measures progressive, and woven into fields it measures interlaced.
SOFT = "scale=iw/2:ih/2,scale=iw*2:ih*2"
SRT = "1\n00:00:00,000 --> 00:00:01,000\nHello\n\n2\n00:00:01,000 --> 00:00:02,000\nWorld\n"


def _make(ffmpeg: str, out: Path, *args: str) -> Path:
    cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args, str(out)]
    subprocess.run(cmd, check=True, timeout=120)
    return out


@pytest.fixture(scope="module")
def sources(media_dir: Path, ffmpeg: str) -> dict[str, Path]:
    """Tiny sources (≤ 2 s), under the stack's allowed root so the API can inspect them too."""
    root = media_dir / "inspect"
    root.mkdir(exist_ok=True)
    (root / "en.srt").write_text(SRT)
    x264 = ["-c:v", "libx264", "-preset", "ultrafast"]
    made = {
        "interlaced": _make(
            ffmpeg, root / "interlaced.mp4", "-f", "lavfi", "-i",
            "testsrc2=size=720x576:rate=50,gblur=sigma=1.5,tinterlace=interleave_top,"
            "fieldorder=tff", "-t", "1", *x264, "-flags", "+ildct+ilme",
            "-x264-params", "tff=1", "-pix_fmt", "yuv422p",
        ),
        # Progressive pictures coded as interlaced fields (tff): the flags lie.
        "liar": _make(
            ffmpeg, root / "liar.mp4", "-f", "lavfi", "-i",
            f"testsrc2=size=320x240:rate=25,{SOFT},setfield=tff", "-t", "2", *x264,
            "-flags", "+ildct+ilme", "-x264-params", "tff=1",
        ),
        "hdr10": _make(
            ffmpeg, root / "hdr10.mp4", "-f", "lavfi", "-i",
            f"testsrc2=size=320x240:rate=25,{SOFT}", "-t", "1", "-c:v", "libx265",
            "-preset", "ultrafast", "-pix_fmt", "yuv420p10le",
            "-x265-params", X265_HDR10,
        ),
        "hlg": _make(
            ffmpeg, root / "hlg.mp4", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
            "-t", "1", "-c:v", "libx265", "-preset", "ultrafast", "-pix_fmt", "yuv420p10le",
            "-x265-params", X265_HLG,
        ),
        # Two audio tracks (eng default, fra), a forced English mov_text, a start timecode.
        "tracks_mp4": _make(
            ffmpeg, root / "tracks.mp4",
            "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
            "-f", "lavfi", "-i", "sine=frequency=660:sample_rate=44100",
            "-i", str(root / "en.srt"), "-t", "2",
            "-map", "0:v", "-map", "1:a", "-map", "2:a", "-map", "3:s", *x264, "-c:a", "aac",
            "-c:s", "mov_text", "-metadata:s:a:0", "language=eng",
            "-metadata:s:a:0", "title=English", "-metadata:s:a:1", "language=fra",
            "-metadata:s:s:0", "language=eng", "-disposition:a:0", "default",
            "-disposition:a:1", "0", "-disposition:s:0", "forced", "-timecode", "10:00:00:00",
        ),
        # The same in Matroska: subrip, titles, a hearing-impaired subtitle, a 5.1 dub.
        "tracks_mkv": _make(
            ffmpeg, root / "tracks.mkv",
            "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
            "-f", "lavfi", "-i", "sine=frequency=660:sample_rate=48000",
            "-i", str(root / "en.srt"), "-t", "2",
            "-map", "0:v", "-map", "1:a", "-map", "2:a", "-map", "3:s", *x264, "-c:a", "aac",
            "-ac:a:1", "6", "-c:s", "srt",
            "-metadata:s:a:0", "language=eng", "-metadata:s:a:1", "language=fra",
            "-metadata:s:a:1", "title=Doublage", "-metadata:s:s:0", "language=eng",
            "-metadata:s:s:0", "title=SDH", "-disposition:a:0", "0",
            "-disposition:a:1", "default", "-disposition:s:0", "hearing_impaired",
        ),
        # Frame times jittered by 15 ms every other frame (millisecond time base throughout,
        # or the jitter rounds away in 1/25 units).
        "vfr": _make(
            ffmpeg, root / "vfr.mkv", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25",
            "-t", "2", "-vf", r"settb=1/1000,setpts=N*40+15*mod(N\,2)", *x264,
            "-fps_mode", "vfr", "-enc_time_base", "1/1000",
        ),
        "cfr": _make(
            ffmpeg, root / "cfr.mkv", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25",
            "-t", "2", *x264,
        ),
    }  # fmt: skip
    return made


# ---------------------------------------------------------------- probe_file


def test_interlaced_422_source_is_flagged_and_measured_tff(sources: dict[str, Path]) -> None:
    video = probe_file(sources["interlaced"]).video
    assert video.field_order == "tff"
    assert video.measured_field_order == "tff"
    assert video.interlaced is True
    assert video.profile is not None and "4:2:2" in video.profile
    assert video.chroma_format == "4:2:2"
    assert video.bit_depth == 8
    assert video.dynamic_range == "SDR"
    assert (video.width, video.height, video.frame_rate) == (720, 576, "25/1")


def test_lying_interlaced_flags_are_reported_and_still_deinterlaced(
    sources: dict[str, Path],
) -> None:
    """Both are reported; either saying interlaced makes it interlaced (combing on every
    moving edge costs more than a slightly softened progressive picture; ``deinterlace: off``
    is the answer for a progressive master flagged otherwise)."""
    video = probe_file(sources["liar"]).video
    assert video.field_order == "tff", "the stream says interlaced"
    assert video.measured_field_order == "progressive", "the pictures say otherwise"
    assert video.interlaced is True


def test_hdr10_source(sources: dict[str, Path]) -> None:
    video = probe_file(sources["hdr10"]).video
    assert video.dynamic_range == "HDR10"
    assert video.bit_depth == 10
    assert video.profile == "Main 10"
    assert video.chroma_format == "4:2:0"
    assert (video.color_primaries, video.color_transfer, video.color_matrix) == (
        "bt2020",
        "smpte2084",
        "bt2020nc",
    )
    assert video.color_range == "tv"
    md = video.mastering_display
    assert md is not None
    assert md.green == pytest.approx((0.265, 0.69))
    assert md.blue == pytest.approx((0.15, 0.06))
    assert md.red == pytest.approx((0.68, 0.32))
    assert md.white_point == pytest.approx((0.3127, 0.329))
    assert md.max_luminance == pytest.approx(1000)
    assert md.min_luminance == pytest.approx(0.0001)
    assert video.content_light is not None
    assert (video.content_light.max_cll, video.content_light.max_fall) == (1000, 400)
    assert video.measured_field_order == "progressive" and video.interlaced is False


def test_hlg_source(sources: dict[str, Path]) -> None:
    video = probe_file(sources["hlg"]).video
    assert video.dynamic_range == "HLG"
    assert video.color_transfer == "arib-std-b67"
    assert video.bit_depth == 10
    assert video.mastering_display is None and video.content_light is None


def test_every_track_of_an_mp4_with_languages_dispositions_and_timecode(
    sources: dict[str, Path],
) -> None:
    probe = probe_file(sources["tracks_mp4"])
    eng, fra = probe.audio_streams
    assert (eng.index, eng.language, eng.title, eng.default) == (1, "eng", "English", True)
    assert (fra.index, fra.language, fra.default, fra.sample_rate) == (2, "fra", False, 44100)
    assert probe.audio == eng, "audio stays the first track"
    (sub,) = probe.subtitles
    assert (sub.index, sub.codec, sub.text, sub.language, sub.forced) == (
        3,
        "mov_text",
        True,
        "eng",
        True,
    )
    assert [(o.type, o.codec) for o in probe.other_streams] == [("data", "tmcd")]
    assert probe.timecode == probe.video.timecode == "10:00:00:00"
    assert "#1 audio aac (eng)" in probe.streams and "#2 audio aac (fra)" in probe.streams
    assert "#3 subtitle mov_text (eng)" in probe.streams


def test_every_track_of_a_matroska_file(sources: dict[str, Path]) -> None:
    probe = probe_file(sources["tracks_mkv"])
    eng, fra = probe.audio_streams
    assert (eng.language, eng.default, eng.channels) == ("eng", False, 1)
    assert (fra.language, fra.title, fra.default, fra.channels) == ("fra", "Doublage", True, 6)
    (sub,) = probe.subtitles
    assert (sub.codec, sub.text, sub.language, sub.title) == ("subrip", True, "eng", "SDH")
    assert sub.hearing_impaired is True and sub.forced is False
    assert probe.other_streams == [] and probe.timecode is None


def test_jittered_timestamps_are_vfr_and_steady_ones_are_not(sources: dict[str, Path]) -> None:
    with av.open(str(sources["vfr"])) as container:
        stream = container.streams.video[0]
        times = sorted(p.pts for p in container.demux(stream) if p.pts is not None)
    assert {b - a for a, b in pairwise(times)} == {40 + 15, 40 - 15}, times[:8]
    assert probe_file(sources["vfr"]).video.variable_frame_rate is True
    assert probe_file(sources["cfr"]).video.variable_frame_rate is False


def test_the_encodes_test_sources_stay_progressive(media_dir: Path) -> None:
    """Every generated source of the suite (testsrc2, sharp) must not be deinterlaced."""
    for name in ("basic", "ntsc", "anamorphic", "portrait"):
        video = probe_file(media_dir / f"{name}.mp4").video
        assert video.interlaced is False, (name, video.measured_field_order)
        assert video.variable_frame_rate is False, name
        assert (video.dynamic_range, video.bit_depth, video.chroma_format) == ("SDR", 8, "4:2:0")


def test_text_and_image_subtitles_are_told_apart() -> None:
    for codec in ("subrip", "srt", "ass", "ssa", "webvtt", "mov_text", "text", "ttml"):
        assert is_text_subtitle(codec), codec
    for codec in ("hdmv_pgs_subtitle", "dvd_subtitle", "dvb_subtitle", "xsub", "eia_608"):
        assert not is_text_subtitle(codec), codec
    # ffmpeg cannot make a PGS track here: the report of one, by description.
    pgs = SubtitleInfo(index=4, codec="hdmv_pgs_subtitle", text=False, language="fra")
    assert pgs.model_dump()["text"] is False


def test_idet_verdicts() -> None:
    line = (
        "[Parsed_idet_0 @ 0x1] Multi frame detection: TFF:     0 BFF:     0 Progressive:     0"
        " Undetermined:     0\n"
        "[Parsed_idet_0 @ 0x2] Multi frame detection: TFF:    40 BFF:     1 Progressive:    9"
        " Undetermined:     5\n"
    )
    assert parse_idet(line) == "tff", "the last line (the real graph) counts"
    assert parse_idet("no summary") is None
    assert idet_verdict(0, 0, 0) is None
    assert idet_verdict(3, 40, 5) == "bff"
    assert idet_verdict(30, 0, 20) == "progressive", "60 % is not a clear majority"
    assert idet_verdict(0, 0, 13) == "progressive"


def test_inspect_is_in_the_openapi_schema() -> None:
    operation = create_app().openapi()["paths"]["/v1/inspect"]["post"]
    assert operation["description"] and operation["summary"] == "Inspect a source"
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ProbeResult"
    }
    assert {"422", "504"} <= set(operation["responses"])


# ---------------------------------------------------------------- the workflow


async def test_inspect_workflow_probes_once_and_fails_fast_on_bad_sources(
    time_skipping_env: WorkflowEnvironment, sources: dict[str, Path], media_dir: Path
) -> None:
    client: Client = time_skipping_env.client
    settings = Settings(data_dir=media_dir.parent / "inspect-data", source_roots=str(media_dir))
    analyze = AnalyzeActivities(settings)
    workflows = Worker(client, task_queue=WORKFLOW_QUEUE, workflows=[InspectWorkflow])
    activities = Worker(client, task_queue=CPU_QUEUE, activities=[analyze.probe_source])
    async with workflows, activities:
        wf_id = f"inspect-test-{uuid.uuid4().hex[:8]}"
        handle = await client.start_workflow(
            InspectWorkflow.run,
            InspectInput(source_uri=str(sources["hdr10"]), job_id=wf_id),
            id=wf_id,
            task_queue=WORKFLOW_QUEUE,
        )
        result: ProbeResult = await handle.result()
        assert result.video.dynamic_range == "HDR10"
        events = [e async for e in handle.fetch_history_events()]
        assert len(events) <= 12, "one activity: a short history"

        bad_id = f"inspect-test-{uuid.uuid4().hex[:8]}"
        bad = await client.start_workflow(
            InspectWorkflow.run,
            InspectInput(
                source_uri=str(media_dir / "text.mp4"),
                job_id=bad_id,
                retry=RetryOptions(max_attempts=5),
            ),
            id=bad_id,
            task_queue=WORKFLOW_QUEUE,
        )
        with pytest.raises(WorkflowFailureError) as failure:
            await asyncio.wait_for(bad.result(), 60)
    cause = failure.value.cause
    assert isinstance(cause, ActivityError) and isinstance(cause.cause, ApplicationError)
    assert cause.cause.type == "InvalidSource"
    assert "not a readable media file" in cause.cause.message
    assert cause.retry_state is not None and cause.retry_state.name == "NON_RETRYABLE_FAILURE"


# ---------------------------------------------------------------- API and CLI (real stack)


@pytest.mark.e2e
def test_post_inspect_reports_every_stream(stack: Stack, sources: dict[str, Path]) -> None:
    with httpx.Client(base_url=stack.api_url, timeout=150) as http:
        response = http.post("/v1/inspect", json={"source": str(sources["tracks_mp4"])})
    assert response.status_code == 200, response.text
    report = response.json()
    assert [a["language"] for a in report["audio_streams"]] == ["eng", "fra"]
    assert report["subtitles"][0]["forced"] is True
    assert report["timecode"] == "10:00:00:00"
    assert report["video"]["measured_field_order"] in ("progressive", None)
    assert ProbeResult.model_validate(report).video.index == 0


@pytest.mark.e2e
def test_post_inspect_refuses_bad_sources_with_the_reason(stack: Stack, media_dir: Path) -> None:
    with httpx.Client(base_url=stack.api_url, timeout=150) as http:
        not_video = http.post("/v1/inspect", json={"source": str(media_dir / "text.mp4")})
        outside = http.post("/v1/inspect", json={"source": "/etc/passwd"})
    for response in (not_video, outside):
        assert response.status_code == 422, response.text
        (error,) = response.json()["detail"]
        assert error["loc"] == ["body", "source"] and error["msg"], error
        assert "Traceback" not in response.text and 'File "' not in response.text
    assert "not a readable media file" in not_video.json()["detail"][0]["msg"]


@pytest.mark.e2e
def test_cosmos_inspect_prints_a_report(stack: Stack, sources: dict[str, Path]) -> None:
    env = {**os.environ, "COSMOS_API_URL": stack.api_url, "COLUMNS": "120"}
    run = subprocess.run(
        [str(BIN / "cosmos"), "inspect", str(sources["interlaced"])],
        capture_output=True, text=True, timeout=180, env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "interlaced (flag tff, idet tff)" in run.stdout, run.stdout
    assert "4:2:2" in run.stdout and "SDR" in run.stdout and "720x576" in run.stdout
    as_json = subprocess.run(
        [str(BIN / "cosmos"), "inspect", "--json", str(sources["hdr10"])],
        capture_output=True, text=True, timeout=180, env=env,
    )  # fmt: skip
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["video"]["dynamic_range"] == "HDR10"
    refused = subprocess.run(
        [str(BIN / "cosmos"), "inspect", str(Path(sources["interlaced"]).parent / "en.srt")],
        capture_output=True, text=True, timeout=180, env=env,
    )  # fmt: skip
    assert refused.returncode == 1
    assert "refused (422): source:" in refused.stderr, refused.stderr


def test_the_nominal_rate_of_a_variable_frame_rate_stream() -> None:
    """Jitter: the average; drops: the typical duration; both then the standard rate near it."""
    tb = Fraction(1, 30000)
    assert variable_rate([1000] * 100, tb, Fraction(30)) is None  # constant
    jitter = [700, 1300] * 50  # every other frame 10 ms late
    assert variable_rate(jitter, tb, Fraction(30)) == 30
    drops = ([1000] * 8 + [2000]) * 10  # every tenth frame missing: 27 fps on average
    assert variable_rate(drops, tb, Fraction(27)) == 30
    phone = [1000, 990, 1010, 1000, 2000] * 20  # small jitter and drops
    assert variable_rate(phone, tb, Fraction(25)) == 30
    odd = ([1100] * 8 + [2200] * 2) * 10  # 27.27 fps typical: no standard rate within 1 %
    assert variable_rate(odd, tb, None) == Fraction(300, 11)
