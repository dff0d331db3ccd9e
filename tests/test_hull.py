"""The per-title ladder's rules without media (app/media/hull.py): where samples go, the upper
convex hull, the curves between measured points, and the rungs picked from them."""

from __future__ import annotations

import itertools
import math

import pytest

from app.core.models import LadderPoint
from app.media.chunking import Keyframe
from app.media.hull import (
    ANALYSIS_BUDGET,
    DEFAULT_SAMPLE_S,
    DEFAULT_SAMPLES,
    EDGE_S,
    MIN_RATIO,
    MIN_SAMPLE_S,
    MIN_VMAF_STEP,
    best_at,
    bitrate_for,
    choose_rungs,
    choose_samples,
    curves,
    envelope,
    lower_crfs,
    next_points,
    one_rung_at_top,
    pick_resolutions,
    pool,
    probe_crf,
    profiles,
    round_kbps,
    sample_count,
    sample_plan,
    top_crfs,
    upper_hull,
)

SIZES = {1080: (1920, 1080), 720: (1280, 720), 480: (852, 480), 360: (640, 360)}


def point(side: int, crf: int, kbps: float, vmaf: float, sample: int | None = None,
          seconds: float = 2.0) -> LadderPoint:  # fmt: skip
    width, height = SIZES[side]
    size = round(kbps * 1000 * seconds / 8)
    return LadderPoint(width=width, height=height, crf=crf, sample=sample, kbps=kbps, vmaf=vmaf,
                       vmaf_harmonic_mean=vmaf, frames=round(30 * seconds),
                       duration_s=seconds, size_bytes=size)  # fmt: skip


def title(complexity: float, sides: tuple[int, ...] = (1080, 720, 480, 360)) -> list[LadderPoint]:
    """A plausible family of curves: each resolution saturates at its own ceiling (upscaling
    blurs), and needs ``complexity`` times the bits of a reference title for a quality."""
    found = []
    for side in sides:
        pixels = SIZES[side][0] * SIZES[side][1] / (1920 * 1080)
        ceiling = 100 - 12 * (1 - math.sqrt(pixels))
        for crf in (20, 27, 34, 41):
            kbps = complexity * 9000 * pixels * 2 ** (-(crf - 20) / 6)
            bits_per_pixel = kbps / (pixels * complexity * 9000)
            vmaf = ceiling * (1 - math.exp(-6 * bits_per_pixel)) ** 0.5
            found.append(point(side, crf, round(kbps, 3), round(vmaf, 3)))
    return found


# ---------------------------------------------------------------- samples


def test_sample_count_covers_at_most_half_the_title() -> None:
    assert [sample_count(d, 2.0) for d in (1, 3.9, 4, 12, 15.9, 16, 7200)] == [1, 1, 1, 3, 3, 4, 4]
    assert sample_count(7200, 2.0, maximum=5) == 5


LADDER_720 = [1280 * 720, 852 * 480, 640 * 360]


