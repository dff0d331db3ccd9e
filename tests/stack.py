"""A real stack for end-to-end tests: dev server, CPU worker and API as separate processes."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}
WEBHOOK_SECRET = "whsec-test-0123456789abcdef"


LOWEST_PORT = 10000
_given: set[int] = set()


def _ephemeral_low() -> int:
    """The lowest port of the kernel's ephemeral range (Linux's default where unreadable)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(count: int) -> list[int]:
    """Distinct free ports below the kernel's ephemeral range, never handed out twice in a run.

    A port from ``bind(0)`` is one of the ephemeral range, which every other bind to port 0
    (the Temporal dev server's internal services) and every outgoing connection also draws
    from: between this choice and the server's own bind, one of those could take it (seen as
    SeaweedFS's "address already in use" beside a starting dev server). Below the range only
    the ports chosen here are bound."""
    low = _ephemeral_low()
    pool = [p for p in range(LOWEST_PORT, low) if p not in _given]
    random.shuffle(pool)
    ports: list[int] = []
    for port in pool:
        with socket.socket() as sock:
            try:
                sock.bind(("", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == count:
            _given.update(ports)
            return ports
    raise RuntimeError(f"fewer than {count} free ports between {LOWEST_PORT} and {low}")


def free_port() -> int:
    return free_ports(1)[0]


@dataclass
class Stack:
    data_dir: Path
    temporal_address: str
    source_roots: list[Path]
    api_port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    """The API's address (binds to it, is called at it): another host's in test_multihost."""
    prefix: list[str] = field(default_factory=list)
    """Put before every command, e.g. ``ip netns exec NAME`` to run it on another host."""

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "COSMOS_DATA_DIR": str(self.data_dir),
            "COSMOS_TEMPORAL_ADDRESS": self.temporal_address,
            "COSMOS_SOURCE_ROOTS": ":".join(str(p) for p in self.source_roots),
            "COSMOS_HEARTBEAT_TIMEOUT_S": "10",
            "COSMOS_ACTIVITY_MAX_ATTEMPTS": "2",
            "COSMOS_WORKER_SHUTDOWN_GRACE_S": "5",
            "COSMOS_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
            "COSMOS_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.api_port}"

    def start_worker(self) -> None:
        self._spawn("worker", [sys.executable, "-m", "workers.cpu.main"], ready="worker ready")

    def start_api(self) -> None:
        self._spawn(
            "api",
            [sys.executable, "-m", "uvicorn", "app.api.main:create_app", "--factory",
             "--host", self.host, "--port", str(self.api_port)],
            ready="Application startup complete",
        )  # fmt: skip

    def _spawn(self, name: str, cmd: list[str], ready: str) -> None:
        log_path = self.data_dir / f"{name}.log"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = log_path.open("ab")
        offset = log_path.stat().st_size
        self.procs[name] = subprocess.Popen(
            [*self.prefix, *cmd], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if ready in log_path.read_bytes()[offset:].decode(errors="replace"):
                return
            if self.procs[name].poll() is not None:
                raise RuntimeError(f"{name} died:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        raise RuntimeError(f"{name} not ready:\n{log_path.read_text()[-3000:]}")

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)

    # ---------------------------------------------------------------- HTTP helpers

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.api_url, timeout=30)

    def submit(self, **body: Any) -> dict[str, Any]:
        with self.http() as http:
            response = http.post("/v1/encode", json=body)
        assert response.status_code == 202, response.text
        return dict(response.json())

    def job(self, job_id: str) -> dict[str, Any]:
        with self.http() as http:
            response = http.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait(self, job_id: str, timeout: float = 120, until: set[str] = TERMINAL) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            view = self.job(job_id)
            if view["status"] in until:
                return view
            time.sleep(0.3)
        raise AssertionError(f"job {job_id} still {view['status']} after {timeout}s: {view}")
