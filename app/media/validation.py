"""The validation pass (VVS): a written package read back from its own files, before publishing.

Every check is recorded as a :class:`ValidationCheck` (target: the rendition or track by name,
or ``hls`` / ``dash``; check; ok; detail), never raised: the caller fails the job on the first
failed one, naming the rendition and the check. What is checked:

- HLS: the master parses and names every playlist the package has (and none other); each media,
  I-frame, subtitle and image playlist parses; every segment and ``EXT-X-MAP`` it references is
  a file of the package, byte ranges lie inside their files; init + segments add up to the bytes
  the packager recorded (``PackageResult.sizes``); the ``CODECS`` of the master (variants,
  I-frame streams) and of the MPD equal the RFC 6381 string derived from the init segment's
  configuration record (:func:`codec_string`: profile, level, bit depth as coded).
- DASH: the MPD parses; its Representation ids are the HLS renditions'; each SegmentTemplate
  (and SegmentTimeline) expands to the same files the HLS playlist lists, all present.
- Video: init + segments demux with every packet read; the frame count is the encoded media's
  and the duration its own within a frame; every segment opens on a keyframe that decodes
  (after the init segment alone); codec, profile, bit depth and chroma sampling and the colour
  tags are what the plan's ``EncoderSettings`` asked, where it sets them.
- Audio: demuxes, the first frame of every segment decodes, lasts as the encoded track within
  50 ms, codec and channels are the plan's.
- Subtitles and thumbnails: the files their playlists, WebVTT and MPD reference exist.

Only keyframes are decoded, one per segment, so the pass stays a small part of a job (it runs
on every one): packaging is a stream copy, and what it can break is the container (a lost
fragment, a wrong index, a manifest naming what is not there), which demuxing every packet
shows. The coded pictures were decoded in full before: every chunk of a chunked title by its
``encode_chunk`` task before it was committed (or by the job's quality pass, which reads every
frame), and every keyframe of each assembled rendition again. A title encoded whole (short, or
chunking off) is decoded in full by neither: here, as there, only at its keyframes.
"""

from __future__ import annotations

import bisect
import io
import math
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Any

import av
import m3u8

from app.core.models import EncoderSettings, ValidationCheck, ValidationReport
from app.media.colour import MATRICES, PRIMARIES, TRANSFERS
from app.media.formats import OPEN_OPTIONS
from app.media.packaging.codec_strings import CodecStringError, codec_string
from app.media.packaging.dash import NS

AUDIO_TOLERANCE_S = 0.05
"""An audio track lasts as its encode within this (AAC frames are 21 ms at 48 kHz)."""
AUDIO_PACKETS = 4
"""Packets of an audio segment fed to the decoder until one gives a frame."""
PROGRESS_PACKETS = 2000
"""Packets between two progress calls while a long stream is demuxed."""

PROFILES: dict[tuple[str, int, str], frozenset[str]] = {
    ("h264", 8, "4:2:0"): frozenset({"Constrained Baseline", "Baseline", "Main", "High"}),
    ("h264", 10, "4:2:0"): frozenset({"High 10"}),
    ("hevc", 8, "4:2:0"): frozenset({"Main"}),
    ("hevc", 10, "4:2:0"): frozenset({"Main 10"}),
    ("av1", 8, "4:2:0"): frozenset({"Main"}),
    ("av1", 10, "4:2:0"): frozenset({"Main"}),
}
"""The coded profiles consistent with a plan's codec, bit depth and chroma sampling (as FFmpeg
names them); other samplings are not compared."""

Progress = Callable[[str], None]


@dataclass(frozen=True)
class VideoTarget:
    name: str
    rep_id: str
    playlist: str
    iframe_playlist: str | None
    frames: int
    duration_s: float
    codec: str | None = None
    """The plan's codec (h264, hevc, av1); None: no plan (histories before plans travelled)."""
    settings: EncoderSettings | None = None


@dataclass(frozen=True)
class AudioTarget:
    name: str
    rep_id: str
    playlist: str
    duration_s: float
    codec: str | None = None
    """The plan's codec (aac, eac3); None: packaged as given, nothing planned."""
    channels: int | None = None


@dataclass(frozen=True)
class TextTarget:
    name: str
    rep_id: str
    playlist: str
    whole: str
    """The whole WebVTT file (the DASH text set's BaseURL)."""


