"""Stratum activities against real ffmpeg on generated media (no Temporal server needed)."""

from __future__ import annotations

import asyncio
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from mpegdash.parser import MPEGDASHParser
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import ActivityEnvironment

from app.cli.samples import make_video
from app.core.models import (
    CleanupInput,
    CustomProfile,
    EncodeAudioInput,
    EncodeJob,
    EncodeVideoInput,
    PackageInput,
    PlanInput,
    ProbeInput,
    ProbeResult,
    PublishInput,
)
from app.core.settings import Settings
from app.storage.local import path_to_uri, uri_to_path
from app.stratum.functions.analyze import AnalyzeActivities
from app.stratum.functions.audio import AudioActivities
from app.stratum.functions.encode import EncodeActivities
from app.stratum.functions.lifecycle import LifecycleActivities
from app.stratum.functions.package import PackageActivities
from tests.conftest import MEDIA
from tests.media_checks import check_package


def job_dir(root_uri: str, job_id: str) -> Path:
    return uri_to_path(root_uri) / job_id


@pytest.fixture
def settings(tmp_path: Path, media_dir: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", source_roots=str(media_dir), heartbeat_timeout_s=20)


def job_for(settings: Settings, source: Path, **overrides: Any) -> EncodeJob:
    fields: dict[str, Any] = {
        "job_id": "job-test",
        "source_uri": path_to_uri(source),
        "profiles": [
            CustomProfile(name="small", height=144, bitrate_kbps=200),
            CustomProfile(name="medium", height=180, bitrate_kbps=300),
        ],
        "codec": "h264",
        "segment_seconds": 1,
        "output_uri": settings.resolved_output_uri,
        "scratch_uri": settings.resolved_scratch_uri,
    }
    return EncodeJob(**(fields | overrides))


async def probe(settings: Settings, path: Path) -> ProbeResult:
    result: ProbeResult = await ActivityEnvironment().run(
        AnalyzeActivities(settings).probe_source, ProbeInput(source_uri=path_to_uri(path))
    )
    return result


async def run_pipeline(settings: Settings, job: EncodeJob) -> Path:
    """The workflow's steps in order, each a real activity."""
    env = ActivityEnvironment()
    analyze, encode = AnalyzeActivities(settings), EncodeActivities(settings)
    package = PackageActivities(settings)
    facts = await env.run(analyze.probe_source, ProbeInput(source_uri=job.source_uri))
    plan = await env.run(analyze.plan, PlanInput(job=job, probe=facts))
    videos = [
        await env.run(
            encode.encode_video,
            EncodeVideoInput(
                job_id=job.job_id,
                source_uri=job.source_uri,
                container=facts.container,
                scratch_uri=job.scratch_uri,
                rendition=r,
                duration_s=facts.duration_s,
            ),
        )
        for r in plan.renditions
    ]
    audio = None
    if facts.audio:
        audio = await env.run(
            AudioActivities(settings).encode_audio,
            EncodeAudioInput(
                job_id=job.job_id,
                source_uri=job.source_uri,
                container=facts.container,
                scratch_uri=job.scratch_uri,
                duration_s=facts.duration_s,
            ),
        )
    packaged = await env.run(
        package.package,
        PackageInput(
            job_id=job.job_id,
            scratch_uri=job.scratch_uri,
            videos=videos,
            audio=audio,
            segment_seconds=plan.segment_seconds,
        ),
    )
    await env.run(
        package.publish_manifest,
        PublishInput(
            job=job,
            probe=facts,
            plan=plan,
            videos=videos,
            audio=audio,
            package=packaged,
            stage_seconds={"probe": 0.1},
        ),
    )
    return job_dir(job.output_uri, job.job_id)


# ---------------------------------------------------------------- probe


async def test_probe_reads_the_facts(settings: Settings, media_dir: Path) -> None:
    facts = await probe(settings, media_dir / "basic.mp4")
    assert facts.container == "mov"
    assert facts.video.codec == "h264"
    assert (facts.video.width, facts.video.height) == (320, 180)
    assert facts.video.frame_rate == "30/1"
    assert facts.video.display_aspect_ratio == "16:9"
    assert abs(facts.duration_s - 2.0) < 0.05
    assert facts.audio is not None and facts.audio.channels == 2
    assert facts.size_bytes == (media_dir / "basic.mp4").stat().st_size


@pytest.mark.parametrize(
    ("name", "check"),
    [
        ("no_audio", lambda p: p.audio is None),
        ("surround", lambda p: p.audio.channels == 6 and p.audio.channel_layout == "5.1"),
        ("odd", lambda p: (p.video.width, p.video.height) == (321, 241)),
        (
            "anamorphic",
            lambda p: (
                p.video.sample_aspect_ratio == "16:15"
                and p.video.display_aspect_ratio == "4:3"
                and p.video.display_width == 384
            ),
        ),
        ("ntsc", lambda p: p.video.frame_rate == "30000/1001"),
        ("portrait", lambda p: p.video.display_aspect_ratio == "9:16"),
        (
            "rotated",
            lambda p: (
                p.video.rotation in (90, 270)
                and (p.video.display_width, p.video.display_height) == (180, 320)
            ),
        ),
    ],
)
async def test_probe_variants(settings: Settings, media_dir: Path, name: str, check: Any) -> None:
    facts = await probe(settings, media_dir / f"{name}.mp4")
    assert check(facts), facts


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("truncated.mp4", "not a readable media file"),
        ("text.mp4", "not a readable media file"),
        ("empty.mp4", "empty"),
    ],
)
async def test_probe_refuses_bad_sources(
    settings: Settings, media_dir: Path, name: str, words: str
) -> None:
    with pytest.raises(ApplicationError) as info:
        await probe(settings, media_dir / name)
    assert info.value.non_retryable
    assert info.value.type == "InvalidSource"
    assert words in info.value.message