def test_the_samples_are_sized_to_the_budget_from_short_titles_to_long() -> None:
    def plan(duration_s: float):  # type: ignore[no-untyped-def]
        return sample_plan(duration_s, LADDER_720, LADDER_720, 1280 * 720, points=4)

    long = plan(7200)
    assert (long.count, long.seconds) == (DEFAULT_SAMPLES, DEFAULT_SAMPLE_S)
    assert long.cost_share <= 0.01
    # a second of samples: 4 encodes at 3 sizes, each compared at 720p; 2.3 s of the ladder.
    # A minute affords 1.93 s: two samples of 1 s (spread before length), 31%
    minute = plan(60)
    assert (minute.count, minute.seconds) == (2, 1.0)
    assert minute.cost_share == pytest.approx(2 * 4 * (1 + 0.444 + 0.25 + 3 * 0.75)
                                              / (60 * 1.694), abs=0.005)  # fmt: skip
    assert (plan(45).count, plan(45).seconds) == (1, 1.4), "1.45 s: one sample, longer"
    assert [(plan(d).count, plan(d).seconds) for d in (90, 180, 240)] == [(3, 1.0), (4, 1.4),
                                                                          (4, 1.9)]  # fmt: skip
    found = [plan(d) for d in (45, 60, 90, 120, 180, 300, 600)]
    totals = [p.count * p.seconds for p in found]
    assert totals == sorted(totals), "a longer title never gets less of itself sampled"
    assert all(p.cost_share <= 1.25 * ANALYSIS_BUDGET for p in found), "whole samples: about"
    # 20 s affords 0.64 s: one sample of 0.6 s, within the budget
    short = plan(20)
    assert (short.count, short.seconds) == (1, 0.6) and short.cost_share <= ANALYSIS_BUDGET
    assert (plan(40).count, plan(40).seconds) == (1, 1.2), "1.29 s: one sample, longer"
    assert all(p.count <= DEFAULT_SAMPLES and p.seconds <= DEFAULT_SAMPLE_S for p in found)
    # too short for the budget: the least the analysis takes, and the estimate says so
    tiny = plan(8)
    assert (tiny.count, tiny.seconds) == (1, MIN_SAMPLE_S) and tiny.cost_share > ANALYSIS_BUDGET
    assert (plan(0.4).count, plan(0.4).seconds) == (1, 0.4), "shorter than a sample: all of it"
    # more quality points or resolutions measured cost more: fewer seconds for the budget
    fewer = sample_plan(60, LADDER_720, LADDER_720, 1280 * 720, points=8)
    assert fewer.count * fewer.seconds < minute.count * minute.seconds


def test_samples_are_spread_over_the_title_and_avoid_scene_cuts() -> None:
    assert choose_samples([], 12.0, 3, 2.0) == [1.0, 5.0, 9.0], "the middle of each third"
    assert choose_samples([], 1.5, 3, 2.0) == [0.0], "a title shorter than a sample: all of it"
    # a cut at the second sample's start, one a frame before the third's end
    cuts = [Keyframe(5.0, 0.9), Keyframe(10.97, 0.5), Keyframe(3.0, 0.1)]
    starts = choose_samples(cuts, 12.0, 3, 2.0)
    assert starts[0] == 1.0, "a low score is no scene cut"
    for start in starts:
        for cut in (5.0, 10.97):
            assert not start - 1e-6 <= cut < start + EDGE_S, (start, cut)
            assert not start + 2.0 - EDGE_S < cut <= start + 2.0 + 1e-6, (start, cut)
    assert starts == [1.0, 5.5, 8.47], "just after the cut, and ending just before one"
    # cuts everywhere: the middle all the same
    dense = [Keyframe(t / 10, 1.0) for t in range(0, 120, 3)]
    assert choose_samples(dense, 12.0, 3, 2.0) == [1.0, 5.0, 9.0]


# ---------------------------------------------------------------- hull and curves


def test_upper_hull_keeps_what_no_mix_beats_up_to_the_best() -> None:
    points = [
        point(360, 41, 100, 40),
        point(360, 34, 200, 60),
        point(480, 34, 300, 64),  # under the chord 200/60 - 400/75 (67.5 at 300)
        point(360, 27, 400, 75),
        point(720, 27, 400, 70),  # the same bitrate, worse: out
        point(720, 20, 1600, 90),
        point(1080, 20, 3200, 89),  # more bits, less quality: not part of the rising hull
    ]
    hull = upper_hull(points)
    assert [(p.kbps, p.vmaf) for p in hull] == [(100, 40), (200, 60), (400, 75), (1600, 90)]
    assert upper_hull([]) == []