@dataclass(frozen=True)
class ImageTarget:
    rep_id: str
    playlist: str
    vtt: str
    sheets: list[str]
    poster: str
    name: str = "thumbnails"


@dataclass(frozen=True)
class PackageExpectations:
    """What the plan and the encodes say the package holds: what it is checked against."""

    master: str
    mpd: str
    videos: list[VideoTarget]
    audio: list[AudioTarget] = field(default_factory=list)
    subtitles: list[TextTarget] = field(default_factory=list)
    thumbnails: ImageTarget | None = None
    sizes: dict[str, int] = field(default_factory=dict)
    """Bytes the packager recorded, by representation id (and ``poster``)."""


class _Checks:
    def __init__(self) -> None:
        self.checks: list[ValidationCheck] = []

    def add(self, target: str, check: str, ok: bool, detail: str) -> None:
        self.checks.append(ValidationCheck(target=target, check=check, ok=ok, detail=detail))


def validate_package(
    staging: Path, expected: PackageExpectations, progress: Progress | None = None
) -> ValidationReport:
    """Every check over the package in ``staging`` (see the module's docstring); ``progress``
    is called with what is being checked, now and then (a heartbeat)."""
    started = time.perf_counter()
    beat = progress or (lambda _: None)
    checks = _Checks()
    master = _master(staging, expected, checks)
    reps = _mpd(staging, expected, checks)
    for video in expected.videos:
        beat(video.name)
        files = _media(staging, video.name, video.playlist, video.rep_id, expected, checks, reps)
        if video.iframe_playlist:
            _iframes(staging, video, files, checks)
        if files:
            declared = partial(_video_codecs, master, video)
            _codecs(staging, video.name, files[0], declared, _rep(reps, video.rep_id), checks)
            _video_stream(staging, video, files, checks, beat)
    for audio in expected.audio:
        beat(audio.name)
        files = _media(staging, audio.name, audio.playlist, audio.rep_id, expected, checks, reps)
        if files:
            declared = partial(_audio_codecs, master, audio)
            _codecs(staging, audio.name, files[0], declared, _rep(reps, audio.rep_id), checks)
            _audio_stream(staging, audio, files, checks, beat)
    for text in expected.subtitles:
        _subtitles(staging, text, checks, reps)
    if expected.thumbnails is not None:
        _thumbnails(staging, expected.thumbnails, expected.sizes, checks, reps)
    return ValidationReport(
        passed=all(c.ok for c in checks.checks),
        checks=checks.checks,
        seconds=round(time.perf_counter() - started, 3),
    )


# ---------------------------------------------------------------- files and playlists


def _file(staging: Path, uri: str | None) -> Path | None:
    """The package file a manifest names, or None: a plain name in the folder (the package is
    one folder; a path, a URL or a missing file is not one of its files)."""
    if not uri or "/" in uri or "\\" in uri or uri in (".", ".."):
        return None
    path = staging / uri
    return path if path.is_file() else None


def _playlist(staging: Path, uri: str) -> m3u8.M3U8 | str:
    """The parsed playlist, or why not."""
    path = _file(staging, uri)
    if path is None:
        return f"{uri} missing"
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("#EXTM3U"):
        return f"{uri} is not a playlist"
    try:
        return m3u8.loads(text)
    except Exception as err:  # m3u8 raises anything on bad input
        return f"{uri}: {err}"


def _ranges(playlist: m3u8.M3U8) -> list[tuple[str, int | None, int]]:
    """(uri, length or None for the whole file, offset) per segment, byte ranges followed as
    RFC 8216 4.3.2.2 says (no offset: right after the previous range of the same file)."""
    ranges: list[tuple[str, int | None, int]] = []
    ends: dict[str, int] = {}
    for segment in playlist.segments:
        if not segment.byterange:
            ranges.append((segment.uri, None, 0))
            continue
        length, _, offset = str(segment.byterange).partition("@")
        start = int(offset) if offset else ends.get(segment.uri, 0)
        ends[segment.uri] = start + int(length)
        ranges.append((segment.uri, int(length), start))
    return ranges


def _missing(staging: Path, uris: Iterable[str]) -> list[str]:
    return [uri for uri in dict.fromkeys(uris) if _file(staging, uri) is None]


