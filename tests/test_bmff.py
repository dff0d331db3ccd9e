"""The segment index on fragments built by hand, for the box forms ffmpeg does not write
(per-sample durations and flags, ``trex`` defaults, signed composition offsets), and on
ffmpeg's own output for the rest (tests/test_conformance.py)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from app.media.packaging.bmff import NON_SYNC, BoxError, index_track
from app.media.packaging.hls import iframes


def box(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(body), kind) + body


def full(kind: bytes, version: int, flags: int, body: bytes) -> bytes:
    return box(kind, struct.pack(">I", version << 24 | flags) + body)


def init_segment(timescale: int, media_time: int, trex_flags: int) -> bytes:
    mdhd = full(b"mdhd", 0, 0, struct.pack(">IIII", 0, 0, timescale, 0) + b"\0" * 4)
    mvhd = full(b"mvhd", 0, 0, struct.pack(">IIII", 0, 0, 1000, 0) + b"\0" * 80)
    elst = full(b"elst", 0, 0, struct.pack(">IIiI", 1, 0, media_time, 1 << 16))
    trex = full(b"trex", 0, 0, struct.pack(">IIIII", 1, 1, 100, 0, trex_flags))
    trak = box(b"trak", box(b"edts", elst) + box(b"mdia", mdhd))
    return box(b"ftyp", b"iso6") + box(b"moov", mvhd + trak + box(b"mvex", trex))


def fragment(decode_time: int, samples: list[tuple[int, int, bool, int]]) -> bytes:
    """One moof + mdat; samples are (duration, size, sync, composition offset)."""
    tfhd = full(b"tfhd", 0, 0x020000, struct.pack(">I", 1))  # default-base-is-moof only
    tfdt = full(b"tfdt", 1, 0, struct.pack(">Q", decode_time))
    entries = b"".join(
        struct.pack(">IIIi", d, s, 0 if sync else NON_SYNC, cto) for d, s, sync, cto in samples
    )

    def moof(offset: int) -> bytes:
        trun = full(b"trun", 1, 0xF01, struct.pack(">Ii", len(samples), offset) + entries)
        return box(b"moof", box(b"traf", tfhd + tfdt + trun))

    size = len(moof(0))
    data = b"".join(bytes([n]) * s for n, (_, s, _, _) in enumerate(samples))
    return moof(size + 8) + box(b"mdat", data)


def test_per_sample_values_and_the_edit_list_shift(tmp_path: Path) -> None:
    init = tmp_path / "init.m4s"
    init.write_bytes(init_segment(timescale=1000, media_time=80, trex_flags=NON_SYNC))
    first = tmp_path / "a.m4s"
    # Two fragments in one segment: the second opens on a keyframe too.
    first.write_bytes(
        fragment(0, [(40, 10, True, 80), (40, 7, False, -40)])
        + fragment(80, [(40, 5, True, 80), (40, 3, False, 0)])
    )
    second = tmp_path / "b.m4s"
    second.write_bytes(fragment(160, [(40, 9, True, 80), (20, 4, False, 80)]))

    track = index_track(init, [first, second])
    assert track.timescale == 1000 and track.defaults.shift == 80
    a, b = track.segments
    assert (a.start, a.end) == (0, 160)  # b's first frame: decode 160 + cto 80 - shift 80
    assert (b.start, b.end) == (160, 220)  # the last frame: decode 200 + cto 80 - shift 80, 20 long
    samples = a.fragments[1].samples
    assert [(s.size, s.sync, s.composition_offset) for s in samples] == [
        (5, True, 80),
        (3, False, 0),
    ]
    data = first.read_bytes()
    assert data[samples[0].offset : samples[0].offset + samples[0].size] == b"\0" * 5

    frames = iframes(track)
    assert [(f.uri, f.offset) for f in frames] == [
        ("a.m4s", 0),
        ("a.m4s", a.fragments[1].moof),
        ("b.m4s", 0),
    ]
    assert [round(f.duration, 3) for f in frames] == [0.08, 0.08, 0.06]
    assert frames[0].length == a.fragments[0].samples[0].offset + 10


def test_a_truncated_box_is_an_error(tmp_path: Path) -> None:
    init = tmp_path / "init.m4s"
    init.write_bytes(init_segment(1000, 0, 0))
    broken = tmp_path / "a.m4s"
    broken.write_bytes(fragment(0, [(40, 10, True, 0)])[:-4])
    with pytest.raises(BoxError, match="runs past"):
        index_track(init, [broken])