async def test_probe_refuses_audio_only(settings: Settings, media_dir: Path, ffmpeg: str) -> None:
    audio = media_dir / "audio-only.m4a"
    subprocess.run(
        [ffmpeg, "-v", "error", "-y", "-i", str(media_dir / "basic.mp4"), "-vn", "-c", "copy",
         str(audio)],
        check=True,
    )  # fmt: skip
    with pytest.raises(ApplicationError, match="no video stream") as info:
        await probe(settings, audio)
    assert info.value.non_retryable


async def test_probe_refuses_sources_outside_the_roots(settings: Settings, tmp_path: Path) -> None:
    outside = make_video(tmp_path / "outside.mp4", width=64, height=64, seconds=0.5)
    with pytest.raises(ApplicationError, match="outside the allowed roots") as info:
        await probe(settings, outside)
    assert info.value.non_retryable


# ---------------------------------------------------------------- whole pipeline


@pytest.mark.parametrize("name", list(MEDIA))
async def test_pipeline_outputs_play(
    settings: Settings, media_dir: Path, ffmpeg: str, name: str
) -> None:
    source = media_dir / f"{name}.mp4"
    job = job_for(settings, source, job_id=f"job-{name}")
    out = await run_pipeline(settings, job)
    facts = await probe(settings, source)
    manifest = check_package(out, ffmpeg, facts.duration_s, facts.video.frame_rate)
    assert (manifest["audio"] is None) == (MEDIA[name].get("audio_channels", 2) is None)
    dar = facts.video.display_aspect_ratio
    for r in manifest["renditions"]:
        assert r["width"] % 2 == 0 and r["height"] % 2 == 0
        assert r["settings"]["gop_frames"] == round(eval(facts.video.frame_rate) * 1)
        # square pixels (anamorphic sources too), the display aspect within 0.5% and recorded
        assert r["sample_aspect_ratio"] == "1:1", (name, r)
        change = Fraction(r["width"], r["height"]) / Fraction(dar.replace(":", "/")) - 1
        assert abs(change) <= Fraction(5, 1000), (name, r)
        assert r["display_aspect_change"] == round(float(change), 6), (name, r)
        if name in ("portrait", "rotated"):
            assert r["height"] > r["width"]
    assert not (job_dir(job.scratch_uri, job.job_id) / "package").exists()


