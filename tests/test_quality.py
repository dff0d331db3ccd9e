"""Quality (VMAF, PSNR, SSIM): our numbers against ffmpeg's own filters run directly on the same
files, chunked against whole, mismatches refused or aligned, and the workflow, the API and the
CLI on real generated media (320x180, a few seconds: the file stays quick on two cores)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from app.core.models import (
    QualityComparison,
    QualityFile,
    QualityJob,
    QualityMedia,
    QualityMetric,
    QualityResult,
    QualityView,
    QualityViewSummary,
)
from app.core.settings import Settings
from app.media.quality import (
    UNSPECIFIED,
    GraphInput,
    GraphPair,
    QualityMismatch,
    align,
    harmonic_mean,
    matched_tags,
    measure_plan,
    percentile,
    plan_chunks,
    playlist_files,
    vmaf_model,
)
from app.plato.workflows.quality import QualityWorkflow
from app.storage.local import path_to_uri, uri_to_path
from app.stratum.functions.analyze import AnalyzeActivities
from app.stratum.functions.lifecycle import LifecycleActivities
from app.stratum.functions.quality import QualityActivities
from app.stratum.queues import CPU_QUEUE, WORKFLOW_QUEUE
from tests.conftest import BIN
from tests.polling import in_history, until
from tests.stack import Stack

VMAF_TOLERANCE = 0.5
PSNR_TOLERANCE_DB = 0.05
CHUNK_TOLERANCE = 0.2


# ---------------------------------------------------------------- media


def _ffmpeg(ffmpeg: str, *args: str) -> None:
    subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args],
                   check=True)  # fmt: skip


@pytest.fixture(scope="module")
def clips(media_dir: Path, ffmpeg: str) -> dict[str, Path]:
    """Under the suite's allowed root: a 4 s reference (testsrc2, nearly lossless) and copies
    of it: heavily compressed, smaller, at 25 fps, shorter, and a mandelbrot with scene change."""
    root = media_dir / "quality"
    root.mkdir(exist_ok=True)
    made = {name: root / f"{name}.mp4" for name in
            ("reference", "compressed", "small", "rate25", "short", "tagged")}  # fmt: skip
    x264 = ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"]
    _ffmpeg(ffmpeg, "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30:duration=4",
            *x264, "-crf", "10", "-g", "30", str(made["reference"]))  # fmt: skip
    ref = str(made["reference"])
    _ffmpeg(ffmpeg, "-i", ref, *x264, "-b:v", "60k", "-g", "60", str(made["compressed"]))
    _ffmpeg(ffmpeg, "-i", ref, "-vf", "scale=192:108", *x264, "-b:v", "80k",
            str(made["small"]))  # fmt: skip
    _ffmpeg(ffmpeg, "-i", ref, "-vf", "fps=25", *x264, "-b:v", "150k", str(made["rate25"]))
    _ffmpeg(ffmpeg, "-i", ref, "-t", "3", *x264, "-b:v", "150k", str(made["short"]))
    # the same pictures, tagged BT.709 (the reference is untagged): as a rendition of an
    # untagged HD source is
    _ffmpeg(ffmpeg, "-i", ref, "-vf", "setparams=colorspace=bt709:color_primaries=bt709:"
            "color_trc=bt709:range=tv", *x264, "-crf", "10", str(made["tagged"]))  # fmt: skip
    return made


def direct(ffmpeg: str, reference: Path, distorted: Path, scale: str = "") -> dict[str, float]:
    """libvmaf, psnr and ssim run directly by ffmpeg on the same inputs, as their docs show:
    the distorted first, both timed from zero; their own summaries from the log."""
    pre = f"scale={scale}:flags=bicubic," if scale else ""
    graph = (
        f"[0:v]{pre}setpts=PTS-STARTPTS,split=3[d1][d2][d3];"
        "[1:v]setpts=PTS-STARTPTS,split=3[r1][r2][r3];"
        "[d1][r1]libvmaf=model=version=vmaf_v0.6.1[o1];[d2][r2]psnr[o2];[d3][r3]ssim[o3]"
    )
    run = subprocess.run(
        [ffmpeg, "-hide_banner", "-nostdin", "-i", str(distorted), "-i", str(reference),
         "-filter_complex", graph, "-map", "[o1]", "-map", "[o2]", "-map", "[o3]",
         "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    log = run.stderr
    vmaf = re.search(r"VMAF score: ([\d.]+)", log)
    psnr = re.search(r"PSNR y:([\d.]+) u:([\d.]+) v:([\d.]+) average:([\d.]+)", log)
    ssim = re.search(r"SSIM Y:([\d.]+).* All:([\d.]+)", log)
    assert vmaf and psnr and ssim, log[-2000:]
    return {
        "vmaf": float(vmaf.group(1)),
        "psnr_y": float(psnr.group(1)),
        "psnr_u": float(psnr.group(2)),
        "psnr_v": float(psnr.group(3)),
        "psnr_average": float(psnr.group(4)),
        "ssim_all": float(ssim.group(2)),
    }


# ---------------------------------------------------------------- the rules, without media


def media(frames: int = 120, rate: str = "30/1", vfr: bool = False) -> QualityMedia:
    return QualityMedia(
        file=QualityFile(uri="file:///x.mp4"), container="mov", frames=frames,
        duration_s=float(frames / Fraction(rate)), first_s=0.0, start_s=0.0, frame_rate=rate,
        width=320, height=180, pix_fmt="yuv420p", variable_frame_rate=vfr,
    )  # fmt: skip


def test_mismatches_are_refused_with_the_reason_or_aligned_when_asked() -> None:
    with pytest.raises(QualityMismatch, match=r"frame rates differ: the reference is 30/1 fps"):
        align(media(), media(100, "25/1"), "strict")
    with pytest.raises(QualityMismatch, match=r"durations differ: the reference has 120 frames"):
        align(media(), media(90), "strict")
    with pytest.raises(QualityMismatch, match="variable frame rate"):
        align(media(), media(vfr=True), "strict")
    assert align(media(), media(121), "strict").frames == 120, "a frame apart is the same length"
    rate = align(media(), media(100, "25/1"), "auto")
    assert rate.resample_distorted and rate.frames == 120
    assert rate.notes == ["the distorted resampled from 25/1 to 30/1 fps"]
    short = align(media(), media(90), "auto")
    assert short.frames == 90 and "common 3.000 s" in short.notes[0]
    field = align(media(), media(240, "60/1"), "strict", multiplier=2)
    assert field.frames == 240 and not field.resample_distorted


def test_chunks_cover_every_frame_once_and_long_titles_get_longer_chunks() -> None:
    chunks = plan_chunks(301, Fraction(30), 2.0)
    assert [c.start_frame for c in chunks] == [0, 61, 122, 183, 244], "about 2 s, even"
    assert chunks[-1].end_frame is None and all(c.end_frame for c in chunks[:-1])
    ends = [c.end_frame for c in chunks[:-1]]
    assert ends == [c.start_frame for c in chunks[1:]]
    assert len(plan_chunks(2 * 3600 * 30, Fraction(30), 2.0)) == 1000
    assert len(plan_chunks(10, Fraction(30), 10.0)) == 1


def test_pooling_and_models() -> None:
    assert percentile([1, 2, 3, 4, 5], 50) == 3 and percentile([0, 10], 5) == pytest.approx(0.5)
    assert harmonic_mean([0.0, 100.0]) == pytest.approx(2 / (1 + 1 / 101) - 1)
    assert vmaf_model(1920, 1080) == "vmaf_v0.6.1" == vmaf_model(1080, 1920)
    assert vmaf_model(2560, 1440) == "vmaf_4k_v0.6.1"


def test_playlists_name_only_files_beside_them() -> None:
    good = '#EXTM3U\n#EXT-X-MAP:URI="init-0.m4s"\n#EXTINF:2,\nchunk-0-00001.m4s\n#EXT-X-ENDLIST\n'
    assert playlist_files(good) == ["init-0.m4s", "chunk-0-00001.m4s"]
    for bad in ("../secret.m4s", "/etc/passwd", "http://169.254.169.254/x", "a/b.m4s"):
        with pytest.raises(ValueError):
            playlist_files(good.replace("chunk-0-00001.m4s", bad))
    with pytest.raises(ValueError, match="byte-range"):
        playlist_files(good.replace("#EXTINF", "#EXT-X-BYTERANGE:10@0\n#EXTINF"))


def test_the_graph_holds_no_request_strings_and_refuses_unsafe_log_paths(tmp_path: Path) -> None:
    chunk = plan_chunks(180, Fraction(30), 2.0)[1]
    source = GraphInput(Path("/media/we ird'name.mp4"), "mov", 0.0, 0.0)
    pair = GraphPair(distorted=source, rate=Fraction(30), multiplier=1,
                     sizes=((320, 180, ("vmaf", "psnr", "ssim")),), pix_fmt="yuv420p")  # fmt: skip
    plan = measure_plan(source, [pair], chunk, tmp_path)
    graph = plan.args[plan.args.index("-filter_complex") + 1]
    assert "we ird" not in graph, "file names are arguments, never part of the graph"
    assert plan.args.count("-protocol_whitelist") == 2
    assert "trim=start=1.950000:end=4.016667" in graph, "a frame of context either side"
    with pytest.raises(ValueError, match="filter graph"):
        measure_plan(source, [pair], chunk, tmp_path / "it's:here")


def test_an_untagged_side_takes_the_other_sides_tags_and_tagged_differences_stay() -> None:
    untagged, bt709, bt601 = UNSPECIFIED, (1, 1, 1, 1), (6, 6, 6, 1)
    assert matched_tags(untagged, bt709) == [
        "setparams=colorspace=1:color_primaries=1:color_trc=1:range=1"
    ]
    assert matched_tags(bt709, untagged) == [], "the tagged side is left as it is"
    assert matched_tags(untagged, untagged) == [] and matched_tags(bt709, bt601) == []
    assert matched_tags((2, 1, 1, 1), bt601) == ["setparams=colorspace=6"], "only what it lacks"


# ---------------------------------------------------------------- the workflow, real activities

Run = Callable[..., Awaitable[QualityResult]]


@pytest.fixture(scope="module")
def settings(clips: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Settings:
    data = tmp_path_factory.mktemp("quality-data")
    return Settings(data_dir=data, source_roots=str(clips["reference"].parent))


@pytest.fixture(scope="module")
async def run_quality(
    time_skipping_env: WorkflowEnvironment, settings: Settings
) -> AsyncIterator[Run]:
    """QualityWorkflow on the time-skipping server, with the real activities."""
    client: Client = time_skipping_env.client
    quality = QualityActivities(settings, threads=2)
    activities: list[Callable[..., Any]] = [
        AnalyzeActivities(settings).probe_source,
        quality.prepare,
        quality.measure_chunk,
        quality.assemble,
        LifecycleActivities(settings).cleanup,
    ]
    workflows = Worker(client, task_queue=WORKFLOW_QUEUE, workflows=[QualityWorkflow])
    pool = Worker(client, task_queue=CPU_QUEUE, activities=activities)

    async def run(reference: Path, distorted: Path, **options: Any) -> QualityResult:
        job = quality_job(settings, reference, distorted, **options)
        handle = await client.start_workflow(
            QualityWorkflow.run, job, id=job.job_id, task_queue=WORKFLOW_QUEUE
        )
        return await asyncio.wait_for(handle.result(), 120)

    async with workflows, pool:
        yield run


def quality_job(
    settings: Settings,
    reference: Path,
    distorted: Path,
    *,
    metrics: list[QualityMetric] | None = None,
    align: str = "strict",
    chunk_seconds: float = 10.0,
) -> QualityJob:
    return QualityJob(
        job_id=f"qual-test-{uuid.uuid4().hex[:8]}",
        reference=QualityFile(uri=path_to_uri(reference)),
        comparisons=[
            QualityComparison(
                name="distorted",
                distorted=QualityFile(uri=path_to_uri(distorted)),
                views=[QualityView(at="reference", metrics=metrics or ["vmaf", "psnr", "ssim"])],
            )
        ],
        align=align,  # type: ignore[arg-type]
        chunk_seconds=chunk_seconds,
        output_uri=settings.resolved_output_uri,
        scratch_uri=settings.resolved_scratch_uri,
    )


def summary(result: QualityResult) -> QualityViewSummary:
    (comparison,) = result.comparisons
    (view,) = comparison.views
    return view


async def test_a_cancel_before_a_worker_takes_the_probe_cancels_the_comparison(
    time_skipping_env: WorkflowEnvironment, settings: Settings, clips: dict[str, Path]
) -> None:
    """The cancel comes back as the probe's cancellation, not asyncio's: the comparison is
    cancelled, not failed. First in the module: no pool of ``run_quality`` polls yet."""
    client = time_skipping_env.client
    job = quality_job(settings, clips["reference"], clips["reference"])
    async with Worker(client, task_queue=WORKFLOW_QUEUE, workflows=[QualityWorkflow]):
        handle = await client.start_workflow(
            QualityWorkflow.run, job, id=job.job_id, task_queue=WORKFLOW_QUEUE
        )
        await until(in_history(handle, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED), "a probe")
        await handle.cancel()
        await until(in_history(handle, EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED), "its cancel")
        cleanup = LifecycleActivities(settings).cleanup
        async with Worker(client, task_queue=CPU_QUEUE, activities=[cleanup]):
            with pytest.raises(WorkflowFailureError) as info:
                await asyncio.wait_for(handle.result(), 60)
    assert isinstance(info.value.cause, CancelledError), info.value.cause
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        async for e in handle.fetch_history_events()
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert scheduled == ["probe_source", "probe_source", "cleanup"], "compensated"


async def test_numbers_agree_with_libvmaf_psnr_and_ssim_run_directly(
    run_quality: Run, clips: dict[str, Path], ffmpeg: str, settings: Settings
) -> None:
    """The same reference and its compressed copy: ours, whole and in 4 chunks, against the
    filters' own summaries; then a smaller copy, scaled up (bicubic) as both do."""
    ref, distorted = clips["reference"], clips["compressed"]
    theirs = direct(ffmpeg, ref, distorted)
    whole = await run_quality(ref, distorted)
    chunked = await run_quality(ref, distorted, chunk_seconds=1.0)
    for result in (whole, chunked):
        view = summary(result)
        assert view.vmaf and view.psnr and view.ssim and view.vmaf_model == "vmaf_v0.6.1"
        assert view.vmaf.mean == pytest.approx(theirs["vmaf"], abs=VMAF_TOLERANCE)
        for key in ("y", "u", "v", "average"):
            ours = getattr(view.psnr, key).mean
            assert ours == pytest.approx(theirs[f"psnr_{key}"], abs=PSNR_TOLERANCE_DB), key
        assert view.ssim.all.mean == pytest.approx(theirs["ssim_all"], abs=1e-4)
        assert result.comparisons[0].frames == 120
    one, four = summary(whole), summary(chunked)
    assert one.vmaf and four.vmaf and one.psnr and four.psnr
    assert abs(one.vmaf.mean - four.vmaf.mean) <= CHUNK_TOLERANCE  # type: ignore[operator]
    assert four.vmaf.worst_chunk is not None and four.vmaf.worst_chunk.index in range(4)
    assert four.vmaf.p1 is not None and four.vmaf.p1 <= four.vmaf.p5 <= four.vmaf.mean  # type: ignore[operator]
    print(  # the agreement figures, for the record (pytest -s)
        f"\nVMAF ours {one.vmaf.mean:.6f} chunked {four.vmaf.mean:.6f} libvmaf {theirs['vmaf']:.6f}"
        f"\nPSNR avg ours {one.psnr.average.mean:.6f} psnr filter {theirs['psnr_average']:.6f}"
    )

    # published: the summary and the per-frame values beside it
    out = uri_to_path(chunked.quality_uri)
    assert json.loads(out.read_text())["comparisons"][0]["frames"] == 120
    frames = json.loads(uri_to_path(chunked.comparisons[0].frames_uri).read_text())
    assert len(frames["views"]["reference"]["vmaf"]) == 120
    assert len(frames["views"]["reference"]["psnr"]["y"]) == 120 and len(frames["chunks"]) == 4
    assert not (settings.data_path / "scratch" / chunked.job_id).exists(), "scratch cleaned"

    # untagged against tagged: the same pictures, so no colour conversion may be measured
    # (swscale takes an unspecified matrix for BT.601: VMAF 60 for a near-lossless copy)
    view = summary(await run_quality(ref, clips["tagged"], metrics=["vmaf", "psnr"]))
    itself = summary(await run_quality(ref, ref, metrics=["vmaf", "psnr"]))
    assert view.vmaf and view.psnr and itself.vmaf and itself.psnr
    assert view.vmaf.mean == pytest.approx(itself.vmaf.mean, abs=1.0), (view, itself)
    assert view.psnr.average.mean > 45, view.psnr

    small = clips["small"]
    theirs = direct(ffmpeg, ref, small, scale="320:180")
    view = summary(await run_quality(ref, small, chunk_seconds=2.0))
    assert (view.width, view.height) == (320, 180)
    assert view.vmaf and view.psnr
    assert view.vmaf.mean == pytest.approx(theirs["vmaf"], abs=VMAF_TOLERANCE)
    assert view.psnr.average.mean == pytest.approx(theirs["psnr_average"], abs=PSNR_TOLERANCE_DB)


