"""Several hosts, and the network failing between them.

Three hosts on this machine (tests/netns.py: network namespaces on a bridge, a private /24):
host A runs the Temporal dev server (persisted with ``--db-filename``), the API and the S3
server (SeaweedFS); hosts B and C run one CPU worker each. No disk is shared: the source is
uploaded to S3, scratch and outputs are ``s3://`` URIs, each process has a data dir of its
own. The test process talks to A over the bridge, as a client on the network would.

Each fault is its own test, with a cluster of its own (new namespaces, new servers), torn
down whatever happens: a chunked job spread over B and C; C's cable pulled mid-chunk; the
S3 server restarted mid-job; the Temporal server restarted mid-job; a worker that starts
while S3 is away. Recovery times are printed (``-s``) and written to
``.cosmos/test-artifacts/multihost.jsonl``.
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import av
import httpx
import pytest
from temporalio.api.enums.v1 import EventType, PendingActivityState, TimeoutType
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from app.cli.samples import make_video
from app.cli.seaweed import INTERNAL_PORTS, READY_TIMEOUT_S, STOP_GRACE_S, Seaweed
from app.core.models import Poller
from app.observability.search import dev_server_args
from app.stratum.pools import pollers, worker_identity
from app.stratum.queues import CPU_QUEUE
from app.stratum.resources import encode_slots
from tests import netns
from tests.conftest import BIN
from tests.media_checks import check_package
from tests.stack import TERMINAL, Stack, free_ports

UNAVAILABLE = netns.unavailable()
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(UNAVAILABLE is not None, reason=f"multi-host tests: {UNAVAILABLE}"),
]

T = TypeVar("T")
BUCKET = "cosmos"
SOURCES = "sources"
SECONDS = 24.0
FRAMES = 720  # 24 s at 30 fps
PROFILES = [
    {"name": "360p", "height": 360, "bitrate_kbps": 500, "preset": "fast"},
    {"name": "240p", "height": 240, "bitrate_kbps": 250, "preset": "fast"},
]
CHUNKED = {"chunk_seconds": 3, "min_chunk_seconds": 2, "segment_seconds": 1, "thumbnails": False}
"""8 chunks of 3 s (keyframes every second), each cut on the 1 s segment grid."""
HEARTBEAT_S = 4.0
"""The worker kills an ffmpeg silent this long; the server's backstop for a silent worker
(a pulled cable) is 1.25x + 1 s of it (app/plato/workflows/calls.py): 6 s."""
ENV = {
    "COSMOS_HEARTBEAT_TIMEOUT_S": str(HEARTBEAT_S),
    "COSMOS_ACTIVITY_MAX_ATTEMPTS": "8",
    "COSMOS_WORKER_SHUTDOWN_GRACE_S": "2",
    "COSMOS_OUTPUT_URI": f"s3://{BUCKET}/outputs",
    "COSMOS_SCRATCH_URI": f"s3://{BUCKET}/scratch",
    "COSMOS_SOURCE_BUCKETS": SOURCES,
}
ARTIFACTS = Path(__file__).resolve().parent.parent / ".cosmos" / "test-artifacts"


def report(test: str, **figures: float | int | str) -> None:
    """Print the figures and keep them (README's table comes from this file)."""
    line = {"test": test, "at": datetime.now(UTC).isoformat(timespec="seconds"), **figures}
    print(f"multihost {test}: " + ", ".join(f"{k}={v}" for k, v in figures.items()), flush=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with (ARTIFACTS / "multihost.jsonl").open("a") as f:
        f.write(json.dumps(line) + "\n")


# ---------------------------------------------------------------- servers on host A


def stop_process(proc: subprocess.Popen[bytes], grace: float) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@dataclass
class TemporalServer:
    """``temporal server start-dev`` on host A, its state in SQLite, so that a restart keeps
    every workflow. It binds 0.0.0.0 of A's namespace (A's address and A's loopback): its
    services call each other on 127.0.0.1 whatever ``--ip`` says."""

    host: netns.Host
    db: Path
    log: Path
    ports: list[int] = field(default_factory=lambda: free_ports(3))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host.address}:{self.ports[0]}"

    def start(self, timeout: float = 60) -> None:
        port, http_port, metrics_port = self.ports
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [*self.host.exec, str(BIN / "temporal"), "server", "start-dev", "--headless",
                 "--ip", "0.0.0.0", "--port", str(port), "--http-port", str(http_port),
                 "--metrics-port", str(metrics_port), "--db-filename", str(self.db),
                 "--log-level", "warn", *dev_server_args()],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            health = subprocess.run(
                [str(BIN / "temporal"), "operator", "cluster", "health", "--address",
                 self.address, "--command-timeout", "2s"],
                capture_output=True, timeout=10,
            )  # fmt: skip
            if health.returncode == 0:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.3)
        raise AssertionError(f"Temporal did not start on A:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 30)


@dataclass
class S3Server:
    """SeaweedFS bound to host A's address, as ``cosmos dev --storage s3`` runs it."""

    host: netns.Host
    root: Path
    seaweed: Seaweed = field(init=False)
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        port, *internal = free_ports(1 + len(INTERNAL_PORTS))
        self.seaweed = Seaweed(self.root, port, internal, host=self.host.address)

    def start(self) -> None:
        log_path = self.root / "weed.log"
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*self.host.exec, *self.seaweed.command()], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self.seaweed.ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"SeaweedFS did not start on A:\n{log_path.read_text()[-3000:]}"
                )
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, STOP_GRACE_S)
        self.seaweed.remove_sockets()


