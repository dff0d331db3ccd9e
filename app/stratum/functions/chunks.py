"""split, encode-chunk and assemble: a title cut on keyframes, encoded in parallel, joined again.

Every file a step writes is committed the same way: written under a temporary name, renamed,
and (for S3 scratch) uploaded, and only then is its record (``.json`` with size, frames and
SHA-256) written next to it. A record whose file has that size and checksum proves the work is
done, so a retry, a crashed worker or a resubmitted job never encodes a finished chunk again.
An encoded chunk is decoded in full before it is committed (as it is muxed, beside the
encoder: ``encode_checked``): the title's decode check runs in the parallel stage, and assembly
checks only what a join can break. (With quality on, the quality pass decodes every frame
instead, so no frame is decoded twice for checking.)
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from temporalio import activity
from temporalio.exceptions import ApplicationError

from app.core.models import (
    AssembleInput,
    ChunkOutput,
    ChunkPlan,
    ChunkResult,
    EncodeChunkInput,
    EncodedMedia,
    Rendition,
    SplitInput,
)
from app.media.chunking import Keyframe, choose_boundaries, forced_keyframes
from app.media.formats import OPEN_OPTIONS, count_frames
from app.storage.local import remove_tree, uri_to_path
from app.storage.object_store import LocalStore, join, store_for
from app.stratum.functions.common import discarded_on_error, input_args, part_path, sha256_files
from app.stratum.functions.encode import (
    EncoderBase,
    Neighbours,
    encoder_name,
    hwaccel_args,
    video_output_args,
)

ASSEMBLY_ERROR = "AssemblyError"
SPLIT_EPSILON_S = 0.0005
"""The segment muxer cuts at the first keyframe at or after a time: aim just before it."""
NEIGHBOUR_FRAMES = 4
"""How much of a neighbouring chunk is decoded (in frames) to give bwdif its edge fields; the
graph keeps one frame of it."""


def chunk_uri(scratch_uri: str, job_id: str, index: int) -> str:
    return join(scratch_uri, job_id, "chunks", f"{index:05d}.mp4")


def chunk_output_uri(scratch_uri: str, job_id: str, rendition: Rendition, index: int) -> str:
    """Keyed by the rendition's exact settings: a chunk encoded otherwise is not reused.

    ``display_aspect_change`` is a record, not a setting (the size and SAR are): left out, so
    keys of renditions planned before it existed stay what they were across a deploy."""
    key = hashlib.sha256(
        rendition.model_dump_json(exclude={"display_aspect_change"}).encode()
    ).hexdigest()[:10]
    return join(scratch_uri, job_id, "video", rendition.name, f"{index:05d}-{key}.mp4")


def record_uri(uri: str) -> str:
    return uri + ".json"


def parse_keyframes(metadata: str) -> list[Keyframe]:
    """The ``metadata`` filter's print-out: ``frame:N pts:P pts_time:T`` then the score."""
    keyframes: list[Keyframe] = []
    time_s: float | None = None
    for line in metadata.splitlines():
        if line.startswith("frame:"):
            fields = dict(part.split(":", 1) for part in line.split())
            time_s = float(fields["pts_time"])
        elif line.startswith("lavfi.scene_score=") and time_s is not None:
            keyframes.append(Keyframe(time_s, float(line.split("=", 1)[1])))
            time_s = None
    return keyframes


@dataclass(frozen=True)
class Timeline:
    """A stream's packets, in decode order: presentation and decode times, in ``time_base``."""

    pts: list[int]
    dts: list[int]
    last_duration: int
    time_base: Fraction


def read_timeline(path: Path) -> Timeline:
    """Demuxed, not decoded: cheap, and exactly what a player's demuxer will see."""
    with av.open(str(path), options=OPEN_OPTIONS) as container:
        stream = container.streams.video[0]
        packets = [p for p in container.demux(stream) if p.size]
        return Timeline(
            pts=[int(p.pts if p.pts is not None else p.dts or 0) for p in packets],
            dts=[int(p.dts if p.dts is not None else p.pts or 0) for p in packets],
            last_duration=(packets[-1].duration or 0) if packets else 0,
            time_base=Fraction(stream.time_base or Fraction(1)),
        )


