"""The issue's scenarios on the embedded stack, each against the single ffmpeg command that
writes the same package: wall and CPU seconds, idle cost and memory, targets met or not.

Run from the repository root::

    .venv/bin/python bench/run.py [--scenarios ladder-60,single-30] [--long] [--rounds 3]
                                  [--peers] [--idle-seconds 30] [--chunk-seconds S] [--thumbnails]
                                  [--gop N]

See bench/README.md for what is measured and the latest figures.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from fnmatch import fnmatch
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.cli.samples import make_video
from app.storage.local import uri_to_path
from app.stratum.functions.audio import AUDIO_BITRATE_KBPS, AUDIO_SAMPLE_RATE
from app.stratum.functions.ffmpeg import ffmpeg_binary
from app.stratum.functions.package import DASH_MANIFEST, HLS_MASTER

VENV_BIN = Path(sys.executable).parent
STAGES = ("probe", "plan", "route", "split", "encode", "assemble", "package")
POLL_S = 1.0
"""Job view reads for long jobs: each is a describe and a query that competes with the encode."""
CLIP_POLL_S = 0.05
"""clip-2 is a latency test of a short job: polled fast, as a client waiting on it would."""
SAMPLE_S = 0.2
"""Memory sampling period under load."""
SETTLE_S = 2.0
"""Before the first idle window: the stack's start-up work is not its rest."""
CORES = os.cpu_count() or 1

Profile = str | dict[str, Any]


@dataclass(frozen=True)
class Source:
    seconds: float
    width: int
    height: int
    rate: str

    def describe(self) -> str:
        return f"{self.seconds:g} s {self.width}x{self.height} {self.rate} fps"


@dataclass(frozen=True)
class Scenario:
    key: str
    what: str
    source: Source
    profiles: list[Profile]
    target: float
    """A wall ratio job/ffmpeg, or seconds submit → SUCCEEDED where ``latency``."""
    latency: bool = False
    poll_s: float = POLL_S

    def target_text(self) -> str:
        return f"≤ {self.target:g} s wall" if self.latency else f"wall ratio ≤ {self.target:.2f}"


LADDER: list[Profile] = ["720p", "480p", "360p"]
SCENARIOS: dict[str, Scenario] = {
    s.key: s
    for s in (
        Scenario("ladder-60", "720p/480p/360p ladder", Source(60, 1280, 720, "30"), LADDER, 1.05),
        Scenario("ladder-20", "720p/480p/360p ladder", Source(20, 1280, 720, "30"), LADDER, 1.10),
        Scenario(
            "single-30",
            "one 720p rendition, x264 veryfast 2000k",
            Source(30, 1280, 720, "25"),
            [{"name": "720p", "height": 720, "bitrate_kbps": 2000, "preset": "veryfast"}],
            1.10,
        ),
        Scenario(
            "long-300",
            "1080p/720p/480p/360p ladder",
            Source(300, 1920, 1080, "30"),
            ["1080p", *LADDER],
            1.03,
        ),
        Scenario(
            "clip-2",
            "2 s clip, 360p only: submit → SUCCEEDED",
            Source(2, 1280, 720, "30"),
            ["360p"],
            1.5,
            latency=True,
            poll_s=CLIP_POLL_S,
        ),
    )
}
LONG = "long-300"
PEER_SCENARIO = "single-30"
PEER_TARGET = 1.5
"""Ours at least 1.5x faster than av1an (wall)."""


class PeerResult(Protocol):
    """What ``bench/peers.py``'s ``run_av1an`` returns (its ``PeerRun``)."""

    name: str
    seconds: float
    cpu_s: float
    output: Path
    command: Sequence[str] | str


@dataclass
class MemoryPeak:
    """KiB: the worker's Python process, the largest child (ffmpeg), all children at once."""

    worker: int = 0
    child: int = 0
    children: int = 0

    def merge(self, other: MemoryPeak) -> None:
        self.worker = max(self.worker, other.worker)
        self.child = max(self.child, other.child)
        self.children = max(self.children, other.children)