# ---------------------------------------------------------------- the cluster


@dataclass
class Run:
    """One activity of a job as its history ends: the attempt that ran last and where."""

    workflow_id: str
    activity_id: str
    activity: str
    index: int | None  # the chunk, for encode_chunk
    attempt: int
    identity: str
    completed: bool
    reused: bool | None
    retried_after: int | None  # TimeoutType of the failure before this attempt, if a timeout
    failed_with: str | None  # that failure's message, whatever it was


@dataclass
class Cluster:
    net: netns.Network
    tmp: Path
    temporal: TemporalServer
    s3: S3Server
    api: Stack
    workers: dict[str, Stack] = field(default_factory=dict)
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    _client: Client | None = None

    # ------------------------------------------------------------ processes

    def worker(self, name: str) -> Stack:
        """Host ``name``'s worker, as a stack of one process (its own data dir and env)."""
        if name not in self.workers:
            host = self.net[name]
            self.workers[name] = Stack(
                data_dir=self.tmp / name,
                temporal_address=self.temporal.address,
                source_roots=[],
                extra_env={**self.env, "COSMOS_WORKER_NAME": f"host-{name}"},
                prefix=host.exec,
            )
        return self.workers[name]

    @property
    def env(self) -> dict[str, str]:
        return {**ENV, **self.s3.seaweed.client_env()}

    def start_workers(self, *names: str) -> None:
        with ThreadPoolExecutor(len(names)) as pool:
            list(pool.map(lambda n: self.worker(n).start_worker(), names))

    def identity(self, name: str) -> str:
        """What workers/cpu/main.py names the worker on ``name`` (pid@host NAME [slots])."""
        pid = self.worker(name).procs["worker"].pid  # ip netns exec execs: the same pid
        return worker_identity(f"host-{name}", encode_slots(), pid=pid)

    def kill_all(self) -> None:
        for stack in [self.api, *self.workers.values()]:
            for proc in stack.procs.values():
                if proc.poll() is None:
                    proc.kill()
                proc.wait(timeout=10)
            stack.procs.clear()
        for server in (self.temporal, self.s3):
            if server.proc is not None and server.proc.poll() is None:
                server.proc.kill()
                server.proc.wait(timeout=10)
        self.s3.seaweed.remove_sockets()

    def logs(self, lines: int = 40) -> str:
        out = []
        for path in sorted(self.tmp.rglob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"==> {path.relative_to(self.tmp)} <==\n" + "\n".join(tail))
        return "\n".join(out)

    # ------------------------------------------------------------ S3 and the API

    def upload(self, local: Path, key: str) -> str:
        self.s3.seaweed.client().upload_file(str(local), SOURCES, key)
        return f"s3://{SOURCES}/{key}"

    def submit(self, source: str, **body: Any) -> str:
        return str(self.api.submit(source=source, profiles=PROFILES, **CHUNKED, **body)["job_id"])

    def view(self, job_id: str) -> dict[str, Any] | None:
        """The job as the API shows it; None while the API or Temporal does not answer."""
        try:
            return self.api.job(job_id)
        except (AssertionError, httpx.HTTPError):
            return None

    def wait(self, job_id: str, timeout: float) -> dict[str, Any]:
        """Until the job ends, through outages (a 503 or no answer is waited out)."""
        deadline = time.monotonic() + timeout
        view = None
        while time.monotonic() < deadline:
            view = self.view(job_id) or view
            if view and view["status"] in TERMINAL:
                return view
            time.sleep(0.3)
        raise AssertionError(f"job {job_id} not done after {timeout}s: {view}\n{self.logs()}")

    def wait_encoding(self, job_id: str, chunks_done: int, timeout: float = 90) -> None:
        """Until the job is in its encode stage with ``chunks_done`` chunks committed."""
        deadline = time.monotonic() + timeout
        view = None
        while time.monotonic() < deadline:
            view = self.view(job_id) or view
            renditions = view["renditions"] if view else []
            done = min((r["chunks_done"] or 0 for r in renditions), default=0)
            if view and view["stage"] == "encode" and done >= chunks_done:
                return
            if view and view["status"] in TERMINAL:
                break
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} never got to {chunks_done} chunks: {view}")

    def outputs(self, job_id: str, dest: Path) -> Path:
        client = self.s3.seaweed.client()
        prefix = f"outputs/{job_id}/"
        found = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
        for obj in found:
            target = dest / obj["Key"][len(prefix) :]
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(BUCKET, obj["Key"], str(target))
        return dest

    def committed(self, job_id: str) -> set[int]:
        """Chunks whose every rendition is committed: its file and, after it, its record
        (``video/<rendition>/<index>-<settings>.mp4.json``)."""
        records: dict[int, int] = {}
        for key in self.scratch_left(job_id):
            if "/video/" in key and key.endswith(".mp4.json"):
                index = int(key.rsplit("/", 1)[-1].split("-", 1)[0])
                records[index] = records.get(index, 0) + 1
        return {i for i, n in records.items() if n == len(PROFILES)}

    def scratch_left(self, job_id: str) -> list[str]:
        client = self.s3.seaweed.client()
        found = client.list_objects_v2(Bucket=BUCKET, Prefix=f"scratch/{job_id}/")
        return [obj["Key"] for obj in found.get("Contents", [])]

    # ------------------------------------------------------------ Temporal

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(asyncio.wait_for(coro, 30))

    async def client(self) -> Client:
        if self._client is None:
            self._client = await Client.connect(
                self.temporal.address, data_converter=pydantic_data_converter
            )
        return self._client

    async def _children(self, workflow_id: str) -> list[str]:
        history = await (await self.client()).get_workflow_handle(workflow_id).fetch_history()
        return [
            e.child_workflow_execution_started_event_attributes.workflow_execution.workflow_id
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED
        ]

    async def _runs(self, job_id: str) -> list[Run]:
        runs: list[Run] = []
        for workflow_id in [job_id, *await self._children(job_id)]:
            history = await (await self.client()).get_workflow_handle(workflow_id).fetch_history()
            scheduled: dict[int, tuple[str, str, int | None]] = {}
            started: dict[int, tuple[int, str, int | None, str | None]] = {}
            for e in history.events:
                if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                    a = e.activity_task_scheduled_event_attributes
                    index = None
                    if a.activity_type.name == "encode_chunk":
                        index = json.loads(a.input.payloads[0].data)["chunk"]["index"]
                    scheduled[e.event_id] = (a.activity_id, a.activity_type.name, index)
                elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                    s = e.activity_task_started_event_attributes
                    failure = s.last_failure
                    timeout = (
                        int(failure.timeout_failure_info.timeout_type)
                        if failure.HasField("timeout_failure_info")
                        else None
                    )
                    message = failure.message if s.HasField("last_failure") else None
                    started[s.scheduled_event_id] = (s.attempt, s.identity, timeout, message)
                elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                    c = e.activity_task_completed_event_attributes
                    activity_id, name, index = scheduled[c.scheduled_event_id]
                    attempt, identity, timeout, message = started[c.scheduled_event_id]
                    reused = None
                    if name == "encode_chunk":
                        reused = bool(json.loads(c.result.payloads[0].data)["reused"])
                    runs.append(
                        Run(workflow_id, activity_id, name, index, attempt, identity, True,
                            reused, timeout, message)
                    )  # fmt: skip
        return runs

    def runs(self, job_id: str) -> list[Run]:
        """Every activity of the job and its chunk-range children that completed."""
        return self.run(self._runs(job_id))

    async def _pending(self, job_id: str) -> list[tuple[str, Any]]:
        found = []
        for workflow_id in [job_id, *await self._children(job_id)]:
            description = await (await self.client()).get_workflow_handle(workflow_id).describe()
            found += [(workflow_id, p) for p in description.raw_description.pending_activities]
        return found

    def pending(self, job_id: str) -> list[tuple[str, Any]]:
        """(workflow id, PendingActivityInfo) of every activity of the job not yet done."""
        return self.run(self._pending(job_id))

    def polling(self, queue: str, identity: str, since: datetime | None = None) -> bool:
        """Whether ``identity`` polls ``queue`` (since ``since``), as the server sees it."""

        async def ask() -> list[Poller]:
            return await pollers(await self.client(), queue)

        found = self.run(ask())
        return any(
            p.identity == identity and (since is None or (p.last_seen and p.last_seen >= since))
            for p in found
        )

    def close(self) -> None:
        self._client = None
        self.loop.close()


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 s of 640x360 test pattern and tone, a keyframe every second."""
    return make_video(
        tmp_path_factory.mktemp("multihost") / "title.mp4",
        width=640, height=360, seconds=SECONDS, gop=30,
    )  # fmt: skip


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """Hosts A, B, C on a bridge; A serving Temporal, S3 and the API; no worker yet. Torn
    down whatever happens; a failed test's logs go to .cosmos/test-artifacts/."""
    failed = request.session.testsfailed
    net = netns.build(["a", "b", "c"])
    a = net["a"]
    cluster: Cluster | None = None
    try:
        (tmp_path / "a").mkdir()
        temporal = TemporalServer(
            a, tmp_path / "a" / "temporal.db", tmp_path / "a" / "temporal.log"
        )
        s3 = S3Server(a, tmp_path / "a" / "s3")
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda server: server.start(), [temporal, s3]))
        s3.seaweed.create_buckets(BUCKET, SOURCES)
        api = Stack(
            data_dir=tmp_path / "a" / "api",
            temporal_address=temporal.address,
            source_roots=[],
            api_port=free_ports(1)[0],
            extra_env={**ENV, **s3.seaweed.client_env()},
            host=a.address,
            prefix=a.exec,
        )
        cluster = Cluster(net=net, tmp=tmp_path, temporal=temporal, s3=s3, api=api)
        api.start_api()
        yield cluster
    finally:
        try:
            if cluster is not None:
                cluster.kill_all()
                if request.session.testsfailed > failed:
                    ARTIFACTS.mkdir(parents=True, exist_ok=True)
                    name = f"multihost-{request.node.name}.log"
                    (ARTIFACTS / name).write_text(cluster.logs(lines=300))
                cluster.close()
        finally:
            problems = net.teardown()
            assert not problems, problems
            assert not any(n.startswith(net.bridge[:-2]) for n in ip_netns_names())


