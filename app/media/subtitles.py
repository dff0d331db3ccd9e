"""Subtitles as WebVTT: parse SRT and WebVTT, write a whole file and one document per segment.

Pure functions on strings (no I/O, no Temporal), so the activity and the packager share one
notion of a cue and the parsers can be tested on every malformed input without media.

Cue text is normalised once, when parsed, into valid WebVTT cue text: ``<i> <b> <u> <c> <v>
<lang> <ruby> <rt>`` and timestamp tags are kept, ``<font>``/``<span>`` (SRT colours) and ASS
override tags (``{\\an8}``) are dropped, a stray ``&``, ``<`` or ``>`` is escaped, and blank
lines (which would end a WebVTT cue early) are removed. Normalising is idempotent, so WebVTT
that is already valid comes through unchanged.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

TIMESTAMP_MAP = "X-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000"
"""Every segment document maps cue time 0 to media time 0. The packaged fMP4 media starts at
presentation time 0 (no MPEG-TS 10 s offset), so cue times are already on the media timeline;
HLS players (hls.js, Safari) still expect the header in every WebVTT segment."""

SEGMENT_HEADER = f"WEBVTT\n{TIMESTAMP_MAP}\n\n"


TEXT_CODECS = frozenset({"mov_text", "subrip", "srt", "ass", "ssa", "webvtt", "vtt", "text"})
"""Embedded codecs that ffmpeg's WebVTT encoder takes (text; bitmaps are not carried)."""


class SubtitleError(ValueError):
    """A malformed subtitle file; the message names the 1-based line and is safe to show."""


@dataclass(frozen=True, slots=True)
class Cue:
    """One cue: times in seconds (millisecond precision) and WebVTT cue text.

    ``settings`` keeps WebVTT cue settings (``align:start line:0`` ...) from a WebVTT source;
    SRT has none."""

    start_s: float
    end_s: float
    text: str
    settings: str = ""


# ---------------------------------------------------------------- cue text

_ASS_OVERRIDE = re.compile(r"\{\\[^}]*\}")
_MARKUP = re.compile(r"<[^<>\n]*>|&(?:#[0-9]+|#[xX][0-9A-Fa-f]+|[A-Za-z][A-Za-z0-9]*);")
_KEPT_TAG = re.compile(
    r"<(/?)(i|b|u|c|v|lang|ruby|rt)((?:\.[^\s.<>/]+)*)(?:([ \t][^<>]*))?>", re.IGNORECASE
)
_TIMESTAMP_TAG = re.compile(r"<(?:\d{2,}:)?[0-5]\d:[0-5]\d\.\d{3}>")
_DROPPED_TAG = re.compile(r"</?(?:font|span)(?:[ \t/][^<>]*)?>", re.IGNORECASE)


def _escape(plain: str) -> str:
    return plain.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _markup(token: str) -> str:
    """A tag or entity as WebVTT: kept (tag names lower-cased), dropped, or escaped."""
    if token.startswith("&") or _TIMESTAMP_TAG.fullmatch(token):
        return token
    tag = _KEPT_TAG.fullmatch(token)
    if tag:
        closing, name, classes, annotation = tag.groups()
        if closing:
            return f"</{name.lower()}>"
        return f"<{name.lower()}{classes}{annotation or ''}>"
    if _DROPPED_TAG.fullmatch(token):
        return ""
    return _escape(token)


def _normalise_line(line: str) -> str:
    line = _ASS_OVERRIDE.sub("", line)
    out: list[str] = []
    pos = 0
    for match in _MARKUP.finditer(line):
        out.append(_escape(line[pos : match.start()]))
        out.append(_markup(match.group()))
        pos = match.end()
    out.append(_escape(line[pos:]))
    return "".join(out).strip()


def normalise_text(lines: Iterable[str]) -> str:
    """Cue text lines as valid WebVTT cue text, joined by ``\\n`` (empty lines dropped)."""
    kept = (_normalise_line(line) for line in lines)
    return "\n".join(line for line in kept if line)


# ---------------------------------------------------------------- parsing helpers


def _lines(text: str) -> list[str]:
    """Lines without BOM or line ends (LF, CRLF or CR); NUL becomes U+FFFD as in WebVTT."""
    if text.startswith("\ufeff"):
        text = text[1:]
    text = text.replace("\x00", "\ufffd")
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _ms(hours: str | None, minutes: str, seconds: str, fraction: str) -> int | None:
    """Milliseconds, or None for minutes or seconds of 60 and more."""
    if int(minutes) > 59 or int(seconds) > 59:
        return None
    return ((int(hours or 0) * 60 + int(minutes)) * 60 + int(seconds)) * 1000 + int(fraction)


def _shown(line: str) -> str:
    return repr(line if len(line) <= 60 else line[:57] + "...")