def _short(names: list[str], most: int = 3) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _master(staging: Path, expected: PackageExpectations, checks: _Checks) -> m3u8.M3U8 | None:
    parsed = _playlist(staging, expected.master)
    if isinstance(parsed, str):
        checks.add("hls", "master", False, parsed)
        return None
    named = {p.uri for p in parsed.playlists} | {m.uri for m in parsed.media if m.uri}
    named |= {p.uri for p in parsed.iframe_playlists}
    named |= {p.uri for p in getattr(parsed, "image_playlists", [])}
    wanted = {v.playlist for v in expected.videos} | {a.playlist for a in expected.audio}
    wanted |= {v.iframe_playlist for v in expected.videos if v.iframe_playlist}
    wanted |= {t.playlist for t in expected.subtitles}
    if expected.thumbnails is not None:
        wanted.add(expected.thumbnails.playlist)
    absent, unknown = sorted(wanted - named), sorted(named - wanted)
    detail = f"{len(parsed.playlists)} variants, {len(named)} playlists"
    if absent:
        detail = f"does not name {_short(absent)}"
    elif unknown:
        detail = f"names playlists the package has not: {_short(unknown)}"
    checks.add("hls", "master", not absent and not unknown, detail)
    return parsed


def _media(
    staging: Path,
    name: str,
    uri: str,
    rep_id: str,
    expected: PackageExpectations,
    checks: _Checks,
    reps: dict[str, _Rep] | None,
) -> list[str] | None:
    """A media playlist: parses, its init and segments exist, they weigh what was recorded, and
    the MPD's Representation lists the same files. Returns [init, *segments], or None."""
    playlist = _playlist(staging, uri)
    if isinstance(playlist, str) or not playlist.segments:
        checks.add(
            name, "playlist", False, playlist if isinstance(playlist, str) else "no segments"
        )
        return None
    checks.add(name, "playlist", True, f"{uri}: {len(playlist.segments)} segments")
    maps = {s.init_section.uri if s.init_section else None for s in playlist.segments}
    if len(maps) != 1 or None in maps:
        checks.add(name, "segments", False, f"EXT-X-MAP {sorted(map(str, maps))}: not one")
        return None
    init = maps.pop()
    assert init is not None
    ranges = _ranges(playlist)
    files = [init, *dict.fromkeys(r[0] for r in ranges)]
    missing = _missing(staging, files)
    if missing:
        checks.add(name, "segments", False, f"missing: {_short(missing)}")
        return None
    outside = [
        f"{uri}@{start}"
        for uri, length, start in ranges
        if length is not None and start + length > (staging / uri).stat().st_size
    ]
    if outside:
        checks.add(name, "segments", False, f"byte ranges past the end: {_short(outside)}")
        return None
    checks.add(name, "segments", True, f"init + {len(files) - 1} segments present")
    size = sum((staging / f).stat().st_size for f in files)
    recorded = expected.sizes.get(rep_id)
    if recorded is not None:
        checks.add(name, "size", size == recorded, f"{size} bytes, recorded {recorded}")
    if reps is not None:
        _dash_files(staging, name, rep_id, reps, files, checks)
    return files


def _dash_files(
    staging: Path,
    name: str,
    rep_id: str,
    reps: dict[str, _Rep],
    files: list[str] | None,
    checks: _Checks,
) -> None:
    """The Representation's files exist, and are the ones HLS lists (``files``) where given."""
    rep = reps.get(rep_id)
    if rep is None or rep.files is None:
        checks.add(name, "dash", False, rep.problem if rep else f"no Representation {rep_id}")
        return
    missing = _missing(staging, rep.files)
    detail = f"Representation {rep_id}: {len(rep.files)} files present"
    if missing:
        detail = f"Representation {rep_id} names missing files: {_short(missing)}"
    elif files is not None and rep.files != files:
        differ = _short(_diff(rep.files, files))
        detail = (
            f"Representation {rep_id} lists {len(rep.files)} files, HLS {len(files)} ({differ})"
        )
    checks.add(name, "dash", not missing and (files is None or rep.files == files), detail)


def _diff(a: list[str], b: list[str]) -> list[str]:
    return sorted(set(a) ^ set(b)) or ["order"]


