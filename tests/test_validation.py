"""The validation pass (VVS): a real package passes it, and each way of breaking one is caught,
naming the rendition and the check."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from app.cli.samples import make_video
from app.core.models import (
    CustomProfile,
    EncodeAudioInput,
    EncodeJob,
    EncodeVideoInput,
    PackageInput,
    PackageResult,
    PlanInput,
    ProbeInput,
    PublishInput,
    SidecarSubtitle,
    SubtitleInput,
    ThumbnailInput,
    ThumbnailOptions,
    ValidationReport,
)
from app.core.settings import Settings
from app.media.validation import PackageExpectations, VideoTarget, validate_package
from app.storage.local import path_to_uri, uri_to_path
from app.stratum.functions.analyze import AnalyzeActivities
from app.stratum.functions.audio import AudioActivities
from app.stratum.functions.encode import EncodeActivities
from app.stratum.functions.package import PackageActivities, expectations
from app.stratum.functions.subtitles import SubtitleActivities
from app.stratum.functions.thumbnails import ThumbnailActivities

SRT = "1\n00:00:00,200 --> 00:00:01,300\nHello\n\n2\n00:00:01,500 --> 00:00:01,900\nBye\n"
VIDEO_CHECKS = {"playlist", "segments", "size", "dash", "iframes", "codecs", "demux", "frames",
                "duration", "keyframes", "codec", "bit_depth", "profile", "colour"}  # fmt: skip
AUDIO_CHECKS = {"playlist", "segments", "size", "dash", "codecs", "demux", "decode", "duration",
                "codec", "channels"}  # fmt: skip


@dataclass(frozen=True)
class Built:
    settings: Settings
    input: PackageInput
    result: PackageResult
    out: Path
    """The published job folder."""

    @property
    def expected(self) -> PackageExpectations:
        assert self.input.plan is not None and self.input.plan.audio is not None
        return expectations(self.input, self.result, self.input.plan.audio)

    @property
    def names(self) -> list[str]:
        return [v.name for v in self.input.videos]


@pytest.fixture(scope="module")
async def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """Two H.264 rungs, an AAC track, a sidecar subtitle track and thumbnails of a 2 s source,
    each made by its real activity, packaged and published."""
    root = tmp_path_factory.mktemp("validation")
    source = make_video(root / "src.mp4", width=320, height=180, seconds=2.0)
    (root / "subs.srt").write_text(SRT)
    settings = Settings(data_dir=root / "data", source_roots=str(root), heartbeat_timeout_s=30)
    job = EncodeJob(
        job_id="job-validation",
        source_uri=path_to_uri(source),
        profiles=[
            CustomProfile(name="180p", height=180, bitrate_kbps=300, preset="ultrafast"),
            CustomProfile(name="144p", height=144, bitrate_kbps=200, preset="ultrafast"),
        ],
        codec="h264",
        segment_seconds=1,
        output_uri=settings.resolved_output_uri,
        scratch_uri=settings.resolved_scratch_uri,
        subtitles=[SidecarSubtitle(source=str(root / "subs.srt"), language="en")],
        thumbnails=ThumbnailOptions(),
    )
    env = ActivityEnvironment()
    analyze = AnalyzeActivities(settings)
    probe = await env.run(analyze.probe_source, ProbeInput(source_uri=job.source_uri))
    plan = await env.run(analyze.plan, PlanInput(job=job, probe=probe))
    assert plan.audio is not None and len(plan.subtitles) == 1
    common = {"job_id": job.job_id, "scratch_uri": job.scratch_uri, "source_uri": job.source_uri}
    videos = [
        await env.run(
            EncodeActivities(settings).encode_video,
            EncodeVideoInput(**common, container=probe.container, rendition=r,
                             duration_s=probe.duration_s),
        )
        for r in plan.renditions
    ]  # fmt: skip
    audio = [
        await env.run(
            AudioActivities(settings).encode_audio,
            EncodeAudioInput(**common, container=probe.container, duration_s=probe.duration_s,
                             track=track),
        )
        for track in plan.audio
    ]  # fmt: skip
    subtitles = [
        await env.run(
            SubtitleActivities(settings).prepare,
            SubtitleInput(**{**common, "source_uri": track.source_uri or job.source_uri},
                          track=track, duration_s=probe.duration_s),
        )
        for track in plan.subtitles
    ]  # fmt: skip
    assert job.thumbnails is not None
    thumbnails = await env.run(
        ThumbnailActivities(settings).generate,
        ThumbnailInput(**common, container=probe.container, duration_s=probe.duration_s,
                       video=probe.video, rendition=plan.renditions[0], options=job.thumbnails),
    )  # fmt: skip
    package_input = PackageInput(
        job_id=job.job_id, scratch_uri=job.scratch_uri, videos=videos, audio=None,
        segment_seconds=plan.segment_seconds, plan=plan, audio_tracks=audio,
        subtitles=subtitles, thumbnails=thumbnails,
    )  # fmt: skip
    package = PackageActivities(settings)
    result = await env.run(package.package, package_input)
    await env.run(
        package.publish_manifest,
        PublishInput(job=job, probe=probe, plan=plan, videos=videos, audio=None, package=result,
                     stage_seconds={}, audio_tracks=audio, subtitles=subtitles),
    )  # fmt: skip
    return Built(settings, package_input, result, uri_to_path(job.output_uri) / job.job_id)


def test_a_real_package_passes_every_check(built: Built) -> None:
    report = built.result.validation
    assert report is not None
    assert report.passed, [c for c in report.checks if not c.ok]
    found: dict[str, set[str]] = {}
    for check in report.checks:
        found.setdefault(check.target, set()).add(check.check)
    assert found == {
        "hls": {"master"},
        "dash": {"mpd", "representations"},
        "180p": VIDEO_CHECKS,
        "144p": VIDEO_CHECKS,
        "audio-und": AUDIO_CHECKS,
        "sub-en": {"playlist", "segments", "dash"},
        "thumbnails": {"playlist", "segments", "size", "dash"},
    }
    assert 0 < report.seconds < 5
    by_name = {(c.target, c.check): c.detail for c in report.checks}
    assert by_name[("180p", "frames")] == "60 frames, the encode has 60"
    assert by_name[("144p", "codecs")].startswith(built.result.codecs["1"])
    # manifest.json carries the report as the package step made it
    manifest = json.loads((built.out / "manifest.json").read_text())
    assert ValidationReport.model_validate(manifest["validation"]) == report


def test_a_package_of_no_plan_is_checked_for_what_it_holds(built: Built) -> None:
    """Histories from before plans travelled: the files, the manifests and the encodes'
    frames and durations are checked, nothing is compared with a plan."""
    expected = built.expected
    videos = [replace(v, codec=None, settings=None) for v in expected.videos]
    audio = [replace(a, codec=None, channels=None) for a in expected.audio]
    report = validate_package(built.out, replace(expected, videos=videos, audio=audio))
    assert report.passed
    planned = {"codec", "bit_depth", "profile", "colour", "channels"}
    assert not {c.check for c in report.checks} & planned


def _video(expected: PackageExpectations, index: int, **changes: Any) -> PackageExpectations:
    videos = list(expected.videos)
    videos[index] = replace(videos[index], **changes)
    return replace(expected, videos=videos)


def _planned(expected: PackageExpectations, **changes: Any) -> PackageExpectations:
    """The first rendition's plan asking for other settings than it was encoded with."""
    settings = expected.videos[0].settings
    assert settings is not None
    return _video(expected, 0, settings=settings.model_copy(update=changes))


