"""What every activity class shares: settings, the ffmpeg runner wired to heartbeats, errors."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from app.core.models import EncodedMedia, Progress
from app.core.settings import Settings
from app.media.formats import count_frames
from app.observability.metrics import observe_encode
from app.storage.local import uri_to_path
from app.storage.object_store import LocalStore, join, store_for
from app.storage.sources import SourceError, check_s3_source, source_path
from app.stratum.functions.ffmpeg import FfmpegError, ffmpeg_binary, run_ffmpeg

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

    def work_dir(self, job_id: str) -> Path:
        """This worker's local files for a job (downloads, encodes before upload)."""
        return self.settings.data_path / "work" / job_id

    # ---------------------------------------------------------------- scratch files
    # Activities work on local files. Scratch on a local store *is* local; on S3 each worker
    # keeps a work copy under work_dir and moves files with the store.

    def scratch_path(self, uri: str, job_id: str) -> Path:
        """Where the scratch object ``uri`` lives on this worker."""
        if isinstance(store_for(uri, self.settings), LocalStore):
            return uri_to_path(uri)
        return self.work_dir(job_id) / uri.split(f"/{job_id}/", 1)[1]

    async def fetch(self, uri: str, job_id: str) -> Path:
        """The object as a local file, downloaded once."""
        path = self.scratch_path(uri, job_id)
        if not path.exists():
            await asyncio.to_thread(store_for(uri, self.settings).download, uri, path)
        return path

    async def place(self, finished: Path, uri: str, job_id: str) -> Path:
        """Rename a finished file into place and (S3) upload it: whoever sees the object sees
        it whole, so its existence can mean "done"."""
        path = self.scratch_path(uri, job_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(finished, path)
        store = store_for(uri, self.settings)
        if not isinstance(store, LocalStore):
            cancelled = threading.Event()
            try:
                await asyncio.to_thread(store.upload, path, uri, cancelled)
            except asyncio.CancelledError:  # the thread would go on: stop it at its next chunk
                cancelled.set()
                raise
        return path

    def drop_copy(self, uri: str, job_id: str) -> None:
        """Free this worker's disk of a work copy once the object store has the file."""
        if not isinstance(store_for(uri, self.settings), LocalStore):
            self.scratch_path(uri, job_id).unlink(missing_ok=True)

    async def local_source(self, uri: str, job_id: str, name: str = "source") -> Path:
        """The source as a local file: a checked path, or an S3 object streamed to disk once.

        ``name`` keeps a second S3 file of the job (a sidecar) from landing on the source's."""
        if not uri.startswith("s3://"):
            return self.source(uri)
        try:
            check_s3_source(uri, self.settings.source_bucket_set)
        except SourceError as err:
            raise ApplicationError(str(err), type=INVALID_SOURCE, non_retryable=True) from None
        store = store_for(uri, self.settings)
        try:
            size = await asyncio.to_thread(store.size, uri)
        except FileNotFoundError:
            raise ApplicationError(
                "source object does not exist", type=INVALID_SOURCE, non_retryable=True
            ) from None
        if not 0 < size <= self.settings.max_source_bytes:
            raise ApplicationError(
                f"source object is {size} bytes; sources must be 1 to "
                f"{self.settings.max_source_bytes} bytes (COSMOS_MAX_SOURCE_BYTES)",
                type=INVALID_SOURCE,
                non_retryable=True,
            )
        local = self.work_dir(job_id) / "source" / (name + Path(uri).suffix[:8])
        if not local.exists() or local.stat().st_size != size:
            await asyncio.to_thread(store.download, uri, local)
        return local

    async def ffmpeg(
        self,
        args: Sequence[str],
        *,
        total_s: float,
        label: str,
        metric: str | None = None,
        encodes: bool = True,
        on_stderr: Callable[[str], None] | None = None,
        pass_fds: Sequence[int] = (),
    ) -> None:
        """Run ffmpeg, heartbeating its progress so the job shows it and cancellation reaches it.

        ``label`` names the run in heartbeats and traces; ``metric`` (default: the label) in
        metrics, where it must come from a small set (not a chunk number). A run that only
        decodes (``encodes=False``) heartbeats how far it is, but not its fps and speed, which
        the job view would otherwise add to the encoders'. ``on_stderr`` sees ffmpeg's stderr
        lines (see :func:`run_ffmpeg`)."""

        last: list[Progress] = []

        def heartbeat(progress: Progress) -> None:
            last[:] = [progress]
            shown = (
                progress if encodes else progress.model_copy(update={"fps": None, "speed": None})
            )
            activity.heartbeat({"label": label, **shown.model_dump()})

        activity.heartbeat({"label": label, "done_s": 0.0, "total_s": total_s})
        started = time.monotonic()
        try:
            await run_ffmpeg(
                args,
                binary=ffmpeg_binary(self.settings.ffmpeg_path),
                total_s=total_s,
                stall_timeout_s=self.settings.heartbeat_timeout_s,
                on_progress=heartbeat,
                label=label,
                on_stderr=on_stderr,
                pass_fds=pass_fds,
            )
        except FfmpegError as err:
            raise ApplicationError(str(err), type="FfmpegError") from None
        speed = last[0].speed if last else None
        elapsed = time.monotonic() - started
        observe_encode(metric or label, activity.info().activity_type, elapsed, speed)

    async def encode_to(
        self,
        job_id: str,
        scratch_uri: str,
        relative: str,
        in_args: list[str],
        out_args: Callable[[Path], list[str]],
        name: str,
        duration_s: float,
        *,
        on_stderr: Callable[[str], None] | None = None,
    ) -> EncodedMedia:
        """Encode to a partial file, then place it: an object at the target is always whole,
        so a retry after a crash between the upload and the completion report does not encode
        again (ffmpeg does not run then, and ``on_stderr`` sees nothing)."""
        target = join(scratch_uri, job_id, relative)
        if await asyncio.to_thread(store_for(target, self.settings).exists, target):
            out = await self.fetch(target, job_id)
        else:
            part = part_path(self.scratch_path(target, job_id))
            part.parent.mkdir(parents=True, exist_ok=True)
            with discarded_on_error(part):
                await self.ffmpeg(
                    ["-y", *in_args, *out_args(part)],
                    total_s=duration_s,
                    label=name,
                    on_stderr=on_stderr,
                )
            out = await self.place(part, target, job_id)
        media = await media_of(name, target, out)
        self.drop_copy(target, job_id)
        return media


def part_path(path: Path) -> Path:
    """Where one attempt writes before committing: its own name, so two attempts of the same
    work (a worker that outlived its heartbeat, and the retry) never write one file."""
    return path.with_name(f"{path.name}.{uuid.uuid4().hex[:12]}.part")


@contextmanager
def discarded_on_error(*paths: Path) -> Iterator[None]:
    """Partial files of a run that failed or was cancelled are removed, never left behind."""
    try:
        yield
    except BaseException:
        for path in paths:
            path.unlink(missing_ok=True)
        raise


def input_args(path: Path, container: str | None = None) -> list[str]:
    """An ffmpeg input that can only be the local file itself (no protocols, no guessing)."""
    args = ["-protocol_whitelist", "file"]
    if container:
        args += ["-f", container]
    return [*args, "-i", f"file:{path}"]


def sha256_paths(paths: Iterable[Path]) -> str:
    """SHA-256 over the files in order (blocking: for code already off the event loop)."""
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


async def sha256_files(paths: Iterable[Path]) -> str:
    return await asyncio.to_thread(sha256_paths, list(paths))


async def media_of(name: str, uri: str, path: Path, **fields: Any) -> EncodedMedia:
    """What is stored at ``uri``, read from its local copy ``path``: frames and duration by
    demuxing, and the checksum, side by side (both release the GIL for most of their work)."""
    (frames, duration), checksum = await asyncio.gather(
        asyncio.to_thread(count_frames, path), sha256_files([path])
    )
    return EncodedMedia(
        name=name, uri=uri, size_bytes=path.stat().st_size, duration_s=duration, frames=frames,
        checksum=checksum, **fields,
    )  # fmt: skip