def ip_netns_names() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


# ---------------------------------------------------------------- checks


def frames_of(out_dir: Path, rep_id: int) -> int:
    """Video frames of one representation, decoded with PyAV (init + its segments)."""
    data = b"".join(
        p.read_bytes()
        for p in [out_dir / f"init-{rep_id}.m4s", *sorted(out_dir.glob(f"chunk-{rep_id}-*.m4s"))]
    )
    with av.open(io.BytesIO(data), mode="r", format="mp4") as container:
        return sum(1 for _ in container.decode(video=0))


def check_outputs(cluster: Cluster, job_id: str, dest: Path, ffmpeg: str) -> None:
    """The published package, read back from S3: whole, decodable, every frame there."""
    out = cluster.outputs(job_id, dest)
    manifest = check_package(out, ffmpeg, SECONDS, "30/1")
    assert [frames_of(out, i) for i in range(len(manifest["renditions"]))] == [FRAMES] * len(
        PROFILES
    )
    assert cluster.scratch_left(job_id) == [], "the job's scratch space is gone"


def check_chunks_once(runs: list[Run]) -> dict[int, Run]:
    """Every chunk completed exactly once (a chunk that completed never started again)."""
    chunks = [r for r in runs if r.activity == "encode_chunk"]
    by_index = {r.index: r for r in chunks if r.index is not None}
    assert len(by_index) == len(chunks) == 8, [(r.index, r.identity) for r in chunks]
    return by_index