def deleted_segment(out: Path, built: Built) -> PackageExpectations:
    (out / "chunk-1-00002.m4s").unlink()
    return built.expected


def deleted_subtitle_segment(out: Path, built: Built) -> PackageExpectations:
    (out / "sub-en-00002.vtt").unlink()
    return built.expected


def deleted_thumbnail_sheet(out: Path, built: Built) -> PackageExpectations:
    (out / "sheet-00001.jpg").unlink()
    return built.expected


def truncated_segment(out: Path, built: Built) -> PackageExpectations:
    data = (out / "chunk-0-00001.m4s").read_bytes()
    (out / "chunk-0-00001.m4s").write_bytes(data[:-100])
    return built.expected


def master_codecs_altered(out: Path, built: Built) -> PackageExpectations:
    """The first variant's CODECS names another level (4.0) than its bitstream's."""
    lines = (out / "master.m3u8").read_text().splitlines()
    at = lines.index(built.result.video_playlists[0]) - 1
    lines[at] = lines[at].replace(f'CODECS="{built.result.codecs["0"]}', 'CODECS="avc1.640028')
    (out / "master.m3u8").write_text("\n".join(lines) + "\n")
    return built.expected


def mpd_names_a_missing_segment(out: Path, built: Built) -> PackageExpectations:
    """The first Representation's numbers start one later: its last segment is not there."""
    mpd = (out / "manifest.mpd").read_text()
    (out / "manifest.mpd").write_text(mpd.replace('startNumber="1"', 'startNumber="2"', 1))
    return built.expected


