"""``cosmos dev`` as a user runs it: the stack comes up, the sample succeeds, Ctrl-C stops all."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest

from app.cli.dev import BUCKET, SOURCES_BUCKET, port_free
from app.cli.samples import make_video
from app.cli.seaweed import Seaweed
from tests.conftest import BIN
from tests.stack import free_ports

pytestmark = pytest.mark.e2e


def run_dev(
    data_dir: Path,
    ports: dict[str, int],
    until: str,
    timeout: float = 240,
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> tuple[subprocess.Popen[str], list[str]]:
    cmd = [str(BIN / "cosmos"), "dev", "--data-dir", str(data_dir), *args]
    for flag, port in ports.items():
        cmd += [f"--{flag}", str(port)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )  # fmt: skip
    try:
        return proc, read_until(proc, until, timeout)
    except AssertionError:
        proc.kill()
        proc.wait()
        raise


def read_until(proc: subprocess.Popen[str], until: str, timeout: float) -> list[str]:
    """The dev process's lines up to the first that holds ``until``."""
    assert proc.stdout is not None
    lines: list[str] = []
    ready: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip())
            if until in line:
                ready.append(line)
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    if ready:
        return lines
    output = "\n".join(lines)
    raise AssertionError(f"cosmos dev did not get to {until!r} in {timeout:.0f}s:\n{output}")


def children_of(data_dir: Path) -> list[str]:
    out = subprocess.run(["pgrep", "-af", str(data_dir)], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "pgrep" not in line]


def stop(proc: subprocess.Popen[str]) -> list[str]:
    """Ctrl-C; the lines it printed from then on."""
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=30)
    return rest.splitlines()


def test_dev_runs_the_sample_and_stops_cleanly(tmp_path: Path) -> None:
    data_dir = tmp_path / "cosmos"
    ports = dict(zip(("api-port", "temporal-port", "ui-port"), free_ports(3), strict=True))
    proc, lines = run_dev(data_dir, ports, until="serving")
    text = "\n".join(lines)
    assert "SUCCEEDED" in text, text
    assert "HLS:" in text and "master.m3u8" in text
    assert f"http://localhost:{ports['ui-port']}/namespaces/default/workflows/enc-" in text
    api = f"http://127.0.0.1:{ports['api-port']}"
    assert f"Jobs     {api}/jobs" in text and f"Job page: {api}/jobs/enc-" in text
    outputs = list((data_dir / "outputs").glob("enc-*/master.m3u8"))
    assert len(outputs) == 1
    assert (data_dir / "temporal.db").exists()

    stop(proc)
    assert proc.returncode == 0
    time.sleep(0.5)
    assert children_of(data_dir) == [], "no child may outlive cosmos dev"
    assert all(port_free(port) for port in ports.values()), "every port is released"

    # A second run reuses the persisted server state: the sample job is found, not redone.
    proc, lines = run_dev(data_dir, ports, until="serving", timeout=120)
    text = "\n".join(lines)
    assert "(already known)" in text and "SUCCEEDED" in text, text
    stop(proc)
    assert children_of(data_dir) == []