def check_timeline(timeline: Timeline, expected_frames: int, expected_s: float) -> str | None:
    """Why an assembled stream is not the whole title, or None if it is: every frame there,
    decode times strictly increasing, no two frames at one instant, the source's duration
    within a frame (a gap or an overlap at a join shows here)."""
    frames = len(timeline.pts)
    if abs(frames - expected_frames) > 1:
        return f"{frames} frames, the source has {expected_frames}"
    jumps = [i for i in range(1, frames) if timeline.dts[i] <= timeline.dts[i - 1]]
    if jumps:
        return f"timestamps go backwards at frame {jumps[0]}"
    if len(set(timeline.pts)) != frames:
        return "two frames share a presentation time"
    span = max(timeline.pts) - min(timeline.pts) + timeline.last_duration if frames else 0
    duration = float(span * timeline.time_base)
    frame_s = expected_s / expected_frames if expected_frames else 0.0
    if abs(duration - expected_s) > frame_s * 1.5:
        return f"lasts {duration:.3f}s, the source {expected_s:.3f}s"
    return None


def odd_parameter_sets(paths: list[Path]) -> int | None:
    """The first chunk whose parameter sets (SPS/PPS, or the codec's equivalent) differ from
    the first chunk's, or None. A file joined by stream copy keeps only the first's, so any
    other chunk would be decoded with the wrong ones."""

    def extradata(path: Path) -> bytes:
        with av.open(str(path), options=OPEN_OPTIONS) as container:
            return bytes(container.streams.video[0].codec_context.extradata or b"")

    if not paths:
        return None
    first = extradata(paths[0])
    return next((i for i, p in enumerate(paths[1:], 1) if extradata(p) != first), None)


def _whole(input: SplitInput) -> ChunkPlan:
    """The plan of a title encoded in one piece: nothing was cut or copied."""
    return ChunkPlan(starts_s=[0.0], duration_s=input.duration_s, frames=0, scene_cuts=0)