def test_curves_interpolate_in_log_rate_and_never_fall() -> None:
    found = curves([point(360, 41, 100, 40), point(360, 20, 400, 80), point(360, 27, 250, 85),
                    point(360, 34, 180, 50)])  # fmt: skip
    (curve,) = found
    assert curve.kbps == (100, 250) and curve.vmaf == (40, 85), (
        "the resolution's own hull: more bits for less (400) and under the chord (180) are out"
    )
    assert curve.at(200) == pytest.approx(40 + 45 * math.log(2) / math.log(2.5))
    assert curve.at(50) is None and curve.at(1000) == 85
    assert curve.below(50) == pytest.approx(40 - 45 * math.log(2) / math.log(2.5))
    assert curve.below(10) == 0.0, "never below 0"


def test_the_best_resolution_changes_along_the_bitrates() -> None:
    found = curves(title(1.0))
    sides = [best_at(found, kbps).curve.short_side for kbps in (150, 400, 1200, 3000, 8000)]
    assert sides == sorted(sides) and sides[0] < 720 and sides[-1] == 1080, sides
    values = [envelope(found, k) for k in range(100, 12000, 50)]
    assert values == sorted(values), "the envelope never falls"
    target = bitrate_for(found, 90.0, 100, 12000)
    assert target is not None and envelope(found, target) == pytest.approx(90.0, abs=0.01)
    assert bitrate_for(found, 99.9, 100, 12000) is None


def test_pooling_sums_bits_over_seconds_and_weights_vmaf_by_frames() -> None:
    pooled = pool([point(360, 27, 300, 90, sample=0), point(360, 27, 900, 60, sample=1, seconds=4)])
    (p,) = pooled
    assert p.sample is None and p.frames == 180 and p.duration_s == 6
    assert p.kbps == pytest.approx((300 * 2 + 900 * 4) / 6)
    assert p.vmaf == pytest.approx((90 * 60 + 60 * 120) / 180)


def test_a_sample_shorter_than_a_gop_is_charged_its_share_of_the_keyframe() -> None:
    # 2 s samples of a 4 s GOP: each holds one keyframe where the renditions hold half of one
    a = point(360, 27, 400, 90, sample=0).model_copy(
        update={"keyframe_bytes": 30_000, "keyframe_weight": 0.5, "kbps": 340.0}
    )
    b = point(360, 27, 400, 90, sample=1).model_copy(update={"keyframe_bytes": 10_000})
    (p,) = pool([a, b])
    assert p.size_bytes == a.size_bytes + b.size_bytes and p.keyframe_bytes == 40_000
    assert p.kbps == pytest.approx((2 * 100_000 - 15_000) * 8 / 1000 / 4)
    assert p.keyframe_weight == pytest.approx((15_000 + 10_000) / 40_000)
    (again,) = pool([p])
    assert again.kbps == pytest.approx(p.kbps), "a pooled point pools to itself"


# ---------------------------------------------------------------- rungs


def rungs_ok(rungs: list, max_kbps: int) -> None:  # type: ignore[type-arg]
    kbps = [r.bitrate_kbps for r in rungs]
    sides = [min(r.width, r.height) for r in rungs]
    assert kbps == sorted(set(kbps)) and sides == sorted(sides) and kbps[-1] <= max_kbps
    for low, high in itertools.pairwise(rungs):
        assert high.bitrate_kbps >= low.bitrate_kbps * MIN_RATIO
        assert high.predicted_vmaf - low.predicted_vmaf >= MIN_VMAF_STEP


def test_rungs_are_evenly_spaced_in_quality_up_to_the_top_vmaf() -> None:
    ladder = choose_rungs(title(1.0), top_vmaf=95, min_kbps=200, max_kbps=8000, max_rungs=5)
    rungs = ladder.rungs
    rungs_ok(rungs, 8000)
    assert rungs[0].bitrate_kbps == 200 and rungs[-1].predicted_vmaf == pytest.approx(95, abs=0.3)
    steps = [b.predicted_vmaf - a.predicted_vmaf for a, b in itertools.pairwise(rungs)]
    assert max(steps) - min(steps) < 1.0, steps
    assert len(rungs) >= 3 and len({min(r.width, r.height) for r in rungs}) >= 2
    assert [p.height for p in profiles(rungs, "h264")] == [min(r.width, r.height) for r in rungs]


