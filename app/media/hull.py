"""Per-title ladders: where to sample a title, the rate-quality hull, and the rungs it gives.

Pure functions of numbers (and the project's models), unit-tested without media; the
activities in ``app.stratum.functions.ladder`` run them.

- **Budget**: the samples are sized so that the analysis costs about ``ANALYSIS_BUDGET`` of
  the fixed ladder's encode (estimated in encoded pixels: see ``sample_plan``): four 2 s
  samples for a title of about four minutes or more, fewer and shorter ones (more of them
  before longer ones, then one shorter) for a shorter title, never less than one of
  ``MIN_SAMPLE_S``.
- **Samples**: a few short pieces, one in the middle of each of ``count`` equal spans of the
  title (spread over it), moved within its span so that it neither starts nor ends within
  ``EDGE_S`` of a scene cut (a shot fragment of a few frames is no sample of the shot), using
  the scene scores between keyframes that the split's analysis reads.
- **Points**: every sample encoded at a resolution and quality point (CRF), its VMAF at the
  display size; pooled per resolution and CRF over the samples (bits over seconds, VMAF over
  frames). Only the points that can bracket a rung are measured, in the steps
  ``next_points`` takes: the top resolution at one CRF first (``probe_crf``); where it
  reaches ``top_vmaf`` at or below ``min_kbps`` (``one_rung_at_top``) the title is one rung
  there and nothing else is measured; else the top's other points that can still bracket the
  top or the bottom rung (``top_crfs``), then each smaller resolution down to its anchor at
  the floor (``lower_crfs``). Most of the cost is VMAF at the display size, the same per
  point at any resolution.
- **Hull**: the upper convex hull of the pooled (kbps, VMAF) points across resolutions,
  recorded. Between the vertices of its own hull a resolution's quality is interpolated
  linearly in log-bitrate (its curve); the quality the title gets at a bitrate is the best
  resolution's there (the upper envelope of the curves: the hull's vertices are on it, and
  it is at or above the hull's straight chords, which would under-promise a rung between two
  vertices), and that resolution is the rung's.
- **Rungs**: the top one at the lowest bitrate that reaches ``top_vmaf``, or ``max_kbps``
  first; the bottom at ``min_kbps``; between them rungs evenly spaced in VMAF. The most rungs
  (up to ``max_rungs``) for which every neighbour is at least ``MIN_VMAF_STEP`` points and a
  ``MIN_RATIO`` bitrate ratio away; one rung where even two would be closer than that.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from app.core.models import Codec, CustomProfile, LadderPoint, LadderRung
from app.media.chunking import SCENE_THRESHOLD, Keyframe

DEFAULT_SAMPLES = 4
"""Samples of a long title; a short one gets fewer (they cover at most half of it)."""
DEFAULT_SAMPLE_S = 2.0
"""A sample's length where the budget allows."""
SPREAD_SAMPLE_S = 1.0
"""Samples are this long, as many as the budget holds, before they are made longer."""
MIN_SAMPLE_S = 0.5
"""The shortest sample: a title too short to afford one within the budget still gets it."""
ANALYSIS_BUDGET = 0.3
"""The analysis' cost at most, as a share of the fixed ladder's encode."""
VMAF_COST = 0.75
"""One VMAF comparison at the display size, in encodes (the rungs' preset) of a frame of that
size: 0.53 (noise) to 1.33 (a mostly still picture) measured with x264 ``fast`` at 720p."""
EDGE_S = 0.5
"""No sample starts or ends within this of a scene cut."""
MIN_VMAF_STEP = 3.0
"""Neighbouring rungs closer than this in VMAF are one rung too many (half a JND, which is
about 6 VMAF points)."""
MIN_RATIO = 1.5
"""Neighbouring rungs closer than this in bitrate are one rung too many."""
MIN_KBPS = 64
"""The lowest bitrate a profile may have (``CustomProfile``)."""
KBPS_STEP = 10
"""Rung bitrates are rounded to this."""
DEFAULT_CRFS: dict[Codec, tuple[int, ...]] = {
    "h264": (20, 27, 34, 41),
    "hevc": (22, 29, 36, 43),
    "av1": (24, 35, 46, 57),
}
"""Quality points of the analysis encodes: from about VMAF 97 down to the 30s on typical
content, 2 to 2.5x in bitrate apart."""
MAX_RESOLUTIONS = 6
"""Resolutions measured at most (the fixed ladder's, top and bottom always)."""