@dataclass
class JobRun:
    seconds: float
    manifest: dict[str, Any]
    out_dir: Path
    cpu: dict[str, float] = field(default_factory=dict)
    memory: MemoryPeak = field(default_factory=MemoryPeak)

    @property
    def stack_cpu(self) -> float:
        """Every stack process's CPU, the idle core-seconds left out."""
        return sum(v for k, v in self.cpu.items() if k != "idle")


@dataclass
class Round:
    job: JobRun
    ffmpeg_s: float
    ffmpeg_cpu: float
    ffmpeg_idle: float
    check_cpu: float
    peer: PeerResult | None = None


@dataclass
class Rest:
    """The stack with no job: CPU seconds per minute and resident memory (KiB) per process."""

    window_s: float
    cpu_per_min: dict[str, float]
    rss_kib: dict[str, int]


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def start_stack(data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``cosmos dev --no-sample`` on spare ports; returns once it prints "serving"."""
    api, temporal, ui = free_ports(3)
    log = data_dir / "dev.log"
    cmd = [str(VENV_BIN / "cosmos"), "dev", "--no-sample", "--data-dir", str(data_dir),
           "--api-port", str(api), "--temporal-port", str(temporal),
           "--ui-port", str(ui)]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while "serving" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            sys.exit(f"cosmos dev did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.2)
    return proc, f"http://127.0.0.1:{api}"


def stop_stack(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


CLK_TCK = os.sysconf("SC_CLK_TCK")
COMPONENTS = {"temporal": "temporal", "worker": "workers.cpu.main", "api": "uvicorn"}
CPU_KEYS = ("ffmpeg", "worker", "temporal", "api", "idle")


def proc_stat(pid: int) -> list[str]:
    """/proc/PID/stat after the command name (which may hold spaces): field 3 onwards."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def stack_pids(dev: subprocess.Popen[bytes]) -> dict[str, int]:
    """The processes ``cosmos dev`` started: the Temporal server, the CPU worker, the API."""
    pids: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(proc_stat(int(entry.name))[1])
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if ppid != dev.pid:
            continue
        for name, needle in COMPONENTS.items():
            if needle in cmdline:
                pids[name] = int(entry.name)
    if set(pids) != set(COMPONENTS):
        sys.exit(f"cosmos dev processes not found: {pids}")
    return pids


def cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far (Linux /proc): each stack process's own, the worker's finished
    children (every ffmpeg it ran), and the machine's idle core-seconds."""
    snap: dict[str, float] = {}
    for name, pid in pids.items():
        fields = proc_stat(pid)
        snap[name] = (int(fields[11]) + int(fields[12])) / CLK_TCK
        if name == "worker":
            snap["ffmpeg"] = (int(fields[13]) + int(fields[14])) / CLK_TCK
    snap["idle"] = machine_idle()
    return snap


def machine_idle() -> float:
    """Idle (and I/O wait) core-seconds since boot."""
    ticks = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    return (int(ticks[3]) + int(ticks[4])) / CLK_TCK


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def status_kib(pid: int, key: str) -> int:
    """A ``/proc/PID/status`` memory line (VmRSS, VmHWM) in KiB; 0 once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def child_pids(parent: int) -> list[int]:
    """Direct children by a scan of /proc (this kernel has no /proc/PID/task/TID/children),
    kept cheap (raw reads, ~1 ms) since it shares the cores with the job it watches."""
    found: list[int] = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
            if int(stat[stat.rindex(b")") + 2 :].split(b" ", 2)[1]) == parent:
                found.append(int(name))
        except (OSError, IndexError, ValueError):
            continue
    return found


class MemorySampler:
    """Peak memory under load, every ``SAMPLE_S`` in a background thread: the worker's VmRSS,
    each child's VmHWM (its own peak, so one between two samples still counts) and the sum of
    the children's VmRSS (what concurrent encoders hold together). A child that lives less
    than one period can be missed."""

    def __init__(self, worker: int) -> None:
        self.worker = worker
        self.peak = MemoryPeak()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(SAMPLE_S):
                return

    def sample(self) -> None:
        peak = self.peak
        peak.worker = max(peak.worker, status_kib(self.worker, "VmRSS"))
        together = 0
        for pid in child_pids(self.worker):
            peak.child = max(peak.child, status_kib(pid, "VmHWM"))
            together += status_kib(pid, "VmRSS")
        peak.children = max(peak.children, together)


def measure_rest(pids: dict[str, int], seconds: float) -> Rest:
    """The stack's own CPU over a quiet window, scaled to a minute, and each process's VmRSS
    at its end: what the stack costs while nobody uses it."""

    def own(pid: int) -> float:
        fields = proc_stat(pid)
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    before, started = {k: own(p) for k, p in pids.items()}, time.monotonic()
    time.sleep(seconds)
    after, window = {k: own(p) for k, p in pids.items()}, time.monotonic() - started
    return Rest(
        window,
        {k: (after[k] - before[k]) * 60 / window for k in pids},
        {k: status_kib(p, "VmRSS") for k, p in pids.items()},
    )


def run_job(
    api: str,
    source: Path,
    profiles: list[Profile],
    options: dict[str, Any],
    pids: dict[str, int],
    poll_s: float = POLL_S,
) -> JobRun:
    """HTTP submit → the workflow's close (after the manifest is published, the scratch
    cleaned up and the webhook sent); a fresh job ID every time. ``options`` are further
    request fields; what they leave out (chunking) is the platform's default, as users get.

    The end is the close time the job view reports (``updated_at`` of a finished job), read
    on this machine's clock, so the polling neither adds its granularity to the figure nor
    (at 1 s) competes with the encode for the two cores (every poll is a describe and a query)."""
    body: dict[str, Any] = {"source": str(source), "profiles": profiles, **options}
    before = cpu_snapshot(pids)
    with httpx.Client(base_url=api, timeout=30) as client, MemorySampler(pids["worker"]) as mem:
        started = time.time()
        response = client.post(
            "/v1/encode", json=body, headers={"Idempotency-Key": f"bench-{uuid.uuid4()}"}
        )
        response.raise_for_status()
        job_id = response.json()["job_id"]
        while True:
            view = client.get(f"/v1/jobs/{job_id}").json()
            if view["status"] == "SUCCEEDED":
                break
            if view["status"] in ("FAILED", "CANCELLED"):
                sys.exit(f"job {job_id} {view['status']}: {view.get('error')}")
            time.sleep(poll_s)
        closed = datetime.fromisoformat(view["updated_at"]).timestamp()
    after, seen = cpu_snapshot(pids), time.time()
    path = uri_to_path(view["manifests"]["manifest"])
    cpu = {k: after[k] - before[k] for k in CPU_KEYS}
    # the machine idled from the close to this read (up to one poll): not the job's idle time
    cpu["idle"] = max(0.0, cpu["idle"] - CORES * (seen - closed))
    return JobRun(closed - started, json.loads(path.read_text()), path.parent, cpu, mem.peak)


JOB_ONLY = ("manifest.json", "iframe_*.m3u8")
"""What only the job writes: its manifest and the HLS I-frame playlists (text, from the
segments' fragment index; the dash muxer has none)."""
THUMBNAIL_FILES = ("sheet-*.jpg", "thumbnails.*", "poster.jpg")
"""The thumbnail track and poster, job-only work where ``--thumbnails`` keeps them."""


def check_same_package(job: JobRun, out_dir: Path, job_only: Sequence[str]) -> None:
    """Both wrote the same streams (segments, init segments, MPD, HLS media playlists); the
    job's other files are only those ``job_only`` names."""
    published = {p.name for p in job.out_dir.iterdir()}
    published -= {n for n in published if any(fnmatch(n, pat) for pat in job_only)}
    written = {p.name for p in out_dir.iterdir()}
    if published != written:
        sys.exit(
            f"packages differ: job only {published - written}, ffmpeg only {written - published}"
        )


def single_command(source: Path, manifest: dict[str, Any], out_dir: Path) -> list[str]:
    """Decode once, ``split`` + ``scale`` per rung, the job's encoder settings, AAC once, and
    the same dash-muxer package (CMAF segments, MPD, HLS playlists) as package.py."""
    renditions = manifest["renditions"]
    n = len(renditions)
    graph = [f"[0:v:0]split={n}" + "".join(f"[s{i}]" for i in range(n))]
    for i, r in enumerate(renditions):
        sar = r["sample_aspect_ratio"].replace(":", "/")
        graph.append(f"[s{i}]scale={r['width']}:{r['height']}:flags=lanczos,"
                     f"setsar=sar={sar}:max=65535[v{i}]")  # fmt: skip
    cmd = [ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
           "-i", str(source), "-filter_complex", ";".join(graph)]  # fmt: skip
    for i, r in enumerate(renditions):
        s = r["settings"]
        assert s["encoder"] == "libx264", "the single command is written for libx264"
        cmd += ["-map", f"[v{i}]", f"-c:v:{i}", "libx264", f"-preset:v:{i}", s["preset"],
                f"-profile:v:{i}", "high", f"-b:v:{i}", f"{s['bitrate_kbps']}k",
                f"-maxrate:v:{i}", f"{s['maxrate_kbps']}k",
                f"-bufsize:v:{i}", f"{s['bufsize_kbps']}k",
                f"-g:v:{i}", str(s["gop_frames"]), f"-keyint_min:v:{i}", str(s["gop_frames"]),
                f"-sc_threshold:v:{i}", "0", f"-x264-params:v:{i}", "open-gop=0",
                f"-r:v:{i}", s["frame_rate"], f"-pix_fmt:v:{i}", s["pix_fmt"]]  # fmt: skip
    # the dash muxer wants one picture aspect per adaptation set: square-pixel rungs (852x480
    # beside 1280x720) differ by a fraction of a percent, so then each rung gets its own set
    # (the same files, only the MPD's grouping differs)
    aspects = {Fraction(r["width"]) * Fraction(r["sample_aspect_ratio"].replace(":", "/"))
               / r["height"] for r in renditions}  # fmt: skip
    sets = ["id=0,streams=v"] if len(aspects) == 1 else [f"id={i},streams={i}" for i in range(n)]
    if manifest["audio"]:
        cmd += ["-map", "0:a:0", "-c:a", "aac", "-b:a", f"{AUDIO_BITRATE_KBPS}k",
                "-ac", "2", "-ar", str(AUDIO_SAMPLE_RATE)]  # fmt: skip
        sets.append(f"id={len(sets)},streams=a")
    cmd += [
        "-fps_mode", "cfr", "-map_metadata", "-1", "-sn", "-dn", "-f", "dash",
        "-seg_duration", str(manifest["segment_seconds"]),
        "-use_template", "1", "-use_timeline", "1",
        "-hls_playlist", "1", "-hls_master_name", HLS_MASTER,
        "-adaptation_sets", " ".join(sets),
        "-init_seg_name", "init-$RepresentationID$.m4s",
        "-media_seg_name", "chunk-$RepresentationID$-$Number%05d$.m4s",
        str(out_dir / DASH_MANIFEST),
    ]  # fmt: skip
    return cmd


def run_ffmpeg(cmd: list[str], out_dir: Path) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and the machine's idle core-seconds of the single command."""
    out_dir.mkdir(parents=True)
    cpu, idle, started = children_cpu(), machine_idle(), time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - started, children_cpu() - cpu, machine_idle() - idle


def check_decode_cpu(job: JobRun) -> float:
    """CPU seconds of one full decode of every published video rendition (init segment plus
    media segments, as a player reads them): what the decode check of the chunks costs the job."""
    cpu = 0.0
    with tempfile.TemporaryDirectory(prefix="cosmos-bench-decode-") as tmp:
        for rep in range(len(job.manifest["renditions"])):  # representation IDs: plan order
            segments = sorted(job.out_dir.glob(f"chunk-{rep}-*.m4s"))
            joined = Path(tmp) / f"{rep}.mp4"
            joined.write_bytes(b"".join(p.read_bytes() for p in [
                job.out_dir / f"init-{rep}.m4s", *segments]))  # fmt: skip
            before = children_cpu()
            decode = [ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-nostdin",
                      "-xerror", "-i", str(joined), "-f", "null", "-"]  # fmt: skip
            subprocess.run(decode, check=True)
            cpu += children_cpu() - before
    return cpu


def decode_seconds(source: Path) -> float:
    """One decode pass of the source's video, which the job pays once per rendition."""
    cmd = [ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-nostdin",
           "-i", str(source), "-an", "-f", "null", "-"]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - started


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine_line() -> str:
    return f"machine: {CORES} cores, {cpu_model()}"


def load_peers() -> ModuleType:
    """bench/ is no package: ``peers.py`` is imported from beside this file."""
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    return importlib.import_module("peers")


def command_text(command: Sequence[str] | str) -> str:
    return command if isinstance(command, str) else subprocess.list2cmdline(list(command))


def run_scenario(
    sc: Scenario,
    source: Path,
    api: str,
    pids: dict[str, int],
    work: Path,
    options: dict[str, Any],
    rounds: int,
    peers: ModuleType | None,
) -> list[Round]:
    """``rounds`` rounds, the order alternating (job first in odd rounds, last in even ones) so
    neither side always runs on a machine the other has just warmed or heated; the first round
    starts with the job, whose manifest gives the single command (and av1an) its settings."""
    manifest: dict[str, Any] | None = None
    command: list[str] = []
    results: list[Round] = []
    for rnd in range(rounds):
        who = ["job", "ffmpeg"] + (["av1an"] if peers is not None else [])
        if rnd % 2:
            who.reverse()
        out_dir = work / "ffmpeg" / f"{sc.key}-{rnd}"
        job: JobRun | None = None
        peer: PeerResult | None = None
        ff = ff_cpu = ff_idle = 0.0
        for step in who:
            if step == "job":
                job = run_job(api, source, sc.profiles, options, pids, sc.poll_s)
                manifest = manifest or job.manifest
            elif step == "ffmpeg":
                assert manifest is not None
                command = single_command(source, manifest, out_dir)
                ff, ff_cpu, ff_idle = run_ffmpeg(command, out_dir)
            else:
                assert manifest is not None and peers is not None
                top = manifest["renditions"][0]  # its size too, for a scale where it differs
                settings = {**top["settings"], "width": top["width"], "height": top["height"]}
                peer = peers.run_av1an(
                    source, settings, work / "av1an" / f"{sc.key}-{rnd}", workers=CORES
                )
        assert job is not None
        job_only = JOB_ONLY if "thumbnails" in options else JOB_ONLY + THUMBNAIL_FILES
        check_same_package(job, out_dir, job_only)
        results.append(Round(job, ff, ff_cpu, ff_idle, check_decode_cpu(job), peer))
        stages = job.manifest["stage_seconds"]
        line = (
            f"{sc.key} round {rnd + 1} ({' → '.join(who)}): job {job.seconds:.2f} s "
            f"(encode stage {stages.get('encode', 0.0):.2f} s), ffmpeg {ff:.2f} s, "
            f"ratio {job.seconds / ff:.2f}; CPU s: job "
            + ", ".join(f"{k} {v:.2f}" for k, v in job.cpu.items())
            + f"; ffmpeg {ff_cpu:.2f}, idle {ff_idle:.2f}"
        )
        if peer is not None:
            line += f"; av1an {peer.seconds:.2f} s, CPU {peer.cpu_s:.2f}"
        print(line, flush=True)
    print(f"single command ({sc.key}): {subprocess.list2cmdline(command)}", flush=True)
    last_peer = results[-1].peer
    if last_peer is not None:
        print(f"av1an command ({sc.key}): {command_text(last_peer.command)}", flush=True)
    return results


def parse_scenarios(text: str | None, long: bool) -> list[str]:
    keys = [k for k in SCENARIOS if k != LONG] if text is None else text.split(",")
    unknown = [k for k in keys if k not in SCENARIOS]
    if unknown:
        sys.exit(f"unknown scenarios {unknown}; known: {', '.join(SCENARIOS)}")
    if long and LONG not in keys:
        keys.append(LONG)
    return [k for k in SCENARIOS if k in keys]  # the table's order


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scenarios",
        help=f"comma-separated, of {', '.join(SCENARIOS)}; default all but {LONG}",
    )
    parser.add_argument("--long", action="store_true", help=f"add {LONG} (5 min 1080p source)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per scenario (median)")
    parser.add_argument(
        "--peers", action="store_true", help=f"also av1an in {PEER_SCENARIO} (bench/peers.py)"
    )
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=30.0,
        help="quiet window for the stack's idle CPU, before the jobs and after them",
    )
    parser.add_argument(
        "--chunk-seconds",
        type=float,
        default=None,
        help="the jobs' target chunk length; default the platform's (not sent)",
    )
    parser.add_argument(
        "--thumbnails",
        action="store_true",
        help="keep the platform's default thumbnail track and poster (job-only work: the "
        "single command writes none); default off, so both write the same streams",
    )
    parser.add_argument(
        "--gop", type=int, default=None, help="source keyframe interval in frames; default 1 s"
    )
    args = parser.parse_args()
    keys = parse_scenarios(args.scenarios, args.long)
    peers: ModuleType | None = None
    if args.peers:
        if PEER_SCENARIO not in keys:
            sys.exit(f"--peers compares in {PEER_SCENARIO}, which is not selected")
        peers = load_peers()
        peers.ensure_av1an()
    options: dict[str, Any] = {} if args.thumbnails else {"thumbnails": False}
    if args.chunk_seconds is not None:
        options["chunk_seconds"] = args.chunk_seconds
    chunks = "platform default" if args.chunk_seconds is None else f"{args.chunk_seconds:g} s"
    print(f"{machine_line()}; scenarios {', '.join(keys)}; {args.rounds} rounds; "
          f"chunks {chunks}; thumbnails {'on' if args.thumbnails else 'off'}; "
          f"idle window {args.idle_seconds:g} s", flush=True)  # fmt: skip
    if args.rounds < 3:
        print("fewer than 3 rounds: a smoke run, not a measurement", flush=True)
    results: dict[str, list[Round]] = {}
    rests: list[tuple[str, Rest]] = []
    hwm = 0
    with tempfile.TemporaryDirectory(prefix="cosmos-bench-") as tmp:
        data_dir = Path(tmp) / "data"  # sources inside the data dir are allowed sources
        sources: dict[str, Path] = {}
        for key in keys:
            src = SCENARIOS[key].source
            gop = args.gop or round(float(src.rate))  # default: a keyframe every second
            sources[key] = make_video(data_dir / "sources" / f"{key}.mp4", seconds=src.seconds,
                                      width=src.width, height=src.height, rate=src.rate,
                                      gop=gop)  # fmt: skip
            print(f"{key} source ({src.describe()}, GOP {gop}): one decode pass "
                  f"{decode_seconds(sources[key]):.2f} s", flush=True)  # fmt: skip
        proc, api = start_stack(data_dir)
        try:
            pids = stack_pids(proc)
            resting = {**pids, "supervisor": proc.pid}
            time.sleep(SETTLE_S)
            rests.append(("at start", measure_rest(resting, args.idle_seconds)))
            for key in keys:
                results[key] = run_scenario(
                    SCENARIOS[key], sources[key], api, pids, Path(tmp), options,
                    args.rounds, peers if key == PEER_SCENARIO else None,
                )  # fmt: skip
            rests.append(("at end", measure_rest(resting, args.idle_seconds)))
            hwm = status_kib(pids["worker"], "VmHWM")
        finally:
            stop_stack(proc)
    report(results, rests, hwm)


