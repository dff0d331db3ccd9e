"""``quality`` on ``POST /v1/encode``: every rendition measured against the source, in chunks
over the pools, published with the package; the quality pass is the decode check."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from app.cli.samples import make_video
from app.storage.local import uri_to_path
from tests.media_checks import check_package
from tests.stack import Stack
from tests.test_quality import direct

pytestmark = pytest.mark.e2e
HISTORIES = Path(__file__).parent / "histories"


async def test_a_job_reports_the_quality_of_every_rendition(
    stack: Stack, media_dir: Path, ffmpeg: str
) -> None:
    rungs = [
        {"name": "jq180", "height": 180, "bitrate_kbps": 200, "preset": "veryfast"},
        {"name": "jq144", "height": 144, "bitrate_kbps": 80, "preset": "veryfast"},
    ]
    job_id = stack.submit(
        source=str(media_dir / "basic.mp4"), profiles=rungs, thumbnails=False,
        quality={"metrics": ["vmaf", "psnr"]},
    )["job_id"]  # fmt: skip
    view = stack.wait(job_id, timeout=180)
    assert view["status"] == "SUCCEEDED", view
    out = uri_to_path(view["manifests"]["manifest"]).parent
    check_package(out, ffmpeg, 2.0, "30/1")
    manifest = json.loads((out / "manifest.json").read_text())
    quality = view["quality"]
    assert manifest["quality"]["comparisons"] == quality["comparisons"]
    by_name = {c["name"]: c for c in quality["comparisons"]}
    assert set(by_name) == {"jq180", "jq144"}
    for name, comparison in by_name.items():
        assert comparison["frames"] == 60
        rendition, display = comparison["views"]
        assert (rendition["at"], display["at"]) == ("rendition", "display")
        assert (display["width"], display["height"]) == (320, 180), "the top rung's size"
        assert rendition["ssim"] is None, "only what was asked"
        frames = uri_to_path(comparison["frames_uri"])
        assert frames.parent.parent == out, "published beside the manifest"
        per_frame = json.loads(frames.read_text())
        assert per_frame, f"{name}: per-frame values"
    assert (out / "quality.json").exists()
    assert (
        by_name["jq180"]["views"][0]["vmaf"]["mean"] > by_name["jq144"]["views"][1]["vmaf"]["mean"]
    )

    # The same numbers as libvmaf and psnr run directly on the published rendition.
    top = next(r for r in manifest["renditions"] if r["name"] == "jq180")
    measured = direct(ffmpeg, media_dir / "basic.mp4", out / top["hls_playlist"])
    ours = by_name["jq180"]["views"][0]
    assert abs(ours["vmaf"]["mean"] - measured["vmaf"]) <= 0.5, (ours["vmaf"], measured)
    assert abs(ours["psnr"]["average"]["mean"] - measured["psnr_average"]) <= 0.05


async def test_a_chunked_jobs_quality_pass_is_its_decode_check(
    stack: Stack, media_dir: Path, ffmpeg: str, dev_server: WorkflowEnvironment
) -> None:
    """Chunks encoded with quality on skip their own decode: the quality pass decodes every
    frame (with -xerror) instead, so no frame is decoded twice for checking."""
    source = make_video(media_dir / "quality-chunked.mp4", width=320, height=180, seconds=8,
                        gop=30)  # fmt: skip
    job_id = stack.submit(
        source=str(source), profiles=[{"name": "jqc", "height": 180, "bitrate_kbps": 200}],
        thumbnails=False, chunk_seconds=2, min_chunk_seconds=1, segment_seconds=2,
        quality={"metrics": ["vmaf"], "chunk_seconds": 3},
    )["job_id"]  # fmt: skip
    view = stack.wait(job_id, timeout=240)
    assert view["status"] == "SUCCEEDED", view
    (comparison,) = view["quality"]["comparisons"]
    assert comparison["frames"] == 240 and comparison["views"][0]["vmaf"]["mean"] > 30
    check_package(uri_to_path(view["manifests"]["manifest"]).parent, ffmpeg, 8.0, "30/1")

    client = dev_server.client
    ranges = [w async for w in client.list_workflows(
        f'WorkflowType = "ChunkRangeWorkflow" AND WorkflowId STARTS_WITH "{job_id}-"')]  # fmt: skip
    assert ranges
    history = await client.get_workflow_handle(ranges[0].id).fetch_history()
    inputs = [
        json.loads(e.activity_task_scheduled_event_attributes.input.payloads[0].data)
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == "encode_chunk"
    ]
    assert len(inputs) == 4 and all(i["decode_check"] is False for i in inputs)
    measured = [w async for w in client.list_workflows(
        f'WorkflowType = "QualityWorkflow" AND WorkflowId = "{job_id}-quality"')]  # fmt: skip
    assert len(measured) == 1, "measured by a quality child of the job"
    if os.environ.get("COSMOS_RECORD_HISTORY"):  # replayed by tests/test_replay.py
        for name, workflow_id in (("encode_quality", job_id), ("quality", f"{job_id}-quality")):
            recorded = await client.get_workflow_handle(workflow_id).fetch_history()
            (HISTORIES / f"{name}.json").write_text(json.dumps(recorded.to_json_dict(), indent=1))
