"""Per-title ladders against the fixed ladder: bitrate, VMAF and BD-rate on generated clips.

Run from the repository root: ``.venv/bin/python bench/quality.py [--seconds 20]``.
See bench/README.md ("Per-title ladders") for what is measured and the latest figures.
Not a timed test: it takes minutes, and its numbers are the point.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from fractions import Fraction
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from app.core.models import (
    EncodeJob,
    LadderAnalysis,
    LadderInput,
    LadderPoint,
    ProbeResult,
    QualityChunk,
    Rendition,
)
from app.core.settings import Settings
from app.media.ladder import plan_renditions
from app.media.quality import (
    GraphInput,
    GraphPair,
    compare_format,
    measure_plan,
    read_logs,
    read_timeline,
)
from app.plato.workflows.ladder import LadderWorkflow, ladder_workflow_id
from app.storage.local import path_to_uri
from app.stratum.functions.common import input_args
from app.stratum.functions.encode import video_output_args
from app.stratum.functions.ffmpeg import ffmpeg_binary
from app.stratum.functions.ladder import LadderActivities, crf_args, video_bytes
from app.stratum.functions.probe import probe_file
from app.stratum.queues import CPU_QUEUE, WORKFLOW_QUEUE
from app.stratum.resources import encode_slots, threads_per_job, worker_concurrency

VENV_BIN = Path(sys.executable).parent
FFMPEG = ffmpeg_binary()

CLIPS: dict[str, Callable[[int, int, float], str]] = {
    # a still backdrop with detail, a small region moving slowly (a presenter)
    "talking-head": lambda w, h, s: (
        f"smptehdbars=size={w}x{h}:rate=30:duration={s}[bg];"
        f"testsrc2=size={w // 3 // 2 * 2}x{h // 2 // 2 * 2}:rate=30:duration={s}[fg];"
        f"[bg][fg]overlay=x='{w // 3}+{w // 40}*sin(t/2)':y='{h // 3}+{h // 60}*cos(t/3)'"
    ),
    # detail everywhere, changing every frame: a zoom into the Mandelbrot set
    "high-motion": lambda w, h, s: (
        f"mandelbrot=size={w}x{h}:rate=30:start_scale=3:end_scale=0.3:outer=normalized_iteration_count,"
        f"trim=duration={s}"
    ),
    # flat colours, sharp edges, moving shapes
    "animation": lambda w, h, s: f"testsrc2=size={w}x{h}:rate=30:duration={s}",
    # the same under film-grain-like noise, new every frame
    "noisy": lambda w, h, s: (
        f"testsrc2=size={w}x{h}:rate=30:duration={s},noise=c0s=24:c1s=8:c2s=8:allf=t"
    ),
}


def cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def ffmpeg(args: Sequence[str]) -> float:
    """Run ffmpeg; its CPU seconds."""
    before = cpu_children()
    subprocess.run([FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args],
                   check=True)  # fmt: skip
    return cpu_children() - before


def make_clip(name: str, path: Path, width: int, height: int, seconds: float) -> None:
    """A mezzanine-like source: x264 at CRF 12, a keyframe every second."""
    ffmpeg(["-f", "lavfi", "-i", CLIPS[name](width, height, seconds), "-t", str(seconds),
            "-c:v", "libx264", "-preset", "veryfast", "-crf", "12", "-g", "30",
            "-pix_fmt", "yuv420p", str(path)])  # fmt: skip


# ---------------------------------------------------------------- ladders


@dataclass
class Measured:
    name: str
    width: int
    height: int
    target_kbps: int
    kbps: float
    vmaf: float
    predicted: float | None = None


@dataclass
class LadderRun:
    label: str
    rungs: list[Measured]
    cpu_s: float

    @property
    def total_kbps(self) -> float:
        return sum(r.kbps for r in self.rungs)

    @property
    def top(self) -> Measured:
        return max(self.rungs, key=lambda r: r.kbps)

    @property
    def mean_vmaf(self) -> float:
        return sum(r.vmaf for r in self.rungs) / len(self.rungs)


def encode_ladder(
    source: Path,
    container: str,
    renditions: list[Rendition],
    out_dir: Path,
    threads: int,
    crfs: list[float] | None = None,
) -> tuple[list[Path], float]:
    """Every rung in one ffmpeg run (one decode, a scale per rung): the production encoder
    arguments, with a CRF in place of each target bitrate where ``crfs`` are given."""
    out_dir.mkdir(parents=True, exist_ok=True)
    outs = [out_dir / f"{r.name}.mp4" for r in renditions]
    args = video_output_args(list(zip(renditions, outs, strict=True)), threads=threads)
    if crfs is not None:
        args = crf_args(args, crfs)
    return outs, ffmpeg([*input_args(source, container), *args])


def vmaf_of(
    source: Path, outs: list[Path], display: tuple[int, int], rate: Fraction, threads: int
) -> tuple[list[float], float]:
    """Each output against the source at the display size, the quality service's graph."""
    timelines = [read_timeline(p) for p in [source, *outs]]
    ref = timelines[0]
    reference = GraphInput(source, "mov", ref.first_s, ref.start_s, ref.colour)
    pairs = [
        GraphPair(
            distorted=GraphInput(out, "mov", t.first_s, t.start_s, t.colour),
            rate=rate,
            multiplier=1,
            sizes=((*display, ("vmaf",)),),
            pix_fmt=compare_format(t.pix_fmt),
        )
        for out, t in zip(outs, timelines[1:], strict=True)
    ]
    with tempfile.TemporaryDirectory(prefix="bench-vmaf-") as tmp:
        chunk = QualityChunk(index=0, start_frame=0, duration_s=timelines[0].duration_s)
        plan = measure_plan(reference, pairs, chunk, Path(tmp), context=False, threads=threads)
        cpu = ffmpeg(plan.args)
        found = []
        for i in range(len(outs)):
            _, values = read_logs(plan.logs[i][display], plan.windows[i])
            scores = values["vmaf"]
            assert isinstance(scores, list) and scores
            found.append(sum(scores) / len(scores))
    return found, cpu