# ---------------------------------------------------------------- the tests


@pytest.mark.timeout(150)
def test_a_chunked_job_spreads_over_both_hosts(
    cluster: Cluster, source: Path, ffmpeg: str, tmp_path: Path
) -> None:
    cluster.start_workers("b", "c")
    b, c = cluster.identity("b"), cluster.identity("c")
    started = time.monotonic()
    job_id = cluster.submit(cluster.upload(source, "title.mp4"))
    view = cluster.wait(job_id, timeout=120)
    took = time.monotonic() - started
    assert view["status"] == "SUCCEEDED", view
    runs = cluster.runs(job_id)
    chunks = check_chunks_once(runs)
    where = {r.identity for r in chunks.values()}
    assert where == {b, c}, f"chunks ran on {where}, not on both {b} and {c}"
    retried = [r for r in chunks.values() if r.attempt != 1]
    assert not retried, f"chunks run again in a healthy cluster: {retried}"
    check_outputs(cluster, job_id, tmp_path / "out", ffmpeg)
    on_b = sum(r.identity == b for r in chunks.values())
    report("spread", job_s=round(took, 1), chunks_on_b=on_b, chunks_on_c=len(chunks) - on_b)


def running_on(cluster: Cluster, job_id: str, identity: str) -> tuple[str, str] | None:
    """(workflow id, activity id) of a chunk encode that ``identity`` is running now, past its
    first heartbeat (its ffmpeg started): not finished, not about to be."""
    for workflow_id, p in cluster.pending(job_id):
        if (
            p.activity_type.name == "encode_chunk"
            and p.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
            and p.last_worker_identity == identity
            and p.heartbeat_details.payloads
        ):
            return workflow_id, p.activity_id
    return None


