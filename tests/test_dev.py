"""``cosmos dev`` as a user runs it: the stack comes up, the sample succeeds, Ctrl-C stops all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.cli.dev import port_free
from tests.conftest import BIN
from tests.stack import free_ports

pytestmark = pytest.mark.e2e


def run_dev(
    data_dir: Path, ports: dict[str, int], until: str, timeout: float = 240
) -> tuple[subprocess.Popen[str], list[str]]:
    cmd = [str(BIN / "cosmos"), "dev", "--data-dir", str(data_dir)]
    for flag, port in ports.items():
        cmd += [f"--{flag}", str(port)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip())
        if until in line:
            return proc, lines
    proc.kill()
    output = "\n".join(lines)
    raise AssertionError(f"cosmos dev did not get to {until!r}:\n{output}")


def children_of(data_dir: Path) -> list[str]:
    out = subprocess.run(["pgrep", "-af", str(data_dir)], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "pgrep" not in line]


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)


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