def test_dev_refuses_a_busy_port(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        temporal_port, ui_port = free_ports(2)
        result = subprocess.run(
            [str(BIN / "cosmos"), "dev", "--data-dir", str(tmp_path), "--api-port", str(port),
             "--temporal-port", str(temporal_port), "--ui-port", str(ui_port), "--no-sample"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode == 1
    assert f"port {port} is in use" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_gpu_worker_without_a_gpu_says_so_in_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app.cli.main", "worker", "gpu"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode == 0:  # pragma: no cover - only on a machine with an NVIDIA GPU
        pytest.fail("a GPU worker started; this test expects a machine without NVIDIA GPUs")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "GPU" in lines[0], result.stderr


def test_gpu_check_script_says_when_there_is_no_gpu() -> None:
    result = subprocess.run(
        ["bash", "scripts/gpu_check.sh"], capture_output=True, text=True, timeout=60,
        cwd=Path(__file__).parent.parent,
        env={**os.environ, "FFMPEG": "ffmpeg-unused", "PATH": f"{BIN}:{os.environ['PATH']}"},
    )  # fmt: skip
    if "PASS" in result.stdout:  # pragma: no cover - only on a GPU machine
        return
    assert result.returncode == 1
    assert "no NVIDIA driver or GPU" in result.stdout


# ---------------------------------------------------------------- supervision, S3


def children(pid: int) -> dict[int, str]:
    """The live child processes of ``pid``: pid -> command line."""
    out = subprocess.run(["pgrep", "-a", "-P", str(pid)], capture_output=True, text=True).stdout
    found = (line.split(" ", 1) for line in out.splitlines())
    return {int(child): cmd for child, cmd in found}


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().partition("=")[::2] for item in raw if b"=" in item)


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def shutdown(proc: subprocess.Popen[str]) -> list[str]:
    """Ctrl-C (what a test's ``finally`` does); a kill where that did not stop it."""
    if proc.poll() is not None:
        rest, _ = proc.communicate()
        return rest.splitlines()
    try:
        return stop(proc)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def wait_job(api: str, job_id: str, timeout: float) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view: dict[str, object] = httpx.get(f"{api}/v1/jobs/{job_id}", timeout=30).json()
        if view["status"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
            return view
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} not done in {timeout:.0f}s")


def test_dev_restarts_a_killed_worker_and_its_job_finishes(tmp_path: Path) -> None:
    """``--workers 2``: SIGKILL the worker that is encoding, as the OOM killer would. The
    supervisor says so and starts it again; the job succeeds with no action from the user
    (the other worker, or the restarted one, takes the encode over once its heartbeat stops);
    Ctrl-C then stops everything and leaves no port taken, no process behind."""
    data_dir = tmp_path / "cosmos"
    source = data_dir / "sources" / "twelve.mp4"
    make_video(source, seconds=12, width=960, height=540)
    ports = dict(zip(("api-port", "temporal-port", "ui-port"), free_ports(3), strict=True))
    api = f"http://127.0.0.1:{ports['api-port']}"
    proc, lines = run_dev(
        data_dir, ports, until="serving", timeout=120, args=["--workers", "2", "--no-sample"],
        env={"COSMOS_HEARTBEAT_TIMEOUT_S": "5"},  # the server notices a dead worker in 7.25 s
    )  # fmt: skip
    try:
        workers = next(line for line in lines if line.startswith("workers  "))
        started = {n: int(p) for n, p in re.findall(r"(worker-cpu-\d) \(pid (\d+)\)", workers)}
        assert sorted(started) == ["worker-cpu-1", "worker-cpu-2"], lines
        cores = str(max(1, (os.cpu_count() or 1) // 2))
        for name, pid in started.items():
            env = environ(pid)
            assert env["COSMOS_WORKER_NAME"] == name and env["COSMOS_WORKER_CORES"] == cores
        every_child = set(children(proc.pid))
        response = httpx.post(f"{api}/v1/encode", timeout=30, json={
            "source": str(source), "chunk_seconds": 0, "thumbnails": False,
            "profiles": [{"name": "kill", "height": 540, "bitrate_kbps": 1500, "preset": "medium"}],
        })  # fmt: skip
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        victim = None
        deadline = time.monotonic() + 60
        while victim is None and time.monotonic() < deadline:
            for name, pid in started.items():
                if any("libx264" in cmd for cmd in children(pid).values()):
                    victim = name
                    break
            else:
                time.sleep(0.05)
        assert victim is not None, "no worker ever ran the encode"
        os.kill(started[victim], signal.SIGKILL)
        view = wait_job(api, job_id, timeout=120)
        assert view["status"] == "SUCCEEDED", view
        log = (data_dir / "logs" / f"{victim}.log").read_text()
        pids = [int(p) for p in re.findall(rf"--- cosmos dev: {victim} started \(pid (\d+)\)", log)]
        assert pids[0] == started[victim] and len(pids) == 2, log[-2000:]
        assert alive(pids[1]) and log.count("worker ready") == 2, "it came back and polls"
        every_child |= set(children(proc.pid))
    finally:
        rest = shutdown(proc)
    assert proc.returncode == 0
    restarts = [line for line in lines + rest if " exited with " in line]
    assert restarts == [f"{victim} exited with status -9 (SIGKILL); restarting in 1s"], rest
    time.sleep(0.3)
    assert [pid for pid in every_child if alive(pid)] == [], "no child may outlive cosmos dev"
    assert all(port_free(port) for port in ports.values()), "every port is released"


def test_dev_gives_up_on_a_child_that_keeps_dying_and_keeps_serving(tmp_path: Path) -> None:
    """A CPU worker that cannot start (its code is broken: here a ``workers.cpu.main`` that
    exits at once, found first because ``cosmos dev`` runs from its folder and ``python -m``
    looks there first) is restarted after 1, 2, 4 and 8 s, then given up on after its fifth
    failure within a minute, with one line; the API and Temporal keep serving."""
    broken = tmp_path / "broken"
    (broken / "workers" / "cpu").mkdir(parents=True)
    (broken / "workers" / "__init__.py").write_text("")
    (broken / "workers" / "cpu" / "__init__.py").write_text("")
    (broken / "workers" / "cpu" / "main.py").write_text(
        'import sys\nsys.exit("workers.cpu.main: this install is broken")\n'
    )
    data_dir = tmp_path / "cosmos"
    ports = dict(zip(("api-port", "temporal-port", "ui-port"), free_ports(3), strict=True))
    api = f"http://127.0.0.1:{ports['api-port']}"
    proc, lines = run_dev(
        data_dir, ports, until="giving up", timeout=90, args=["--no-sample"], cwd=broken
    )
    try:
        exits = [line for line in lines if line.startswith("worker-cpu-1 exited")]
        assert exits[:4] == [
            f"worker-cpu-1 exited with status 1; restarting in {n}s" for n in (1, 2, 4, 8)
        ], lines
        assert len(exits) == 5 and exits[4].startswith(
            "worker-cpu-1 exited with status 1; giving up on it after 5 failures within 60s"
        ), lines
        log = (data_dir / "logs" / "worker-cpu-1.log").read_text()
        assert log.count("this install is broken") == 5
        assert httpx.get(f"{api}/readyz", timeout=10).json() == {"status": "ready"}
        assert httpx.get(f"{api}/v1/jobs", timeout=30).status_code == 200
        time.sleep(1.5)
        assert not any("workers.cpu.main" in cmd for cmd in children(proc.pid).values())
    finally:
        rest = shutdown(proc)
    assert proc.returncode == 0
    assert not [line for line in rest if " exited with " in line], rest
    assert all(port_free(port) for port in ports.values()), "every port is released"


def test_dev_storage_s3_runs_the_sample_through_seaweedfs(tmp_path: Path) -> None:
    """``--storage s3``: SeaweedFS under the data dir, the buckets made, the sample uploaded
    and encoded from S3 to S3 (scratch too), its manifests presigned; Ctrl-C stops weed as
    well and frees its eight ports."""
    data_dir = tmp_path / "cosmos"
    flags = ("api-port", "temporal-port", "ui-port", "s3-port")
    ports = dict(zip(flags, free_ports(4), strict=True))
    api = f"http://127.0.0.1:{ports['api-port']}"
    endpoint = f"http://127.0.0.1:{ports['s3-port']}"
    proc, lines = run_dev(data_dir, ports, until="serving", timeout=180, args=["--storage", "s3"])
    try:
        text = "\n".join(lines)
        assert f"S3       {endpoint}  (SeaweedFS; buckets {SOURCES_BUCKET}, {BUCKET};" in text
        assert "SUCCEEDED" in text, text
        found = re.search(r"sample job (enc-[0-9a-f]+)", text)
        assert found, text
        job_id = found[1]
        assert f"HLS:      s3://{BUCKET}/outputs/{job_id}/master.m3u8" in text
        weed = [cmd for cmd in children(proc.pid).values() if "weed" in cmd.split(" ", 1)[0]]
        assert len(weed) == 1 and f"-dir={data_dir / 's3' / 'data'}" in weed[0]
        weed_ports = [int(p) for p in re.findall(r"\.port(?:\.grpc)?=(\d+)", weed[0])]
        assert len(weed_ports) == 8 and ports["s3-port"] in weed_ports

        s3 = Seaweed(data_dir / "s3", ports["s3-port"], [0] * 7).client()  # its key, its secret
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"outputs/{job_id}/")[
            "Contents"]]  # fmt: skip
        assert set(keys) >= {
            f"outputs/{job_id}/{n}" for n in ("master.m3u8", "manifest.mpd", "manifest.json")
        }
        scratch = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"scratch/{job_id}/")
        assert scratch.get("KeyCount", 0) == 0, "the job's scratch is gone"
        manifest = s3.get_object(Bucket=BUCKET, Key=f"outputs/{job_id}/manifest.json")
        assert f'"s3://{SOURCES_BUCKET}/sample.mp4"' in manifest["Body"].read().decode()
        assert not list(data_dir.rglob("master.m3u8")), "nothing published on the local disk"

        view = httpx.get(f"{api}/v1/jobs/{job_id}", params={"presign": "true"}, timeout=30).json()
        master = view["manifests"]["hls"]
        assert master.startswith(f"{endpoint}/{BUCKET}/outputs/{job_id}/master.m3u8?")
        played = httpx.get(master, headers={"Origin": api}, timeout=10)
        assert played.status_code == 200 and played.text.startswith("#EXTM3U")
        assert played.headers["access-control-allow-origin"] == api, "CORS for the job page"
        elsewhere = httpx.get(master, headers={"Origin": "http://elsewhere.test"}, timeout=10)
        assert "access-control-allow-origin" not in elsewhere.headers
    finally:
        shutdown(proc)
    assert proc.returncode == 0
    assert all(port_free(port) for port in [*ports.values(), *weed_ports])
    assert not [p for p in weed_ports if list(Path("/tmp").glob(f"seaweedfs-*-{p}.sock"))]
