"""The same end-to-end job on both storage backends: the local folder and S3 (a real S3 server,
SeaweedFS on loopback, the ``s3_server`` fixture, over HTTP through boto3)."""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from app.cli.samples import make_video
from app.cli.seaweed import Seaweed
from app.core.settings import Settings
from app.storage.object_store import S3Store
from tests.conftest import BIN
from tests.media_checks import check_package
from tests.stack import Stack

pytestmark = pytest.mark.e2e
BUCKET = "media"
PROFILES = [{"name": "small", "height": 144, "bitrate_kbps": 200, "preset": "veryfast"}]


@dataclass
class Backend:
    name: str
    stack: Stack
    s3: object | None = None  # a boto3 client when the backend is S3

    def source(self, local: Path) -> str:
        if self.s3 is None:
            return str(local)
        key = f"sources/{local.name}"
        self.s3.upload_file(str(local), BUCKET, key)  # type: ignore[attr-defined]
        return f"s3://{BUCKET}/{key}"

    def outputs(self, job_id: str, dest: Path) -> Path:
        """The job's published folder as local files, to check with ffmpeg."""
        if self.s3 is None:
            return self.stack.data_dir / "outputs" / job_id
        for key in self.keys(f"outputs/{job_id}/"):
            target = dest / key.rsplit("/", 1)[-1]
            self.s3.download_file(BUCKET, key, str(target))  # type: ignore[attr-defined]
        return dest

    def keys(self, prefix: str) -> list[str]:
        assert self.s3 is not None
        found = self.s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)  # type: ignore[attr-defined]
        return [obj["Key"] for obj in found.get("Contents", [])]

    def left(self, area: str, job_id: str) -> list[str]:
        """What remains of a job under ``outputs`` or ``scratch``."""
        if self.s3 is None:
            folder = self.stack.data_dir / area / job_id
            return [str(p) for p in folder.rglob("*")] if folder.exists() else []
        return self.keys(f"{area}/{job_id}/")


@pytest.fixture(scope="module")
async def s3_dev_server() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter, dev_server_existing_path=str(BIN / "temporal")
    )
    async with env:
        yield env


@pytest.fixture(scope="module")
def s3_stack(
    s3_dev_server: WorkflowEnvironment,
    s3_server: Seaweed,
    media_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Stack, object]]:
    client = s3_server.client()
    client.create_bucket(Bucket=BUCKET)
    stack = Stack(
        data_dir=tmp_path_factory.mktemp("s3-data"),
        temporal_address=s3_dev_server.client.service_client.config.target_host,
        source_roots=[media_dir],
        extra_env={
            **s3_server.client_env(),
            "COSMOS_OUTPUT_URI": f"s3://{BUCKET}/outputs",
            "COSMOS_SCRATCH_URI": f"s3://{BUCKET}/scratch",
            "COSMOS_SOURCE_BUCKETS": BUCKET,
        },
    )
    stack.start_worker()
    stack.start_api()
    yield stack, client
    stack.stop_all()


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "local":
        return Backend("local", request.getfixturevalue("stack"))
    stack, client = request.getfixturevalue("s3_stack")
    return Backend("s3", stack, client)


def test_job_end_to_end(backend: Backend, media_dir: Path, ffmpeg: str, tmp_path: Path) -> None:
    source = backend.source(media_dir / "surround.mp4")
    job_id = backend.stack.submit(source=source, profiles=PROFILES, segment_seconds=1)["job_id"]
    view = backend.stack.wait(job_id, timeout=120)
    assert view["status"] == "SUCCEEDED", view
    scheme = "s3://" if backend.name == "s3" else "file://"
    assert all(uri.startswith(scheme) for uri in view["manifests"].values())
    manifest = check_package(backend.outputs(job_id, tmp_path), ffmpeg, 2.0, "30/1")
    assert manifest["source"]["uri"] == (source if backend.name == "s3" else f"file://{source}")
    assert backend.left("scratch", job_id) == [], "scratch space is gone"
    assert any(p.endswith("manifest.json") for p in backend.left("outputs", job_id))


def test_a_jobs_quality_is_published_with_its_package(backend: Backend, media_dir: Path) -> None:
    """The quality pass writes into the package's staging (local or S3) and is published with
    it: ``quality.json`` and ``frames/`` in the outputs, nothing left in scratch."""
    source = backend.source(media_dir / "basic.mp4")
    job_id = backend.stack.submit(
        source=source, profiles=PROFILES, quality={"metrics": ["psnr"]}, thumbnails=False
    )["job_id"]
    view = backend.stack.wait(job_id, timeout=120)
    assert view["status"] == "SUCCEEDED", view
    (comparison,) = view["quality"]["comparisons"]
    assert comparison["views"][0]["psnr"]["average"]["mean"] > 20
    scheme = "s3://" if backend.name == "s3" else "file://"
    assert comparison["frames_uri"].startswith(scheme)
    assert f"/outputs/{job_id}/frames/small.json" in comparison["frames_uri"]
    published = backend.left("outputs", job_id)
    assert any(p.endswith(f"{job_id}/frames/small.json") for p in published), published
    assert any(p.endswith(f"{job_id}/quality.json") for p in published), published
    assert backend.left("scratch", job_id) == [], "scratch space is gone"


