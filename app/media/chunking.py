"""Where to cut a title into chunks, and how to hand the chunks to child workflows.

Pure functions of numbers, so the rules are unit-tested without media and the workflow can use
them deterministically.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from app.core.models import ChunkDecision

SCENE_THRESHOLD = 0.3
"""ffmpeg ``scene`` score (0..1) between consecutive keyframes above which a cut is a scene cut."""
CHUNKS_PER_CHILD = 500
"""Chunks one child workflow encodes: at about six events per chunk task (scheduled, started,
completed, and a workflow task) plus progress signals, a child stays near 3,000 events, well
under Temporal's 10,240 warning even with every chunk retried."""


@dataclass(frozen=True)
class Keyframe:
    time_s: float
    scene_score: float = 0.0


def choose_boundaries(
    keyframes: list[Keyframe],
    duration_s: float,
    target_s: float,
    minimum_s: float,
    grid_s: float | None = None,
    scene_threshold: float = SCENE_THRESHOLD,
) -> tuple[list[float], int]:
    """Chunk start times (the first is 0) and how many of the cuts are scene cuts.

    Every cut is a source keyframe, so splitting is a stream copy. From each start, the
    candidates are the keyframes between ``start + minimum`` and ``start + 1.5 * target``.
    Those on the segment grid (multiples of ``grid_s``) come first: a cut there adds no
    keyframe that the fixed GOP would not have. Among the candidates left a scene cut wins
    (the one nearest the target), else the keyframe nearest the target; with none in the
    window the chunk runs to the next keyframe after the minimum. No chunk, the last included,
    is shorter than ``minimum_s`` (unless the title is).
    """
    times = sorted((k for k in keyframes if 0 < k.time_s < duration_s), key=lambda k: k.time_s)
    starts = [0.0]
    scene_cuts = 0
    while True:
        start = starts[-1]
        if duration_s - start < target_s + minimum_s:
            break  # what is left is one chunk: cutting would leave one shorter than allowed
        later = [k for k in times if start + minimum_s <= k.time_s <= duration_s - minimum_s]
        if not later:
            break
        window = [k for k in later if k.time_s <= start + 1.5 * target_s]
        on_grid = [k for k in window if grid_s and _on_grid(k.time_s, grid_s)]
        pool = on_grid or window
        target = start + target_s
        scenes = [k for k in pool if k.scene_score >= scene_threshold]
        if scenes:
            cut = min(scenes, key=lambda k: abs(k.time_s - target))
            scene_cuts += 1
        elif pool:
            cut = min(pool, key=lambda k: abs(k.time_s - target))
        else:
            cut = later[0]
        starts.append(round(cut.time_s, 6))
    return starts, scene_cuts


def _on_grid(time_s: float, grid_s: float, tolerance_s: float = 0.002) -> bool:
    """Within a couple of milliseconds: 29.97 fps frames sit 1 ms off whole seconds."""
    offset = time_s % grid_s
    return min(offset, grid_s - offset) <= tolerance_s


def forced_keyframes(start_s: float, duration_s: float, segment_s: int) -> list[float]:
    """Keyframe instants inside a chunk, relative to its start: the chunk's first frame, and
    every multiple of the segment length of the whole title. Segments therefore start at the
    same instants whether or not the title was chunked, and across all renditions."""
    first = int(start_s // segment_s) + 1
    instants = [0.0]
    k = first
    while k * segment_s < start_s + duration_s:
        instants.append(round(k * segment_s - start_s, 6))
        k += 1
    return instants


def worth_chunking(
    duration_s: float, variable_frame_rate: bool, chunk_seconds: float, min_chunk_seconds: float
) -> bool:
    """Long enough for two chunks, and not variable-frame-rate (a VFR source is made constant
    on one grid over the whole title: chunks would each start their own and round their frame
    counts apart)."""
    return (
        chunk_seconds > 0
        and duration_s >= chunk_seconds + min_chunk_seconds
        and not variable_frame_rate
    )


WHOLE_MAX_S = 600.0
"""The longest title encoded in one piece when chunks could not run side by side: a longer one
is chunked anyway, so that a lost worker costs a chunk, not the title."""


def chunk_decision(
    duration_s: float,
    variable_frame_rate: bool,
    chunk_seconds: float,
    min_chunk_seconds: float,
    *,
    auto: bool,
    slots: int | None,
) -> ChunkDecision:
    """Chunk only where it pays. Chunks cost a split, a join and an encoder warm-up each; they
    buy parallelism over several encode slots and resume granularity. With one slot polling
    (one small machine) chunks run one after another, so one decode feeding every rendition
    is as parallel and cheaper. ``auto``: chunk_seconds was not asked; ``slots``: the encode
    slots polling now (None: unknown, e.g. a GPU pool or older workers)."""

    def decided(chunked: bool, reason: str) -> ChunkDecision:
        return ChunkDecision(
            chunked=chunked, reason=reason, slots=slots, chunk_seconds=chunk_seconds
        )

    if not worth_chunking(duration_s, variable_frame_rate, chunk_seconds, min_chunk_seconds):
        if chunk_seconds <= 0:
            return decided(False, "chunk_seconds 0 asked")
        if variable_frame_rate:
            return decided(False, "variable frame rate: made constant over the whole title")
        return decided(False, f"{duration_s:g} s is too short for two chunks")
    if not auto:
        return decided(True, f"chunk_seconds {chunk_seconds:g} asked")
    if slots is None:
        return decided(True, "the pool's encode slots are not known")
    if duration_s > WHOLE_MAX_S:
        return decided(True, f"longer than {WHOLE_MAX_S:g} s: a lost worker costs one chunk")
    if slots <= 1:
        return decided(
            False,
            "one encode slot polls: chunks would run one after another, so one decode feeds "
            "every rendition",
        )
    return decided(True, f"{slots} encode slots poll: chunks run side by side")


def ranges(count: int, per_child: int = CHUNKS_PER_CHILD) -> list[tuple[int, int]]:
    """``[first, last)`` chunk ranges of at most ``per_child`` chunks, about equal in size."""
    children = max(1, -(-count // per_child))
    size = -(-count // children)
    return [(first, min(first + size, count)) for first in range(0, count, size)]


def window_share(window: int, children: int) -> int:
    """Each child's share of the job's in-flight window, so the job never exceeds it."""
    return max(1, window // max(1, children))


def chunk_progress(done: float, total: int) -> float:
    """A rendition's progress from its chunks (``done`` may count parts of chunks in flight);
    the last 5 % is its assembly."""
    return round(min(done / total, 1.0) * 0.95, 4) if total else 0.0


def output_frames(source_frames: int, source_rate: str, output_rate: str) -> int:
    """Frames a rendition has of a title with ``source_frames`` frames: the same, or twice as
    many where it is deinterlaced at field rate (50i to 50p). What assembly should expect."""
    return round(source_frames * Fraction(output_rate) / Fraction(source_rate))
