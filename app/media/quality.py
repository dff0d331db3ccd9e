"""Video quality: VMAF, PSNR and SSIM of a distorted file against its reference, with ffmpeg.

Pure where it can be: the alignment rules, the chunk plan, the filter graph, reading the
filters' per-frame logs and pooling them are functions of numbers and text, so the workflow
uses them deterministically and the tests need no media for them. Only :func:`read_timeline`
opens a file (demuxing, no decode).

How a comparison is computed, in one ffmpeg run per chunk (every metric and size at once):

- both sides are put on one frame grid: the reference's frame rate (twice that where the
  rendition was deinterlaced at field rate); with ``align: auto`` a side whose rate differs or
  varies is resampled to it by ``fps``, anchored on the whole file's grid so that a chunk
  picks the frames a whole-file run would;
- a chunk is cut by time on that grid (``-copyts``, a keyframe seek well before the chunk,
  then ``trim`` half a frame either side of the chunk's frames), then timestamped by frame
  number in one time base on both sides, so frame *n* meets frame *n*;
- each side is scaled (bicubic) to the size compared at, converted to one pixel format, and
  ``split`` to libvmaf (model by size), psnr and ssim, each logging per frame to a file;
- a chunk decodes one frame either side of its own (``context``): VMAF's motion feature of a
  frame depends on its neighbours, so the chunked result equals the whole file's.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av

from app.core.models import (
    UNTAGGED_COLOUR,
    MetricSummary,
    PsnrSummary,
    QualityAlign,
    QualityChunk,
    QualityMedia,
    QualityMetric,
    QualityView,
    SsimSummary,
    WorstChunk,
)
from app.media.formats import OPEN_OPTIONS

VMAF_HD_MODEL = "vmaf_v0.6.1"
VMAF_4K_MODEL = "vmaf_4k_v0.6.1"
"""libvmaf's built-in models (shipped inside the ffmpeg binary): up to 1080p, and above."""
COMPARE_FORMATS = frozenset(
    {"yuv420p", "yuv422p", "yuv444p", "yuv420p10le", "yuv422p10le", "yuv444p10le",
     "yuv420p12le", "yuv422p12le", "yuv444p12le"}
)  # fmt: skip
"""Pixel formats libvmaf, psnr and ssim all take; anything else is compared as yuv420p."""
MAX_CHUNKS = 1000
"""Chunk tasks per job, at most (each covers every comparison): about 6,000 history events.
A longer title gets longer chunks."""
SEEK_MARGIN_S = 1.0
"""A chunk's seek lands this far before its first frame (then back to a keyframe): demuxers
that seek by bytes or by a coarse index never land after it."""
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
"""A segment named by a published playlist: a file beside it, nothing else."""
SAFE_PATH = re.compile(r"^[A-Za-z0-9/_.-]+$")
"""Log paths go inside the filter graph: only characters that need no escaping there."""


class QualityMismatch(ValueError):
    """The two files cannot be compared frame for frame as they are (``align: strict``)."""


class QualityLogError(ValueError):
    """A filter's log is missing, malformed, or disagrees with the others."""


def display_size(width: int, height: int, sample_aspect_ratio: str) -> tuple[int, int]:
    """A rung's size as shown: its width stretched by its pixel aspect, kept even."""
    num, den = (int(x) for x in sample_aspect_ratio.split(":"))
    return round(width * Fraction(num, den)) // 2 * 2, height


def rendition_views(
    width: int, height: int, display: tuple[int, int], metrics: list[QualityMetric]
) -> list[QualityView]:
    """A rendition at its own size (the source scaled down to it) and, for VMAF, at the top
    rung's display size (the rendition scaled up to it), as the issue's VQS asks."""
    views = [QualityView(at="rendition", width=width, height=height, metrics=metrics)]
    if "vmaf" in metrics:
        views.append(QualityView(at="display", width=display[0], height=display[1],
                                 metrics=["vmaf"]))  # fmt: skip
    return views


def vmaf_model(width: int, height: int) -> str:
    """``vmaf_v0.6.1`` up to 1080p (either orientation), the 4K model above it."""
    hd = max(width, height) <= 1920 and min(width, height) <= 1080
    return VMAF_HD_MODEL if hd else VMAF_4K_MODEL


