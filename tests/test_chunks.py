"""Chunked encoding's steps: the cut rules, and split / encode-chunk / assemble on real media."""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import pytest
from prometheus_client import REGISTRY
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from app.cli.samples import make_video
from app.core.models import (
    AssembleInput,
    ChunkOutput,
    ChunkPlan,
    CustomProfile,
    EncodeChunkInput,
    EncodedMedia,
    EncodeJob,
    EncodeRenditionsInput,
    Plan,
    PlanInput,
    ProbeInput,
    ProbeResult,
    Rendition,
    SplitInput,
)
from app.core.settings import Settings
from app.media.chunking import Keyframe, choose_boundaries, forced_keyframes, ranges, window_share
from app.storage.local import path_to_uri, uri_to_path
from app.stratum.functions import encode as encode_functions
from app.stratum.functions.analyze import AnalyzeActivities
from app.stratum.functions.chunks import (
    ChunkActivities,
    Timeline,
    check_timeline,
    chunk_output_uri,
    chunk_uri,
    odd_parameter_sets,
    parse_keyframes,
    record_uri,
)
from app.stratum.functions.encode import EncodeActivities

# ---------------------------------------------------------------- the rules (no media)


def every(step: float, until: float) -> list[Keyframe]:
    return [Keyframe(round(i * step, 6)) for i in range(int(until / step) + 1)]


def test_cuts_land_on_keyframes_near_the_target() -> None:
    keys = every(1.0, 60)
    starts, scenes = choose_boundaries(keys, 60.0, target_s=6, minimum_s=2)
    assert starts == [float(t) for t in range(0, 60, 6)]
    assert scenes == 0


def test_a_scene_cut_in_the_window_wins_over_the_nearest_keyframe() -> None:
    keys = [*every(2.0, 30), Keyframe(7.3, scene_score=0.8)]
    starts, scenes = choose_boundaries(keys, 30.0, target_s=6, minimum_s=2)
    assert starts[1] == 7.3, "the scene cut, not the keyframe at 6"
    assert scenes == 1
    assert all(t in {k.time_s for k in keys} for t in starts)


def test_keyframes_on_the_segment_grid_come_first() -> None:
    """A cut on the grid adds no keyframe the fixed GOP would not have."""
    keys = [*every(1.0, 60), Keyframe(6.5, scene_score=0.9)]
    starts, scenes = choose_boundaries(keys, 60.0, target_s=6, minimum_s=2, grid_s=4)
    assert all(t % 4 == 0 for t in starts), starts
    assert scenes == 0
    sparse = every(3.0, 60)  # 3, 6, 9…; on a 5 s grid only 15, 30, 45
    starts, _ = choose_boundaries(sparse, 60.0, target_s=6, minimum_s=2, grid_s=5)
    assert starts[:4] == [0.0, 6.0, 15.0, 21.0], "15 (grid) beats 12 (nearest the target)"


def test_no_chunk_is_shorter_than_the_minimum_not_even_the_last() -> None:
    keys = every(0.5, 20.2)
    starts, _ = choose_boundaries(keys, 20.2, target_s=3, minimum_s=2)
    lengths = [b - a for a, b in zip(starts, [*starts[1:], 20.2], strict=True)]
    assert min(lengths) >= 2
    assert sum(lengths) == pytest.approx(20.2)


def test_sparse_keyframes_make_longer_chunks_and_short_titles_one() -> None:
    starts, _ = choose_boundaries(every(10.0, 40), 40.0, target_s=4, minimum_s=2)
    assert starts == [0.0, 10.0, 20.0, 30.0]
    assert choose_boundaries(every(1.0, 7), 7.0, target_s=6, minimum_s=2)[0] == [0.0]
    assert choose_boundaries([Keyframe(0.0)], 60.0, target_s=6, minimum_s=2)[0] == [0.0]


def test_forced_keyframes_follow_the_titles_segment_grid() -> None:
    assert forced_keyframes(0.0, 6.0, 4) == [0.0, 4.0]
    assert forced_keyframes(7.3, 6.0, 4) == [0.0, 0.7, 4.7]
    assert forced_keyframes(8.0, 4.0, 4) == [0.0]