@pytest.mark.timeout(240)
def test_a_host_cut_off_mid_chunk_loses_only_that_chunk(
    cluster: Cluster, source: Path, ffmpeg: str, tmp_path: Path
) -> None:
    cluster.start_workers("b", "c")
    b, c = cluster.identity("b"), cluster.identity("c")
    job_id = cluster.submit(cluster.upload(source, "title.mp4"))

    deadline = time.monotonic() + 90
    caught = None
    while caught is None and time.monotonic() < deadline:
        caught = running_on(cluster, job_id, c)
        if caught is None:
            time.sleep(0.05)
    assert caught is not None, f"C never ran a chunk: {cluster.view(job_id)}"
    cluster.net["c"].cut()
    cut_at = time.monotonic()
    committed = cluster.committed(job_id)  # C can write nothing more now

    # Its heartbeat stops reaching the server: the attempt times out, B runs it again.
    retried_s = None
    while time.monotonic() < cut_at + 60:
        pending = {(w, p.activity_id): p for w, p in cluster.pending(job_id)}
        p = pending.get(caught)
        if p is None or (p.attempt > 1 and p.last_worker_identity == b):
            retried_s = time.monotonic() - cut_at
            break
        time.sleep(0.2)
    assert retried_s is not None, f"chunk {caught} was never retried: {cluster.view(job_id)}"
    view = cluster.wait(job_id, timeout=120)
    done_s = time.monotonic() - cut_at
    assert view["status"] == "SUCCEEDED", view
    assert cluster.worker("c").procs["worker"].poll() is None, "C's worker lives on, cut off"

    runs = cluster.runs(job_id)
    chunks = check_chunks_once(runs)
    (lost,) = [r for r in runs if (r.workflow_id, r.activity_id) == caught]
    assert lost.identity == b and lost.attempt > 1, lost
    # Whatever ran again ran on B, after an attempt whose heartbeat stopped: C's (everything
    # else was in C's hands or finished when the cable went; B never lost a packet).
    again = [r for r in runs if r.attempt > 1]
    assert all(r.identity == b for r in again), again
    assert all(r.retried_after == TimeoutType.TIMEOUT_TYPE_HEARTBEAT for r in again), again
    # A chunk committed before the cut (its file and record in S3) never encoded again: it
    # completed on its first attempt, or its retry found it and reused it.
    reencoded = [chunks[i] for i in committed if chunks[i].attempt > 1 and not chunks[i].reused]
    assert reencoded == [], (reencoded, sorted(committed))
    assert {r.identity for r in chunks.values()} <= {b, c}
    check_outputs(cluster, job_id, tmp_path / "out", ffmpeg)

    # C's cable back: its worker polls again by itself, and serves the next job.
    back_at = datetime.now(UTC)
    cluster.net["c"].restore()
    restored = time.monotonic()
    while not cluster.polling(CPU_QUEUE, c, since=back_at):
        assert time.monotonic() < restored + 90, f"C never polled again\n{cluster.logs()}"
        time.sleep(0.5)
    repoll_s = time.monotonic() - restored
    next_id = cluster.submit(cluster.upload(source, "next.mp4"))
    assert cluster.wait(next_id, timeout=120)["status"] == "SUCCEEDED"
    served = {r.identity for r in cluster.runs(next_id) if r.activity == "encode_chunk"}
    assert c in served, f"C took no chunk of the next job: {served}"
    # Known gap, measured rather than asserted: an upload that C started while cut off (its
    # attempt already given up on by the server) resumes when the cable is back, after the
    # job's cleanup; the cancel that follows stops the activity, not boto3's thread. Only
    # scratch gets the stray object; the published outputs were checked above.
    stray = cluster.scratch_left(job_id)
    report(
        "link-cut",
        chunk_retried_on_b_s=round(retried_s, 1),
        job_done_after_cut_s=round(done_s, 1),
        c_polling_again_s=round(repoll_s, 1),
        stray_scratch_objects=len(stray),
    )