# ---------------------------------------------------------------- samples


@dataclass(frozen=True)
class SamplePlan:
    count: int
    seconds: float
    cost_share: float
    """The analysis' estimated cost over the fixed ladder's encode."""


def sample_plan(
    duration_s: float,
    ladder_areas: Sequence[int],
    measured_areas: Sequence[int],
    display_area: int,
    points: int,
    budget: float = ANALYSIS_BUDGET,
) -> SamplePlan:
    """How many samples and how long, so that the analysis costs about ``budget`` of the
    encode it plans, up to ``DEFAULT_SAMPLES`` of ``DEFAULT_SAMPLE_S`` and half the title.

    Spread before length: as many samples of ``SPREAD_SAMPLE_S`` as the budget holds (to the
    nearest: up to a quarter over it), then longer ones. Two 1 s samples of a 60 s zoom that
    gets harder all along predicted its rungs within 2 VMAF points, one of 1.9 s in the middle
    7 to 12 points too high, for about the same cost (bench/README.md). A title that cannot
    afford one gets one as long as it affords, ``MIN_SAMPLE_S`` at least: on 20 s clips, one
    of 0.5 s predicted the rungs within 3.9 points, one of 1 s within 2.2 for 1.3 to 1.6x the
    CPU.

    The estimate counts encoded pixels: a second of samples costs ``points`` encodes at every
    measured resolution, each compared at the display size (``VMAF_COST``); a second of
    title, one encode at every rung of the fixed ladder (the auto ladder is not known yet).
    The rungs' preset is the analysis' too, so the encoder's speed cancels out. It counts
    every point: the analysis measures only those that can bracket a rung (a one-rung title,
    one per sample), so it costs less."""
    per_second = points * (sum(measured_areas) + VMAF_COST * len(measured_areas) * display_area)
    encode = max(duration_s, 0.0) * sum(ladder_areas)
    affordable = budget * encode / per_second if per_second else 0.0
    total = min(affordable, DEFAULT_SAMPLES * DEFAULT_SAMPLE_S, duration_s / 2)
    if total < SPREAD_SAMPLE_S:
        count, seconds = 1, max(total, MIN_SAMPLE_S)
    else:
        count = max(1, min(DEFAULT_SAMPLES, round(total / SPREAD_SAMPLE_S)))
        seconds = max(total / count, SPREAD_SAMPLE_S)
    seconds = min(seconds, DEFAULT_SAMPLE_S, max(duration_s, 0.0))
    seconds = math.floor(seconds * 10) / 10 if seconds >= MIN_SAMPLE_S else seconds
    share = count * seconds * per_second / encode if encode else math.inf
    return SamplePlan(count=count, seconds=seconds, cost_share=round(share, 3))


