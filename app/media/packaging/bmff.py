"""Just enough ISO BMFF (ISO/IEC 14496-12) to index fragmented MP4 segments.

The playlists are written from what the segments hold: each sample's decode time, duration,
size, byte offset and whether it is a sync sample, read from ``moof``/``traf``/``trun`` with
the defaults of the init segment's ``trex`` and ``tfhd``. (pymp4, the PyPI parser, pins
construct 2.8.8 from 2016; the handful of boxes needed here are simpler to read directly.)
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CONTAINERS = {b"moov", b"trak", b"mdia", b"mvex", b"moof", b"traf"}


class BoxError(ValueError):
    """A segment that is not the fragmented MP4 the packager wrote."""


@dataclass(frozen=True)
class Box:
    type: bytes
    start: int
    """Offset of the box's first byte in the file."""
    body: int
    """Offset of the first byte after the header (and, for full boxes, not past version/flags)."""
    end: int


def boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[Box]:
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise BoxError(f"box {kind!r} at {pos} runs past its parent")
        yield Box(kind, pos, pos + header, pos + size)
        pos += size


def find(data: bytes, path: list[bytes], start: int = 0, end: int | None = None) -> list[Box]:
    """Every box at ``path`` (e.g. ``[b"moov", b"trak", b"mdia", b"mdhd"]``) below the range."""
    found = [b for b in boxes(data, start, end) if b.type == path[0]]
    if len(path) == 1:
        return found
    return [inner for box in found for inner in find(data, path[1:], box.body, box.end)]


def _full(data: bytes, box: Box) -> tuple[int, int, int]:
    """(version, flags, offset of the body after them)."""
    word = struct.unpack_from(">I", data, box.body)[0]
    return word >> 24, word & 0xFFFFFF, box.body + 4


@dataclass(frozen=True)
class TrackDefaults:
    """From the init segment: the track's clock and the per-sample defaults of ``trex``."""

    timescale: int
    shift: int = 0
    """Media time shown at presentation time 0 (the edit list: AAC priming, B-frame delay)."""
    duration: int = 0
    size: int = 0
    flags: int = 0


def _timescale(data: bytes, box: Box) -> int:
    """The timescale of an ``mvhd`` or ``mdhd`` (after creation and modification times)."""
    version, _, pos = _full(data, box)
    return int(struct.unpack_from(">I", data, pos + (16 if version == 1 else 8))[0])


def _edit_shift(init: bytes, timescale: int) -> int:
    """Media time of the first non-empty edit, less any empty edit (a delay) before it."""
    elst = find(init, [b"moov", b"trak", b"edts", b"elst"])
    mvhd = find(init, [b"moov", b"mvhd"])
    if not elst or not mvhd:
        return 0
    movie_timescale = _timescale(init, mvhd[0]) or 1
    version, _, pos = _full(init, elst[0])
    (count,) = struct.unpack_from(">I", init, pos)
    pos += 4
    delay = 0
    for _ in range(count):
        if version == 1:
            duration, media_time = struct.unpack_from(">Qq", init, pos)
            pos += 20
        else:
            duration, media_time = struct.unpack_from(">Ii", init, pos)
            pos += 12
        if media_time >= 0:
            return int(media_time) - delay
        delay += duration * timescale // movie_timescale
    return -delay


def track_defaults(init: bytes) -> TrackDefaults:
    mdhd = find(init, [b"moov", b"trak", b"mdia", b"mdhd"])
    if not mdhd:
        raise BoxError("no mdhd in the init segment")
    timescale = _timescale(init, mdhd[0])
    shift = _edit_shift(init, timescale)
    trex = find(init, [b"moov", b"mvex", b"trex"])
    if not trex:
        return TrackDefaults(timescale, shift)
    _, _, pos = _full(init, trex[0])
    _, _, duration, size, flags = struct.unpack_from(">IIIII", init, pos)
    return TrackDefaults(timescale, shift, duration, size, flags)


NON_SYNC = 0x10000
"""sample_is_non_sync_sample in a sample's flags (ISO/IEC 14496-12 8.8.3.1)."""


@dataclass(frozen=True)
class Sample:
    decode_time: int
    duration: int
    offset: int
    """Byte offset of the sample's data in its segment file."""
    size: int
    sync: bool
    composition_offset: int = 0


@dataclass(frozen=True)
class Fragment:
    moof: int
    """Byte offset of the fragment's ``moof``: a byte range that starts there is decodable."""
    samples: list[Sample]


def fragments(segment: bytes, defaults: TrackDefaults) -> list[Fragment]:
    """Every fragment of a media segment with its samples (one track per segment, as the
    packager writes them)."""
    result = []
    for moof in (b for b in boxes(segment) if b.type == b"moof"):
        samples: list[Sample] = []
        for traf in find(segment, [b"traf"], moof.body, moof.end):
            samples += _track_run(segment, moof, traf, defaults)
        result.append(Fragment(moof.start, samples))
    return result