@pytest.mark.timeout(200)
def test_s3_restarted_mid_job(cluster: Cluster, source: Path, ffmpeg: str, tmp_path: Path) -> None:
    cluster.start_workers("b", "c")
    job_id = cluster.submit(cluster.upload(source, "title.mp4"))
    cluster.wait_encoding(job_id, chunks_done=2)
    stopped = time.monotonic()
    cluster.s3.stop()
    stop_s = time.monotonic() - stopped
    time.sleep(2)  # transfers fail meanwhile (connection refused)
    cluster.s3.start()
    outage = time.monotonic() - stopped
    view = cluster.wait(job_id, timeout=150)
    done_s = time.monotonic() - stopped
    assert view["status"] == "SUCCEEDED", view
    assert all(w.procs["worker"].poll() is None for w in cluster.workers.values())
    runs = cluster.runs(job_id)
    check_chunks_once(runs)
    retried = [r for r in runs if r.attempt > 1]
    check_outputs(cluster, job_id, tmp_path / "out", ffmpeg)
    report(
        "s3-restart",
        s3_outage_s=round(outage, 1),
        s3_stop_s=round(stop_s, 1),
        job_done_after_stop_s=round(done_s, 1),
        activities_retried=len(retried),
    )


@pytest.mark.timeout(200)
def test_temporal_restarted_mid_job(
    cluster: Cluster, source: Path, ffmpeg: str, tmp_path: Path
) -> None:
    cluster.start_workers("b", "c")
    b, c = cluster.identity("b"), cluster.identity("c")
    job_id = cluster.submit(cluster.upload(source, "title.mp4"))
    cluster.wait_encoding(job_id, chunks_done=2)
    stopped = time.monotonic()
    cluster.temporal.stop()
    stop_s = time.monotonic() - stopped
    assert cluster.view(job_id) is None, "the API cannot answer without Temporal"
    time.sleep(2)
    restart_at = datetime.now(UTC)
    cluster.temporal.start()
    outage = time.monotonic() - stopped
    reconnected: dict[str, float] = {}
    deadline = time.monotonic() + 90
    while len(reconnected) < 2 and time.monotonic() < deadline:
        for name, identity in (("b", b), ("c", c)):
            if name not in reconnected and cluster.polling(CPU_QUEUE, identity, restart_at):
                reconnected[name] = time.monotonic() - stopped
        time.sleep(0.3)
    assert set(reconnected) == {"b", "c"}, f"workers reconnected: {reconnected}\n{cluster.logs()}"
    view = cluster.wait(job_id, timeout=150)
    done_s = time.monotonic() - stopped
    assert view["status"] == "SUCCEEDED", view
    assert all(w.procs["worker"].poll() is None for w in cluster.workers.values()), (
        "the same worker processes, never restarted"
    )
    check_chunks_once(cluster.runs(job_id))
    check_outputs(cluster, job_id, tmp_path / "out", ffmpeg)
    report(
        "temporal-restart",
        temporal_outage_s=round(outage, 1),
        temporal_stop_s=round(stop_s, 1),
        workers_polling_again_s=round(max(reconnected.values()), 1),
        job_done_after_stop_s=round(done_s, 1),
    )