def _iframes(staging: Path, video: VideoTarget, files: list[str] | None, checks: _Checks) -> None:
    """The I-frame playlist: parses, its map is the rendition's init, one byte range per
    segment of the rendition, each inside its file."""
    assert video.iframe_playlist is not None
    playlist = _playlist(staging, video.iframe_playlist)
    if isinstance(playlist, str) or not playlist.is_i_frames_only or not playlist.segments:
        why = playlist if isinstance(playlist, str) else "not an I-frame playlist with segments"
        checks.add(video.name, "iframes", False, why)
        return
    ranges = _ranges(playlist)
    maps = {s.init_section.uri if s.init_section else None for s in playlist.segments}
    problems = []
    if files is not None and (maps != {files[0]} or [r[0] for r in ranges] != files[1:]):
        problems.append("not one range per segment of the rendition after its init")
    missing = _missing(staging, [r[0] for r in ranges])
    problems += [f"{uri} missing" for uri in missing]
    problems += [
        f"{uri}@{start} past the end"
        for uri, length, start in ranges
        if uri not in missing
        and (length is None or start + length > (staging / uri).stat().st_size)
    ]
    detail = "; ".join(problems[:3]) if problems else f"{len(ranges)} keyframe ranges"
    checks.add(video.name, "iframes", not problems, detail)


# ---------------------------------------------------------------- DASH


def _q(tag: str) -> str:
    return f"{{{NS}}}{tag}"


def _iso_seconds(value: str) -> float | None:
    match = re.fullmatch(r"PT(?:(\d+)H)?(?:(\d+)M)?(?:([\d.]+)S)?", value or "")
    if not match:
        return None
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


@dataclass(frozen=True)
class _Rep:
    """A Representation of the MPD: its files ([init, *segments] from its SegmentTemplate, or
    [file] from a BaseURL), or why they cannot be listed; its ``codecs``."""

    files: list[str] | None
    problem: str = ""
    codecs: str | None = None


def _mpd(staging: Path, expected: PackageExpectations, checks: _Checks) -> dict[str, _Rep] | None:
    """The MPD's Representations by id, or None where it does not parse."""
    path = _file(staging, expected.mpd)
    if path is None:
        checks.add("dash", "mpd", False, f"{expected.mpd} missing")
        return None
    try:
        root = ET.parse(path).getroot()  # noqa: S314 - written by this package step
    except ET.ParseError as err:
        checks.add("dash", "mpd", False, f"{expected.mpd}: {err}")
        return None
    period = root.find(_q("Period"))
    total = _iso_seconds(root.get("mediaPresentationDuration", ""))
    if root.tag != _q("MPD") or period is None or total is None:
        checks.add("dash", "mpd", False, "no MPD with a Period and a mediaPresentationDuration")
        return None
    reps: dict[str, _Rep] = {}
    for aset in period.findall(_q("AdaptationSet")):
        for rep in aset.findall(_q("Representation")):
            rep_id = rep.get("id", "")
            base = rep.find(_q("BaseURL"))
            template = rep.find(_q("SegmentTemplate"))
            if template is None:
                template = aset.find(_q("SegmentTemplate"))
            codecs = rep.get("codecs")
            if base is not None and base.text:
                reps[rep_id] = _Rep([base.text.strip()], codecs=codecs)
            elif template is not None:
                files = _expand(template, rep_id, total)
                reps[rep_id] = (
                    _Rep(None, files, codecs)
                    if isinstance(files, str)
                    else _Rep(files, codecs=codecs)
                )
            else:
                reps[rep_id] = _Rep(None, f"Representation {rep_id}: no SegmentTemplate or BaseURL")
    checks.add("dash", "mpd", True, f"{len(reps)} Representations, {total:.3f} s")
    wanted = {v.rep_id for v in expected.videos} | {a.rep_id for a in expected.audio}
    wanted |= {t.rep_id for t in expected.subtitles}
    if expected.thumbnails is not None:
        wanted.add(expected.thumbnails.rep_id)
    same = set(reps) == wanted
    detail = ", ".join(sorted(reps))
    if not same:
        detail = f"ids {sorted(reps)}, the HLS renditions' {sorted(wanted)}"
    checks.add("dash", "representations", same, detail)
    return reps