def sample_count(duration_s: float, seconds: float, maximum: int = DEFAULT_SAMPLES) -> int:
    """``maximum`` samples where the title is long enough, fewer so that they cover at most
    half of it, and at least one."""
    return max(1, min(maximum, int(duration_s // (2 * seconds))))


def scene_cuts(keyframes: Iterable[Keyframe], threshold: float = SCENE_THRESHOLD) -> list[float]:
    return sorted(k.time_s for k in keyframes if k.scene_score >= threshold)


def choose_samples(
    keyframes: Sequence[Keyframe],
    duration_s: float,
    count: int,
    seconds: float,
    *,
    edge_s: float = EDGE_S,
    threshold: float = SCENE_THRESHOLD,
) -> list[float]:
    """Start times of ``count`` samples of ``seconds`` each: the middle of each of ``count``
    equal spans of the title, or the nearest start in that span whose first and last
    ``edge_s`` hold no scene cut (a cut right at the start counts). A title no longer than a
    sample is one sample from 0."""
    if duration_s <= seconds or count < 1:
        return [0.0]
    cuts = scene_cuts(keyframes, threshold)
    last = duration_s - seconds
    span = duration_s / count

    def clean(start: float) -> bool:
        end = start + seconds
        return not any(
            start - 1e-6 <= c < start + edge_s or end - edge_s < c <= end + 1e-6 for c in cuts
        )

    starts: list[float] = []
    for i in range(count):
        low = min(max(i * span, 0.0), last)
        high = min(max((i + 1) * span - seconds, low), last)
        ideal = min(max(i * span + span / 2 - seconds / 2, low), high)
        candidates = [ideal] + [
            s for c in cuts for s in (c + edge_s, c - seconds - edge_s) if low <= s <= high
        ]
        good = [s for s in candidates if clean(s)]
        start = min(good, key=lambda s: (abs(s - ideal), s)) if good else ideal
        starts.append(round(start, 3))
    return starts


# ---------------------------------------------------------------- points and the hull


def rate_bytes(size_bytes: int, keyframe_bytes: int, keyframe_weight: float) -> float:
    """The bytes a bitrate is computed from: the keyframes' at their weight (``LadderPoint``)."""
    return size_bytes - keyframe_bytes * (1 - keyframe_weight)


def pool(points: Sequence[LadderPoint]) -> list[LadderPoint]:
    """Per resolution and CRF, over the samples: the (weighted) bits over the seconds, VMAF
    (and its harmonic mean) weighted by frames."""
    groups: dict[tuple[int, int, int], list[LadderPoint]] = {}
    for p in points:
        groups.setdefault((p.width, p.height, p.crf), []).append(p)
    pooled = []
    for (width, height, crf), group in sorted(groups.items()):
        frames = sum(p.frames for p in group)
        seconds = sum(p.duration_s for p in group)
        size = sum(p.size_bytes for p in group)
        key = sum(p.keyframe_bytes for p in group)
        weight = sum(p.keyframe_bytes * p.keyframe_weight for p in group) / key if key else 1.0
        bits = 8 * rate_bytes(size, key, weight)
        pooled.append(
            LadderPoint(
                width=width,
                height=height,
                crf=crf,
                kbps=round(bits / 1000 / seconds, 3) if seconds else 0.0,
                vmaf=round(sum(p.vmaf * p.frames for p in group) / frames, 4),
                vmaf_harmonic_mean=round(
                    sum(p.vmaf_harmonic_mean * p.frames for p in group) / frames, 4
                ),
                frames=frames,
                duration_s=round(seconds, 6),
                size_bytes=size,
                keyframe_bytes=key,
                keyframe_weight=round(weight, 6),
            )
        )
    return pooled


def upper_hull(points: Sequence[LadderPoint]) -> list[LadderPoint]:
    """The upper convex hull of (kbps, VMAF), by bitrate, up to its best VMAF: the points no
    mix of two others beats. Of two points at one bitrate the better counts."""
    ordered = sorted(points, key=lambda p: (p.kbps, -p.vmaf))
    hull: list[LadderPoint] = []
    for p in ordered:
        if hull and p.kbps == hull[-1].kbps:
            continue
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # b is on or under the chord from a to p
            if (b.vmaf - a.vmaf) * (p.kbps - a.kbps) <= (p.vmaf - a.vmaf) * (b.kbps - a.kbps):
                hull.pop()
            else:
                break
        hull.append(p)
    if not hull:
        return []
    best = max(range(len(hull)), key=lambda i: (hull[i].vmaf, -i))
    return hull[: best + 1]


def mark_hull(points: Sequence[LadderPoint]) -> list[LadderPoint]:
    """The points with ``on_hull`` set for the vertices of their own hull."""
    vertices = {(p.width, p.height, p.crf) for p in upper_hull(points)}
    return [p.model_copy(update={"on_hull": (p.width, p.height, p.crf) in vertices})
            for p in points]  # fmt: skip


@dataclass(frozen=True)
class Curve:
    """One resolution's rate-quality curve: the vertices of its own upper hull, by bitrate
    (VMAF rising), interpolated linearly in log-bitrate. An encode under the hull is no
    point of it: a low CRF whose VBV starved the frames after a huge keyframe gave fewer
    bits and less quality than the next CRF up, and would pull the curve down between its
    neighbours."""

    width: int
    height: int
    kbps: tuple[float, ...]
    vmaf: tuple[float, ...]

    @property
    def short_side(self) -> int:
        return min(self.width, self.height)

    @property
    def low(self) -> float:
        return self.kbps[0]

    @property
    def high(self) -> float:
        return self.kbps[-1]

    def at(self, kbps: float) -> float | None:
        """VMAF at ``kbps``: None below the measured range, its best above it (more bits
        never promise less)."""
        if kbps < self.low:
            return None
        for i in range(1, len(self.kbps)):
            if kbps <= self.kbps[i]:
                return _between(self.kbps[i - 1], self.vmaf[i - 1], self.kbps[i], self.vmaf[i],
                                kbps)  # fmt: skip
        return self.vmaf[-1]

    def below(self, kbps: float) -> float:
        """VMAF below the measured range: the lowest two points' line in log-bitrate, at
        least 0 (a guess, marked as one)."""
        if len(self.kbps) < 2:
            return self.vmaf[0]
        value = _between(self.kbps[0], self.vmaf[0], self.kbps[1], self.vmaf[1], kbps)
        return max(0.0, min(value, self.vmaf[0]))


def _between(k0: float, v0: float, k1: float, v1: float, kbps: float) -> float:
    if k1 <= k0:
        return v1
    t = (math.log(kbps) - math.log(k0)) / (math.log(k1) - math.log(k0))
    return v0 + t * (v1 - v0)


def curves(points: Sequence[LadderPoint]) -> list[Curve]:
    """Per resolution (largest last), from pooled points with a positive bitrate."""
    groups: dict[tuple[int, int], list[LadderPoint]] = {}
    for p in points:
        if p.kbps > 0:
            groups.setdefault((p.width, p.height), []).append(p)
    found = []
    for (width, height), group in groups.items():
        hull = upper_hull(group)
        found.append(Curve(width, height, tuple(p.kbps for p in hull), tuple(p.vmaf for p in hull)))
    return sorted(found, key=lambda c: (c.short_side, c.width * c.height))


@dataclass(frozen=True)
class Pick:
    """A resolution at a bitrate and its predicted VMAF."""

    curve: Curve
    vmaf: float
    extrapolated: bool = False


def best_at(found: Sequence[Curve], kbps: float, max_short_side: int | None = None) -> Pick:
    """The resolution whose curve is highest at ``kbps`` (the envelope), of those no larger
    than ``max_short_side`` (the smallest where none is). Below every curve's range: the one
    reaching lowest, extrapolated (and marked so)."""
    usable = [c for c in found if max_short_side is None or c.short_side <= max_short_side]
    usable = usable or [found[0]]
    inside = [(v, c) for c in usable if (v := c.at(kbps)) is not None]
    if inside:
        value, curve = max(inside, key=lambda vc: (vc[0], vc[1].short_side))
        return Pick(curve, value)
    curve = min(usable, key=lambda c: (c.low, c.short_side))
    return Pick(curve, curve.below(kbps), extrapolated=True)


def envelope(found: Sequence[Curve], kbps: float) -> float:
    return best_at(found, kbps).vmaf


def bitrate_for(found: Sequence[Curve], vmaf: float, low: float, high: float) -> float | None:
    """The lowest bitrate in ``[low, high]`` where the envelope reaches ``vmaf`` (it never
    falls with the bitrate), by bisection in log-bitrate; None where ``high`` does not."""
    if envelope(found, high) < vmaf:
        return None
    if envelope(found, low) >= vmaf:
        return low
    lo, hi = math.log(low), math.log(high)
    for _ in range(60):
        mid = (lo + hi) / 2
        if envelope(found, math.exp(mid)) >= vmaf:
            hi = mid
        else:
            lo = mid
    return math.exp(hi)


def one_rung_at_top(points: Sequence[LadderPoint], top_vmaf: float, min_kbps: int) -> float | None:
    """The bitrate at which one resolution's points (the top's, of every sample) reach
    ``top_vmaf``, where that is at or below ``min_kbps`` (as ``choose_rungs`` rounds it);
    None otherwise.

    Such a title is one rung (``choose_rungs``), and a lower resolution could only move it to
    a few bits less, below the floor the request set for every rung: not worth measuring."""
    found = curves(pool(points))
    if not found:
        return None
    top = bitrate_for(found, top_vmaf, min(c.low for c in found), max(c.high for c in found))
    return top if top is not None and round_kbps(top) <= min_kbps else None


def probe_crf(crfs: Sequence[int]) -> int:
    """The top resolution's first quality point, the grid's second (x264's CRF 27): about VMAF
    95 on simple content, so one encode tells a one-rung title (``one_rung_at_top``)."""
    ordered = sorted(crfs)
    return ordered[(len(ordered) - 1) // 2]


def top_crfs(
    points: Sequence[LadderPoint], crfs: Sequence[int], top_vmaf: float, min_kbps: int,
    max_kbps: int,
) -> list[int]:  # fmt: skip
    """The top resolution's quality points still worth measuring, from its (pooled) points so
    far: better ones unless the best measured already reaches ``top_vmaf`` or ``max_kbps``
    (the top rung is bracketed), worse ones unless the worst measured is at or below
    ``min_kbps`` (so is the bottom rung)."""
    best = min(points, key=lambda p: p.crf)
    worst = max(points, key=lambda p: p.crf)
    wanted = []
    if best.vmaf < top_vmaf and best.kbps < max_kbps:
        wanted += [c for c in crfs if c < best.crf]
    if worst.kbps > min_kbps:
        wanted += [c for c in crfs if c > worst.crf]
    return sorted(wanted)


def lower_crfs(
    top: Sequence[LadderPoint], crfs: Sequence[int], area_ratio: float, min_kbps: int
) -> list[int]:
    """A smaller resolution's quality points worth measuring, from the top one's (pooled):
    down in quality to the first whose bitrate is surely at or below ``min_kbps``, as the
    top's at that CRF times ``area_ratio`` (the bits fall at least as fast as the area:
    0.13-0.38 of the top's at 0.44 of its area, 0.04-0.25 at 0.25; bench/README.md). That
    point anchors the curve at the floor; worse ones would be under every rung."""
    kbps = {p.crf: p.kbps for p in top}
    wanted = []
    for crf in sorted(crfs):
        wanted.append(crf)
        if crf in kbps and kbps[crf] * area_ratio <= min_kbps:
            break
    return wanted


@dataclass(frozen=True)
class NextPoints:
    measure: list[tuple[tuple[int, int], list[int]]]
    """(width, height) and the CRFs to measure it at, for every sample; none: enough."""
    notes: list[str]


def next_points(
    points: Sequence[LadderPoint], sizes: Sequence[tuple[int, int]], crfs: Sequence[int],
    top_vmaf: float, min_kbps: int, max_kbps: int,
) -> NextPoints:  # fmt: skip
    """What to measure next, from the points so far (of every sample) and the sizes (the top
    first): the top at ``probe_crf``; nothing more where that makes a one-rung ladder
    (``one_rung_at_top``, checked again after each step); the top's other points that can
    still bracket a rung (``top_crfs``); then every smaller size, down in quality to its
    anchor at the floor (``lower_crfs``); then nothing. The notes say what is left and why."""
    (top, *lower), found = sizes, {(p.width, p.height) for p in points}
    measured = [p for p in points if (p.width, p.height) == top]
    if not measured:
        return NextPoints([(top, [probe_crf(crfs)])], [])
    if any(size in found for size in lower):
        return NextPoints([], [])
    name = _size(top)
    done = sorted({p.crf for p in measured})
    skipped = crf_list(c for c in crfs if c not in done)
    kbps = one_rung_at_top(measured, top_vmaf, min_kbps)
    if kbps is not None:
        smaller = ", ".join(_size(s) for s in lower)
        return NextPoints(
            [],
            [
                f"{name} reaches VMAF {top_vmaf:g} at {kbps:.0f} kb/s (CRF {crf_list(done)} "
                f"measured), at or below min_kbps {min_kbps}: one rung at that size"
                + (f"; {smaller} not measured (the bits a smaller size could save are below "
                   "the floor)" if smaller else "")
            ],
        )  # fmt: skip
    pooled = pool(measured)
    more = top_crfs(pooled, crfs, top_vmaf, min_kbps, max_kbps)
    if more:
        return NextPoints([(top, more)], [])
    notes = []
    if skipped:
        notes.append(f"{name} not measured at CRF {skipped}: its other points bracket every rung")
    measure = []
    for size in lower:
        wanted = lower_crfs(pooled, crfs, size[0] * size[1] / (top[0] * top[1]), min_kbps)
        measure.append((size, wanted))
        if left := crf_list(c for c in crfs if c not in wanted):
            notes.append(
                f"{_size(size)} not measured at CRF {left}: at or below min_kbps {min_kbps} by "
                f"{name}'s bitrate times the area"
            )
    return NextPoints(measure, notes)


def _size(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def crf_list(crfs: Iterable[int]) -> str:
    return "/".join(str(c) for c in crfs)


# ---------------------------------------------------------------- rungs


def round_kbps(kbps: float) -> int:
    return max(MIN_KBPS, round(kbps / KBPS_STEP) * KBPS_STEP)


@dataclass(frozen=True)
class Ladder:
    rungs: list[LadderRung]
    notes: list[str]


def choose_rungs(
    points: Sequence[LadderPoint],
    *,
    top_vmaf: float,
    min_kbps: int,
    max_kbps: int,
    max_rungs: int,
    min_step: float = MIN_VMAF_STEP,
    min_ratio: float = MIN_RATIO,
) -> Ladder:
    """The rungs, bottom first, from the pooled points (see the module's docstring)."""
    found = curves(points)
    if not found:
        raise ValueError("no quality point was measured")
    notes: list[str] = []
    highest = max(c.high for c in found)
    top = bitrate_for(found, top_vmaf, min(c.low for c in found), highest)
    capped = False
    if top is None:
        best = max(found, key=lambda c: c.vmaf[-1])
        top = best.kbps[best.vmaf.index(best.vmaf[-1])]
        said = (
            f"VMAF {top_vmaf:g} was not reached by any encode (the best: {best.vmaf[-1]:.1f} at "
            f"{best.short_side}p, {top:.0f} kb/s)"
        )
        capped = top > max_kbps
        notes.append(
            f"{said}: the top rung is capped at max_kbps {max_kbps}"
            if capped
            else f"{said}: the top rung is that point's bitrate"
        )
    elif top > max_kbps:
        capped = True
        notes.append(
            f"VMAF {top_vmaf:g} needs about {top:.0f} kb/s: the top rung is capped at "
            f"max_kbps {max_kbps}"
        )
    top_kbps = max_kbps if capped else min(round_kbps(top), max_kbps)
    if top_kbps <= min_kbps:
        notes.append(
            f"max_kbps is min_kbps ({min_kbps}): one rung"
            if capped
            else f"VMAF {top_vmaf:g} is reached at {top_kbps} kb/s, at or below min_kbps "
            f"{min_kbps}: one rung"
        )
        return Ladder(_rungs(found, [top_kbps]), notes)
    if max_rungs <= 1:
        return Ladder(_rungs(found, [top_kbps]), notes)
    v_top, v_bottom = envelope(found, top_kbps), envelope(found, min_kbps)
    for n in range(max_rungs, 1, -1):
        targets = [v_bottom + (v_top - v_bottom) * k / (n - 1) for k in range(n)]
        inner = [bitrate_for(found, t, float(min_kbps), float(top_kbps)) for t in targets[1:-1]]
        bitrates = [min_kbps, *(round_kbps(b) for b in inner if b is not None), top_kbps]
        if len(bitrates) != n:
            continue
        rungs = _rungs(found, bitrates)
        if _spaced(rungs, min_step, min_ratio):
            return Ladder(rungs, notes)
    notes.append(
        f"{min_kbps} and {top_kbps} kb/s are less than {min_step:g} VMAF points or "
        f"{min_ratio:g}x apart: one rung"
    )
    return Ladder(_rungs(found, [top_kbps]), notes)


def _rungs(found: Sequence[Curve], bitrates: Sequence[int]) -> list[LadderRung]:
    """Each bitrate at the best resolution there, heights never falling as bitrates rise
    (from the top down, a rung takes the best resolution no larger than the one above)."""
    picks: list[Pick] = []
    ceiling: int | None = None
    for kbps in sorted(bitrates, reverse=True):
        pick = best_at(found, kbps, ceiling)
        picks.append(pick)
        ceiling = pick.curve.short_side
    picks.reverse()
    heights = [p.curve.short_side for p in picks]
    rungs = []
    for kbps, pick in zip(sorted(bitrates), picks, strict=True):
        c = pick.curve
        side = c.short_side
        name = f"{side}p" if heights.count(side) == 1 else f"{side}p-{kbps}k"
        rungs.append(
            LadderRung(
                name=name,
                width=c.width,
                height=c.height,
                bitrate_kbps=kbps,
                predicted_vmaf=round(pick.vmaf, 2),
                extrapolated=pick.extrapolated,
            )
        )
    return rungs


def _spaced(rungs: Sequence[LadderRung], min_step: float, min_ratio: float) -> bool:
    for low, high in itertools.pairwise(rungs):
        if high.bitrate_kbps < low.bitrate_kbps * min_ratio:
            return False
        assert low.predicted_vmaf is not None and high.predicted_vmaf is not None
        if high.predicted_vmaf - low.predicted_vmaf < min_step:
            return False
    return True


def predicted(points: Sequence[LadderPoint], width: int, height: int, kbps: float) -> float | None:
    """A rung's VMAF by its own resolution's curve, where that resolution was measured."""
    for curve in curves(points):
        if (curve.width, curve.height) == (width, height):
            value = curve.at(kbps)
            if value is None:
                value = curve.below(kbps)
            return round(value, 2)
    return None


def profiles(rungs: Sequence[LadderRung], codec: Codec) -> list[CustomProfile]:
    """The rungs as the plan takes them: ``height`` is the short side."""
    return [
        CustomProfile(name=r.name, height=min(r.width, r.height), bitrate_kbps=r.bitrate_kbps,
                      codec=codec)
        for r in rungs
    ]  # fmt: skip


def pick_resolutions(short_sides: Sequence[int], maximum: int = MAX_RESOLUTIONS) -> list[int]:
    """Distinct short sides, largest first; more than ``maximum``: the top, the bottom and
    evenly between."""
    distinct = sorted(set(short_sides), reverse=True)
    if len(distinct) <= maximum:
        return distinct
    step = (len(distinct) - 1) / (maximum - 1)
    return sorted({distinct[round(i * step)] for i in range(maximum)}, reverse=True)