async def test_mismatches_fail_clearly_and_auto_aligns(
    run_quality: Run, clips: dict[str, Path]
) -> None:
    ref = clips["reference"]
    for name, words in (("rate25", "frame rates differ"), ("short", "durations differ")):
        with pytest.raises(WorkflowFailureError) as failure:
            await run_quality(ref, clips[name], metrics=["psnr"])
        cause = failure.value.cause
        assert isinstance(cause, ApplicationError) and cause.type == "QualityMismatch"
        assert words in cause.message and 'align "auto"' in cause.message, cause.message

    resampled = await run_quality(ref, clips["rate25"], align="auto", metrics=["vmaf"])
    assert resampled.comparisons[0].frames == 120
    assert "resampled from 25/1 to 30/1 fps" in resampled.comparisons[0].notes[0]
    chunked = await run_quality(ref, clips["rate25"], align="auto", metrics=["vmaf"],
                                chunk_seconds=1.0)  # fmt: skip
    a, b = summary(resampled).vmaf, summary(chunked).vmaf
    assert a and b and a.mean == pytest.approx(b.mean, abs=CHUNK_TOLERANCE), "the grid holds"
    short = await run_quality(ref, clips["short"], align="auto", metrics=["psnr", "ssim"])
    assert short.comparisons[0].frames == 90 and "common 3.000 s" in short.comparisons[0].notes[0]


