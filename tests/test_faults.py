"""Faults survived, for real: a killed worker, a restarted Temporal server, a restarted API,
a full disk, a hung ffmpeg, a burst of identical submissions."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from app.cli.samples import make_video
from app.observability.search import dev_server_args
from tests.conftest import BIN
from tests.media_checks import check_package
from tests.stack import Stack, free_ports

pytestmark = pytest.mark.e2e


class DevServer:
    """``temporal server start-dev`` as a process the test can stop and start again."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.port, self.http_port, self.metrics_port = free_ports(3)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [str(BIN / "temporal"), "server", "start-dev", "--headless", "--ip", "127.0.0.1",
             "--port", str(self.port), "--http-port", str(self.http_port),
             "--metrics-port", str(self.metrics_port), "--db-filename", str(self.db),
             "--log-level", "error", *dev_server_args()],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            result = subprocess.run(
                [str(BIN / "temporal"), "operator", "cluster", "health", "--address", self.address],
                capture_output=True,
            )
            if result.returncode == 0:
                return
            time.sleep(0.3)
        raise AssertionError("dev server did not start")

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture
def own(tmp_path: Path, media_dir: Path) -> Iterator[tuple[DevServer, Stack]]:
    server = DevServer(tmp_path / "temporal.db")
    server.start()
    stack = Stack(
        data_dir=tmp_path / "data", temporal_address=server.address, source_roots=[media_dir]
    )
    try:
        yield server, stack
    finally:
        stack.stop_all()
        if server.proc and server.proc.poll() is None:
            server.stop()


def ffmpeg_of(job_id: str) -> list[str]:
    out = subprocess.run(["pgrep", "-af", job_id], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "ffmpeg" in line]