def crf_for(points: list[LadderPoint], width: int, height: int, kbps: float) -> float:
    """The CRF that the analysis saw give ``kbps`` at this size (log-linear in bitrate)."""
    own = sorted((p for p in points if (p.width, p.height) == (width, height)),
                 key=lambda p: p.kbps)  # fmt: skip
    if len(own) < 2:
        return float(own[0].crf)
    i = next((k for k in range(1, len(own)) if kbps <= own[k].kbps), len(own) - 1)
    low, high = own[i - 1], own[i]
    t = (math.log(kbps) - math.log(low.kbps)) / (math.log(high.kbps) - math.log(low.kbps))
    return round(min(51.0, max(0.0, low.crf + t * (high.crf - low.crf))), 1)


def measure_ladder(
    label: str,
    source: Path,
    probe: ProbeResult,
    renditions: list[Rendition],
    out_dir: Path,
    display: tuple[int, int],
    threads: int,
    predicted: dict[str, float | None],
    crfs: list[float] | None = None,
) -> LadderRun:
    outs, cpu = encode_ladder(source, probe.container, renditions, out_dir, threads, crfs)
    rate = Fraction(probe.video.frame_rate)
    scores, _ = vmaf_of(source, outs, display, rate, threads)
    rungs = []
    for rendition, out, vmaf in zip(renditions, outs, scores, strict=True):
        size, _, frames = video_bytes(out)
        rungs.append(
            Measured(
                name=rendition.name,
                width=rendition.width,
                height=rendition.height,
                target_kbps=rendition.settings.bitrate_kbps,
                kbps=size * 8 / 1000 / float(frames / rate),
                vmaf=vmaf,
                predicted=predicted.get(rendition.name),
            )
        )
    rungs.sort(key=lambda r: r.kbps)
    return LadderRun(label, rungs, cpu)


# ---------------------------------------------------------------- BD-rate


