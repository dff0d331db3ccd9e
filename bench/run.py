"""End-to-end job time on the embedded stack against the best single ffmpeg command.

Run from the repository root: ``.venv/bin/python bench/run.py [--seconds 20] [--rounds 3]``.
See bench/README.md for what is measured and the latest figures.
"""

from __future__ import annotations

import argparse
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
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.cli.samples import make_video
from app.core.models import DEFAULT_CHUNK_SECONDS
from app.storage.local import uri_to_path
from app.stratum.functions.audio import AUDIO_BITRATE_KBPS, AUDIO_SAMPLE_RATE
from app.stratum.functions.ffmpeg import ffmpeg_binary
from app.stratum.functions.package import DASH_MANIFEST, HLS_MASTER

VENV_BIN = Path(sys.executable).parent
SOURCES = {"720p": (1280, 720), "1080p": (1920, 1080)}
STAGES = ("probe", "plan", "route", "split", "encode", "assemble", "package")
POLL_S = 1.0


@dataclass
class JobRun:
    seconds: float
    manifest: dict[str, Any]
    out_dir: Path
    cpu: dict[str, float] = field(default_factory=dict)


@dataclass
class Round:
    job: JobRun
    ffmpeg_s: float
    ffmpeg_cpu: float
    ffmpeg_idle: float
    check_cpu: float


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


def stack_pids(dev: subprocess.Popen[bytes]) -> dict[str, int]:
    """The processes ``cosmos dev`` started: the Temporal server, the CPU worker, the API."""
    pids: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) != dev.pid:
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
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
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


def run_job(
    api: str, source: Path, profiles: list[str], chunk_seconds: float, pids: dict[str, int]
) -> JobRun:
    """HTTP submit → the workflow's close (after the manifest is published, the scratch
    cleaned up and the webhook sent); a fresh job ID every time.

    The end is the close time the job view reports (``updated_at`` of a finished job), read
    on this machine's clock, so the 1 s polling neither adds its granularity to the figure nor
    competes with the encode for the two cores (every poll is a describe and a query)."""
    before = cpu_snapshot(pids)
    with httpx.Client(base_url=api, timeout=30) as client:
        started = time.time()
        response = client.post(
            "/v1/encode",
            json={"source": str(source), "profiles": profiles, "chunk_seconds": chunk_seconds},
            headers={"Idempotency-Key": f"bench-{uuid.uuid4()}"},
        )
        response.raise_for_status()
        job_id = response.json()["job_id"]
        while True:
            view = client.get(f"/v1/jobs/{job_id}").json()
            if view["status"] == "SUCCEEDED":
                break
            if view["status"] in ("FAILED", "CANCELLED"):
                sys.exit(f"job {job_id} {view['status']}: {view.get('error')}")
            time.sleep(POLL_S)
        closed = datetime.fromisoformat(view["updated_at"]).timestamp()
    after, seen = cpu_snapshot(pids), time.time()
    path = uri_to_path(view["manifests"]["manifest"])
    cpu = {k: after[k] - before[k] for k in CPU_KEYS}
    # the machine idled from the close to this read (up to one poll): not the job's idle time
    cpu["idle"] = max(0.0, cpu["idle"] - (os.cpu_count() or 1) * (seen - closed))
    return JobRun(closed - started, json.loads(path.read_text()), path.parent, cpu)