def wait_encoding(stack: Stack, job_id: str, name: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rendition = {r["name"]: r for r in stack.job(job_id)["renditions"]}.get(name, {})
        if rendition.get("status") == "encoding" and rendition.get("progress", 0) > 0:
            return  # its ffmpeg is running now (not done: a kill must land in the encode)
        time.sleep(0.2)
    raise AssertionError(f"{name} never started encoding: {stack.job(job_id)}")


SLOW = [{"name": "slow", "height": 360, "bitrate_kbps": 800, "preset": "slower"}]
"""With 12 s sources encoded in one piece (chunk_seconds 0): a few seconds of encoding that a
test can interrupt (wait_encoding sees it running, not done)."""
TINY = [{"name": "tiny", "height": 144, "bitrate_kbps": 100, "preset": "ultrafast"}]


def test_worker_killed_mid_encode(
    own: tuple[DevServer, Stack], media_dir: Path, ffmpeg: str
) -> None:
    _, stack = own
    source = make_video(media_dir / "faults-kill.mp4", width=640, height=360, seconds=12)
    stack.start_api()
    stack.start_worker()
    job_id = stack.submit(source=str(source), profiles=SLOW, chunk_seconds=0)["job_id"]
    wait_encoding(stack, job_id, "slow")
    stack.procs["worker"].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    stack.procs.pop("worker").wait()
    time.sleep(1)
    assert ffmpeg_of(job_id) == [], "ffmpeg dies with its worker (PR_SET_PDEATHSIG)"
    assert stack.job(job_id)["status"] == "RUNNING", "no worker to ask is not 'not started'"
    stack.start_worker()
    view = stack.wait(job_id, timeout=120)
    assert view["status"] == "SUCCEEDED", view
    lost = time.monotonic() - killed_at
    # heartbeat timeout (10 s here) + the interrupted encode again + start-up: well under 60 s
    assert lost < 60
    check_package(stack.data_dir / "outputs" / job_id, ffmpeg, 12.0, "30/1")


def test_temporal_restarted_mid_job(own: tuple[DevServer, Stack], media_dir: Path) -> None:
    server, stack = own
    source = make_video(media_dir / "faults-restart.mp4", width=640, height=360, seconds=12)
    stack.start_api()
    stack.start_worker()
    job_id = stack.submit(source=str(source), profiles=SLOW, chunk_seconds=0)["job_id"]
    wait_encoding(stack, job_id, "slow")
    server.stop()
    with stack.http() as http:
        away = http.get(f"/v1/jobs/{job_id}")
        assert away.status_code == 503
        assert "Temporal is unreachable" in away.json()["detail"]
        assert http.get("/readyz").status_code == 503
    time.sleep(2)
    server.start()
    view = stack.wait(job_id, timeout=120)
    assert view["status"] == "SUCCEEDED", view
    with stack.http() as http:
        assert http.get("/readyz").status_code == 200


def test_api_restarted_while_jobs_run(own: tuple[DevServer, Stack], media_dir: Path) -> None:
    _, stack = own
    source = make_video(media_dir / "faults-api.mp4", width=640, height=360, seconds=12)
    stack.start_api()
    stack.start_worker()
    job_id = stack.submit(source=str(source), profiles=SLOW, chunk_seconds=0)["job_id"]
    wait_encoding(stack, job_id, "slow")
    stack.stop("api")
    time.sleep(1)
    stack.start_api()
    assert stack.job(job_id)["status"] in ("RUNNING", "SUCCEEDED")
    assert stack.wait(job_id, timeout=120)["status"] == "SUCCEEDED"


def test_hung_ffmpeg_fails_the_job_once_attempts_are_exhausted(
    own: tuple[DevServer, Stack], media_dir: Path, tmp_path: Path
) -> None:
    _, stack = own
    hung = tmp_path / "hung-ffmpeg"
    hung.write_text("#!/bin/sh\nsleep 1000\n")
    hung.chmod(0o755)
    stack.extra_env |= {"COSMOS_FFMPEG_PATH": str(hung), "COSMOS_HEARTBEAT_TIMEOUT_S": "2"}
    stack.start_api()
    stack.start_worker()
    job_id = stack.submit(source=str(media_dir / "basic.mp4"), profiles=TINY)["job_id"]
    view = stack.wait(job_id, timeout=60)
    assert view["status"] == "FAILED"
    assert view["error"]["type"] == "FfmpegError"
    assert "made no progress for 2s" in view["error"]["message"]
    out = subprocess.run(["pgrep", "-f", str(hung)], capture_output=True)
    assert out.returncode == 1, "every hung process was killed"
    assert not (stack.data_dir / "outputs" / job_id).exists()


def test_full_disk_fails_with_the_reason_and_leaves_nothing(
    own: tuple[DevServer, Stack], media_dir: Path, tmp_path: Path
) -> None:
    """Outputs on a 64 KiB tmpfs: publishing cannot fit, is retried, then the job fails."""
    _, stack = own
    outputs = tmp_path / "small-disk"
    outputs.mkdir()
    mounted = (
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(outputs)]).returncode
        == 0
    )
    if not mounted:  # pragma: no cover - without mount rights: a real ENOTDIR instead of ENOSPC
        outputs = tmp_path / "not-a-dir" / "outputs"
        outputs.parent.write_text("a file where a folder should be")
    stack.extra_env |= {"COSMOS_OUTPUT_URI": outputs.as_uri()}
    try:
        stack.start_api()
        stack.start_worker()
        profiles = [{"name": "big", "height": 180, "bitrate_kbps": 8000, "preset": "ultrafast"}]
        big = make_video(media_dir / "faults-disk.mp4", width=320, height=180, seconds=3)
        job_id = stack.submit(source=str(big), profiles=profiles)["job_id"]
        view = stack.wait(job_id, timeout=90)
        assert view["status"] == "FAILED", view
        assert view["error"]["type"] == "StorageError"
        reason = "No space left on device" if mounted else "Not a directory"
        assert reason in view["error"]["message"]
        if mounted:
            assert list(outputs.iterdir()) == [], "compensation leaves nothing behind"
        assert not (stack.data_dir / "scratch" / job_id).exists()
    finally:
        stack.stop_all()
        if mounted:
            subprocess.run(["umount", str(outputs)], check=False)


def test_fifty_identical_submissions_make_one_job(stack: Stack, media_dir: Path) -> None:
    body = {"source": str(media_dir / "portrait.mp4"), "profiles": TINY}

    def submit(_: int) -> dict[str, object]:
        with httpx.Client(base_url=stack.api_url, timeout=60) as http:
            response = http.post("/v1/encode", json=body)
            assert response.status_code == 202, response.text
            return dict(response.json())

    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(submit, range(50)))
    job_ids = {a["job_id"] for a in answers}
    assert len(job_ids) == 1
    assert sum(not a["deduplicated"] for a in answers) <= 1
    (job_id,) = job_ids
    assert stack.wait(job_id, timeout=60)["status"] == "SUCCEEDED"
    outputs = list((stack.data_dir / "outputs").glob(f"{job_id}*"))
    assert outputs == [stack.data_dir / "outputs" / job_id]


def test_python_is_the_one_running_the_suite() -> None:
    assert Path(sys.executable).parent == BIN