# ---------------------------------------------------------------- API, job recomputation, CLI


def wait_quality(stack: Stack, job_id: str) -> dict[str, Any]:
    view = stack.wait(job_id, timeout=150)
    assert view["status"] == "SUCCEEDED", view
    assert view["quality"] is not None and view["progress"] == 1.0
    return view


@pytest.mark.e2e
def test_post_quality_measures_a_pair_and_refuses_bad_sources(
    stack: Stack, clips: dict[str, Path]
) -> None:
    ref, compressed = str(clips["reference"]), str(clips["compressed"])
    with stack.http() as http:
        refused = [
            http.post("/v1/quality", json={"reference": "/etc/passwd", "distorted": compressed}),
            http.post("/v1/quality", json={"reference": ref, "distorted": "http://x/y.mp4"}),
            http.post("/v1/quality", json={"reference": ref, "distorted": ref, "metrics": ["x"]}),
        ]
        same = http.post("/v1/quality", json={"reference": ref, "distorted": ref,
                                              "metrics": ["vmaf"]})  # fmt: skip
        worse = http.post("/v1/quality", json={"reference": ref, "distorted": compressed})
    for response, field in zip(refused, ("reference", "distorted", "metrics"), strict=True):
        assert response.status_code == 422, response.text
        assert any(field in d["loc"] for d in response.json()["detail"]), response.text
    assert same.status_code == worse.status_code == 202, (same.text, worse.text)
    assert worse.json()["job_id"].startswith("qual-")
    itself = wait_quality(stack, same.json()["job_id"])["quality"]
    measured = wait_quality(stack, worse.json()["job_id"])
    vmaf_itself = itself["comparisons"][0]["views"][0]["vmaf"]["mean"]
    vmaf_worse = measured["quality"]["comparisons"][0]["views"][0]["vmaf"]["mean"]
    assert vmaf_itself > 97 and vmaf_worse < vmaf_itself - 20, (vmaf_itself, vmaf_worse)
    assert measured["stage"] == "done" and measured["renditions"] == []
    with stack.http() as http:
        again = http.post("/v1/quality", json={"reference": ref, "distorted": compressed})
    assert again.json()["deduplicated"] is True