def _cue(lineno: int, start_ms: int, end_ms: int, text: str, settings: str = "") -> Cue | None:
    """A cue, None for one that shows nothing (no text, or no time)."""
    if end_ms < start_ms:
        raise SubtitleError(
            f"line {lineno}: the cue ends ({format_timestamp(end_ms / 1000)}) before it starts "
            f"({format_timestamp(start_ms / 1000)})"
        )
    if not text or end_ms == start_ms:
        return None
    return Cue(start_ms / 1000, end_ms / 1000, text, settings)


# ---------------------------------------------------------------- SRT

_SRT_TIME = r"(\d+):(\d{2}):(\d{2})[,.](\d{3})"
_SRT_TIMING = re.compile(rf"{_SRT_TIME}[ \t]*-->[ \t]*{_SRT_TIME}(?:[ \t].*)?")
_SRT_INDEX = re.compile(r"\d+")
_SRT_EXPECTED = "HH:MM:SS,mmm --> HH:MM:SS,mmm"


def _srt_timing(lines: Sequence[str], i: int) -> tuple[int, int]:
    line = lines[i].strip()
    match = _SRT_TIMING.fullmatch(line)
    if not match:
        if "-->" in line:
            raise SubtitleError(
                f"line {i + 1}: bad timing line {_shown(line)} (expected {_SRT_EXPECTED})"
            )
        raise SubtitleError(
            f"line {i + 1}: expected a cue number or a timing line ({_SRT_EXPECTED}), "
            f"found {_shown(line)}"
        )
    g = match.groups()
    start, end = _ms(*g[0:4]), _ms(*g[4:8])
    if start is None or end is None:
        raise SubtitleError(f"line {i + 1}: bad time in {_shown(line)} (minutes, seconds < 60)")
    return start, end


def _srt_cue_starts(lines: Sequence[str], i: int) -> bool:
    """Line ``i`` begins a cue: a timing line, or a cue number followed by one. Lets a file
    that lacks the blank line between two cues still parse."""
    line = lines[i].strip()
    if _SRT_TIMING.fullmatch(line):
        return True
    return bool(
        _SRT_INDEX.fullmatch(line)
        and i + 1 < len(lines)
        and _SRT_TIMING.fullmatch(lines[i + 1].strip())
    )


def parse_srt(text: str) -> list[Cue]:
    """SubRip cues in file order. Cue numbers are optional (and ignored), blank lines between
    cues may be many or, where a timing line makes it unambiguous, none; BOM and CRLF are
    fine. A cue number without a timing line, a bad timing line or a cue that ends before it
    starts is a ``SubtitleError`` naming the line. Cues with no text or no duration are
    dropped: they show nothing."""
    lines = _lines(text)
    cues: list[Cue] = []
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if not line:
            i += 1
            continue
        if _SRT_INDEX.fullmatch(line) and not _SRT_TIMING.fullmatch(line):
            if i + 1 >= len(lines) or "-->" not in lines[i + 1]:  # else: a bad timing
                at = i + 2 if i + 1 < len(lines) else i + 1
                found = lines[i + 1].strip() if i + 1 < len(lines) else ""
                raise SubtitleError(
                    f"line {at}: expected a timing line ({_SRT_EXPECTED}) after cue number "
                    f"{line}, found {_shown(found) if found else 'nothing'}"
                )
            i += 1
        timing_line = i
        start, end = _srt_timing(lines, i)
        i += 1
        body: list[str] = []
        while i < len(lines) and lines[i].strip() and not _srt_cue_starts(lines, i):
            body.append(lines[i])
            i += 1
        cue = _cue(timing_line + 1, start, end, normalise_text(body))
        if cue is not None:
            cues.append(cue)
    return cues


# ---------------------------------------------------------------- WebVTT

_VTT_TIME = r"(?:(\d{2,}):)?(\d{2}):(\d{2})\.(\d{3})"
_VTT_TIMING = re.compile(rf"{_VTT_TIME}[ \t]*-->[ \t]*{_VTT_TIME}(?:[ \t]+(.*))?")
_VTT_SETTING = re.compile(r"(?:vertical|line|position|size|align|region):[^\s:]\S*")
_VTT_HEADER = re.compile(r"WEBVTT(?:[ \t].*)?")
_VTT_SKIPPED = re.compile(r"(?:NOTE|STYLE|REGION)(?:[ \t].*)?")
_VTT_EXPECTED = "[hh:]mm:ss.ttt --> [hh:]mm:ss.ttt"


def _vtt_timing(lines: Sequence[str], i: int) -> tuple[int, int, str]:
    line = lines[i].strip()
    match = _VTT_TIMING.fullmatch(line)
    if not match:
        raise SubtitleError(
            f"line {i + 1}: bad timing line {_shown(line)} (expected {_VTT_EXPECTED})"
        )
    g = match.groups()
    start, end = _ms(*g[0:4]), _ms(*g[4:8])
    if start is None or end is None:
        raise SubtitleError(f"line {i + 1}: bad time in {_shown(line)} (minutes, seconds < 60)")
    # Only well-formed settings are kept, so what is written back is valid WebVTT.
    settings = " ".join(s for s in (g[8] or "").split() if _VTT_SETTING.fullmatch(s))
    return start, end, settings