def test_simple_content_gets_fewer_bits_and_no_more_rungs() -> None:
    bounds = {"top_vmaf": 95, "min_kbps": 200, "max_kbps": 8000, "max_rungs": 6}
    easy = choose_rungs(title(0.2), **bounds).rungs
    hard = choose_rungs(title(1.5), **bounds).rungs
    rungs_ok(easy, 8000)
    rungs_ok(hard, 8000)
    assert easy[-1].bitrate_kbps < hard[-1].bitrate_kbps / 3
    assert len(easy) <= len(hard)


def test_max_kbps_caps_the_top_and_min_kbps_above_the_top_makes_one_rung() -> None:
    capped = choose_rungs(title(3.0), top_vmaf=95, min_kbps=300, max_kbps=2500, max_rungs=5)
    assert capped.rungs[-1].bitrate_kbps == 2500 and capped.rungs[-1].predicted_vmaf < 95
    assert any("capped at max_kbps 2500" in n for n in capped.notes)
    rungs_ok(capped.rungs, 2500)
    easy = choose_rungs(title(0.05), top_vmaf=95, min_kbps=600, max_kbps=8000, max_rungs=5)
    assert len(easy.rungs) == 1 and easy.rungs[0].bitrate_kbps < 600
    assert "one rung" in easy.notes[-1]
    one = choose_rungs(title(1.0), top_vmaf=95, min_kbps=200, max_kbps=8000, max_rungs=1)
    assert len(one.rungs) == 1 and one.rungs[0].predicted_vmaf == pytest.approx(95, abs=0.3)


def test_a_title_one_rung_at_its_top_resolution_needs_no_smaller_one_measured() -> None:
    def top(complexity: float) -> list[LadderPoint]:
        return [p for p in title(complexity) if p.height == 1080]

    kbps = one_rung_at_top(top(0.05), top_vmaf=95, min_kbps=600)
    assert kbps is not None and kbps < 600
    alone = choose_rungs(top(0.05), top_vmaf=95, min_kbps=600, max_kbps=8000, max_rungs=5)
    assert [(r.height, r.bitrate_kbps) for r in alone.rungs] == [(1080, round_kbps(kbps))]
    # what measuring every size would have saved: a few bits, all of them below min_kbps
    every = choose_rungs(title(0.05), top_vmaf=95, min_kbps=600, max_kbps=8000, max_rungs=5)
    assert len(every.rungs) == 1 and every.rungs[0].bitrate_kbps > 0.85 * round_kbps(kbps)
    # the top needs more than min_kbps, or never gets there: the smaller sizes are measured
    assert one_rung_at_top(top(0.2), top_vmaf=95, min_kbps=600) is None
    assert one_rung_at_top(top(0.05), top_vmaf=95, min_kbps=150) is None
    assert one_rung_at_top(top(3.0), top_vmaf=99.9, min_kbps=8000) is None
    assert one_rung_at_top([], top_vmaf=95, min_kbps=600) is None


def measured_as_asked(
    points: list[LadderPoint], top_vmaf: float, min_kbps: int, max_kbps: int
) -> list[LadderPoint]:
    """The points the analysis measures, step by step as ``next_points`` asks."""
    at = {(p.width, p.height, p.crf): p for p in points}
    sizes = sorted({(p.width, p.height) for p in points}, reverse=True)
    got: list[LadderPoint] = []
    while step := next_points(got, sizes, (20, 27, 34, 41), top_vmaf, min_kbps, max_kbps).measure:
        got += [at[(*size, crf)] for size, crfs in step for crf in crfs]
    return got