def plan_asked_10_bit(out: Path, built: Built) -> PackageExpectations:
    return _planned(built.expected, pix_fmt="yuv420p10le")


def plan_asked_other_colours(out: Path, built: Built) -> PackageExpectations:
    return _planned(built.expected, color_primaries="bt2020", color_transfer="smpte2084",
                    color_matrix="bt2020nc")  # fmt: skip


def frame_count_differs(out: Path, built: Built) -> PackageExpectations:
    return _video(built.expected, 1, frames=built.expected.videos[1].frames + 1)


@pytest.mark.parametrize(
    ("fault", "target", "check"),
    [
        (deleted_segment, "144p", "segments"),
        (deleted_subtitle_segment, "sub-en", "segments"),
        (deleted_thumbnail_sheet, "thumbnails", "segments"),
        (truncated_segment, "180p", "size"),
        (master_codecs_altered, "180p", "codecs"),
        (mpd_names_a_missing_segment, "180p", "dash"),
        (plan_asked_10_bit, "180p", "bit_depth"),
        (plan_asked_other_colours, "180p", "colour"),
        (frame_count_differs, "144p", "frames"),
    ],
    ids=lambda v: v.__name__ if callable(v) else None,
)
def test_each_fault_is_caught_naming_the_rendition_and_the_check(
    built: Built,
    tmp_path: Path,
    fault: Callable[[Path, Built], PackageExpectations],
    target: str,
    check: str,
) -> None:
    out = Path(shutil.copytree(built.out, tmp_path / "package"))
    report = validate_package(out, fault(out, built))
    failed = {(c.target, c.check) for c in report.failures}
    assert not report.passed
    assert (target, check) in failed, report.failures
    assert {t for t, _ in failed} == {target}, "only the broken rendition is named"


async def test_the_package_step_fails_the_job_on_a_failed_check(built: Built) -> None:
    """Through the activity: the first failure becomes a non-retryable ValidationError with the
    rendition and the check, before anything is published."""
    videos = list(built.input.videos)
    videos[0] = videos[0].model_copy(update={"frames": videos[0].frames - 1})
    broken = built.input.model_copy(update={"videos": videos})
    env = ActivityEnvironment()
    beats: list[Any] = []
    env.on_heartbeat = lambda *details: beats.append(details[0])
    with pytest.raises(ApplicationError) as info:
        await env.run(PackageActivities(built.settings).package, broken)
    assert info.value.type == "ValidationError" and info.value.non_retryable
    assert info.value.message.startswith("validation failed: 180p: frames: 60 frames, the encode")
    assert {"label": "validate 180p"} in beats, "the pass heartbeats from its thread"


def test_the_expectations_name_every_rendition_of_the_plan(built: Built) -> None:
    expected = built.expected
    assert [v.name for v in expected.videos] == built.names
    first = expected.videos[0]
    assert isinstance(first, VideoTarget) and first.codec == "h264"
    assert (first.rep_id, first.playlist, first.iframe_playlist) == (
        "0", "media_0.m3u8", "iframe_0.m3u8"
    )  # fmt: skip
    assert [a.rep_id for a in expected.audio] == ["2"] and expected.audio[0].codec == "aac"
    assert expected.thumbnails is not None and expected.sizes == built.result.sizes
