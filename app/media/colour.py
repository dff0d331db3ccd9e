"""Colour code points (ITU-T H.273, ISO/IEC 23091-2) and the names ffmpeg gives them.

FFmpeg's AVColorPrimaries, AVColorTransferCharacteristic and AVColorSpace values are the
H.273 code points, so one table per property serves the probe (code -> name), the encoder
options (names) and the DASH ``urn:mpeg:mpegB:cicp`` descriptors (name -> code).
"""

from __future__ import annotations

PRIMARIES = {
    1: "bt709", 4: "bt470m", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 8: "film",
    9: "bt2020", 10: "smpte428", 11: "smpte431", 12: "smpte432", 22: "ebu3213",
}  # fmt: skip
TRANSFERS = {
    1: "bt709", 4: "gamma22", 5: "gamma28", 6: "smpte170m", 7: "smpte240m", 8: "linear",
    9: "log100", 10: "log316", 11: "iec61966-2-4", 12: "bt1361e", 13: "iec61966-2-1",
    14: "bt2020-10", 15: "bt2020-12", 16: "smpte2084", 17: "smpte428", 18: "arib-std-b67",
}  # fmt: skip
MATRICES = {
    0: "gbr", 1: "bt709", 4: "fcc", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 8: "ycgco",
    9: "bt2020nc", 10: "bt2020c", 11: "smpte2085", 12: "chroma-derived-nc",
    13: "chroma-derived-c", 14: "ictcp",
}  # fmt: skip


def code_of(name: str | None, table: dict[int, str]) -> int | None:
    """The code point of a name in ``table``, or None."""
    return next((code for code, known in table.items() if known == name), None)