def compare_format(pix_fmt: str | None) -> str:
    return pix_fmt if pix_fmt in COMPARE_FORMATS else "yuv420p"


def bit_depth(pix_fmt: str) -> int:
    match = re.search(r"p(\d\d)(le|be)$", pix_fmt)
    return int(match.group(1)) if match else 8


# ---------------------------------------------------------------- colour tags

ColourTags = tuple[int, int, int, int]
"""A stream's matrix, primaries, transfer and range, as FFmpeg numbers them (``AVColorSpace``
and its siblings)."""
UNSPECIFIED: ColourTags = UNTAGGED_COLOUR
COLOUR_PARAMS = ("colorspace", "color_primaries", "color_trc", "range")


def matched_tags(side: ColourTags, other: ColourTags) -> list[str]:
    """The filter that gives ``side`` the tags it lacks and ``other`` has: an untagged input
    (an untagged HD source against its BT.709-tagged rendition) is taken to be what the other
    one says, so the graph does not convert it, where an unspecified matrix would be taken for
    BT.601 and the comparison would measure a colour conversion (VMAF 60 instead of 97).
    Tags both sides have and that differ stay: those are converted, as they should be."""
    wanted = [
        f"{name}={theirs}"
        for name, own, theirs, unset in zip(COLOUR_PARAMS, side, other, UNSPECIFIED, strict=True)
        if own == unset and theirs != unset
    ]
    return [f"setparams={':'.join(wanted)}"] if wanted else []


# ---------------------------------------------------------------- files


@dataclass(frozen=True)
class Timeline:
    """A file's first video stream as ffmpeg sees it, from its packets (nothing decoded)."""

    frames: int
    duration_s: float
    first_s: float
    start_s: float
    frame_rate: Fraction
    width: int
    height: int
    pix_fmt: str | None
    colour: ColourTags = UNSPECIFIED


def read_timeline(path: Path) -> Timeline:
    """Frames, first presentation time and span of the video stream; the container's start
    time (``-ss`` counts from it). Packets an edit list discards are not frames."""
    with av.open(str(path), options=OPEN_OPTIONS) as container:
        stream = container.streams.video[0]
        tb = Fraction(stream.time_base or Fraction(1, 90000))
        times: list[int] = []
        last_duration = 0
        for packet in container.demux(stream):
            if not packet.size or packet.is_discard:
                continue
            pts = packet.pts if packet.pts is not None else packet.dts
            if pts is None:
                continue
            times.append(int(pts))
            last_duration = int(packet.duration or 0)
        rate = Fraction(stream.average_rate or stream.guessed_rate or Fraction(25))
        ctx = stream.codec_context
        start = container.start_time / 1_000_000 if container.start_time is not None else 0.0
        if not times:
            raise ValueError("no video frames")
        first, last = min(times), max(times)
        span = (last - first + (last_duration or 0)) * tb
        if not last_duration:
            span += 1 / rate
        return Timeline(
            frames=len(times),
            duration_s=float(span),
            first_s=float(first * tb),
            start_s=float(start),
            frame_rate=Fraction(rate.numerator, rate.denominator),
            width=int(ctx.width),
            height=int(ctx.height),
            pix_fmt=ctx.pix_fmt,
            colour=(ctx.colorspace, ctx.color_primaries, ctx.color_trc, ctx.color_range),
        )


def playlist_files(text: str) -> list[str]:
    """The init segment and the media segments an HLS media playlist names, in order. Only
    plain file names beside the playlist are accepted: no paths, URLs or byte ranges."""
    if not text.startswith("#EXTM3U"):
        raise ValueError("not an HLS playlist")
    names: list[str] = []
    init: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#EXT-X-MAP:"):
            found = re.search(r'URI="([^"]*)"', line)
            if found is None or (init is not None and found.group(1) != init):
                raise ValueError("one EXT-X-MAP with a URI is expected")
            init = found.group(1)
        elif line.startswith("#EXT-X-BYTERANGE"):
            raise ValueError("byte-range playlists are not read")
        elif line and not line.startswith("#"):
            names.append(line)
    if init is None or not names:
        raise ValueError("no init segment or no media segments")
    for name in [init, *names]:
        if not SAFE_NAME.match(name) or ".." in name:
            raise ValueError(f"segment {name[:80]!r} is not a file beside the playlist")
    return [init, *names]


