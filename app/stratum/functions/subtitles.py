"""prepare_subtitles: one subtitle track (embedded text stream or sidecar file) as WebVTT.

Every track ends as one normalised WebVTT file in scratch, whatever it came from, so the
packager segments one format (``app.media.subtitles.segment_vtt``) for HLS and DASH alike.
"""

from __future__ import annotations

import asyncio
from pathlib import Path, PurePosixPath

from temporalio import activity
from temporalio.exceptions import ApplicationError

from app.core.models import SubtitleInput, SubtitleMedia, SubtitleRendition
from app.media.subtitles import PARSERS, TEXT_CODECS, Cue, SubtitleError, parse_vtt, write_vtt
from app.storage.object_store import join, store_for
from app.storage.sources import SourceError, check_s3_source
from app.stratum.functions.common import (
    INVALID_SOURCE,
    ActivityBase,
    discarded_on_error,
    input_args,
    part_path,
)

INVALID_SUBTITLE = "InvalidSubtitle"
"""Failure type for a subtitle file that cannot be carried: never retried."""

MAX_SIDECAR_BYTES = 10 * 1024 * 1024
"""Far above any real subtitle file (a feature's SRT is ~100 KiB); refuses anything else."""


def _invalid(message: str) -> ApplicationError:
    return ApplicationError(message, type=INVALID_SUBTITLE, non_retryable=True)


def decode_text(data: bytes, name: str) -> str:
    """UTF-8 (with or without BOM) only: guessing a legacy code page would show wrong
    characters without an error, so anything else is refused with a plain reason."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise _invalid(f"subtitle file {name}: is UTF-16 text; convert it to UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise _invalid(
            f"subtitle file {name}: not UTF-8 text (byte {err.start}); convert it to UTF-8"
        ) from None


class SubtitleActivities(ActivityBase):
    @activity.defn(name="prepare_subtitles")
    async def prepare(self, input: SubtitleInput) -> SubtitleMedia:
        """Convert the track once: a finished file at the target (an earlier attempt placed
        it whole) is reused, so a retry does no work twice."""
        track = input.track  # its name is a plain file name: the model's pattern
        target = join(input.scratch_uri, input.job_id, "subtitles", f"{track.name}.vtt")
        cues = await self._reused(target, input.job_id)
        if cues is None:
            if track.source_uri is not None:
                cues = await self._sidecar(track, track.source_uri, input.job_id)
            else:
                cues = await self._embedded(input)
            out = self.scratch_path(target, input.job_id)
            part = part_path(out)
            part.parent.mkdir(parents=True, exist_ok=True)
            with discarded_on_error(part):
                await asyncio.to_thread(part.write_text, write_vtt(cues), "utf-8")
            await self.place(part, target, input.job_id)
        size = self.scratch_path(target, input.job_id).stat().st_size
        self.drop_copy(target, input.job_id)
        return SubtitleMedia(name=track.name, uri=target, cues=len(cues), size_bytes=size)

    async def _reused(self, target: str, job_id: str) -> list[Cue] | None:
        """The cues of the file an earlier attempt placed, or None to convert afresh."""
        if not await asyncio.to_thread(store_for(target, self.settings).exists, target):
            return None
        path = await self.fetch(target, job_id)
        try:
            return parse_vtt(await asyncio.to_thread(path.read_text, "utf-8"))
        except (SubtitleError, UnicodeDecodeError):
            return None  # not ours (we only place whole, valid files): written again

    async def _sidecar(self, track: SubtitleRendition, uri: str, job_id: str) -> list[Cue]:
        name = PurePosixPath(uri).name or uri
        parse = PARSERS.get(track.codec.lower())
        if parse is None:
            raise _invalid(
                f"subtitle file {name}: format {track.codec!r} is not supported for sidecar "
                f"files (SRT or WebVTT: {', '.join(sorted(PARSERS))})"
            )
        path = await self._sidecar_file(track, uri, job_id)
        size = path.stat().st_size
        if size > MAX_SIDECAR_BYTES:
            raise _invalid(
                f"subtitle file {name}: {size} bytes; subtitle files are at most "
                f"{MAX_SIDECAR_BYTES} bytes"
            )
        text = decode_text(await asyncio.to_thread(path.read_bytes), name)
        try:
            cues = parse(text)
        except SubtitleError as err:
            raise _invalid(f"subtitle file {name}: {err}") from None
        if not cues:
            raise _invalid(f"subtitle file {name}: has no cues")
        return cues

    async def _sidecar_file(self, track: SubtitleRendition, uri: str, job_id: str) -> Path:
        """The sidecar as a local file, through the source checks (allowed roots, no ``..``,
        no escaping symlinks; allowed S3 buckets). An S3 object is size-checked before it is
        downloaded, and downloaded under this track's own name: two ``.srt`` sidecars of a job
        must not share one file."""
        if uri.startswith("s3://"):
            try:
                check_s3_source(uri, self.settings.source_bucket_set)
            except SourceError as err:
                raise ApplicationError(str(err), type=INVALID_SOURCE, non_retryable=True) from None
            try:
                size = await asyncio.to_thread(store_for(uri, self.settings).size, uri)
            except FileNotFoundError:
                size = 0  # local_source says so, in its words
            if size > MAX_SIDECAR_BYTES:
                raise _invalid(
                    f"subtitle file {PurePosixPath(uri).name}: {size} bytes; subtitle files "
                    f"are at most {MAX_SIDECAR_BYTES} bytes"
                )
        return await self.local_source(uri, job_id, name=f"subtitle-{track.name}")

    async def _embedded(self, input: SubtitleInput) -> list[Cue]:
        """ffmpeg converts the stream (its decoders turn mov_text, SubRip and ASS styling
        into WebVTT tags); the result is parsed and normalised like a sidecar. An empty track
        gives no cues, not an error: sources often carry an empty forced track."""
        track = input.track
        if track.source_index is None:
            raise _invalid(f"subtitle track {track.name}: no source stream index")
        if track.codec.lower() not in TEXT_CODECS:
            raise _invalid(
                f"subtitle track {track.name}: codec {track.codec!r} is not a text subtitle "
                "format ffmpeg converts to WebVTT"
            )
        src = await self.local_source(input.source_uri, input.job_id)
        raw = part_path(self.work_dir(input.job_id) / "subtitles" / f"{track.name}.ffmpeg.vtt")
        raw.parent.mkdir(parents=True, exist_ok=True)
        try:
            args = [
                "-y", *input_args(src, input.container), "-map", f"0:{track.source_index}",
                "-c:s", "webvtt", "-f", "webvtt", str(raw),
            ]  # fmt: skip
            await self.ffmpeg(args, total_s=input.duration_s, label=track.name, encodes=False)
            text = await asyncio.to_thread(raw.read_bytes)
        finally:
            raw.unlink(missing_ok=True)
        try:
            return parse_vtt(text.decode("utf-8-sig", errors="replace"))
        except SubtitleError as err:
            # ffmpeg's own output: not the user's file, so not their error to fix.
            raise ApplicationError(f"subtitle track {track.name}: ffmpeg wrote {err}") from None