def check_same_package(job: JobRun, out_dir: Path) -> None:
    """Both wrote the same files (segments, init segments, MPD, HLS playlists)."""
    published = {p.name for p in job.out_dir.iterdir()} - {"manifest.json"}
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
    sets = ["id=0,streams=v"]
    if manifest["audio"]:
        cmd += ["-map", "0:a:0", "-c:a", "aac", "-b:a", f"{AUDIO_BITRATE_KBPS}k",
                "-ac", "2", "-ar", str(AUDIO_SAMPLE_RATE)]  # fmt: skip
        sets.append("id=1,streams=a")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0, help="source length")
    parser.add_argument("--rounds", type=int, default=3, help="job/ffmpeg pairs per source")
    parser.add_argument("--profiles", default="720p,480p,360p")
    parser.add_argument(
        "--chunk-seconds",
        type=float,
        default=DEFAULT_CHUNK_SECONDS,
        help="the job's target chunk length; 0 encodes each rendition whole",
    )
    parser.add_argument(
        "--gop",
        type=int,
        default=30,
        help="source keyframe interval in frames (chunks cut on keyframes)",
    )
    args = parser.parse_args()
    profiles = args.profiles.split(",")
    print(f"machine: {os.cpu_count()} cores, {cpu_model()}; sources {args.seconds:g} s; "
          f"profiles {args.profiles}; {args.rounds} rounds; chunks {args.chunk_seconds:g} s; "
          f"source GOP {args.gop} frames")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="cosmos-bench-") as tmp:
        data_dir = Path(tmp) / "data"  # sources inside the data dir are allowed sources
        sources = {
            name: make_video(data_dir / "sources" / f"{name}.mp4", seconds=args.seconds,
                             width=w, height=h, rate="30", gop=args.gop)
            for name, (w, h) in SOURCES.items()
        }  # fmt: skip
        for name, source in sources.items():
            print(f"{name} source: one decode pass {decode_seconds(source):.2f} s", flush=True)
        proc, api = start_stack(data_dir)
        pids = stack_pids(proc)
        results: dict[str, list[Round]] = {}
        try:
            for name, source in sources.items():
                settings: dict[str, Any] | None = None  # the first job's manifest
                for rnd in range(args.rounds):
                    out_dir = Path(tmp) / "ffmpeg" / f"{name}-{rnd}"
                    job_first = settings is None or rnd % 2 == 0  # alternate who goes first
                    if job_first:
                        job = run_job(api, source, profiles, args.chunk_seconds, pids)
                    settings = settings or job.manifest
                    command = single_command(source, settings, out_dir)
                    ff, ff_cpu, ff_idle = run_ffmpeg(command, out_dir)
                    if not job_first:
                        job = run_job(api, source, profiles, args.chunk_seconds, pids)
                    check_same_package(job, out_dir)
                    results.setdefault(name, []).append(
                        Round(job, ff, ff_cpu, ff_idle, check_decode_cpu(job))
                    )
                    encode = job.manifest["stage_seconds"]["encode"]
                    print(f"{name} round {rnd + 1}: job {job.seconds:.2f} s (encode stage "
                          f"{encode:.2f} s), ffmpeg {ff:.2f} s, ratio {job.seconds / ff:.2f}; "
                          "CPU s: job " + ", ".join(f"{k} {v:.2f}" for k, v in job.cpu.items())
                          + f"; ffmpeg {ff_cpu:.2f}, idle {ff_idle:.2f}", flush=True)  # fmt: skip
                print("single command:", subprocess.list2cmdline(command), flush=True)
        finally:
            stop_stack(proc)
    report(results)


def report(results: dict[str, list[Round]]) -> None:
    med = statistics.median
    print("\nseconds, medians over the rounds; overhead = end-to-end minus the stages (submit,"
          " workflow tasks, publish, cleanup)")  # fmt: skip
    print("source  job  ffmpeg  ratio  " + " ".join(f"{s:>7}" for s in STAGES) + "  overhead")
    for name, runs in results.items():
        stages = {s: med(r.job.manifest["stage_seconds"].get(s, 0.0) for r in runs)
                  for s in STAGES}  # fmt: skip
        overhead = med(r.job.seconds - sum(r.job.manifest["stage_seconds"].values()) for r in runs)
        print(f"{name:<7} {med(r.job.seconds for r in runs):5.2f} "
              f"{med(r.ffmpeg_s for r in runs):6.2f} "
              f"{med(r.job.seconds / r.ffmpeg_s for r in runs):5.2f}  "
              + " ".join(f"{stages[s]:7.2f}" for s in STAGES) + f"  {overhead:8.2f}")  # fmt: skip
    print("\nCPU seconds, medians: the single command and the machine's idle core-seconds while it"
          " ran; the job's processes and the idle core-seconds while it ran; one full decode of"
          " the job's renditions (what its decode check costs)")  # fmt: skip
    print("source  single   idle  " + " ".join(f"{k:>8}" for k in CPU_KEYS) + "  decode")
    for name, runs in results.items():
        print(f"{name:<7} {med(r.ffmpeg_cpu for r in runs):6.2f} "
              f"{med(r.ffmpeg_idle for r in runs):6.2f}  "
              + " ".join(f"{med(r.job.cpu[k] for r in runs):8.2f}" for k in CPU_KEYS)
              + f"  {med(r.check_cpu for r in runs):6.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