async def test_square_pixel_rungs_of_several_aspect_ratios_share_one_dash_set(
    settings: Settings, media_dir: Path, ffmpeg: str
) -> None:
    """320x180 (16:9) and 284x160 (71:40), both at SAR 1:1: ffmpeg's dash muxer refuses them
    in one AdaptationSet, so the MPD is joined after; players switch between both."""
    profiles = [
        CustomProfile(name="full", height=180, bitrate_kbps=300, preset="ultrafast"),
        CustomProfile(name="low", height=160, bitrate_kbps=200, preset="ultrafast"),
    ]
    job = job_for(settings, media_dir / "basic.mp4", job_id="job-square", profiles=profiles)
    out = await run_pipeline(settings, job)
    manifest = check_package(out, ffmpeg, 2.0, "30/1")
    got = {
        r["name"]: (r["width"], r["height"], r["sample_aspect_ratio"])
        for r in manifest["renditions"]
    }
    assert got == {"full": (320, 180, "1:1"), "low": (284, 160, "1:1")}
    mpd = MPEGDASHParser.parse(str(out / "manifest.mpd"))
    sets = mpd.periods[0].adaptation_sets
    (video,) = [s for s in sets if s.content_type == "video"]
    assert sorted((r.id, r.width, r.height, r.sar) for r in video.representations) == [
        ("0", 320, 180, "1:1"), ("1", 284, 160, "1:1")
    ]  # fmt: skip
    assert (video.max_width, video.max_height, video.par) == (320, 180, "16:9")
    assert [s.id for s in sets] == list(range(len(sets)))


async def test_hevc_and_av1_encode(settings: Settings, media_dir: Path, ffmpeg: str) -> None:
    source = media_dir / "basic.mp4"
    profiles = [
        CustomProfile(name="hevc", height=144, bitrate_kbps=150, codec="hevc", preset="ultrafast"),
        CustomProfile(name="av1", height=180, bitrate_kbps=150, codec="av1", preset="12"),
    ]
    job = job_for(settings, source, job_id="job-codecs", profiles=profiles)
    out = await run_pipeline(settings, job)
    manifest = check_package(out, ffmpeg, 2.0, "30/1")
    encoders = {r["name"]: r["encoder"] for r in manifest["renditions"]}
    assert encoders == {"hevc": "libx265", "av1": "libsvtav1"}


async def test_a_finished_rendition_is_not_encoded_again(
    settings: Settings, media_dir: Path
) -> None:
    source = media_dir / "basic.mp4"
    job = job_for(settings, source)
    env = ActivityEnvironment()
    facts = await probe(settings, source)
    plan = await env.run(AnalyzeActivities(settings).plan, PlanInput(job=job, probe=facts))
    request = EncodeVideoInput(
        job_id=job.job_id,
        source_uri=job.source_uri,
        container=facts.container,
        scratch_uri=job.scratch_uri,
        rendition=plan.renditions[0],
        duration_s=facts.duration_s,
    )
    encode = EncodeActivities(settings)
    first = await env.run(encode.encode_video, request)
    path = Path(first.uri.removeprefix("file://"))
    mtime = path.stat().st_mtime_ns
    beats: list[Any] = []
    env.on_heartbeat = lambda *details: beats.append(details)
    second = await env.run(encode.encode_video, request)
    assert second == first
    assert path.stat().st_mtime_ns == mtime
    assert beats == []  # no ffmpeg ran


async def test_progress_heartbeats_move_forward(
    settings: Settings, media_dir: Path, tmp_path: Path
) -> None:
    source = make_video(media_dir / "longer.mp4", width=640, height=360, seconds=6)
    job = job_for(settings, source, job_id="job-progress")
    env = ActivityEnvironment()
    facts = await probe(settings, source)
    plan = await env.run(AnalyzeActivities(settings).plan, PlanInput(job=job, probe=facts))
    beats: list[dict[str, Any]] = []
    env.on_heartbeat = lambda *details: beats.append(details[0])
    await env.run(
        EncodeActivities(settings).encode_video,
        EncodeVideoInput(
            job_id=job.job_id,
            source_uri=job.source_uri,
            container=facts.container,
            scratch_uri=job.scratch_uri,
            rendition=plan.renditions[0],
            duration_s=facts.duration_s,
        ),
    )
    done = [b["done_s"] for b in beats]
    assert len(done) >= 2
    assert done == sorted(done)
    # the decode check runs beside the encoder and does not heartbeat: no beat goes back
    assert {b["label"] for b in beats} == {plan.renditions[0].name}
    assert done[-1] == pytest.approx(facts.duration_s, abs=0.1)
    assert all(b["total_s"] == facts.duration_s for b in beats)