def test_ranges_cover_every_chunk_once_and_the_window_is_shared() -> None:
    spans = ranges(3600, per_child=500)
    assert len(spans) == 8
    assert [i for a, b in spans for i in range(a, b)] == list(range(3600))
    assert max(b - a for a, b in spans) <= 500
    assert ranges(3) == [(0, 3)]
    assert window_share(256, 8) * 8 <= 256
    assert window_share(4, 16) == 1


def test_keyframe_scores_are_read_from_ffmpeg_metadata() -> None:
    text = (
        "frame:0    pts:0       pts_time:0\nlavfi.scene_score=0.000000\n"
        "frame:1    pts:30030   pts_time:1.001\nlavfi.scene_score=0.612000\n"
    )
    assert parse_keyframes(text) == [Keyframe(0.0, 0.0), Keyframe(1.001, 0.612)]


def timeline(pts: list[int], dts: list[int] | None = None) -> Timeline:
    return Timeline(pts=pts, dts=dts or pts, last_duration=1, time_base=Fraction(1, 30))


def test_assembly_check_finds_missing_frames_gaps_and_disorder() -> None:
    assert check_timeline(timeline(list(range(300))), 300, 10.0) is None
    assert check_timeline(timeline(list(range(299))), 300, 10.0) is None, "±1 frame"
    assert "frames" in (check_timeline(timeline(list(range(290))), 300, 10.0) or "")
    gap = [*range(150), *range(160, 310)]
    assert "lasts" in (check_timeline(timeline(gap), 300, 10.0) or "")
    swapped = [*range(100), 101, 100, *range(102, 300)]
    assert "backwards" in (check_timeline(timeline(swapped), 300, 10.0) or "")
    doubled = [*range(150), *range(149, 299)]
    assert "share" in (check_timeline(timeline(doubled, list(range(300))), 300, 10.0) or "")
    b_frames = [0, 3, 1, 2, *range(4, 300)]  # presentation order differs: that is fine
    assert check_timeline(timeline(b_frames, list(range(-1, 299))), 300, 10.0) is None


# ---------------------------------------------------------------- the steps on real media


@pytest.fixture(scope="module")
def scene_source(tmp_path_factory: pytest.TempPathFactory, ffmpeg: str) -> Path:
    """10 s: a test pattern, then at 4.5 s a hard cut to colour bars; a keyframe every second
    plus the encoder's own at the cut."""
    root = tmp_path_factory.mktemp("chunk-media")
    path = root / "scenes.mp4"
    subprocess.run(
        [ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
         "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30:duration=4.5",
         "-f", "lavfi", "-i", "smptebars=size=320x180:rate=30:duration=5.5",
         "-f", "lavfi", "-i", "sine=frequency=440:duration=10:sample_rate=48000",
         "-filter_complex", "[0:v][1:v]concat=n=2:v=1:a=0[v]", "-map", "[v]", "-map", "2:a",
         "-c:v", "libx264", "-preset", "veryfast", "-g", "30", "-pix_fmt", "yuv420p",
         "-c:a", "aac", str(path)],
        check=True,
    )  # fmt: skip
    return path