def test_the_top_is_probed_first_and_only_points_that_can_bracket_a_rung_follow() -> None:
    assert probe_crf((20, 27, 34, 41)) == 27 and probe_crf((43, 22, 36, 29)) == 29
    assert probe_crf((20, 30, 40)) == 30 and probe_crf((30,)) == 30
    # one encode decides a one-rung title: the probe reaches 95 below min_kbps
    probe = [point(720, 27, 358.6, 95.3)]
    assert one_rung_at_top(probe, top_vmaf=95, min_kbps=400) == pytest.approx(358.6)
    alone = choose_rungs(probe, top_vmaf=95, min_kbps=400, max_kbps=4500, max_rungs=5)
    assert [(r.height, r.bitrate_kbps) for r in alone.rungs] == [(720, 360)]
    # short of 95: the better point too; above min_kbps: the worse ones too (bench/README.md)
    crfs = (20, 27, 34, 41)
    assert top_crfs([point(720, 27, 1588, 93.5)], crfs, 95, 400, 4500) == [20, 34, 41]
    assert top_crfs([point(720, 27, 9770, 78.9)], crfs, 95, 400, 4500) == [34, 41]
    assert top_crfs([point(720, 27, 380, 94.0)], crfs, 95, 400, 4500) == [20]
    assert top_crfs([point(720, 27, 450, 96.0)], crfs, 95, 400, 4500) == [34, 41]
    # a smaller size stops at the first point the top's bits times the area put at the floor
    animation = [point(720, c, k, 90) for c, k in ((20, 3600), (27, 1588), (34, 706), (41, 533))]
    assert lower_crfs(animation, crfs, 852 * 480 / (1280 * 720), 400) == [20, 27, 34]
    assert lower_crfs(animation, crfs, 0.25, 400) == [20, 27]
    assert lower_crfs(animation, crfs, 0.25, 100) == [20, 27, 34, 41]
    noisy = [point(720, c, k, 75) for c, k in ((27, 9770), (34, 744), (41, 522))]
    assert lower_crfs(noisy, crfs, 0.25, 400) == [20, 27, 34], "CRF 20 unmeasured at the top"


@pytest.mark.parametrize("complexity", [0.02, 0.1, 0.3, 1.0, 3.0])
def test_the_points_left_unmeasured_never_change_the_ladder(complexity: float) -> None:
    every = title(complexity, sides=(720, 480, 360))
    asked = measured_as_asked(every, 95, 400, 4500)
    assert len(asked) < len(every)
    full = choose_rungs(every, top_vmaf=95, min_kbps=400, max_kbps=4500, max_rungs=5)
    pruned = choose_rungs(asked, top_vmaf=95, min_kbps=400, max_kbps=4500, max_rungs=5)
    assert [(r.height, r.bitrate_kbps) for r in pruned.rungs] == [
        (r.height, r.bitrate_kbps) for r in full.rungs
    ], (asked, full.rungs)


def test_rungs_too_close_in_quality_or_bitrate_are_not_made() -> None:
    # flat: every bitrate gives about the same quality (a still), only below VMAF 95
    flat = [point(360, c, k, 93 + i * 0.3) for i, (c, k) in enumerate([(41, 300), (34, 600),
            (27, 1200), (20, 2400)])]  # fmt: skip
    ladder = choose_rungs(flat, top_vmaf=95, min_kbps=300, max_kbps=2400, max_rungs=5)
    assert len(ladder.rungs) == 1, ladder
    assert "not reached" in ladder.notes[0] or "capped" in ladder.notes[0]


def test_below_every_measured_bitrate_is_extrapolated_and_marked() -> None:
    ladder = choose_rungs(title(1.0), top_vmaf=95, min_kbps=64, max_kbps=8000, max_rungs=5)
    bottom = ladder.rungs[0]
    assert bottom.bitrate_kbps == 64 and bottom.extrapolated
    assert not ladder.rungs[-1].extrapolated


def test_at_most_six_resolutions_with_the_top_and_the_bottom() -> None:
    assert pick_resolutions([720, 480, 360, 480]) == [720, 480, 360]
    many = pick_resolutions([2160, 1440, 1080, 720, 540, 480, 360, 240])
    assert len(many) == 6 and many[0] == 2160 and many[-1] == 240
    assert many == sorted(many, reverse=True)
