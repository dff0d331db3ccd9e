"""What every activity class shares: settings, the ffmpeg runner wired to heartbeats, errors."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path

from temporalio import activity
from temporalio.exceptions import ApplicationError

from app.activities.ffmpeg import FfmpegError, ffmpeg_binary, run_ffmpeg
from app.models import Progress
from app.settings import Settings
from app.sources import SourceError, source_path

INVALID_SOURCE = "InvalidSource"
"""Failure type for bad input: never retried."""


class ActivityBase:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def source(self, uri: str) -> Path:
        try:
            return source_path(uri, self.settings.allowed_source_roots)
        except SourceError as err:
            raise ApplicationError(str(err), type=INVALID_SOURCE, non_retryable=True) from None

    async def ffmpeg(self, args: Sequence[str], *, total_s: float, label: str) -> None:
        """Run ffmpeg, heartbeating its progress so the job shows it and cancellation reaches it."""

        def heartbeat(progress: Progress) -> None:
            activity.heartbeat({"label": label, **progress.model_dump()})

        activity.heartbeat({"label": label, "done_s": 0.0, "total_s": total_s})
        try:
            await run_ffmpeg(
                args,
                binary=ffmpeg_binary(self.settings.ffmpeg_path),
                total_s=total_s,
                stall_timeout_s=self.settings.heartbeat_timeout_s,
                on_progress=heartbeat,
            )
        except FfmpegError as err:
            raise ApplicationError(str(err), type="FfmpegError") from None


def input_args(path: Path, container: str | None = None) -> list[str]:
    """An ffmpeg input that can only be the local file itself (no protocols, no guessing)."""
    args = ["-protocol_whitelist", "file"]
    if container:
        args += ["-f", container]
    return [*args, "-i", f"file:{path}"]


def _sha256(paths: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


async def sha256_files(paths: Iterable[Path]) -> str:
    return await asyncio.to_thread(_sha256, list(paths))