async def test_cancel_kills_ffmpeg(settings: Settings, media_dir: Path) -> None:
    source = make_video(
        media_dir / "long.mp4", width=1280, height=720, seconds=20, audio_channels=None
    )
    job = job_for(
        settings,
        source,
        job_id="job-cancel",
        profiles=[CustomProfile(name="slow", height=720, bitrate_kbps=3000, preset="slower")],
    )
    env = ActivityEnvironment()
    facts = await probe(settings, source)
    plan = await env.run(AnalyzeActivities(settings).plan, PlanInput(job=job, probe=facts))
    started = asyncio.Event()
    env.on_heartbeat = lambda *details: started.set()
    task = asyncio.create_task(
        env.run(
            EncodeActivities(settings).encode_video,
            EncodeVideoInput(
                job_id=job.job_id,
                source_uri=job.source_uri,
                container=facts.container,
                scratch_uri=job.scratch_uri,
                rendition=plan.renditions[0],
                duration_s=facts.duration_s,
            ),
        )
    )
    await asyncio.wait_for(started.wait(), 30)
    await asyncio.sleep(1)
    video = job_dir(job.scratch_uri, job.job_id) / "video"
    part = str(video / "slow.mp4.")  # slow.mp4.<attempt token>.part
    assert subprocess.run(["pgrep", "-f", part], capture_output=True).returncode == 0
    env.cancel()
    with pytest.raises((asyncio.CancelledError, CancelledError)):
        await asyncio.wait_for(task, 5)
    assert subprocess.run(["pgrep", "-f", part], capture_output=True).returncode == 1
    assert list(video.iterdir()) == [], "neither the output nor the attempt's partial file"


async def test_cleanup_removes_scratch_and_outputs(settings: Settings) -> None:
    scratch = job_dir(settings.resolved_scratch_uri, "job-x")
    output = job_dir(settings.resolved_output_uri, "job-x")
    for folder in (scratch, output):
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / "file").write_text("x")
    request = CleanupInput(
        job_id="job-x",
        output_uri=settings.resolved_output_uri,
        scratch_uri=settings.resolved_scratch_uri,
        remove_outputs=False,
    )
    lifecycle = LifecycleActivities(settings)
    assert await ActivityEnvironment().run(lifecycle.cleanup, request) == [path_to_uri(scratch)]
    assert output.exists() and not scratch.exists()
    removed = await ActivityEnvironment().run(
        lifecycle.cleanup, request.model_copy(update={"remove_outputs": True})
    )
    assert removed == [path_to_uri(output)]
    assert not output.exists()


async def test_a_hung_ffmpeg_is_killed_and_the_attempt_fails_retryably(
    settings: Settings, media_dir: Path, tmp_path: Path
) -> None:
    """A stand-in ffmpeg that never reports progress: killed after the heartbeat timeout."""
    fake = tmp_path / "hung-ffmpeg"
    fake.write_text("#!/bin/sh\nsleep 1000\n")
    fake.chmod(0o755)
    hung = settings.model_copy(update={"ffmpeg_path": str(fake), "heartbeat_timeout_s": 1.0})
    source = media_dir / "basic.mp4"
    job = job_for(hung, source, job_id="job-hung")
    facts = await probe(settings, source)
    plan = await ActivityEnvironment().run(
        AnalyzeActivities(hung).plan, PlanInput(job=job, probe=facts)
    )
    started = asyncio.get_running_loop().time()
    with pytest.raises(ApplicationError, match="made no progress for 1s") as info:
        await ActivityEnvironment().run(
            EncodeActivities(hung).encode_video,
            EncodeVideoInput(
                job_id=job.job_id,
                source_uri=job.source_uri,
                container=facts.container,
                scratch_uri=job.scratch_uri,
                rendition=plan.renditions[0],
                duration_s=facts.duration_s,
            ),
        )
    assert not info.value.non_retryable, "a hang is retried, maybe on another worker"
    assert asyncio.get_running_loop().time() - started < 5
    assert subprocess.run(["pgrep", "-f", str(fake)], capture_output=True).returncode == 1