class ChunkActivities(EncoderBase):
    """A title cut into chunks, each encoded into every rendition of a codec, then joined."""

    # ------------------------------------------------------------------ split

    @activity.defn(name="split_source")
    async def split(self, input: SplitInput) -> ChunkPlan:
        """Find the keyframes (decoding only those, for their scene scores), choose the cuts,
        and copy the video into chunk files: never a re-encode. A title that does not cut in
        two comes back as one chunk, and is not copied."""
        plan_uri = join(input.scratch_uri, input.job_id, "chunks", "plan.json")
        store = store_for(plan_uri, self.settings)
        if await asyncio.to_thread(store.exists, plan_uri):
            return ChunkPlan.model_validate_json(await self._read_text(plan_uri, input.job_id))
        src = await self.local_source(input.source_uri, input.job_id)
        keyframes = await self._keyframes(src, input)
        starts, scene_cuts = choose_boundaries(
            keyframes,
            input.duration_s,
            input.chunk_seconds,
            input.min_chunk_seconds,
            grid_s=input.segment_seconds,
        )
        if len(starts) < 2:
            return _whole(input)

        chunks_dir = join(input.scratch_uri, input.job_id, "chunks")
        part = part_path(self.scratch_path(chunks_dir, input.job_id))
        part.mkdir(parents=True)
        times = ",".join(f"{t - SPLIT_EPSILON_S:.6f}" for t in starts[1:])
        await self.ffmpeg(
            ["-y", *input_args(src, input.container), "-map", "0:v:0", "-c", "copy",
             "-map_metadata", "-1", "-f", "segment", "-segment_times", times,
             "-reset_timestamps", "1", "-segment_format", "mp4", str(part / "%05d.mp4")],
            total_s=input.duration_s, label="split",
        )  # fmt: skip
        files = sorted(part.glob("*.mp4"))
        if len(files) != len(starts):  # a cut missed its keyframe: encode the title whole
            activity.logger.warning("split made %d chunks, not %d", len(files), len(starts))
            await asyncio.to_thread(remove_tree, part)
            return _whole(input)
        frames = 0
        for i, path in enumerate(files):
            uri = chunk_uri(input.scratch_uri, input.job_id, i)
            frames += (await self._commit(path, uri, input.job_id, f"chunk {i}")).frames
            self.drop_copy(uri, input.job_id)
        await asyncio.to_thread(remove_tree, part)
        plan = ChunkPlan(
            starts_s=starts, duration_s=input.duration_s, frames=frames, scene_cuts=scene_cuts
        )
        await self._write_text(plan_uri, plan.model_dump_json(), input.job_id)
        return plan

    async def _keyframes(self, src: Path, input: SplitInput) -> list[Keyframe]:
        with tempfile.TemporaryDirectory(prefix="cosmos-keys-") as tmp:
            metadata = Path(tmp) / "keys.txt"
            scan = (
                "scale=64:64,select='gte(scene\\,0)',"
                f"metadata=mode=print:key=lavfi.scene_score:file={metadata}"
            )
            await self.ffmpeg(
                ["-skip_frame", "nokey", *input_args(src, input.container), "-map", "0:v:0",
                 "-vf", scan, "-an", "-f", "null", "-"],
                total_s=input.duration_s, label="keyframes",
            )  # fmt: skip
            text = metadata.read_text() if metadata.exists() else ""
        return parse_keyframes(text)

    # ------------------------------------------------------------------ encode

    @activity.defn(name="encode_chunk")
    async def encode_chunk(self, input: EncodeChunkInput) -> ChunkResult:
        """Decode the chunk once and encode every rendition still missing from it."""
        chunk = input.chunk
        targets = {
            r.name: chunk_output_uri(input.scratch_uri, input.job_id, r, chunk.index)
            for r in input.renditions
        }
        done = {r.name: await self._done(targets[r.name], input.job_id) for r in input.renditions}
        todo = [r for r in input.renditions if done[r.name] is None]
        if todo:
            src = await self.fetch(chunk_uri(input.scratch_uri, input.job_id, chunk.index),
                                    input.job_id)  # fmt: skip
            parts = {
                r.name: part_path(self.scratch_path(targets[r.name], input.job_id)) for r in todo
            }
            for part in parts.values():
                part.parent.mkdir(parents=True, exist_ok=True)
            in_args = [*hwaccel_args(self.mode, input.rotation, todo), *input_args(src, "mov")]
            encodes = [(r, parts[r.name]) for r in todo]
            label, metric = f"chunk {chunk.index}", "+".join(r.name for r in todo)
            with tempfile.TemporaryDirectory(prefix="cosmos-edges-") as tmp:
                neighbours, edge_args = await self._neighbours(input, todo, src, Path(tmp))
                video: dict[str, Any] = {
                    "rotation": input.rotation,
                    "keyframes_s": forced_keyframes(
                        chunk.start_s, chunk.duration_s, input.segment_seconds
                    ),
                    "neighbours": neighbours,
                }
                with discarded_on_error(*parts.values()):
                    # With quality on, its pass decodes every frame instead: never twice.
                    if input.decode_check:
                        problem = await self.encode_checked([*in_args, *edge_args], encodes,
                                                            chunk.duration_s, label,
                                                            metric=metric, **video)  # fmt: skip
                        if problem:  # retried: a fresh encode, the broken one discarded
                            raise ApplicationError(f"{label} was encoded wrong: {problem}")
                    else:
                        out_args = video_output_args(encodes, mode=self.mode,
                                                     threads=self.threads, **video)  # fmt: skip
                        await self.ffmpeg(["-y", *in_args, *edge_args, *out_args],
                                          total_s=chunk.duration_s, label=label,
                                          metric=metric)  # fmt: skip
            for r in todo:
                done[r.name] = await self._commit(
                    parts[r.name], targets[r.name], input.job_id, r.name
                )
                self.drop_copy(targets[r.name], input.job_id)
            self.drop_copy(chunk_uri(input.scratch_uri, input.job_id, chunk.index), input.job_id)
        outputs = [done[r.name] for r in input.renditions]
        return ChunkResult(
            index=chunk.index,
            outputs=[o for o in outputs if o is not None],
            reused=not todo,
            encoder=encoder_name(input.renditions[0], self.mode),
            queue=activity.info().task_queue,
        )

    async def _neighbours(
        self, input: EncodeChunkInput, todo: list[Rendition], src: Path, tmp: Path
    ) -> tuple[Neighbours | None, list[str]]:
        """The chunks either side as extra ffmpeg inputs, for a deinterlaced chunk: the end of
        the previous one (``-sseof``) and the start of the next (``-t``), a few frames each.

        None for progressive renditions (nothing reads across a cut). A neighbour in S3 is
        downloaded to this attempt's own folder, since the chunk's own task (perhaps on this
        worker, at this moment) deletes its work copy when it finishes."""
        settings = todo[0].settings
        if not settings.deinterlace:
            return None, []
        source_rate = Fraction(settings.frame_rate) / (2 if settings.deinterlace == "field" else 1)
        span = f"{float(NEIGHBOUR_FRAMES / source_rate):.6f}"
        frames, _ = await asyncio.to_thread(count_frames, src)
        index = input.chunk.index
        args: list[str] = []
        before = after = None
        if index > 0:
            path = await self._neighbour(input, index - 1, tmp)
            args += ["-sseof", f"-{span}", *input_args(path, "mov")]
            before = 1
        if await self._exists(chunk_uri(input.scratch_uri, input.job_id, index + 1)):
            path = await self._neighbour(input, index + 1, tmp)
            args += ["-t", span, *input_args(path, "mov")]
            after = 2 if before else 1
        return Neighbours(frames=frames, before=before, after=after), args

    async def _neighbour(self, input: EncodeChunkInput, index: int, tmp: Path) -> Path:
        uri = chunk_uri(input.scratch_uri, input.job_id, index)
        store = store_for(uri, self.settings)
        if isinstance(store, LocalStore):
            return uri_to_path(uri)
        local = tmp / f"{index:05d}.mp4"
        await asyncio.to_thread(store.download, uri, local)
        return local

    async def _exists(self, uri: str) -> bool:
        return await asyncio.to_thread(store_for(uri, self.settings).exists, uri)

    # ------------------------------------------------------------------ assemble

    @activity.defn(name="assemble")
    async def assemble(self, input: AssembleInput) -> EncodedMedia:
        """Join a rendition's chunks by stream copy and check the result is the whole title
        and decodes.

        Each chunk was decoded in full when it was encoded (in the parallel stage, so a long
        title has no serial decode here). What a join can break is checked here: every
        chunk carries the same parameter sets (the joined file keeps only the first's), every
        keyframe decodes with them, and the timeline is whole: all frames, increasing
        timestamps, the source's duration."""
        name = input.rendition.name
        target = join(input.scratch_uri, input.job_id, "video", f"{name}.mp4")
        record = await self._done(target, input.job_id)
        if record is None:
            record = await self._join(input, target)
        rate = Fraction(input.rendition.settings.frame_rate)
        return EncodedMedia(
            name=name,
            uri=target,
            size_bytes=record.size_bytes,
            duration_s=round(float(record.frames / rate), 6),
            frames=record.frames,
            checksum=record.checksum,
            encoder=input.rendition.settings.encoder,
        )

    async def _join(self, input: AssembleInput, target: str) -> ChunkOutput:
        name = input.rendition.name
        folder_uri = join(input.scratch_uri, input.job_id, "video", name)
        folder = self.scratch_path(folder_uri, input.job_id)
        paths = []
        for i in range(input.chunks):
            uri = chunk_output_uri(input.scratch_uri, input.job_id, input.rendition, i)
            if await self._done(uri, input.job_id) is None:
                raise ApplicationError(f"chunk {i} of {name} is missing or damaged")
            paths.append(await self.fetch(uri, input.job_id))
        odd = await asyncio.to_thread(odd_parameter_sets, paths)
        if odd is not None:
            raise ApplicationError(
                f"chunks of {name} do not join: chunk {odd} has other parameter sets than "
                "chunk 0 (encoder settings changed between chunks)",
                type=ASSEMBLY_ERROR,
                non_retryable=True,
            )
        listing = folder / "concat.txt"
        listing.write_text("".join(f"file '{p.name}'\n" for p in paths))
        part = part_path(self.scratch_path(target, input.job_id))
        with discarded_on_error(part):
            await self.ffmpeg(
                ["-y", "-protocol_whitelist", "file", "-f", "concat", "-safe", "1",
                 "-i", f"file:{listing}", "-c", "copy", "-map_metadata", "-1",
                 "-movflags", "+faststart", "-f", "mp4", str(part)],
                total_s=input.expected_duration_s, label=f"assemble {name}",
            )  # fmt: skip
            problem = await self._validate(part, input)
            if problem:
                raise ApplicationError(
                    f"assembled {name} is not whole: {problem}",
                    type=ASSEMBLY_ERROR,
                    non_retryable=True,
                )
        record = await self._commit(part, target, input.job_id, name)
        self.drop_copy(target, input.job_id)
        if not isinstance(store_for(target, self.settings), LocalStore):
            await asyncio.to_thread(shutil.rmtree, folder, True)
        return record

    async def _validate(self, path: Path, input: AssembleInput) -> str | None:
        problem = await self.decode_problem(
            [path], input.expected_duration_s, f"check {input.rendition.name}", keyframes_only=True
        )
        if problem:
            return problem
        timeline = await asyncio.to_thread(read_timeline, path)
        return check_timeline(timeline, input.expected_frames, input.expected_duration_s)

    # ------------------------------------------------------------------ files and records

    async def _commit(self, part: Path, uri: str, job_id: str, name: str) -> ChunkOutput:
        """Rename into place (and upload), then write the record that proves it whole. If
        another attempt (one that outlived its heartbeat) committed first, its work stands."""
        existing = await self._done(uri, job_id)
        if existing is not None:
            part.unlink(missing_ok=True)
            return existing
        path = await self.place(part, uri, job_id)
        frames, _ = await asyncio.to_thread(count_frames, path)
        record = ChunkOutput(
            name=name,
            frames=frames,
            size_bytes=path.stat().st_size,
            checksum=await sha256_files([path]),
        )
        await self._write_text(record_uri(uri), record.model_dump_json(), job_id)
        return record

    async def _done(self, uri: str, job_id: str) -> ChunkOutput | None:
        """The record, if the file it describes is there, whole (size; and checksum where the
        file is on this disk: S3 verified the upload's own checksum)."""
        store = store_for(uri, self.settings)
        if not await asyncio.to_thread(store.exists, record_uri(uri)):
            return None
        record = ChunkOutput.model_validate_json(await self._read_text(record_uri(uri), job_id))
        try:
            size = await asyncio.to_thread(store.size, uri)
        except (FileNotFoundError, OSError):
            return None
        if size != record.size_bytes:
            return None
        if isinstance(store, LocalStore) and await sha256_files([uri_to_path(uri)]) != (
            record.checksum
        ):
            return None
        return record

    async def _read_text(self, uri: str, job_id: str) -> str:
        return (await self.fetch(uri, job_id)).read_text()

    async def _write_text(self, uri: str, text: str, job_id: str) -> None:
        part = part_path(self.scratch_path(uri, job_id))
        part.parent.mkdir(parents=True, exist_ok=True)
        part.write_text(text)
        await self.place(part, uri, job_id)
