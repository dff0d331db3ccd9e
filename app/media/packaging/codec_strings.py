"""RFC 6381 ``codecs`` strings read from the stream's own configuration record.

ffmpeg's dash muxer writes none for HEVC or AV1, and a player that is told the wrong profile or
level refuses a stream it could play (or picks one it cannot): the string is computed from the
bytes the decoder will see, never from what the plan asked for.
"""

from __future__ import annotations

from pathlib import Path

import av

from app.media.formats import OPEN_OPTIONS


class CodecStringError(ValueError):
    """The stream's configuration record is missing or malformed."""


def avc(record: bytes) -> str:
    """``avc1.PPCCLL``: profile_idc, constraint flags and level_idc of the avcC record."""
    if len(record) < 4 or record[0] != 1:
        raise CodecStringError("no avcC record")
    return f"avc1.{record[1]:02x}{record[2]:02x}{record[3]:02x}"


def _reversed_bits(value: int, width: int = 32) -> int:
    return int(f"{value:0{width}b}"[::-1], 2)


def hevc(record: bytes, tag: str = "hvc1") -> str:
    """``hvc1.<space><profile>.<compat, bit-reversed hex>.<L|H><level>.<constraints>`` from the
    hvcC record (ISO/IEC 14496-15 annex E), trailing zero constraint bytes left out."""
    if len(record) < 13 or record[0] != 1:
        raise CodecStringError("no hvcC record")
    space = "ABC"[(record[1] >> 6) - 1] if record[1] >> 6 else ""
    tier = "H" if record[1] & 0x20 else "L"
    profile = record[1] & 0x1F
    compat = _reversed_bits(int.from_bytes(record[2:6], "big"))
    constraints = bytearray(record[6:12])
    while constraints and constraints[-1] == 0:
        constraints.pop()
    parts = [tag, f"{space}{profile}", f"{compat:X}", f"{tier}{record[12]}"]
    parts += [f"{b:X}" for b in constraints]
    return ".".join(parts)


def av1(record: bytes) -> str:
    """``av01.<profile>.<level><tier>.<bit depth>`` from the av1C record."""
    if len(record) < 3 or record[0] & 0x7F != 1:
        raise CodecStringError("no av1C record")
    profile, level = record[1] >> 5, record[1] & 0x1F
    tier = "H" if record[2] & 0x80 else "M"
    high, twelve = bool(record[2] & 0x40), bool(record[2] & 0x20)
    depth = 12 if twelve else 10 if high else 8
    return f"av01.{profile}.{level:02d}{tier}.{depth:02d}"


def aac(record: bytes) -> str:
    """``mp4a.40.<audio object type>`` from the AudioSpecificConfig (2: AAC-LC)."""
    if not record:
        return "mp4a.40.2"
    object_type = record[0] >> 3
    if object_type == 31 and len(record) > 1:  # escape: 32 + the next six bits
        object_type = 32 + (((record[0] & 0x07) << 3) | (record[1] >> 5))
    return f"mp4a.40.{object_type}"


def codec_string(path: Path) -> str:
    """The codecs string of the first stream of an MP4 file (an encode or an init segment)."""
    with av.open(str(path), options=OPEN_OPTIONS) as container:
        stream = container.streams[0]
        ctx = stream.codec_context
        record = bytes(ctx.extradata or b"")
        name = ctx.codec.name if ctx.codec else ctx.name
        tag = str(getattr(ctx, "codec_tag", "") or "")
    if name == "h264":
        return avc(record)
    if name == "hevc":
        return hevc(record, "hev1" if tag == "hev1" else "hvc1")
    if name in ("av1", "libdav1d", "libaom-av1"):
        return av1(record)
    if name == "aac":
        return aac(record)
    if name == "eac3":
        return "ec-3"
    if name == "ac3":
        return "ac-3"
    if name == "opus":
        return "Opus"
    raise CodecStringError(f"no codecs string for {name}")
