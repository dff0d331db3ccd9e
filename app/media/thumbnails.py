"""Thumbnails: the tiling plan of a job's trick-play track, its WebVTT index, the poster's size.

Pure (no I/O) and a leaf module (no platform imports): the thumbnail activity plans its ffmpeg
run from it, and the packager writes the WebVTT, the HLS image playlist and the DASH thumbnail
set from the same plan, so they can never disagree about which tile shows which second.

Thumbnail ``i`` (from 0) stands for ``[i * interval, (i + 1) * interval)`` (the last one ends
at the duration); it is tile ``i % per_sheet`` of sheet ``i // per_sheet + 1``, tiles filling
each sheet row by row. Times are whole milliseconds, so every cue boundary is exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

COLUMNS = 5
ROWS = 5
DEFAULT_INTERVAL_S = 2.0
DEFAULT_WIDTH = 160
POSTER_MAX_WIDTH = 1280
POSTER_AT = Fraction(1, 10)
"""The poster is the frame at 10 % of the duration: past a title's black leader, fade-in and
studio logos for nearly every title, the same frame on every run, and free in the run that
makes the sheets (the frame is taken from the same decode)."""


def sheet_name(number: int) -> str:
    """Sheet ``number`` (from 1): the name the WebVTT, the playlist and the MPD's template use."""
    return f"sheet-{number:05d}.jpg"


@dataclass(frozen=True)
class Cue:
    start_ms: int
    end_ms: int
    sheet: str
    x: int
    y: int
    width: int
    height: int


@dataclass(frozen=True)
class TilePlan:
    interval_ms: int
    duration_ms: int
    tile_width: int
    tile_height: int
    columns: int = COLUMNS
    rows: int = ROWS

    def __post_init__(self) -> None:
        if self.interval_ms <= 0 or self.duration_ms <= 0:
            raise ValueError("interval and duration must be positive")
        if min(self.tile_width, self.tile_height, self.columns, self.rows) <= 0:
            raise ValueError("tiles and layout must be positive")

    @property
    def count(self) -> int:
        """Thumbnails: one per interval begun, ``ceil(duration / interval)``."""
        return -(-self.duration_ms // self.interval_ms)

    @property
    def per_sheet(self) -> int:
        return self.columns * self.rows

    @property
    def sheets(self) -> int:
        return -(-self.count // self.per_sheet)

    @property
    def sheet_names(self) -> list[str]:
        return [sheet_name(n) for n in range(1, self.sheets + 1)]

    @property
    def sheet_width(self) -> int:
        return self.columns * self.tile_width

    @property
    def sheet_height(self) -> int:
        """Every sheet has the whole grid; the last one's unused tiles are black."""
        return self.rows * self.tile_height

    @property
    def sheet_ms(self) -> int:
        """What a full sheet covers: a DASH segment, an HLS image segment."""
        return self.per_sheet * self.interval_ms

    @property
    def interval_s(self) -> float:
        return self.interval_ms / 1000

    @property
    def duration_s(self) -> float:
        return self.duration_ms / 1000

    @property
    def tile(self) -> str:
        return f"{self.tile_width}x{self.tile_height}"

    @property
    def layout(self) -> str:
        """Columns x rows, as HLS ``LAYOUT`` and the DASH-IF ``thumbnail_tile`` value say it."""
        return f"{self.columns}x{self.rows}"

    def sheet_durations_ms(self) -> list[int]:
        """The time each sheet covers (the last one ends at the duration)."""
        return [
            min(self.sheet_ms, self.duration_ms - n * self.sheet_ms) for n in range(self.sheets)
        ]

    def cues(self) -> list[Cue]:
        cues = []
        for i in range(self.count):
            tile = i % self.per_sheet
            cues.append(
                Cue(
                    start_ms=i * self.interval_ms,
                    end_ms=min((i + 1) * self.interval_ms, self.duration_ms),
                    sheet=sheet_name(i // self.per_sheet + 1),
                    x=(tile % self.columns) * self.tile_width,
                    y=(tile // self.columns) * self.tile_height,
                    width=self.tile_width,
                    height=self.tile_height,
                )
            )
        return cues


def _even(value: Fraction | int) -> int:
    return max(2, 2 * round(Fraction(value) / 2))


def _floor_even(value: int) -> int:
    return max(2, value - value % 2)


def tile_size(display_width: int, display_height: int, width: int) -> tuple[int, int]:
    """A thumbnail ``width`` wide (never wider than the picture shows) with square pixels:
    the height keeps the display aspect ratio, rounded to even (4:2:0 JPEG)."""
    w = min(_floor_even(width), _floor_even(display_width))
    return w, _even(Fraction(w * display_height, display_width))


def plan_tiles(
    duration_s: float,
    display_width: int,
    display_height: int,
    interval_s: float = DEFAULT_INTERVAL_S,
    width: int = DEFAULT_WIDTH,
) -> TilePlan:
    w, h = tile_size(display_width, display_height, width)
    return TilePlan(
        interval_ms=round(interval_s * 1000),
        duration_ms=max(1, round(duration_s * 1000)),
        tile_width=w,
        tile_height=h,
    )


def poster_size(
    display_width: int, display_height: int, limit: int = POSTER_MAX_WIDTH
) -> tuple[int, int]:
    """The picture's display size, at most ``limit`` wide; square pixels, even sides."""
    w = min(_floor_even(display_width), _floor_even(limit))
    return w, _even(Fraction(w * display_height, display_width))


def poster_time(duration_s: float) -> float:
    """Seconds into the title of the poster frame (see :data:`POSTER_AT`), to the millisecond."""
    return round(float(duration_s * POSTER_AT), 3)


def timestamp(ms: int) -> str:
    """WebVTT's ``HH:MM:SS.mmm`` (hours always written: a title may be longer than one)."""
    seconds, millis = divmod(ms, 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}"


def webvtt(plan: TilePlan) -> str:
    """One cue per thumbnail: its interval, and its tile as a media fragment of its sheet
    (``sheet-00001.jpg#xywh=x,y,w,h``), relative to the WebVTT file's own location."""
    lines = ["WEBVTT", ""]
    for cue in plan.cues():
        lines += [
            f"{timestamp(cue.start_ms)} --> {timestamp(cue.end_ms)}",
            f"{cue.sheet}#xywh={cue.x},{cue.y},{cue.width},{cue.height}",
            "",
        ]
    return "\n".join(lines)