# ---------------------------------------------------------------- report

med = statistics.median


def table(title: str, headers: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """A Markdown table, columns padded so it also reads in a terminal."""
    body = [list(headers), *[list(r) for r in rows]]
    widths = [max(len(r[i]) for r in body) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    print(f"\n{title}\n")
    print(line(body[0]))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in body[1:]:
        print(line(r))


def f2(value: float) -> str:
    return f"{value:.2f}"


def mib(kib: float) -> str:
    return f"{kib / 1024:.0f}"


def yes(met: bool) -> str:
    return "**met**" if met else "not met"


@dataclass(frozen=True)
class Summary:
    """One scenario's medians."""

    job_s: float
    ffmpeg_s: float
    ratio: float
    job_cpu: float
    single_cpu: float
    cpu_ratio: float

    @classmethod
    def of(cls, runs: list[Round]) -> Summary:
        return cls(
            med(r.job.seconds for r in runs),
            med(r.ffmpeg_s for r in runs),
            med(r.job.seconds / r.ffmpeg_s for r in runs),
            med(r.job.stack_cpu for r in runs),
            med(r.ffmpeg_cpu for r in runs),
            med(r.job.stack_cpu / r.ffmpeg_cpu for r in runs),
        )


def floor(r: Round, without: float = 0.0) -> float:
    """The job's wall ratio had its CPU (less ``without``) filled every core from start to end."""
    return (r.job.stack_cpu - without) / CORES / r.ffmpeg_s


def met(sc: Scenario, s: Summary) -> bool:
    return (s.job_s if sc.latency else s.ratio) <= sc.target


def report(results: dict[str, list[Round]], rests: list[tuple[str, Rest]], hwm: int) -> None:
    summaries = {k: Summary.of(runs) for k, runs in results.items()}
    rounds = {k: len(runs) for k, runs in results.items()}
    table(
        "Scenarios, medians over the rounds (seconds; job CPU = ffmpeg + worker + temporal +"
        " api, single CPU = the command's own; clip-2's target is its job wall, submit →"
        " SUCCEEDED, its ffmpeg for information)",
        [
            "scenario",
            "rounds",
            "job wall",
            "ffmpeg wall",
            "wall ratio",
            "job CPU",
            "single CPU",
            "CPU ratio",
            "target",
            "met",
        ],
        [
            [
                k,
                str(rounds[k]),
                f2(s.job_s),
                f2(s.ffmpeg_s),
                f2(s.ratio),
                f2(s.job_cpu),
                f2(s.single_cpu),
                f2(s.cpu_ratio),
                SCENARIOS[k].target_text(),
                yes(met(SCENARIOS[k], s)),
            ]
            for k, s in summaries.items()
        ],
    )
    seen = {st for runs in results.values() for r in runs for st in r.job.manifest["stage_seconds"]}
    stages = [*[s for s in STAGES if s in seen], *sorted(seen - set(STAGES))]
    table(
        "Stage seconds, medians of the jobs' stage_seconds; rest = end-to-end minus the stages"
        " (submit, workflow tasks, publish, cleanup)",
        ["scenario", "job", *stages, "rest"],
        [
            [k, f2(summaries[k].job_s)]
            + [f2(med(r.job.manifest["stage_seconds"].get(s, 0.0) for r in runs)) for s in stages]
            + [f2(med(r.job.seconds - sum(r.job.manifest["stage_seconds"].values()) for r in runs))]
            for k, runs in results.items()
        ],
    )
    table(
        "CPU seconds by process, medians: the single command and the idle core-seconds while it"
        " ran; the job's processes and the idle core-seconds up to its close; decode = one full"
        " decode of the job's renditions (what its decode check costs, inside its ffmpeg)",
        ["scenario", "single", "single idle", *[f"job {c}" for c in CPU_KEYS], "decode"],
        [
            [k, f2(med(r.ffmpeg_cpu for r in runs)), f2(med(r.ffmpeg_idle for r in runs))]
            + [f2(med(r.job.cpu[c] for r in runs)) for c in CPU_KEYS]
            + [f2(med(r.check_cpu for r in runs))]
            for k, runs in results.items()
        ],
    )
    table(
        f"Floors: the wall ratio the job would have kept busy on all {CORES} cores from submit to"
        " close (its processes' CPU / cores / the single command's wall), and the same without"
        " its decode check; a target under the floor is out of reach of any scheduling",
        ["scenario", "wall ratio", "floor", "floor without the check", "target"],
        [
            [k, f2(summaries[k].ratio), f2(med(floor(r) for r in runs)),
             f2(med(floor(r, r.check_cpu) for r in runs)), SCENARIOS[k].target_text()]
            for k, runs in results.items()
            if not SCENARIOS[k].latency
        ],
    )  # fmt: skip
    peer_rows = peer_summary(results)
    if peer_rows:
        table(
            f"av1an in {PEER_SCENARIO}, medians (its ratios to the single ffmpeg command;"
            " speed-up = av1an wall / our job wall)",
            [
                "scenario",
                "av1an wall",
                "av1an CPU",
                "wall vs ffmpeg",
                "CPU vs ffmpeg",
                "ours speed-up",
                "target",
                "met",
            ],
            [
                [
                    k,
                    f2(w),
                    f2(c),
                    f2(wr),
                    f2(cr),
                    f"{sp:.2f}x",
                    f"≥ {PEER_TARGET:g}x",
                    yes(sp >= PEER_TARGET),
                ]
                for k, (w, c, wr, cr, sp) in peer_rows.items()
            ],
        )
    names = ["temporal", "worker", "api", "supervisor"]
    table(
        "Idle and memory: the stack's own CPU seconds per minute over a quiet window (total ="
        " temporal + worker + api; the cosmos dev supervisor apart) and VmRSS at rest, MiB",
        [
            "when",
            "window s",
            *[f"{n} CPU/min" for n in names],
            "total CPU/min",
            *[f"{n} RSS" for n in names],
        ],
        [
            [when, f"{rest.window_s:.0f}"]
            + [f2(rest.cpu_per_min[n]) for n in names]
            + [f2(sum(rest.cpu_per_min[n] for n in ("temporal", "worker", "api")))]
            + [mib(rest.rss_kib[n]) for n in names]
            for when, rest in rests
        ],
    )
    overall = MemoryPeak()
    rows = []
    for k, runs in results.items():
        peak = MemoryPeak()
        for r in runs:
            peak.merge(r.job.memory)
        overall.merge(peak)
        rows.append([k, mib(peak.worker), mib(peak.child), mib(peak.children)])
    rows.append(["all", mib(overall.worker), mib(overall.child), mib(overall.children)])
    table(
        f"Memory under load, MiB, maxima sampled every {SAMPLE_S:g} s during the jobs: the"
        " worker's Python VmRSS, the largest child's VmHWM (ffmpeg), the children's VmRSS at"
        f" once; the worker's VmHWM since start: {mib(hwm)} MiB",
        ["scenario", "worker RSS", "largest ffmpeg", "ffmpeg together"],
        rows,
    )
    targets(summaries, peer_rows)
    print(f"\n{machine_line()}")


def peer_summary(
    results: dict[str, list[Round]],
) -> dict[str, tuple[float, float, float, float, float]]:
    """Per scenario with av1an: its wall, CPU, wall and CPU ratios to ffmpeg, our speed-up."""
    out: dict[str, tuple[float, float, float, float, float]] = {}
    for k, runs in results.items():
        pairs = [(r, r.peer) for r in runs if r.peer is not None]
        if not pairs:
            continue

        def stat(f: Callable[[Round, PeerResult], float]) -> float:
            return med(f(r, p) for r, p in pairs)  # noqa: B023 (called at once, in this loop)

        out[k] = (
            stat(lambda r, p: p.seconds),
            stat(lambda r, p: p.cpu_s),
            stat(lambda r, p: p.seconds / r.ffmpeg_s),
            stat(lambda r, p: p.cpu_s / r.ffmpeg_cpu),
            stat(lambda r, p: p.seconds / r.job.seconds),
        )
    return out


def targets(
    summaries: dict[str, Summary], peers: dict[str, tuple[float, float, float, float, float]]
) -> None:
    """The issue's targets, met on wall time (ratio job/ffmpeg, clip-2 absolute); CPU ratio
    beside it for the cost."""
    rows = []
    for k, s in summaries.items():
        sc = SCENARIOS[k]
        what = f"{sc.what}, {sc.source.describe()} source"
        if sc.latency:
            measured = f"{s.job_s:.2f} s"
        else:
            measured = f"{s.ratio:.2f} ({s.job_s:.2f} / {s.ffmpeg_s:.2f} s)"
        cpu = "—" if sc.latency else f2(s.cpu_ratio)
        rows.append([k, what, sc.target_text(), measured, cpu, yes(met(sc, s))])
    for k, (wall, _, _, _, speed) in peers.items():
        rows.append(
            [
                f"{k} vs av1an",
                "our job against av1an, same settings",
                f"ours ≥ {PEER_TARGET:g}x faster (wall)",
                f"{speed:.2f}x ({wall:.2f} s av1an)",
                "—",
                yes(speed >= PEER_TARGET),
            ]
        )
    table(
        "Targets (medians)",
        ["scenario", "what", "target", "measured", "CPU ratio", "met"],
        rows,
    )


if __name__ == "__main__":
    main()