@pytest.fixture
def settings(tmp_path: Path, scene_source: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", source_roots=str(scene_source.parent))


def video_packets(path: Path) -> list[tuple[float, bool, bytes]]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [
            (float(p.pts * stream.time_base), p.is_keyframe, bytes(p))
            for p in container.demux(stream)
            if p.size
        ]


async def prepare(
    settings: Settings, source: Path, segment_seconds: int = 2
) -> tuple[EncodeJob, ProbeResult, Plan]:
    job = EncodeJob(
        job_id="chunky",
        source_uri=path_to_uri(source),
        profiles=[
            CustomProfile(name="small", height=144, bitrate_kbps=200),
            CustomProfile(name="full", height=180, bitrate_kbps=300),
        ],
        codec="h264",
        segment_seconds=segment_seconds,
        output_uri=settings.resolved_output_uri,
        scratch_uri=settings.resolved_scratch_uri,
        chunk_seconds=3,
        min_chunk_seconds=1,
    )
    analyze = AnalyzeActivities(settings)
    env = ActivityEnvironment()
    probe: ProbeResult = await env.run(analyze.probe_source, ProbeInput(source_uri=job.source_uri))
    plan: Plan = await env.run(analyze.plan, PlanInput(job=job, probe=probe))
    return job, probe, plan


async def split(settings: Settings, job: EncodeJob, probe: ProbeResult) -> ChunkPlan:
    result: ChunkPlan = await ActivityEnvironment().run(
        ChunkActivities(settings).split,
        SplitInput(
            job_id=job.job_id, source_uri=job.source_uri, container=probe.container,
            scratch_uri=job.scratch_uri, duration_s=probe.duration_s,
            chunk_seconds=job.chunk_seconds, min_chunk_seconds=job.min_chunk_seconds,
            segment_seconds=job.segment_seconds,
        ),
    )  # fmt: skip
    return result


async def test_split_is_a_stream_copy_cut_on_keyframes_preferring_the_scene_cut(
    settings: Settings, scene_source: Path
) -> None:
    job, probe, _ = await prepare(settings, scene_source, segment_seconds=10)  # no grid cuts
    plan = await split(settings, job, probe)
    source = video_packets(scene_source)
    keyframes = {round(t, 3) for t, key, _ in source if key}
    assert plan.count >= 3
    assert all(round(t, 3) in keyframes for t in plan.starts_s), "every cut is a keyframe"
    assert 4.5 in plan.starts_s and plan.scene_cuts >= 1, "the hard cut at 4.5 s is used"
    chunks = [uri_to_path(chunk_uri(job.scratch_uri, job.job_id, i)) for i in range(plan.count)]
    copied = [packet for path in chunks for _, _, packet in video_packets(path)]
    assert [p for _, _, p in source] == copied, "the chunks hold the source's packets, unchanged"
    assert plan.frames == len(source)
    durations = [plan.chunk(i).duration_s for i in range(plan.count)]
    assert sum(durations) == pytest.approx(probe.duration_s, abs=1e-3)
    for path, duration in zip(chunks, durations, strict=True):
        assert len(video_packets(path)) == round(duration * 30)
    again = await split(settings, job, probe)
    assert again == plan, "a retried split finds its committed plan"


@dataclass
class Encoded:
    """A title split and every chunk encoded: where each test about its outputs starts."""

    job: EncodeJob
    probe: ProbeResult
    plan: Plan
    chunks: ChunkPlan
    requests: list[EncodeChunkInput]


async def encode_all(settings: Settings, source: Path) -> Encoded:
    job, probe, plan = await prepare(settings, source)
    chunks = await split(settings, job, probe)
    requests = [
        EncodeChunkInput(job_id=job.job_id, scratch_uri=job.scratch_uri, chunk=chunks.chunk(i),
                         renditions=plan.renditions, segment_seconds=plan.segment_seconds)
        for i in range(chunks.count)
    ]  # fmt: skip
    for request in requests:
        await ActivityEnvironment().run(ChunkActivities(settings).encode_chunk, request)
    return Encoded(job, probe, plan, chunks, requests)


def output_paths(encoded: Encoded, rendition: Rendition) -> list[Path]:
    """Where the encoded chunks of one rendition lie, in chunk order."""
    job = encoded.job
    return [
        uri_to_path(chunk_output_uri(job.scratch_uri, job.job_id, rendition, i))
        for i in range(encoded.chunks.count)
    ]


async def assemble(settings: Settings, encoded: Encoded, rendition: Rendition) -> EncodedMedia:
    frames = encoded.chunks.frames
    media: EncodedMedia = await ActivityEnvironment().run(
        ChunkActivities(settings).assemble,
        AssembleInput(
            job_id=encoded.job.job_id, scratch_uri=encoded.job.scratch_uri, rendition=rendition,
            chunks=encoded.chunks.count, expected_frames=frames,
            expected_duration_s=float(frames / Fraction(encoded.probe.video.frame_rate)),
        ),
    )  # fmt: skip
    return media


async def test_assembled_renditions_equal_the_source_with_keyframes_on_the_grid(
    settings: Settings, scene_source: Path
) -> None:
    encoded = await encode_all(settings, scene_source)
    chunks, plan = encoded.chunks, encoded.plan
    rate = Fraction(encoded.probe.video.frame_rate)
    for rendition in plan.renditions:
        media = await assemble(settings, encoded, rendition)
        assert abs(media.frames - chunks.frames) <= 1
        assert media.duration_s == pytest.approx(float(chunks.frames / rate), abs=1 / 30)
        packets = video_packets(uri_to_path(media.uri))
        times = [t for t, _, _ in packets]
        assert all(b > a for a, b in zip(sorted(times), sorted(times)[1:], strict=False))
        keys = {round(t, 2) for t, key, _ in packets if key}
        grid = {float(t) for t in range(0, 10, plan.segment_seconds)}
        assert grid <= keys, "a keyframe at every segment start, as without chunking"
        assert {round(t, 2) for t in chunks.starts_s} <= keys


async def test_chunk_encodes_are_measured_by_rendition_set_not_chunk_number(
    settings: Settings, scene_source: Path
) -> None:
    """A metric label per chunk would grow without bound with a feature film."""
    plan = (await encode_all(settings, scene_source)).plan
    labels = {
        sample.labels["rendition"]
        for metric in REGISTRY.collect()
        if metric.name == "cosmos_encode_seconds"
        for sample in metric.samples
    }
    assert "+".join(r.name for r in plan.renditions) in labels
    assert not any(label.startswith("chunk") for label in labels), labels


async def test_a_finished_chunk_is_never_encoded_again_and_a_damaged_one_is(
    settings: Settings, scene_source: Path
) -> None:
    encoded = await encode_all(settings, scene_source)
    requests = encoded.requests
    outputs = {
        (r.name, i): path
        for r in encoded.plan.renditions
        for i, path in enumerate(output_paths(encoded, r))
    }
    stamps = {key: path.stat().st_mtime_ns for key, path in outputs.items()}
    result = await ActivityEnvironment().run(ChunkActivities(settings).encode_chunk, requests[1])
    assert result.reused
    damaged = outputs[("full", 1)]
    damaged.write_bytes(damaged.read_bytes()[:-100] + b"\0" * 100)  # same size, wrong bytes
    result = await ActivityEnvironment().run(ChunkActivities(settings).encode_chunk, requests[1])
    assert not result.reused
    after = {key: path.stat().st_mtime_ns for key, path in outputs.items()}
    changed = {key for key in outputs if after[key] != stamps[key]}
    assert changed == {("full", 1)}, "only the damaged output was encoded again"
    digest = hashlib.sha256(outputs[("full", 1)].read_bytes()).hexdigest()
    assert {o.name: o.checksum for o in result.outputs}["full"] == f"sha256:{digest}"


async def test_every_encoded_chunk_is_decoded_and_a_corrupt_stream_is_caught(
    settings: Settings, scene_source: Path
) -> None:
    """The full decode runs as each chunk is encoded (in the parallel stage); this is its
    check on a stream whose middle was overwritten."""
    encoded = await encode_all(settings, scene_source)
    paths = output_paths(encoded, encoded.plan.renditions[0])
    check = ChunkActivities(settings).decode_problem
    assert await ActivityEnvironment().run(check, paths, 10.0, "check") is None
    damaged = paths[1]
    data = bytearray(damaged.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 2000] = hashlib.sha512(b"noise").digest() * 31 + b"\xff" * 16
    damaged.write_bytes(bytes(data))
    problem = await ActivityEnvironment().run(check, [damaged], 10.0, "check")
    assert problem is not None and "does not decode" in problem


NOISE = "noise=amount=if(gt(n\\,10)\\,200\\,0)"
"""The noise bitstream filter: from the 11th packet on, one byte in 200 changed, after the
encoder and before the muxer: a stream that the file takes whole and that does not decode."""


async def test_a_whole_title_is_decoded_as_it_is_muxed_and_a_corrupt_stream_is_caught(
    settings: Settings, scene_source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """encode_renditions tees each output's packets into a decoder of its own (the same
    ``-xerror`` decode as the chunks' check, beside the encoder instead of after it), and the
    file must hold exactly the frames that decoded. Damaged packets fail the task and nothing
    is placed; with the check off (quality on: its pass decodes instead) they would be."""
    job, probe, plan = await prepare(settings, scene_source)

    def request(job_id: str, check: bool = True) -> EncodeRenditionsInput:
        return EncodeRenditionsInput(
            job_id=job_id, source_uri=job.source_uri, container=probe.container,
            scratch_uri=job.scratch_uri, renditions=plan.renditions,
            duration_s=probe.duration_s, decode_check=check,
        )  # fmt: skip

    activities = EncodeActivities(settings, "cpu", 2)
    media = await ActivityEnvironment().run(activities.encode_renditions, request("clean"))
    assert [(m.name, m.frames) for m in media] == [(r.name, 300) for r in plan.renditions]

    tee = encode_functions.video_output_args

    def damaged(*args: Any, **kwargs: Any) -> list[str]:
        out = tee(*args, **kwargs)
        return [a for arg in out for a in (["-bsf:v", NOISE, arg] if ".part" in arg else [arg])]

    monkeypatch.setattr(encode_functions, "video_output_args", damaged)
    with pytest.raises(ApplicationError, match=r"was encoded wrong: \w+ does not decode"):
        await ActivityEnvironment().run(activities.encode_renditions, request("damaged"))
    video = uri_to_path(f"{job.scratch_uri}/damaged/video")
    assert not list(video.iterdir()), "no partial or damaged file is left"

    await ActivityEnvironment().run(activities.encode_renditions, request("unchecked", False))
    unchecked = uri_to_path(f"{job.scratch_uri}/unchecked/video")
    placed = [unchecked / f"{r.name}.mp4" for r in plan.renditions]
    check = activities.decode_problem
    assert await ActivityEnvironment().run(check, placed, probe.duration_s, "check") is not None


async def test_assembly_refuses_chunks_with_other_parameter_sets(
    settings: Settings, scene_source: Path, ffmpeg: str
) -> None:
    """The joined file keeps the first chunk's SPS/PPS: a chunk encoded with other settings
    (here another H.264 profile) would be decoded with the wrong ones."""
    encoded = await encode_all(settings, scene_source)
    job = encoded.job
    rendition = next(r for r in encoded.plan.renditions if r.name == "small")
    paths = output_paths(encoded, rendition)
    target = paths[1]
    source = uri_to_path(chunk_uri(job.scratch_uri, job.job_id, 1))
    other = target.with_suffix(".other.mp4")
    subprocess.run(
        [ffmpeg, "-v", "error", "-i", str(source), "-an", "-c:v", "libx264",
         "-profile:v", "baseline", "-vf", f"scale={rendition.width}:{rendition.height}",
         "-g", "1000", str(other)],
        check=True,
    )  # fmt: skip
    other.replace(target)
    data = target.read_bytes()
    record = ChunkOutput(
        name=rendition.name,
        frames=len(video_packets(target)),
        size_bytes=len(data),
        checksum=f"sha256:{hashlib.sha256(data).hexdigest()}",
    )
    Path(record_uri(str(target))).write_text(record.model_dump_json())
    assert odd_parameter_sets(paths) == 1
    with pytest.raises(ApplicationError, match="chunk 1 has other parameter sets") as raised:
        await assemble(settings, encoded, rendition)
    assert raised.value.non_retryable
    assert not uri_to_path(f"{job.scratch_uri}/{job.job_id}/video/small.mp4").exists()


async def test_assembly_refuses_a_missing_chunk(settings: Settings, scene_source: Path) -> None:
    encoded = await encode_all(settings, scene_source)
    job = encoded.job
    rendition = next(r for r in encoded.plan.renditions if r.name == "small")
    output_paths(encoded, rendition)[1].unlink()
    with pytest.raises(ApplicationError, match="chunk 1 of small is missing"):
        await assemble(settings, encoded, rendition)
    assert not uri_to_path(f"{job.scratch_uri}/{job.job_id}/video/small.mp4").exists()


async def test_a_title_that_does_not_cut_in_two_is_not_copied(
    settings: Settings, tmp_path: Path, scene_source: Path
) -> None:
    source = make_video(scene_source.parent / "short.mp4", seconds=3, width=320, height=180)
    job, probe, _ = await prepare(settings, source)
    plan = await split(settings, job, probe)
    assert plan.count == 1
    assert not uri_to_path(f"{job.scratch_uri}/{job.job_id}/chunks").exists()
