"""ffmpeg's ``idet`` over a source's first frames: the field order the pictures show.

Stream flags lie (progressive masters flagged interlaced, interlaced ones flagged progressive), so
the deinterlacing decision rests on a measurement of the pictures themselves.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from app.core.models import FieldOrder
from app.core.processes import die_with_parent
from app.stratum.functions.common import input_args
from app.stratum.functions.ffmpeg import ffmpeg_binary

IDET_FRAMES = 250
IDET_SECONDS = 10
IDET_TIMEOUT_S = 30.0
# idet's default (1.04) calls sharp, fast-moving progressive pictures (lavfi testsrc2, scrolling
# text) interlaced; 1.5 still finds real combing and leaves doubtful frames undetermined.
IDET_FILTER = "idet=intl_thres=1.5"
_MULTI = re.compile(
    r"Multi frame detection:\s*TFF:\s*(\d+)\s*BFF:\s*(\d+)\s*Progressive:\s*(\d+)"
    r"\s*Undetermined:\s*(\d+)"
)


def parse_idet(stderr: str) -> FieldOrder | None:
    """The verdict of idet's last "Multi frame detection" line; None where nothing was decided.

    ffmpeg may print one line per filter graph it built (a reconfigured graph prints zeros
    first): the last one covers the frames.
    """
    found = _MULTI.findall(stderr)
    if not found:
        return None
    tff, bff, progressive, _undetermined = (int(n) for n in found[-1])
    return idet_verdict(tff, bff, progressive)


def idet_verdict(tff: int, bff: int, progressive: int) -> FieldOrder | None:
    """Interlaced only when interlaced frames are a clear (2/3) majority of the determined ones:
    a little combing in progressive material (fast edges, captions) must not trigger a deinterlace.
    """
    determined = tff + bff + progressive
    if determined == 0:
        return None
    if 3 * (tff + bff) >= 2 * determined:
        return "tff" if tff >= bff else "bff"
    return "progressive"


def measure_field_order(
    path: Path,
    container: str | None = None,
    *,
    frames: int = IDET_FRAMES,
    timeout_s: float = IDET_TIMEOUT_S,
    ffmpeg: str | None = None,
) -> FieldOrder | None:
    """Run idet over the first ``frames`` frames (at most ``IDET_SECONDS``); None when ffmpeg
    fails or decides nothing: a best-effort measurement never fails the probe."""
    command = [
        ffmpeg_binary(ffmpeg),
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "info",
        *input_args(path, container),
        "-map",
        "0:v:0",
        "-an",
        "-sn",
        "-dn",
        "-t",
        str(IDET_SECONDS),
        "-frames:v",
        str(frames),
        "-vf",
        IDET_FILTER,
        "-f",
        "null",
        "-",
    ]
    try:
        run = subprocess.run(
            command, capture_output=True, text=True, errors="replace", timeout=timeout_s,
            preexec_fn=die_with_parent,  # dies with the worker, like every ffmpeg run
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_idet(run.stderr)