def _pchip_slopes(x: list[float], y: list[float]) -> list[float]:
    """Fritsch-Carlson monotone slopes (as scipy's PchipInterpolator)."""
    n = len(x)
    h = [x[i + 1] - x[i] for i in range(n - 1)]
    d = [(y[i + 1] - y[i]) / h[i] for i in range(n - 1)]
    if n == 2:
        return [d[0], d[0]]
    m = [0.0] * n
    for i in range(1, n - 1):
        if d[i - 1] * d[i] <= 0:
            m[i] = 0.0
        else:
            w1, w2 = 2 * h[i] + h[i - 1], h[i] + 2 * h[i - 1]
            m[i] = (w1 + w2) / (w1 / d[i - 1] + w2 / d[i])

    def end(h0: float, h1: float, d0: float, d1: float) -> float:
        s = ((2 * h0 + h1) * d0 - h0 * d1) / (h0 + h1)
        if s * d0 <= 0:
            return 0.0
        if d0 * d1 <= 0 and abs(s) > abs(3 * d0):
            return 3 * d0
        return s

    m[0] = end(h[0], h[1], d[0], d[1])
    m[-1] = end(h[-1], h[-2], d[-1], d[-2])
    return m


def _pchip(x: list[float], y: list[float], m: list[float], at: float) -> float:
    i = max(0, min(len(x) - 2, next((k for k in range(len(x) - 1) if at <= x[k + 1]), len(x) - 2)))
    h = x[i + 1] - x[i]
    t = (at - x[i]) / h
    h00, h10 = 2 * t**3 - 3 * t**2 + 1, t**3 - 2 * t**2 + t
    h01, h11 = -2 * t**3 + 3 * t**2, t**3 - t**2
    return h00 * y[i] + h10 * h * m[i] + h01 * y[i + 1] + h11 * h * m[i + 1]


def _curve(points: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """(VMAF, log10 kbps), both rising: a point that is not better for more bits is no
    part of a rate-quality curve."""
    xs: list[float] = []
    ys: list[float] = []
    for kbps, vmaf in sorted(points, key=lambda p: p[1]):
        if not xs or (vmaf > xs[-1] and math.log10(kbps) > ys[-1]):
            xs.append(vmaf)
            ys.append(math.log10(kbps))
    return xs, ys


def bd_rate(reference: list[tuple[float, float]], test: list[tuple[float, float]]) -> float | None:
    """Bjøntegaard delta rate of ``test`` against ``reference`` ((kbps, VMAF) points): the
    mean difference of log-rate at equal VMAF over the VMAF range both cover, as a percentage
    (negative: fewer bits). Piecewise cubic (PCHIP) interpolation of log-rate over VMAF, as
    the AOM/libvmaf tools do for ladders of fewer than four points. A one-rung ``test`` is its
    one point against the reference's curve (the rate the reference needs for its VMAF). None
    where the VMAF ranges do not overlap."""
    (xa, ya), (xb, yb) = _curve(reference), _curve(test)
    if len(xa) < 2 or not xb:
        return None
    ma = _pchip_slopes(xa, ya)
    if len(xb) == 1:
        if not xa[0] <= xb[0] <= xa[-1]:
            return None
        return (10 ** (yb[0] - _pchip(xa, ya, ma, xb[0])) - 1) * 100
    low, high = max(xa[0], xb[0]), min(xa[-1], xb[-1])
    if high - low < 0.5:
        return None
    mb = _pchip_slopes(xb, yb)
    steps = 2000
    total = 0.0
    for k in range(steps + 1):
        v = low + (high - low) * k / steps
        weight = 0.5 if k in (0, steps) else 1.0
        total += weight * (_pchip(xb, yb, mb, v) - _pchip(xa, ya, ma, v))
    return (10 ** (total / steps) - 1) * 100


# ---------------------------------------------------------------- the run


async def analyse(
    clips: dict[str, Path], jobs: dict[str, EncodeJob], settings: Settings, threads: int,
    slots: int, samples: int | None = None, sample_seconds: float | None = None,
) -> dict[str, tuple[LadderAnalysis, float, float]]:  # fmt: skip
    """LadderWorkflow on a local dev server with the real activities in this process: its
    analysis, its ffmpeg CPU seconds and wall seconds, one clip at a time."""
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter, dev_server_existing_path=str(VENV_BIN / "temporal")
    )
    found = {}
    async with env:
        ladder = LadderActivities(settings, threads=threads)
        workflows = Worker(env.client, task_queue=WORKFLOW_QUEUE, workflows=[LadderWorkflow])
        pool = Worker(
            env.client,
            task_queue=CPU_QUEUE,
            activities=ladder.activities(),
            max_concurrent_activities=slots,
        )
        async with workflows, pool:
            for name, job in jobs.items():
                probe = probe_file(clips[name])
                before, started = cpu_children(), time.monotonic()
                analysis = await env.client.execute_workflow(
                    LadderWorkflow.run,
                    LadderInput(
                        job=job, probe=probe, samples=samples, sample_seconds=sample_seconds
                    ),
                    id=ladder_workflow_id(job.job_id),
                    task_queue=WORKFLOW_QUEUE,
                )
                found[name] = (analysis, cpu_children() - before, time.monotonic() - started)
                print(f"  {name}: analysed in {found[name][2]:.1f} s", flush=True)
    return found