@pytest.mark.timeout(150)
def test_a_worker_waits_for_storage_before_taking_tasks(
    cluster: Cluster, source: Path, ffmpeg: str, tmp_path: Path
) -> None:
    source_uri = cluster.upload(source, "title.mp4")
    cluster.s3.stop()
    worker = cluster.worker("b")
    log = worker.data_dir / "worker.log"
    worker._spawn("worker", [sys.executable, "-m", "workers.cpu.main"],
                  ready="worker waiting for storage")  # fmt: skip
    b = cluster.identity("b")
    time.sleep(8)  # several checks fail meanwhile (1 s, 2 s, 4 s apart)
    text = log.read_text()
    # One line on stdout (its JSON log record aside), however many checks failed.
    waiting = [line for line in text.splitlines() if line.startswith("worker waiting for storage")]
    endpoint = cluster.s3.seaweed.endpoint
    assert len(waiting) == 1, text[-3000:]
    assert f"s3 endpoint {endpoint} unreachable (Connection refused)" in waiting[0], waiting
    assert "worker ready" not in text
    assert worker.procs["worker"].poll() is None, "it keeps waiting, it does not exit"
    assert not cluster.polling(CPU_QUEUE, b), "it takes no task it cannot do"

    cluster.s3.start()
    up = time.monotonic()
    deadline = up + 30
    while "worker ready" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)
    ready_s = time.monotonic() - up
    assert "worker storage reachable after" in log.read_text()
    while not cluster.polling(CPU_QUEUE, b):
        assert time.monotonic() < deadline, "ready, it polls"
        time.sleep(0.2)
    job_id = cluster.submit(source_uri)
    view = cluster.wait(job_id, timeout=120)
    assert view["status"] == "SUCCEEDED", view
    assert {r.identity for r in cluster.runs(job_id)} == {b}
    check_outputs(cluster, job_id, tmp_path / "out", ffmpeg)
    report("storage-at-start", worker_ready_after_s3_up_s=round(ready_s, 1))
