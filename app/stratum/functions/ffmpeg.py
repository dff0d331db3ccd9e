"""Run ffmpeg as a child process that reports progress, can be cancelled and never outlives us."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections import deque
from collections.abc import Callable, Sequence
from functools import lru_cache

from app.core.models import Progress
from app.core.processes import die_with_parent
from app.observability.telemetry import ffmpeg_span

log = logging.getLogger(__name__)


class FfmpegError(RuntimeError):
    """ffmpeg exited non-zero, or stopped making progress."""


@lru_cache
def ffmpeg_binary(override: str | None = None) -> str:
    """The static ffmpeg from imageio-ffmpeg unless a path is configured."""
    if override:
        return override
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


def _parse_progress(block: dict[str, str], total_s: float) -> Progress:
    def number(key: str) -> float | None:
        try:
            return float(block.get(key, "").rstrip("x"))
        except ValueError:
            return None

    out_us = number("out_time_us") or number("out_time_ms") or 0.0
    frames = number("frame")
    return Progress(
        done_s=min(max(out_us / 1e6, 0.0), total_s) if total_s > 0 else max(out_us / 1e6, 0.0),
        total_s=total_s,
        fps=number("fps"),
        speed=number("speed"),
        frames=int(frames) if frames is not None else None,
    )


async def run_ffmpeg(
    args: Sequence[str],
    *,
    binary: str,
    total_s: float,
    stall_timeout_s: float,
    on_progress: Callable[[Progress], None] | None = None,
    label: str = "",
    on_stderr: Callable[[str], None] | None = None,
    stdin: int | None = None,
    pass_fds: Sequence[int] = (),
) -> None:
    """``_run_ffmpeg`` in an "ffmpeg" span (a child of the activity's), which describes the run
    by its arguments' shape and keeps ffmpeg's last speed, so a slow job shows which run was.

    ``on_stderr`` sees every non-empty stderr line: what a filter reports (loudnorm's JSON)
    arrives there, with ``-loglevel info`` in ``args`` (a later ``-loglevel`` wins)."""
    with ffmpeg_span(args, label) as span:

        def progress(p: Progress) -> None:
            if p.speed is not None:
                span.set_attribute("ffmpeg.speed", p.speed)
            if on_progress is not None:
                on_progress(p)

        await _run_ffmpeg(
            args,
            binary=binary,
            total_s=total_s,
            stall_timeout_s=stall_timeout_s,
            on_progress=progress,
            on_stderr=on_stderr,
            stdin=stdin,
            pass_fds=pass_fds,
        )


async def _run_ffmpeg(
    args: Sequence[str],
    *,
    binary: str,
    total_s: float,
    stall_timeout_s: float,
    on_progress: Callable[[Progress], None] | None = None,
    on_stderr: Callable[[str], None] | None = None,
    stdin: int | None = None,
    pass_fds: Sequence[int] = (),
) -> None:
    """Run ``ffmpeg <args>`` (never through a shell) and follow its ``-progress`` output.

    Cancellation (``asyncio.CancelledError``) and a stall longer than ``stall_timeout_s`` both
    kill ffmpeg's whole process group before this returns, so no encoder is left running.
    ``stdin`` (a pipe's read end) and ``pass_fds`` (write ends) connect two runs: they are
    handed to the child, so this process closes its copies once the child is started (a
    pipe then ends when the process at its other end does).
    """
    cmd = [binary, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error"]
    cmd += ["-progress", "pipe:1", "-stats_period", "0.5", *args]
    try:
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            stdin=asyncio.subprocess.DEVNULL if stdin is None else stdin,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            preexec_fn=die_with_parent,
            pass_fds=tuple(pass_fds),
        )
    finally:
        for fd in [*pass_fds, *([] if stdin is None else [stdin])]:
            os.close(fd)
    assert proc.stdout is not None and proc.stderr is not None
    stderr_tail: deque[str] = deque(maxlen=20)

    async def read_stderr() -> None:
        assert proc.stderr is not None
        async for raw in proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            if line:
                stderr_tail.append(line)
                if on_stderr is not None:
                    on_stderr(line)

    async def read_progress() -> None:
        assert proc.stdout is not None
        block: dict[str, str] = {}
        while True:
            raw = await asyncio.wait_for(proc.stdout.readline(), timeout=stall_timeout_s)
            if not raw:
                return
            key, _, value = raw.decode(errors="replace").strip().partition("=")
            block[key] = value
            if key == "progress":
                if on_progress is not None:
                    on_progress(_parse_progress(block, total_s))
                block = {}

    stderr_task = asyncio.create_task(read_stderr())
    try:
        await read_progress()
        returncode = await proc.wait()
    except TimeoutError:
        _kill(proc)
        await proc.wait()
        raise FfmpegError(
            f"ffmpeg made no progress for {stall_timeout_s:g}s and was killed"
        ) from None
    except BaseException:
        _kill(proc)
        with contextlib.suppress(Exception):
            await asyncio.shield(proc.wait())
        raise
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(stderr_task, timeout=5)
    if returncode != 0:
        detail = "; ".join(stderr_tail) or f"exit status {returncode}"
        raise FfmpegError(f"ffmpeg failed: {detail}")


def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        log.info("killed ffmpeg process group %s", proc.pid)