def test_chunked_job_end_to_end(
    backend: Backend, media_dir: Path, ffmpeg: str, tmp_path: Path
) -> None:
    """Split, chunk encodes and assembly move their files through the same store."""
    local = media_dir / "chunky.mp4"
    if not local.exists():
        make_video(local, width=320, height=180, seconds=6, gop=30)
    source = backend.source(local)
    job_id = backend.stack.submit(
        source=source, profiles=PROFILES, segment_seconds=1, chunk_seconds=2, min_chunk_seconds=1
    )["job_id"]
    view = backend.stack.wait(job_id, timeout=120)
    assert view["status"] == "SUCCEEDED", view
    assert [(r["chunks_done"], r["chunks_total"]) for r in view["renditions"]] == [(3, 3)]
    check_package(backend.outputs(job_id, tmp_path), ffmpeg, 6.0, "30/1")
    assert backend.left("scratch", job_id) == [], "chunks and records are gone with the scratch"
    assert not (backend.stack.data_dir / "work" / job_id).exists()


def test_failed_job_leaves_nothing(backend: Backend, media_dir: Path) -> None:
    job_id = backend.stack.submit(source=backend.source(media_dir / "text.mp4"))["job_id"]
    view = backend.stack.wait(job_id, timeout=60)
    assert view["status"] == "FAILED" and view["error"]["type"] == "InvalidSource"
    assert backend.left("outputs", job_id) == []
    assert backend.left("scratch", job_id) == []


def test_presigned_manifests(s3_stack: tuple[Stack, object], media_dir: Path) -> None:
    stack, _ = s3_stack
    backend = Backend("s3", stack, s3_stack[1])
    job_id = stack.submit(source=backend.source(media_dir / "basic.mp4"), profiles=PROFILES)[
        "job_id"
    ]
    assert stack.wait(job_id, timeout=120)["status"] == "SUCCEEDED"
    with stack.http() as http:
        view = http.get(f"/v1/jobs/{job_id}", params={"presign": "true"}).json()
    master = view["manifests"]["hls"]
    assert master.startswith("http://127.0.0.1:") and "Signature" in master
    response = httpx.get(master, timeout=10)
    assert response.status_code == 200 and response.text.startswith("#EXTM3U")


def test_s3_sources_are_refused_outside_allowed_buckets(s3_stack: tuple[Stack, object]) -> None:
    stack, _ = s3_stack
    with stack.http() as http:
        other = http.post("/v1/encode", json={"source": "s3://elsewhere/a.mp4"})
        missing = http.post("/v1/encode", json={"source": f"s3://{BUCKET}/sources/none.mp4"})
    assert other.status_code == 422 and "not an allowed source" in other.text
    assert missing.status_code == 422 and "does not exist" in missing.text


@pytest.mark.browser
def test_job_page_plays_s3_outputs_through_presigned_urls(
    s3_stack: tuple[Stack, object], media_dir: Path
) -> None:
    """The job page's files route on S3: manifests and playlists read through the API (their
    relative URIs resolve there), every other file a 307 to a presigned URL; and a real player
    plays the job's HLS and DASH that way to the end."""
    stack, client = s3_stack
    backend = Backend("s3", stack, client)
    job_id = stack.submit(source=backend.source(media_dir / "basic.mp4"), profiles=PROFILES)[
        "job_id"
    ]
    view = stack.wait(job_id, timeout=120)
    assert view["status"] == "SUCCEEDED", view
    endpoint = stack.extra_env["COSMOS_S3_ENDPOINT_URL"]
    base = f"/jobs/{job_id}/files"
    with stack.http() as http:
        master = http.get(f"{base}/master.m3u8")
        assert master.status_code == 200 and master.text.startswith("#EXTM3U")
        assert master.headers["content-type"] == "application/vnd.apple.mpegurl"
        mpd = http.get(f"{base}/manifest.mpd")
        assert mpd.status_code == 200 and "<MPD" in mpd.text
        segment = http.get(f"{base}/init-0.m4s")
        assert segment.status_code == 307, segment.text
        location = segment.headers["location"]
        assert location.startswith(f"{endpoint}/{BUCKET}/outputs/{job_id}/init-0.m4s?")
        assert "Signature" in location
        body = client.get_object(Bucket=BUCKET, Key=f"outputs/{job_id}/init-0.m4s")["Body"]  # type: ignore[attr-defined]
        assert httpx.get(location, timeout=10).content == body.read()
        assert http.get(f"{base}/none.m3u8").status_code == 404
        assert http.get(f"{base}/..%2F..%2Fscratch%2Fx.m3u8").status_code == 400

    from tests.browser import Watch, chromium, open_job, play_to_end

    with chromium() as browser:
        page = browser.new_page()
        watch = Watch(page)
        open_job(page, f"{stack.api_url}/jobs/{job_id}")
        for format in ("hls", "dash"):
            problem, report = play_to_end(page, format, view["source"]["duration_s"])
            assert problem is None, (format, problem, report)
        presigned = [url for url, _ in watch.requests if url.startswith(endpoint)]
        assert presigned and all("Signature" in url for url in presigned)
        assert watch.page_errors == [] and watch.external == []


def test_an_upload_given_up_stops_and_leaves_no_object(
    s3_server: Seaweed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancelled activity sets the event: the transfer stops at its next chunk instead of
    landing later (a cut-off worker's upload resuming after the job's cleanup)."""
    for name, value in s3_server.client_env().items():
        monkeypatch.setenv(name, value)
    client = s3_server.client()
    if BUCKET not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
        client.create_bucket(Bucket=BUCKET)
    store = S3Store(Settings(s3_endpoint_url=s3_server.endpoint))
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(24 * 1024 * 1024))  # multipart: several parts
    cancelled = threading.Event()
    cancelled.set()
    with pytest.raises(Exception, match="cancelled"):
        store.upload(big, f"s3://{BUCKET}/strays/big.bin", cancelled)
    assert not store.exists(f"s3://{BUCKET}/strays/big.bin")
    store.upload(big, f"s3://{BUCKET}/strays/big.bin", threading.Event())
    assert store.size(f"s3://{BUCKET}/strays/big.bin") == big.stat().st_size