# ---------------------------------------------------------------- alignment and chunks


@dataclass(frozen=True)
class Alignment:
    """How one distorted file is put on the reference's grid."""

    multiplier: int
    resample_reference: bool
    resample_distorted: bool
    frames: int
    notes: list[str] = field(default_factory=list)


def _grid_frames(media: QualityMedia, rate: Fraction, resampled: bool) -> int:
    if not resampled:
        return media.frames
    return max(1, round(media.duration_s * rate))


def align(
    reference: QualityMedia,
    distorted: QualityMedia,
    mode: QualityAlign,
    *,
    label: str = "the distorted",
    multiplier: int = 1,
) -> Alignment:
    """Check (``strict``) or align (``auto``) the frame rates, variable rates and durations.

    Strict refuses any difference of rate and a difference of more than one frame in length,
    with the reason and what ``auto`` would do; auto resamples the distorted (and a variable
    rate reference) to the reference's nominal rate and compares the common duration, and
    says so in the notes."""
    grid = Fraction(reference.frame_rate) * multiplier
    notes: list[str] = []
    hint = 'send align "auto" to'
    resample_reference = reference.variable_frame_rate
    if resample_reference:
        if mode == "strict":
            raise QualityMismatch(
                f"the reference has a variable frame rate; {hint} resample it to "
                f"{reference.frame_rate} fps"
            )
        notes.append(f"the reference (variable frame rate) resampled to {_rate(grid)} fps")
    rate = Fraction(distorted.frame_rate)
    resample_distorted = distorted.variable_frame_rate or rate != grid
    if distorted.variable_frame_rate:
        if mode == "strict":
            raise QualityMismatch(
                f"{label} has a variable frame rate; {hint} resample it to {_rate(grid)} fps"
            )
        notes.append(f"{label} (variable frame rate) resampled to {_rate(grid)} fps")
    elif rate != grid:
        if mode == "strict":
            raise QualityMismatch(
                f"frame rates differ: the reference is {_rate(grid)} fps, {label} "
                f"{_rate(rate)} fps; {hint} resample {label} to the reference's rate"
            )
        notes.append(f"{label} resampled from {_rate(rate)} to {_rate(grid)} fps")
    ours = _grid_frames(reference, grid / multiplier, resample_reference) * multiplier
    theirs = _grid_frames(distorted, grid, resample_distorted)
    common = min(ours, theirs)
    if abs(ours - theirs) > 1:
        said = (
            f"the reference has {ours} frames ({float(ours / grid):.3f} s), {label} "
            f"{theirs} ({float(theirs / grid):.3f} s)"
        )
        if mode == "strict":
            raise QualityMismatch(
                f"durations differ: {said}; {hint} compare the common {float(common / grid):.3f} s"
            )
        notes.append(f"compared over the common {float(common / grid):.3f} s: {said}")
    return Alignment(multiplier, resample_reference, resample_distorted, common, notes)


def _rate(rate: Fraction) -> str:
    return f"{rate.numerator}/{rate.denominator}"