def _expand(template: ET.Element, rep_id: str, total_s: float) -> list[str] | str:
    """[init, *media] named by a SegmentTemplate: from its SegmentTimeline, else from its
    ``duration`` over the presentation, less a tail within ``AUDIO_TOLERANCE_S`` (the MPD's
    duration is the longest stream's, rounded up: an audio track may end a few ms after the
    last thumbnail sheet's time)."""
    media = template.get("media", "")
    number = int(template.get("startNumber", "1"))
    timeline = template.find(_q("SegmentTimeline"))
    instants: list[tuple[int, int]] = []
    try:
        if timeline is not None:
            t = 0
            for entry in timeline.findall(_q("S")):
                t = int(entry.get("t", t))
                for _ in range(1 + int(entry.get("r", "0"))):
                    instants.append((number + len(instants), t))
                    t += int(entry.get("d", "0"))
        else:
            timescale = int(template.get("timescale", "1"))
            duration = int(template.get("duration", ""))
            count = max(1, math.ceil((total_s - AUDIO_TOLERANCE_S) * timescale / duration))
            instants = [(number + i, i * duration) for i in range(count)]
    except (TypeError, ValueError) as err:
        return f"Representation {rep_id}: bad SegmentTemplate ({err})"

    def name(pattern: str, n: int, t: int) -> str:
        def value(match: re.Match[str]) -> str:
            key, fmt = match.group(1), match.group(2) or "%d"
            return rep_id if key == "RepresentationID" else fmt % (n if key == "Number" else t)

        return re.sub(r"\$(RepresentationID|Number|Time)(%0\d+d)?\$", value, pattern)

    init = template.get("initialization")
    names = [name(media, n, t) for n, t in instants]
    return [name(init, 0, 0), *names] if init else names


# ---------------------------------------------------------------- codecs strings


def _rep(reps: dict[str, _Rep] | None, rep_id: str) -> _Rep | None:
    return reps.get(rep_id) if reps is not None else None


def _video_codecs(
    master: m3u8.M3U8 | None, video: VideoTarget, actual: str
) -> list[tuple[str, str]]:
    """(where, the video's codecs string there) in the master: its variants, its I-frames."""
    if master is None:
        return []
    found = [
        (f"{p.uri} CODECS", (p.stream_info.codecs or "").split(",")[0])
        for p in master.playlists
        if p.uri == video.playlist
    ]
    found += [
        (f"{p.uri} CODECS", p.iframe_stream_info.codecs or "")
        for p in master.iframe_playlists
        if p.uri == video.iframe_playlist
    ]
    return found


def _audio_codecs(
    master: m3u8.M3U8 | None, audio: AudioTarget, actual: str
) -> list[tuple[str, str]]:
    """Every variant that plays this track's group lists its codecs string."""
    if master is None:
        return []
    groups = {m.group_id for m in master.media if m.uri == audio.playlist}
    found = []
    for p in master.playlists:
        if p.stream_info.audio in groups:
            listed = (p.stream_info.codecs or "").split(",")
            found.append((f"{p.uri} CODECS", actual if actual in listed else ",".join(listed)))
    return found


def _codecs(
    staging: Path,
    name: str,
    init: str,
    declared: Callable[[str], list[tuple[str, str]]],
    rep: _Rep | None,
    checks: _Checks,
) -> None:
    """The codecs strings the manifests declare equal the one derived from the init segment's
    configuration record: profile, level (and for AV1 bit depth) as coded."""
    try:
        actual = codec_string(staging / init)
    except (CodecStringError, av.FFmpegError, IndexError) as err:
        checks.add(name, "codecs", False, f"no codecs string from {init}: {err}")
        return
    places = declared(actual)
    if rep is not None:
        places.append(("MPD codecs", rep.codecs or ""))
    wrong = [f"{where} {value!r}" for where, value in places if value.lower() != actual.lower()]
    detail = f"{actual} in {len(places)} places" if places else f"{actual}, declared nowhere"
    if wrong:
        detail = f"{_short(wrong)}; the bitstream's {actual}"
    checks.add(name, "codecs", bool(places) and not wrong, detail)


# ---------------------------------------------------------------- streams