def _track_run(segment: bytes, moof: Box, traf: Box, defaults: TrackDefaults) -> list[Sample]:
    tfhd = find(segment, [b"tfhd"], traf.body, traf.end)
    if not tfhd:
        raise BoxError("traf without tfhd")
    _, flags, pos = _full(segment, tfhd[0])
    pos += 4  # track_ID
    base = moof.start  # default-base-is-moof, and the first traf's base without it
    if flags & 0x01:
        (base,) = struct.unpack_from(">Q", segment, pos)
        pos += 8
    duration, size, sample_flags = defaults.duration, defaults.size, defaults.flags
    if flags & 0x02:
        pos += 4  # sample_description_index
    if flags & 0x08:
        (duration,) = struct.unpack_from(">I", segment, pos)
        pos += 4
    if flags & 0x10:
        (size,) = struct.unpack_from(">I", segment, pos)
        pos += 4
    if flags & 0x20:
        (sample_flags,) = struct.unpack_from(">I", segment, pos)
    time = 0
    for tfdt in find(segment, [b"tfdt"], traf.body, traf.end):
        version, _, pos = _full(segment, tfdt)
        (time,) = struct.unpack_from(">Q" if version == 1 else ">I", segment, pos)
    samples = []
    for trun in find(segment, [b"trun"], traf.body, traf.end):
        tr_version, tr_flags, pos = _full(segment, trun)
        (count,) = struct.unpack_from(">I", segment, pos)
        pos += 4
        offset = base
        if tr_flags & 0x01:
            offset += struct.unpack_from(">i", segment, pos)[0]
            pos += 4
        first_flags = None
        if tr_flags & 0x04:
            (first_flags,) = struct.unpack_from(">I", segment, pos)
            pos += 4
        for n in range(count):
            d, s, f, cto = duration, size, sample_flags, 0
            if tr_flags & 0x100:
                (d,) = struct.unpack_from(">I", segment, pos)
                pos += 4
            if tr_flags & 0x200:
                (s,) = struct.unpack_from(">I", segment, pos)
                pos += 4
            if tr_flags & 0x400:
                (f,) = struct.unpack_from(">I", segment, pos)
                pos += 4
            if tr_flags & 0x800:
                (cto,) = struct.unpack_from(">i" if tr_version else ">I", segment, pos)
                pos += 4
            if n == 0 and first_flags is not None:
                f = first_flags
            samples.append(Sample(time, d, offset, s, not f & NON_SYNC, cto))
            time += d
            offset += s
    return samples


@dataclass(frozen=True)
class SegmentIndex:
    """One media segment as the playlists describe it, on the presentation timeline."""

    uri: str
    size: int
    start: int
    """Presentation time of its first frame, in the track's timescale (0 for the first)."""
    end: int
    """Presentation time where the next segment starts (the end of the stream for the last)."""
    fragments: list[Fragment]

    @property
    def duration(self) -> int:
        return self.end - self.start

    @property
    def first_sync(self) -> bool:
        return bool(self.fragments and self.fragments[0].samples[0].sync)


@dataclass(frozen=True)
class TrackIndex:
    defaults: TrackDefaults
    segments: list[SegmentIndex]

    @property
    def timescale(self) -> int:
        return self.defaults.timescale

    def seconds(self, ticks: int) -> float:
        return ticks / self.defaults.timescale


def index_track(init: Path, segments: list[Path]) -> TrackIndex:
    """Each media segment of one representation, in order, with its exact presentation
    bounds: a segment starts at its earliest composition time less the edit list's shift (so
    the first of an AAC track is shorter by the priming samples) and ends where the next
    starts, the last at the end of its latest frame."""
    defaults = track_defaults(init.read_bytes())
    parsed = []
    for path in segments:
        data = path.read_bytes()
        frags = fragments(data, defaults)
        if not any(f.samples for f in frags):
            raise BoxError(f"{path.name} has no samples")
        parsed.append((path.name, len(data), frags))
    starts, end = [], 0
    for _, _, frags in parsed:
        samples = [s for f in frags for s in f.samples]
        times = [s.decode_time + s.composition_offset - defaults.shift for s in samples]
        starts.append(max(0, min(times)))
        end = max(t + s.duration for t, s in zip(times, samples, strict=True))
    bounds = [*starts[1:], end]
    indexed = [
        SegmentIndex(uri, size, start, stop, frags)
        for (uri, size, frags), start, stop in zip(parsed, starts, bounds, strict=True)
    ]
    if indexed:  # the first starts the timeline, whatever its first frame's time
        first = indexed[0]
        indexed[0] = SegmentIndex(first.uri, first.size, 0, first.end, first.fragments)
    return TrackIndex(defaults, indexed)