def plan_chunks(
    frames: int, rate: Fraction, chunk_seconds: float, max_chunks: int = MAX_CHUNKS
) -> list[QualityChunk]:
    """Reference frames in about ``chunk_seconds`` pieces (longer where the title would need
    more than ``max_chunks``); the last runs to the end of the shorter file."""
    frames = max(1, frames)
    per = max(1, round(chunk_seconds * rate))
    count = max(1, min(max_chunks, round(frames / per)))
    size = -(-frames // count)
    count = -(-frames // size)
    chunks = []
    for i in range(count):
        start = i * size
        end = None if i == count - 1 else start + size
        length = (end if end is not None else frames) - start
        chunks.append(
            QualityChunk(
                index=i, start_frame=start, end_frame=end, duration_s=round(length / rate, 6)
            )
        )
    return chunks


# ---------------------------------------------------------------- the ffmpeg run


@dataclass(frozen=True)
class GraphInput:
    """A local file and where its grid starts."""

    path: Path
    container: str
    first_s: float
    start_s: float
    colour: ColourTags = UNSPECIFIED


@dataclass(frozen=True)
class GraphPair:
    """One distorted input against the reference, at one or more sizes."""

    distorted: GraphInput
    rate: Fraction
    """The pair's grid: the reference's rate times ``multiplier``."""
    multiplier: int
    sizes: tuple[tuple[int, int, tuple[QualityMetric, ...]], ...]
    pix_fmt: str
    resample_reference: bool = False
    resample_distorted: bool = False
    reference_pre: tuple[str, ...] = ()
    """Filters on the reference before the grid (the rendition's deinterlacing)."""
    reference_scaled: tuple[str, ...] = ()
    """Filters on the scaled reference (the rendition's tone-mapping)."""


@dataclass(frozen=True)
class Window:
    """A pair's frames in one run: decoded ``[first, end)``, of which the chunk's own start
    ``front`` frames in and number ``frames`` (None: to the end)."""

    first: int
    end: int | None
    front: int
    frames: int | None


@dataclass(frozen=True)
class MeasurePlan:
    args: list[str]
    windows: list[Window]
    logs: list[dict[tuple[int, int], dict[QualityMetric, Path]]]
    """Per pair, per size, the log of each metric."""
    total_s: float


def window(chunk: QualityChunk, multiplier: int, context: bool) -> Window:
    lo = (chunk.start_frame - chunk.offset_frames) * multiplier
    hi = None if chunk.end_frame is None else (chunk.end_frame - chunk.offset_frames) * multiplier
    first = lo - 1 if context and lo > 0 else lo
    end = hi + 1 if context and hi is not None else hi
    return Window(first, end, lo - first, None if hi is None else hi - lo)


def _slot0(first_s: float, rate: Fraction) -> int:
    """The fps filter's first output slot of a whole-file run (it rounds half away from 0)."""
    x = first_s * rate
    return math.floor(x + Fraction(1, 2)) if x >= 0 else -math.floor(-x + Fraction(1, 2))


class _Side:
    """One side's grid: frame ``k`` is at ``anchor + k / rate`` (resampled: fps slots)."""

    def __init__(self, source: GraphInput, rate: Fraction, resample: bool) -> None:
        self.rate = rate
        self.resample = resample
        self.slot0 = _slot0(source.first_s, rate) if resample else 0
        self.first_s = source.first_s

    def time(self, k: float) -> float:
        if self.resample:
            return float((self.slot0 + Fraction(k)) / self.rate)
        return self.first_s + float(Fraction(k) / self.rate)

    def filters(self, win: Window, seek_abs: float | None) -> list[str]:
        chain = []
        if self.resample:
            slot = self.slot0
            if seek_abs is not None:
                slot = max(slot, math.floor(seek_abs * self.rate))
            start = slot / self.rate
            chain.append(f"fps=fps={_rate(self.rate)}:start_time={float(start):.6f}")
        trim = []
        if win.first > 0:
            trim.append(f"start={self.time(win.first - 0.5):.6f}")
        if win.end is not None:
            trim.append(f"end={self.time(win.end - 0.5):.6f}")
        if trim:
            chain.append("trim=" + ":".join(trim))
        chain += [f"settb=expr={self.rate.denominator}/{self.rate.numerator}", "setpts=N"]
        return chain


def _fan(label: str, chain: list[str], outputs: list[str]) -> str:
    """``[label]chain`` ending in one output or a split to several."""
    if len(outputs) > 1:
        chain = [*chain, f"split={len(outputs)}"]
    body = ",".join(chain) or "null"
    return f"[{label}]{body}" + "".join(f"[{o}]" for o in outputs)


def _input(source: GraphInput, seek_abs: float | None) -> list[str]:
    args = ["-noaccurate_seek"]
    if seek_abs is not None and seek_abs - source.start_s > 0:
        args += ["-ss", f"{seek_abs - source.start_s:.6f}"]
    return [*args, "-protocol_whitelist", "file", "-f", source.container,
            "-i", f"file:{source.path}"]  # fmt: skip


def measure_plan(
    reference: GraphInput,
    pairs: Sequence[GraphPair],
    chunk: QualityChunk,
    logs: Path,
    *,
    context: bool = True,
    threads: int = 1,
) -> MeasurePlan:
    """The ffmpeg arguments that measure one chunk of every pair, and where each log goes.

    Input 0 is the reference, decoded once and split to the pairs; input ``i`` the ``i``-th
    distorted file. Nothing here comes from a request: paths are checked local files (and
    ``file:`` URLs with only the file protocol), numbers are numbers."""
    if not SAFE_PATH.match(str(logs)):
        raise ValueError(f"log folder {logs} has characters the filter graph would misread")
    windows = [window(chunk, p.multiplier, context) for p in pairs]
    ref_sides = [_Side(reference, p.rate, p.resample_reference) for p in pairs]
    dist_sides = [_Side(p.distorted, p.rate, p.resample_distorted) for p in pairs]

    def seek(side: _Side, win: Window) -> float | None:
        if win.first <= 0:
            return None
        return side.time(win.first - 2) - SEEK_MARGIN_S

    ref_seeks = [seek(s, w) for s, w in zip(ref_sides, windows, strict=True)]
    ref_seek = None if None in ref_seeks else min(s for s in ref_seeks if s is not None)
    # -xerror: a frame that does not decode fails the measurement (it is an encode job's
    # decode check when quality is on), never a number computed over a partial picture
    args = ["-xerror", "-copyts", *_input(reference, ref_seek)]
    dist_seeks = [seek(s, w) for s, w in zip(dist_sides, windows, strict=True)]
    for pair, dist_seek in zip(pairs, dist_seeks, strict=True):
        args += _input(pair.distorted, dist_seek)

    graph: list[str] = []
    outputs: list[str] = []
    all_logs: list[dict[tuple[int, int], dict[QualityMetric, Path]]] = []
    refs = [f"ref{i}" for i in range(len(pairs))]
    graph.append(_fan("0:v", [], refs))
    for i, pair in enumerate(pairs):
        sizes = [f"p{i}r{j}" for j in range(len(pair.sizes))]
        dists = [f"p{i}d{j}" for j in range(len(pair.sizes))]
        ref_tags = matched_tags(reference.colour, pair.distorted.colour)
        dist_tags = matched_tags(pair.distorted.colour, reference.colour)
        graph.append(
            _fan(refs[i], [*ref_tags, *pair.reference_pre,
                           *ref_sides[i].filters(windows[i], ref_seek)], sizes)
        )  # fmt: skip
        graph.append(
            _fan(f"{i + 1}:v", [*dist_tags, *dist_sides[i].filters(windows[i], dist_seeks[i])],
                 dists)
        )  # fmt: skip
        pair_logs: dict[tuple[int, int], dict[QualityMetric, Path]] = {}
        for j, (width, height, metrics) in enumerate(pair.sizes):
            scale = f"scale={width}:{height}:flags=bicubic"
            fmt = f"format={compare_format(pair.pix_fmt)}"
            r_out = [f"p{i}r{j}m{k}" for k in range(len(metrics))]
            d_out = [f"p{i}d{j}m{k}" for k in range(len(metrics))]
            graph.append(_fan(sizes[j], [scale, *pair.reference_scaled, fmt], r_out))
            graph.append(_fan(dists[j], [scale, fmt], d_out))
            found: dict[QualityMetric, Path] = {}
            for k, metric in enumerate(metrics):
                log = (
                    logs / f"p{i}-{width}x{height}-{metric}.{'json' if metric == 'vmaf' else 'txt'}"
                )
                found[metric] = log
                out = f"o{i}x{j}x{k}"
                measure = _metric_filter(metric, log, width, height, threads)
                graph.append(f"[{d_out[k]}][{r_out[k]}]{measure}[{out}]")
                outputs.append(out)
            pair_logs[(width, height)] = found
        all_logs.append(pair_logs)
    args += ["-filter_complex", ";".join(graph)]
    for out in outputs:
        args += ["-map", f"[{out}]"]
    args += ["-fps_mode", "passthrough", "-f", "null", "-"]
    return MeasurePlan(args=args, windows=windows, logs=all_logs, total_s=chunk.duration_s)


def _metric_filter(metric: QualityMetric, log: Path, width: int, height: int, threads: int) -> str:
    if metric == "vmaf":
        model = vmaf_model(width, height)
        return (
            f"libvmaf=model=version={model}:log_fmt=json:log_path={log}"
            f":n_threads={max(1, threads)}:shortest=1"
        )
    if metric == "psnr":
        # Per-frame MSE from the frame metadata (6 decimals): the stats file rounds it to
        # 0.01, which moves a high-quality frame's PSNR by more than 0.05 dB.
        return f"psnr=shortest=1,metadata=mode=print:file={log}"
    return f"ssim=stats_file={log}:shortest=1"


# ---------------------------------------------------------------- the logs


def read_vmaf(path: Path) -> list[float]:
    """libvmaf's JSON log: the pooled model score of each frame, in order."""
    try:
        frames = json.loads(path.read_text())["frames"]
        return [float(f["metrics"]["vmaf"]) for f in frames]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise QualityLogError(f"libvmaf log {path.name}: {err}") from None


PSNR_KEYS = {"lavfi.psnr.mse.y": "y", "lavfi.psnr.mse.u": "u", "lavfi.psnr.mse.v": "v",
             "lavfi.psnr.mse_avg": "average"}  # fmt: skip


def read_psnr(path: Path) -> dict[str, list[float]]:
    """The psnr filter's per-frame MSE (Y, U, V and the plane-weighted average) as the
    ``metadata`` filter printed it."""
    found: dict[str, list[float]] = {key: [] for key in PSNR_KEYS.values()}
    frames = 0
    try:
        for line in path.read_text().splitlines():
            if line.startswith("frame:"):
                frames += 1
                continue
            key, _, value = line.partition("=")
            if key in PSNR_KEYS:
                found[PSNR_KEYS[key]].append(float(value))
    except (OSError, ValueError) as err:
        raise QualityLogError(f"psnr log {path.name}: {err}") from None
    if any(len(values) != frames for values in found.values()):
        raise QualityLogError(f"psnr log {path.name}: a frame without its four values")
    return found


SSIM_LINE = re.compile(r"Y:(\S+) U:(\S+) V:(\S+) All:(\S+)")


def read_ssim(path: Path) -> dict[str, list[float]]:
    """The ssim filter's stats file: per frame ``n:1 Y:... U:... V:... All:... (dB)``."""
    found: dict[str, list[float]] = {"y": [], "u": [], "v": [], "all": []}
    try:
        for line in path.read_text().splitlines():
            match = SSIM_LINE.search(line)
            if match is None:
                continue
            for key, value in zip(found, match.groups(), strict=True):
                found[key].append(float(value))
    except (OSError, ValueError) as err:
        raise QualityLogError(f"ssim log {path.name}: {err}") from None
    return found


def read_logs(logs: dict[QualityMetric, Path], win: Window) -> tuple[int, dict[str, object]]:
    """One size's metrics of one pair, the context frames dropped: ``(frames, values)`` with
    ``vmaf`` a list, ``psnr`` and ``ssim`` lists per component."""
    values: dict[str, object] = {}
    counts: dict[str, int] = {}
    keep = slice(win.front, None if win.frames is None else win.front + win.frames)
    for metric, path in logs.items():
        if metric == "vmaf":
            scores = read_vmaf(path)
            counts[metric] = len(scores)
            values[metric] = scores[keep]
        else:
            table = read_psnr(path) if metric == "psnr" else read_ssim(path)
            counts[metric] = len(next(iter(table.values())))
            values[metric] = {k: v[keep] for k, v in table.items()}
    if len(set(counts.values())) > 1:
        raise QualityLogError(f"the metrics measured different numbers of frames: {counts}")
    total = next(iter(counts.values()), 0)
    return max(0, min(total - win.front, win.frames if win.frames is not None else total)), values


# ---------------------------------------------------------------- pooling


def percentile(values: Sequence[float], p: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default)."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    if ordered[low] == ordered[high]:
        return ordered[low]
    return ordered[low] + (rank - low) * (ordered[high] - ordered[low])


def harmonic_mean(values: Sequence[float]) -> float:
    """libvmaf's: ``1 / mean(1 / (x + 1)) - 1``, defined for scores of 0."""
    return len(values) / sum(1 / (v + 1) for v in values) - 1


def psnr_of(mse: float, peak: int) -> float:
    return math.inf if mse <= 0 else 10 * math.log10(peak * peak / mse)


def _number(value: float) -> float | None:
    return round(value, 6) if math.isfinite(value) else None


def summarize(
    frame_values: Sequence[float],
    chunks: Sequence[tuple[int, int, int]],
    rate: Fraction,
    pool: Callable[[int, int], float],
    *,
    harmonic: bool = False,
) -> MetricSummary:
    """Mean (``pool`` over every frame), harmonic mean, 1st and 5th percentile, minimum and the
    worst chunk (lowest pooled value) with its time. ``chunks`` are ``(index, first, end)``
    frame ranges; ``pool(first, end)`` pools the frames in one."""
    n = len(frame_values)
    if n == 0:
        return MetricSummary(mean=None, p1=None, p5=None, min=None)
    worst: WorstChunk | None = None
    for index, first, end in chunks:
        if end <= first:
            continue
        value = pool(first, end)
        if worst is None or (worst.value is not None and value < worst.value):
            worst = WorstChunk(
                index=index,
                start_s=round(first / rate, 6),
                end_s=round(end / rate, 6),
                value=_number(value),
            )
    return MetricSummary(
        mean=_number(pool(0, n)),
        harmonic_mean=_number(harmonic_mean(frame_values)) if harmonic else None,
        p1=_number(percentile(frame_values, 1)),
        p5=_number(percentile(frame_values, 5)),
        min=_number(min(frame_values)),
        worst_chunk=worst,
    )


def _mean_pool(values: Sequence[float]) -> Callable[[int, int], float]:
    return lambda first, end: sum(values[first:end]) / (end - first)


def vmaf_summary(
    scores: Sequence[float], chunks: Sequence[tuple[int, int, int]], rate: Fraction
) -> MetricSummary:
    return summarize(scores, chunks, rate, _mean_pool(scores), harmonic=True)


def psnr_summary(
    mse: dict[str, list[float]],
    peak: int,
    chunks: Sequence[tuple[int, int, int]],
    rate: Fraction,
) -> tuple[PsnrSummary, dict[str, list[float | None]]]:
    """Each component as ffmpeg's psnr filter pools it, ``10 log10(peak^2 / mean(MSE))``,
    with the per-frame PSNR in dB (None where a frame is identical)."""
    summaries = {}
    per_frame: dict[str, list[float | None]] = {}
    for key in ("y", "u", "v", "average"):
        values = mse[key]
        db = [psnr_of(m, peak) for m in values]

        def pool(first: int, end: int, values: list[float] = values) -> float:
            return psnr_of(sum(values[first:end]) / (end - first), peak)

        summaries[key] = summarize(db, chunks, rate, pool)
        per_frame[key] = [_number(v) for v in db]
    return PsnrSummary(**summaries), per_frame


def ssim_summary(
    ssim: dict[str, list[float]], chunks: Sequence[tuple[int, int, int]], rate: Fraction
) -> SsimSummary:
    """Means per component as ffmpeg's ssim filter reports them, and All's in dB."""
    parts = {key: summarize(ssim[key], chunks, rate, _mean_pool(ssim[key])) for key in ssim}
    mean_all = parts["all"].mean
    db = None
    if mean_all is not None and mean_all < 1:
        db = round(-10 * math.log10(1 - mean_all), 6)
    return SsimSummary(y=parts["y"], u=parts["u"], v=parts["v"], all=parts["all"], all_db=db)