def parse_vtt(text: str) -> list[Cue]:
    """WebVTT cues in file order. The first line must be ``WEBVTT``; header lines, NOTE, STYLE
    and REGION blocks are skipped; cue identifiers are optional (and dropped); cue settings
    are kept when well formed. Cue text is normalised (see the module docstring), which also
    makes ffmpeg's WebVTT output (a raw ``&`` or ``<``) valid. Errors name the line."""
    lines = _lines(text)
    if not _VTT_HEADER.fullmatch(lines[0].rstrip()):
        raise SubtitleError(f"line 1: not a WebVTT file (the first line must be WEBVTT), found "
                            f"{_shown(lines[0].strip())}")  # fmt: skip
    cues: list[Cue] = []
    i = 1
    while i < len(lines) and lines[i].strip() and "-->" not in lines[i]:
        i += 1  # header lines (X-TIMESTAMP-MAP, Kind, Language ...)
    while i < len(lines):
        line = lines[i].strip()
        if not line:
            i += 1
            continue
        if _VTT_SKIPPED.fullmatch(line) and "-->" not in line:
            while i < len(lines) and lines[i].strip():
                i += 1
            continue
        if "-->" not in line:  # a cue identifier: the timing line must follow
            if i + 1 >= len(lines) or "-->" not in lines[i + 1]:
                at = i + 2 if i + 1 < len(lines) else i + 1
                raise SubtitleError(
                    f"line {at}: expected a timing line ({_VTT_EXPECTED}) after cue identifier "
                    f"{_shown(line)}"
                )
            i += 1
        timing_line = i
        start, end, settings = _vtt_timing(lines, i)
        i += 1
        body: list[str] = []
        # As in the WebVTT parser, a line with "-->" ends the cue text and starts a new cue.
        while i < len(lines) and lines[i].strip() and "-->" not in lines[i]:
            body.append(lines[i])
            i += 1
        cue = _cue(timing_line + 1, start, end, normalise_text(body), settings)
        if cue is not None:
            cues.append(cue)
    return cues


# ---------------------------------------------------------------- writing


def format_timestamp(seconds: float) -> str:
    """``hh:mm:ss.ttt``, rounded to the millisecond."""
    ms = max(0, round(seconds * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{ms:03d}"


def _block(cue: Cue) -> str:
    timing = f"{format_timestamp(cue.start_s)} --> {format_timestamp(cue.end_s)}"
    if cue.settings:
        timing += f" {cue.settings}"
    return f"{timing}\n{cue.text}\n\n"


def _ordered(cues: Iterable[Cue]) -> list[Cue]:
    """By start time (stable): WebVTT requires cues in start order."""
    return sorted(cues, key=lambda c: c.start_s)


def write_vtt(cues: Iterable[Cue]) -> str:
    """A whole WebVTT file."""
    return "WEBVTT\n\n" + "".join(_block(c) for c in _ordered(cues))


def segment_bounds(segment_seconds: float, duration_s: float) -> list[tuple[float, float]]:
    """The media segments' ``[start, end)``: one per ``segment_seconds``, the last ending at
    ``duration_s``. A remainder under 1 ms (float noise) makes no segment of its own."""
    if segment_seconds <= 0:
        raise ValueError("segment_seconds must be positive")
    count = max(1, math.ceil((duration_s - 0.001) / segment_seconds))
    return [
        (i * segment_seconds, duration_s if i == count - 1 else (i + 1) * segment_seconds)
        for i in range(count)
    ]


def segment_vtt(cues: Iterable[Cue], segment_seconds: float, duration_s: float) -> list[str]:
    """One WebVTT document per media segment (see ``segment_bounds``), each with the
    ``X-TIMESTAMP-MAP`` header and every cue that overlaps the segment, at its original
    times: a cue across a boundary is in both segments, as HLS players expect (they drop the
    duplicate). A segment without cues is a header alone; it still exists, so the subtitle
    playlist has the media playlists' segments."""
    ordered = _ordered(cues)
    documents = []
    for start, end in segment_bounds(segment_seconds, duration_s):
        inside = (_block(c) for c in ordered if c.start_s < end and c.end_s > start)
        documents.append(SEGMENT_HEADER + "".join(inside))
    return documents


Parser = Callable[[str], list[Cue]]

PARSERS: dict[str, Parser] = {
    "srt": parse_srt,
    "subrip": parse_srt,
    "vtt": parse_vtt,
    "webvtt": parse_vtt,
}
"""Sidecar formats by codec name (as probed, or as a file suffix)."""