@pytest.mark.e2e
async def test_a_finished_encode_jobs_quality_is_recomputed_without_encoding(
    stack: Stack, media_dir: Path, dev_server: WorkflowEnvironment
) -> None:
    rungs = [
        {"name": "q180", "height": 180, "bitrate_kbps": 300, "preset": "veryfast"},
        {"name": "q144", "height": 144, "bitrate_kbps": 100, "preset": "ultrafast"},
    ]
    job_id = stack.submit(source=str(media_dir / "basic.mp4"), profiles=rungs,
                          thumbnails=False)["job_id"]  # fmt: skip
    assert stack.wait(job_id, timeout=150)["status"] == "SUCCEEDED"
    with stack.http() as http:
        missing = http.post("/v1/jobs/enc-nope/quality")
        started = http.post(f"/v1/jobs/{job_id}/quality", json={"metrics": ["vmaf", "psnr"]})
    assert missing.status_code == 404
    assert started.status_code == 202, started.text
    quality_id = started.json()["job_id"]
    result = wait_quality(stack, quality_id)["quality"]
    assert result["of_job"] == job_id
    by_name = {c["name"]: c for c in result["comparisons"]}
    assert set(by_name) == {"q180", "q144"}
    for name, (width, height) in (("q180", (320, 180)), ("q144", (256, 144))):
        rendition, display = by_name[name]["views"]
        assert (rendition["at"], rendition["width"], rendition["height"]) == (
            "rendition", width, height)  # fmt: skip
        assert (display["at"], display["width"], display["height"]) == ("display", 320, 180)
        assert display["psnr"] is None and display["vmaf"]["mean"] > 10
        assert rendition["psnr"]["average"]["mean"] > 20
        assert by_name[name]["frames"] == 60
    assert by_name["q180"]["views"][0]["vmaf"]["mean"] > by_name["q144"]["views"][1]["vmaf"]["mean"]
    for name, comparison in by_name.items():  # for the record (pytest -s)
        for view in comparison["views"]:
            psnr = view["psnr"] and view["psnr"]["average"]["mean"]
            print(f"\n{name} at {view['at']}: VMAF {view['vmaf']['mean']:.3f} PSNR {psnr}")
    history = await dev_server.client.get_workflow_handle(quality_id).fetch_history()
    ran = {
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    }
    assert not ran & {"encode_video", "encode_renditions", "encode_chunk", "split_source"}, ran
    assert {"quality_prepare", "quality_chunk", "quality_assemble"} <= ran


@pytest.mark.e2e
def test_cosmos_quality_prints_the_measurement(stack: Stack, clips: dict[str, Path]) -> None:
    env = {**os.environ, "COSMOS_API_URL": stack.api_url}
    run = subprocess.run(
        [str(BIN / "cosmos"), "quality", str(clips["reference"]), str(clips["small"]),
         "--metrics", "vmaf,psnr"],
        capture_output=True, text=True, timeout=180, env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    print(run.stdout)
    assert "320x180" in run.stdout and "VMAF" in run.stdout and "quality.json" in run.stdout
    refused = subprocess.run(
        [str(BIN / "cosmos"), "quality", str(clips["reference"]), str(clips["rate25"]),
         "--metrics", "psnr"],
        capture_output=True, text=True, timeout=180, env=env,
    )  # fmt: skip
    assert refused.returncode == 1
    assert "QualityMismatch" in refused.stderr and "frame rates differ" in refused.stderr