class _Chain(io.RawIOBase):
    """Files read as one (init + segments: a fragmented MP4), without holding them in memory;
    ``starts`` are the offsets where each file begins."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.starts: list[int] = []
        total = 0
        for path in paths:
            self.starts.append(total)
            total += path.stat().st_size
        self.size = total
        self._pos = 0
        self._index = -1
        self._handle: io.BufferedReader | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        if self._pos >= self.size:
            return 0
        index = bisect.bisect_right(self.starts, self._pos) - 1
        if index != self._index:
            self.close_file()
            self._handle, self._index = self.paths[index].open("rb"), index
        assert self._handle is not None
        end = self.starts[index + 1] if index + 1 < len(self.starts) else self.size
        self._handle.seek(self._pos - self.starts[index])
        view = memoryview(buffer)[: end - self._pos]
        n = self._handle.readinto(view)
        self._pos += n
        return n

    def segment(self, pos: int) -> int:
        """The file a byte offset lies in: 0 is the init segment."""
        return bisect.bisect_right(self.starts, pos) - 1

    def close_file(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle, self._index = None, -1

    def close(self) -> None:
        self.close_file()
        super().close()


@dataclass
class _Read:
    """What demuxing a representation found."""

    packets: int = 0
    time_base: Fraction | None = None
    start: int | None = None
    end: int | None = None
    """Earliest presentation time and latest end, in ``time_base``."""
    first: dict[int, bool] = field(default_factory=dict)
    """Per segment (1..): whether its first packet is a keyframe."""
    decoded: int = 0
    fed: int = 0
    undecodable: list[str] = field(default_factory=list)
    gave: set[int] = field(default_factory=set)
    """Audio: the segments whose first packets gave a frame."""
    frame: Any = None
    """The first decoded frame."""
    codec: str = ""
    profile: str | None = None
    channels: int | None = None
    pix_fmt: str | None = None
    tags: tuple[Any, Any, Any] = (None, None, None)

    @property
    def seconds(self) -> float:
        """The presented span (AAC priming, before 0, is not presented)."""
        if self.start is None or self.end is None or self.time_base is None:
            return 0.0
        return float((self.end - max(self.start, 0)) * self.time_base)


def _demux(staging: Path, files: list[str], kind: str, beat: Callable[[], None]) -> _Read:
    """Every packet of the representation read and counted; the first of each segment decoded
    (video: only keyframes, ``skip_frame`` NONKEY)."""
    read = _Read()
    chain = _Chain([staging / f for f in files])
    with chain, av.open(chain, "r", format="mp4", options=OPEN_OPTIONS) as container:
        stream = (container.streams.video if kind == "video" else container.streams.audio)[0]
        ctx: Any = stream.codec_context
        read.codec = ctx.codec.canonical_name if ctx.codec else ctx.name
        read.profile = ctx.profile
        if kind == "video":
            ctx.skip_frame = "NONKEY"
        else:
            read.channels = ctx.channels
        read.time_base = stream.time_base
        pending = 0
        """Packets of the current segment still to be decoded."""
        for packet in container.demux(stream):
            if not packet.size:
                continue
            read.packets += 1
            if read.packets % PROGRESS_PACKETS == 0:
                beat()
            pts = packet.pts
            if pts is not None:
                end = pts + (packet.duration or 0)
                read.start = pts if read.start is None else min(read.start, pts)
                read.end = end if read.end is None else max(read.end, end)
            segment = chain.segment(packet.pos) if packet.pos is not None else 0
            if segment not in read.first:
                read.first[segment] = bool(packet.is_keyframe)
                read.fed += 1
                pending = 1 if kind == "video" else AUDIO_PACKETS
            if pending and (packet.is_keyframe or kind != "video"):
                pending -= 1
                if _decode(read, ctx, packet, files[segment], kind):
                    read.gave.add(segment)
                    pending = 0
        if _decode(read, ctx, None, "the end", kind) and read.first:
            read.gave.add(max(read.first))  # what the decoder held back: the last segment's
        if kind != "video":
            read.decoded = len(read.gave)
        if read.frame is not None and kind == "video":
            frame = read.frame
            read.pix_fmt = frame.format.name
            read.tags = (
                _name(frame.color_primaries, PRIMARIES) or _name(ctx.color_primaries, PRIMARIES),
                _name(frame.color_trc, TRANSFERS) or _name(ctx.color_trc, TRANSFERS),
                _name(frame.colorspace, MATRICES) or _name(ctx.colorspace, MATRICES),
            )
    return read


def _decode(read: _Read, ctx: Any, packet: Any, where: str, kind: str) -> bool:
    """Whether the decoder gave frames for ``packet`` (None: the flush). Video counts the
    keyframes it gets back (they may come a few packets later); audio, the segments whose
    first packets gave a frame (AAC's first frame is priming, given back as none)."""
    try:
        frames = ctx.decode(packet)
    except av.FFmpegError as err:
        read.undecodable.append(f"{where}: {err}")
        return False
    if frames and read.frame is None:
        read.frame = frames[0]
    if kind == "video":
        read.decoded += sum(1 for f in frames if f.key_frame)
    return bool(frames)


def _name(value: Any, names: dict[int, str]) -> str | None:
    try:
        return names.get(int(value))
    except (TypeError, ValueError):
        return None


def _sampling(pix_fmt: str) -> tuple[int, str]:
    """Bit depth and chroma sampling of a pixel format (``p010le`` and ``yuv420p10le`` alike)."""
    fmt = av.VideoFormat(pix_fmt, 16, 16)
    depth = max(c.bits for c in fmt.components)
    if len(fmt.components) < 3:
        return depth, "4:0:0"
    chroma = fmt.components[1]
    return depth, {(16, 16): "4:4:4", (8, 16): "4:2:2", (8, 8): "4:2:0"}.get(
        (chroma.width, chroma.height), f"{chroma.width}x{chroma.height}/16"
    )


def _read_or_fail(
    staging: Path, name: str, files: list[str], kind: str, checks: _Checks, beat: Progress
) -> _Read | None:
    try:
        read = _demux(staging, files, kind, lambda: beat(name))
    except (av.FFmpegError, OSError, IndexError, ValueError) as err:
        checks.add(name, "demux", False, f"{type(err).__name__}: {err}")
        return None
    segments = len(files) - 1
    empty = [files[i] for i in range(1, len(files)) if i not in read.first]
    detail = f"{read.packets} packets in {segments} segments"
    if empty:
        detail = f"segments without {kind}: {_short(empty)}"
    checks.add(name, "demux", read.packets > 0 and not empty, detail)
    return read


def _video_stream(
    staging: Path, video: VideoTarget, files: list[str], checks: _Checks, beat: Progress
) -> None:
    read = _read_or_fail(staging, video.name, files, "video", checks, beat)
    if read is None:
        return
    name, settings = video.name, video.settings
    detail = f"{read.packets} frames, the encode has {video.frames}"
    checks.add(name, "frames", read.packets == video.frames, detail)
    rate = Fraction(settings.frame_rate) if settings else None
    frame_s = float(1 / rate) if rate else video.duration_s / max(video.frames, 1)
    detail = f"{read.seconds:.3f} s, the encode {video.duration_s:.3f} s"
    checks.add(name, "duration", abs(read.seconds - video.duration_s) <= frame_s + 0.001, detail)
    not_key = [files[s] for s, key in sorted(read.first.items()) if s > 0 and not key]
    detail = f"{len(files) - 1} segments open on a keyframe that decodes"
    if not_key:
        detail = f"{_short(not_key)} do not open on a keyframe"
    elif read.undecodable or read.decoded != read.fed:
        detail = f"{read.decoded} of {read.fed} keyframes decode; {_short(read.undecodable, 1)}"
    ok = not not_key and not read.undecodable and read.decoded == read.fed
    checks.add(name, "keyframes", ok, detail)
    if video.codec is None or settings is None:
        return  # nothing planned to compare with (histories from before plans travelled)
    checks.add(name, "codec", read.codec == video.codec, f"{read.codec}, the plan's {video.codec}")
    depth, chroma = _sampling(settings.pix_fmt)
    planned = f"the plan's {depth}-bit {chroma} ({settings.pix_fmt})"
    got = _sampling(read.pix_fmt) if read.pix_fmt else None
    detail = f"{got[0]}-bit {got[1]} ({read.pix_fmt}), {planned}" if got else "no frame decoded"
    checks.add(name, "bit_depth", got == (depth, chroma), detail)
    allowed = PROFILES.get((video.codec, depth, chroma))
    if allowed is not None:
        profiles = " or ".join(sorted(allowed))
        detail = f"{read.profile}; {video.codec} {depth}-bit {chroma} is {profiles}"
        checks.add(name, "profile", read.profile in allowed, detail)
    asked = (settings.color_primaries, settings.color_transfer, settings.color_matrix)
    ok = all(a is None or a == tag for a, tag in zip(asked, read.tags, strict=True))
    detail = (
        f"primaries/transfer/matrix {'/'.join(t or 'unset' for t in read.tags)}, "
        f"the plan's {'/'.join(t or 'any' for t in asked)}"
    )
    checks.add(name, "colour", ok, detail)


def _audio_stream(
    staging: Path, audio: AudioTarget, files: list[str], checks: _Checks, beat: Progress
) -> None:
    read = _read_or_fail(staging, audio.name, files, "audio", checks, beat)
    if read is None:
        return
    name = audio.name
    detail = f"each of {read.fed} segments decodes from its first packets"
    if read.undecodable or read.decoded != read.fed:
        why = _short(read.undecodable, 1) or "no frame"
        detail = f"{read.decoded} of {read.fed} segments decode: {why}"
    checks.add(name, "decode", read.decoded == read.fed and not read.undecodable, detail)
    detail = f"{read.seconds:.3f} s, the encode {audio.duration_s:.3f} s"
    checks.add(name, "duration", abs(read.seconds - audio.duration_s) <= AUDIO_TOLERANCE_S, detail)
    if audio.codec is not None:
        detail = f"{read.codec}, the plan's {audio.codec}"
        checks.add(name, "codec", read.codec == audio.codec, detail)
    if audio.channels is not None:
        detail = f"{read.channels}, the plan's {audio.channels}"
        checks.add(name, "channels", read.channels == audio.channels, detail)


# ---------------------------------------------------------------- subtitles and thumbnails


def _subtitles(
    staging: Path, text: TextTarget, checks: _Checks, reps: dict[str, _Rep] | None
) -> None:
    """The subtitle playlist's WebVTT segments exist; the MPD's text set names the whole file."""
    playlist = _playlist(staging, text.playlist)
    if isinstance(playlist, str) or not playlist.segments:
        why = playlist if isinstance(playlist, str) else "no segments"
        checks.add(text.name, "playlist", False, why)
        return
    checks.add(text.name, "playlist", True, f"{text.playlist}: {len(playlist.segments)} segments")
    missing = _missing(staging, [s.uri for s in playlist.segments])
    detail = f"missing: {_short(missing)}" if missing else "every WebVTT segment present"
    checks.add(text.name, "segments", not missing, detail)
    if reps is not None:
        _dash_files(staging, text.name, text.rep_id, reps, [text.whole], checks)


def _thumbnails(
    staging: Path,
    image: ImageTarget,
    sizes: dict[str, int],
    checks: _Checks,
    reps: dict[str, _Rep] | None,
) -> None:
    """The image playlist lists the package's sheets; the sheets, the poster and every sheet
    the WebVTT names exist; sheets and poster weigh what was recorded; the MPD's thumbnail set
    names the sheets."""
    name = image.name
    playlist = _playlist(staging, image.playlist)
    listed = [s.uri for s in playlist.segments] if not isinstance(playlist, str) else []
    detail = playlist if isinstance(playlist, str) else f"{len(listed)} sheets"
    if listed != image.sheets and not isinstance(playlist, str):
        detail = f"lists {_short(listed)}, the package has {_short(image.sheets)}"
    checks.add(name, "playlist", listed == image.sheets, detail)
    vtt = _file(staging, image.vtt)
    named = re.findall(r"^(\S+?)#xywh=", vtt.read_text(encoding="utf-8"), re.M) if vtt else []
    missing = ([] if vtt else [image.vtt]) + _missing(
        staging, [*image.sheets, *named, image.poster]
    )
    detail = f"missing: {_short(missing)}" if missing else "sheets, WebVTT and poster present"
    checks.add(name, "segments", not missing, detail)
    if not missing:
        sheets = sum((staging / s).stat().st_size for s in image.sheets)
        poster = (staging / image.poster).stat().st_size
        recorded = (sizes.get(image.rep_id, sheets), sizes.get("poster", poster))
        detail = f"sheets {sheets} bytes, poster {poster}; recorded {recorded[0]}, {recorded[1]}"
        checks.add(name, "size", (sheets, poster) == recorded, detail)
    if reps is not None:
        _dash_files(staging, name, image.rep_id, reps, image.sheets, checks)
