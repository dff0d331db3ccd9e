"""ffmpeg's ``idet`` over a source's first frames: the field order the pictures show.

Stream flags lie (progressive masters flagged interlaced, interlaced ones flagged progressive), so
the deinterlacing decision rests on a measurement of the pictures themselves.
"""

from __future__ import annotations

import re
import subprocess
import time
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


class FieldOrderRun:
    """idet over the first ``frames`` frames (at most ``IDET_SECONDS``), run in the background
    while the probe reads the rest of the file (the decode is most of a probe's time).

    ``result()`` is None when ffmpeg fails, hangs past ``timeout_s`` or decides nothing: a
    best-effort measurement never fails the probe. Leaving the ``with`` block kills it."""

    def __init__(
        self,
        path: Path,
        container: str | None = None,
        *,
        frames: int = IDET_FRAMES,
        timeout_s: float = IDET_TIMEOUT_S,
        ffmpeg: str | None = None,
    ) -> None:
        command = [
            ffmpeg_binary(ffmpeg), "-nostdin", "-hide_banner", "-nostats", "-loglevel", "info",
            *input_args(path, container), "-map", "0:v:0", "-an", "-sn", "-dn",
            "-t", str(IDET_SECONDS), "-frames:v", str(frames), "-vf", IDET_FILTER,
            "-f", "null", "-",
        ]  # fmt: skip
        self._deadline = time.monotonic() + timeout_s
        self._process: subprocess.Popen[str] | None
        try:
            self._process = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                errors="replace", preexec_fn=die_with_parent,  # dies with the worker
            )  # fmt: skip
        except OSError:
            self._process = None

    def result(self) -> FieldOrder | None:
        if self._process is None:
            return None
        try:
            _, stderr = self._process.communicate(
                timeout=max(0.0, self._deadline - time.monotonic())
            )
        except subprocess.TimeoutExpired:
            return None
        return parse_idet(stderr)

    def __enter__(self) -> FieldOrderRun:
        return self

    def __exit__(self, *_: object) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()  # not its pipe: a child it left may hold that open
        if self._process.stderr is not None:
            self._process.stderr.close()