def report(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| clip | ladder | rungs (height:kb/s) | total kb/s | top VMAF | mean VMAF | "
        "BD-rate vs fixed |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        for run in row["runs"]:
            rungs = " ".join(f"{min(r.width, r.height)}:{r.kbps:.0f}" for r in run.rungs)
            bd = row["bd"].get(run.label)
            bd_text = "n/a" if bd is None else f"{bd:+.1f} %"
            lines.append(
                f"| {row['clip']} | {run.label} | {rungs} | {run.total_kbps:.0f} | "
                f"{run.top.vmaf:.2f} | {run.mean_vmaf:.2f} | "
                f"{'' if run.label == 'fixed' else bd_text} |"
            )
    lines += [
        "",
        "| clip | analysis CPU-s (wall s) | auto encode CPU-s | fixed encode CPU-s | "
        "analysis / auto encode | predicted - measured VMAF (auto rungs) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        auto = row["runs"][1]
        errors = ", ".join(
            f"{r.predicted - r.vmaf:+.1f}" for r in auto.rungs if r.predicted is not None
        )
        lines.append(
            f"| {row['clip']} | {row['analysis_cpu']:.1f} ({row['analysis_wall']:.1f}) | "
            f"{auto.cpu_s:.1f} | {row['runs'][0].cpu_s:.1f} | "
            f"{row['analysis_cpu'] / auto.cpu_s:.2f} | {errors} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--profiles", default="720p,480p,360p")
    parser.add_argument("--clips", default=",".join(CLIPS))
    parser.add_argument("--keep", type=Path, help="work here and keep the files")
    parser.add_argument(
        "--no-capped-crf",
        dest="capped_crf",
        action="store_false",
        help="skip the third ladder (the auto rungs at capped CRF)",
    )
    parser.add_argument("--samples", type=int, help="the analysis' samples (default: budget)")
    parser.add_argument("--sample-seconds", type=float, help="their length (default: budget)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    names = args.clips.split(",")
    profiles = args.profiles.split(",")
    cores = os.cpu_count() or 1
    slots = encode_slots()
    threads = threads_per_job(slots)

    root = args.keep or Path(tempfile.mkdtemp(prefix="cosmos-bench-quality-"))
    root.mkdir(parents=True, exist_ok=True)
    settings = Settings(data_dir=root / "data", source_roots=str(root / "clips"))
    print(
        f"{date.today()} {platform.processor() or platform.machine()}, {cores} cores, "
        f"{slots} encode slots x {threads} threads; clips {width}x{height} {args.seconds:g} s; "
        f"fixed ladder {'/'.join(profiles)}; work in {root}",
        flush=True,
    )
    clips = {}
    for name in names:
        path = root / "clips" / f"{name}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            make_clip(name, path, width, height, args.seconds)
        clips[name] = path
    jobs = {
        name: EncodeJob(
            job_id=f"enc-bench-{name}-{uuid.uuid4().hex[:6]}",
            source_uri=path_to_uri(path),
            profiles=profiles,  # type: ignore[arg-type]
            codec="h264",
            segment_seconds=4,
            output_uri=settings.resolved_output_uri,
            scratch_uri=settings.resolved_scratch_uri,
            ladder="auto",
        )
        for name, path in clips.items()
    }
    sampling = (
        "default options"
        if args.samples is None and args.sample_seconds is None
        else (f"samples {args.samples or 'by duration'} x {args.sample_seconds or 2.0:g} s")
    )
    print(f"analysis (LadderWorkflow, {sampling}), then the ladders, clip by clip:", flush=True)

    rows = []
    for name, job in jobs.items():
        # each clip's analysis right before its encodes: this shared machine's speed drifts by
        # a third within a run, and the ratio should see one speed
        analysis, analysis_cpu, analysis_wall = asyncio.run(
            analyse({name: clips[name]}, {name: job}, settings, threads, worker_concurrency(),
                    args.samples, args.sample_seconds)
        )[name]  # fmt: skip
        probe = probe_file(clips[name])
        fixed_plan = plan_renditions(job, probe).renditions
        auto_job = job.model_copy(update={"profiles": analysis.profiles})
        auto_plan = plan_renditions(auto_job, probe).renditions
        display = (analysis.display_width, analysis.display_height)
        fixed_pred = {r.name: r.predicted_vmaf for r in analysis.fixed}
        auto_pred = {r.name: r.predicted_vmaf for r in analysis.rungs}
        out = root / "out" / name
        print(f"  {name}: encoding and measuring the ladders", flush=True)
        fixed = measure_ladder("fixed", clips[name], probe, fixed_plan, out / "fixed", display,
                               cores, fixed_pred)  # fmt: skip
        auto = measure_ladder("auto", clips[name], probe, auto_plan, out / "auto", display,
                              cores, auto_pred)  # fmt: skip
        runs = [fixed, auto]
        crfs = []
        if args.capped_crf:
            crfs = [crf_for(analysis.points, r.width, r.height, r.settings.bitrate_kbps)
                    for r in auto_plan]  # fmt: skip
            runs.append(measure_ladder("auto, capped CRF", clips[name], probe, auto_plan,
                                       out / "crf", display, cores, {}, crfs))  # fmt: skip
        points = {run.label: [(r.kbps, r.vmaf) for r in run.rungs] for run in runs}
        crf_points = points.get("auto, capped CRF")
        rows.append(
            {
                "clip": name,
                "runs": runs,
                "bd": {
                    label: bd_rate(points["fixed"], found)
                    for label, found in points.items()
                    if label != "fixed"
                },
                "bd_crf_vs_vbr": bd_rate(points["auto"], crf_points) if crf_points else None,
                "analysis_cpu": analysis_cpu,
                "analysis_wall": analysis_wall,
                "analysis": analysis.model_dump(mode="json", exclude={"sample_points"}),
                "crfs": crfs,
            }
        )
    print()
    print(report(rows))
    bds = [row["bd"]["auto"] for row in rows if row["bd"]["auto"] is not None]
    if bds:
        print(f"\nBD-rate auto vs fixed, mean over {len(bds)} clips: {sum(bds) / len(bds):+.1f} %")
    for row in rows if args.capped_crf else []:
        bd = row["bd_crf_vs_vbr"]
        text = "n/a" if bd is None else f"{bd:+.1f} %"
        print(f"{row['clip']}: capped CRF (CRF {row['crfs']}) vs capped VBR: BD-rate {text}")
    summary = root / "quality-bench.json"
    summary.write_text(json.dumps(
        [{k: v for k, v in row.items() if k != "runs"} | {
            "runs": [{"label": run.label, "cpu_s": run.cpu_s,
                      "rungs": [vars(r) for r in run.rungs]} for run in row["runs"]]}
         for row in rows], indent=1))  # fmt: skip
    print(f"\nevery figure and each analysis: {summary}")


if __name__ == "__main__":
    main()
