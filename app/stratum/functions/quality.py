"""quality-prepare, quality-chunk and quality-assemble: VMAF, PSNR and SSIM, chunk by chunk.

A chunk task measures one time range of every comparison in one ffmpeg run (the reference
decoded once), writes the per-frame values to scratch and reports only counts; assembly reads
them all, pools each metric and publishes ``quality.json`` and the per-frame JSON. The graph
and the pooling are ``app.media.quality``'s; here are the files: checked sources, this job's
scratch, and published HLS renditions joined into one fMP4 file (init segment and segments,
byte for byte: what a player plays).

An encode job's chunk can call ``quality_chunk`` as it is: its chunk file as a ``scratch``
reference, its encoded chunks as ``scratch`` distorted files, ``offset_frames`` the chunk's
first frame and ``context`` false; ``quality_assemble`` then pools the chunks it finds.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import Awaitable
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

import av
from temporalio import activity
from temporalio.exceptions import ApplicationError

from app.core.models import (
    QualityAssembleInput,
    QualityChunkInput,
    QualityChunkResult,
    QualityComparisonSummary,
    QualityFile,
    QualityMedia,
    QualityMetric,
    QualityPair,
    QualityPrepareInput,
    QualityResult,
    QualityViewSummary,
)
from app.core.settings import Settings
from app.media.formats import ALLOWED_CONTAINERS, OPEN_OPTIONS
from app.media.quality import (
    GraphInput,
    GraphPair,
    MeasurePlan,
    QualityLogError,
    bit_depth,
    compare_format,
    measure_plan,
    playlist_files,
    psnr_summary,
    read_logs,
    read_timeline,
    ssim_summary,
    vmaf_model,
    vmaf_summary,
)
from app.storage.local import uri_to_path
from app.storage.object_store import LocalStore, join, store_for
from app.stratum.functions.common import (
    INVALID_SOURCE,
    ActivityBase,
    discarded_on_error,
    part_path,
)
from app.stratum.functions.encode import deinterlace_filter, tonemap_filters

T = TypeVar("T")
QUALITY_ERROR = "QualityError"
QUALITY_FILE = "quality.json"
PLAYLIST_LIMIT = 4 << 20
"""A media playlist of a very long title is a few hundred kilobytes."""
BEAT_S = 5.0


def chunk_result_uri(scratch_uri: str, job_id: str, index: int) -> str:
    return join(scratch_uri, job_id, "quality", "chunks", f"{index:05d}.json")


def frames_uri(target_uri: str, name: str) -> str:
    return join(target_uri, "frames", f"{name}.json")


def target_of(input: QualityAssembleInput) -> str:
    return input.target_uri or join(input.output_uri, input.job_id)


def _sizes(pair: QualityPair) -> tuple[tuple[int, int, tuple[QualityMetric, ...]], ...]:
    """The distinct sizes of a pair's views, each with every metric any view wants there: a
    display size equal to the rendition's is measured once."""
    found: dict[tuple[int, int], list[QualityMetric]] = {}
    for view in pair.views:
        assert view.width is not None and view.height is not None, "sizes are resolved first"
        metrics = found.setdefault((view.width, view.height), [])
        metrics += [m for m in view.metrics if m not in metrics]
    return tuple((w, h, tuple(m)) for (w, h), m in found.items())


class QualityActivities(ActivityBase):
    def __init__(self, settings: Settings, threads: int = 1) -> None:
        super().__init__(settings)
        self.threads = threads

    # ------------------------------------------------------------------ files

    async def local_file(self, file: QualityFile, job_id: str, scratch_uri: str, name: str) -> Path:
        """A source through the source checks; a scratch file only of this job's scratch."""
        if file.kind == "source":
            return await self.local_source(file.uri, job_id, name)
        prefix = join(scratch_uri, job_id) + "/"
        if file.kind != "scratch" or not file.uri.startswith(prefix) or ".." in file.uri:
            raise ApplicationError(
                f"{name}: not a file of this job's scratch space",
                type=INVALID_SOURCE,
                non_retryable=True,
            )
        return await self.fetch(file.uri, job_id)

    def _published(self, uri: str) -> str:
        """An HLS playlist may only be read from this deployment's output location."""
        root = self.settings.resolved_output_uri.rstrip("/") + "/"
        rest = uri[len(root) :] if uri.startswith(root) else ""
        if not rest.endswith(".m3u8") or ".." in rest or "?" in rest or "#" in rest:
            raise ApplicationError(
                "a rendition playlist must be a published .m3u8 in the output location",
                type=INVALID_SOURCE,
                non_retryable=True,
            )
        return uri

    async def _beating(self, work: Awaitable[T], label: str) -> T:
        """Heartbeat while blocking work runs in a thread, so a dead worker is noticed."""
        task = asyncio.ensure_future(work)
        while True:
            done, _ = await asyncio.wait({task}, timeout=BEAT_S)
            if done:
                return task.result()
            activity.heartbeat({"label": label, "done_s": 0.0, "total_s": 0.0})

    async def _joined(self, playlist_uri: str, target: str, job_id: str) -> Path:
        """The rendition's init segment and media segments, concatenated into one fMP4 file in
        scratch (once: an attempt that finds it reuses it)."""
        uri = self._published(playlist_uri)
        if await asyncio.to_thread(store_for(target, self.settings).exists, target):
            return await self.fetch(target, job_id)
        store = store_for(uri, self.settings)
        try:
            text = (await asyncio.to_thread(store.read_bytes, uri, PLAYLIST_LIMIT)).decode()
            names = playlist_files(text)
        except FileNotFoundError:
            raise ApplicationError(
                f"{uri} is gone: the job's outputs were removed",
                type=INVALID_SOURCE,
                non_retryable=True,
            ) from None
        except (ValueError, UnicodeDecodeError) as err:
            raise ApplicationError(
                f"cannot read the playlist {uri}: {err}", type=INVALID_SOURCE, non_retryable=True
            ) from None
        base = uri.rsplit("/", 1)[0]
        part = part_path(self.scratch_path(target, job_id))
        part.parent.mkdir(parents=True, exist_ok=True)

        def concat() -> None:
            with part.open("wb") as out, tempfile.TemporaryDirectory(dir=part.parent) as tmp:
                for name in names:
                    segment = join(base, name)
                    if isinstance(store, LocalStore):
                        local = uri_to_path(segment)
                    else:
                        local = Path(tmp) / "segment"
                        store.download(segment, local)
                    with local.open("rb") as f:
                        shutil.copyfileobj(f, out, 1 << 20)

        with discarded_on_error(part):
            try:
                await self._beating(asyncio.to_thread(concat), f"join {Path(target).stem}")
            except FileNotFoundError as err:
                raise ApplicationError(
                    f"a segment of {uri} is missing: {err}",
                    type=INVALID_SOURCE,
                    non_retryable=True,
                ) from None
        return await self.place(part, target, job_id)

    # ------------------------------------------------------------------ prepare

    @activity.defn(name="quality_prepare")
    async def prepare(self, input: QualityPrepareInput) -> QualityMedia:
        """A file made local and measured: frames, first frame's time, span, size, format.
        A published rendition (``hls``) becomes one scratch file first."""
        file = input.file
        if file.kind == "hls":
            target = join(input.scratch_uri, input.job_id, "quality", "inputs", f"{input.name}.mp4")
            path = await self._joined(file.uri, target, input.job_id)
            file, container = QualityFile(uri=target, kind="scratch"), "mov"
        else:
            path = await self.local_file(file, input.job_id, input.scratch_uri, input.name)
            if input.container:
                container = input.container
            else:
                container = await asyncio.to_thread(_demuxer, path)
        try:
            timeline = await self._beating(
                asyncio.to_thread(read_timeline, path), f"measure {input.name}"
            )
        except (ValueError, av.FFmpegError, IndexError) as err:
            raise ApplicationError(
                f"{input.name}: cannot read its video: {err}",
                type=INVALID_SOURCE,
                non_retryable=True,
            ) from None
        rate = timeline.frame_rate
        return QualityMedia(
            file=file,
            container=container,
            frames=timeline.frames,
            duration_s=round(timeline.duration_s, 6),
            first_s=timeline.first_s,
            start_s=timeline.start_s,
            frame_rate=f"{rate.numerator}/{rate.denominator}",
            width=timeline.width,
            height=timeline.height,
            pix_fmt=timeline.pix_fmt,
            colour=timeline.colour,
        )

    # ------------------------------------------------------------------ one chunk

    @activity.defn(name="quality_chunk")
    async def measure_chunk(self, input: QualityChunkInput) -> QualityChunkResult:
        """Every metric of every comparison over one chunk, in one ffmpeg run; the per-frame
        values go to scratch as JSON (an attempt that finds them whole reuses them)."""
        chunk = input.chunk
        target = chunk_result_uri(input.scratch_uri, input.job_id, chunk.index)
        store = store_for(target, self.settings)
        if await asyncio.to_thread(store.exists, target):
            document = json.loads((await self.fetch(target, input.job_id)).read_text())
            return QualityChunkResult(
                index=chunk.index,
                uri=target,
                frames={k: v["frames"] for k, v in document["pairs"].items()},
                reused=True,
            )
        job, scratch = input.job_id, input.scratch_uri
        ref_path = await self.local_file(input.reference.file, job, scratch, "reference")
        reference = _graph_input(ref_path, input.reference)
        pairs = []
        for pair in input.pairs:
            path = await self.local_file(
                pair.distorted.file, job, scratch, f"distorted-{pair.name}"
            )
            pairs.append(_graph_pair(pair, input.reference, _graph_input(path, pair.distorted)))
        with tempfile.TemporaryDirectory(prefix="cosmos-quality-") as tmp:
            try:
                plan = measure_plan(
                    reference, pairs, chunk, Path(tmp), context=input.context, threads=self.threads
                )
            except ValueError as err:
                raise ApplicationError(str(err), type=QUALITY_ERROR, non_retryable=True) from None
            await self.ffmpeg(
                plan.args,
                total_s=plan.total_s,
                label=f"quality chunk {chunk.index}",
                metric="quality",
                encodes=False,
            )
            document = await asyncio.to_thread(_chunk_document, plan, input)
        part = part_path(self.scratch_path(target, job))
        part.parent.mkdir(parents=True, exist_ok=True)
        part.write_text(json.dumps(document, separators=(",", ":")))
        await self.place(part, target, job)
        self.drop_copy(target, job)
        return QualityChunkResult(
            index=chunk.index,
            uri=target,
            frames={name: value["frames"] for name, value in document["pairs"].items()},
        )

    # ------------------------------------------------------------------ assemble

    @activity.defn(name="quality_assemble")
    async def assemble(self, input: QualityAssembleInput) -> QualityResult:
        """Pool each metric over the chunks, per comparison and size; publish the per-frame
        values (``frames/<name>.json``) and then ``quality.json``, the summary, last."""
        documents = []
        for index in range(input.chunks):
            uri = chunk_result_uri(input.scratch_uri, input.job_id, index)
            try:
                path = await self.fetch(uri, input.job_id)
            except FileNotFoundError:
                raise ApplicationError(f"quality chunk {index} is missing") from None
            documents.append(json.loads(path.read_text()))
        result, files = await asyncio.to_thread(_assemble, input, documents)
        with tempfile.TemporaryDirectory(prefix="cosmos-quality-out-") as tmp:
            for uri, body in files:  # the summary is the last: a reader who sees it sees all
                local = Path(tmp) / "out.json"
                local.write_text(json.dumps(body, separators=(",", ":")) + "\n")
                await asyncio.to_thread(store_for(uri, self.settings).upload, local, uri)
        return result


def _demuxer(path: Path) -> str:
    """The demuxer of a file that is not probed (a scratch file): one of the allowed ones."""
    with av.open(str(path), options=OPEN_OPTIONS) as container:
        names = [n for n in container.format.name.split(",") if n in ALLOWED_CONTAINERS]
    if not names:
        raise ApplicationError("not a container the platform reads", type=INVALID_SOURCE,
                               non_retryable=True)  # fmt: skip
    return names[0]


def _graph_input(path: Path, media: QualityMedia) -> GraphInput:
    return GraphInput(path=path, container=media.container, first_s=media.first_s,
                      start_s=media.start_s, colour=media.colour)  # fmt: skip


def _graph_pair(pair: QualityPair, reference: QualityMedia, distorted: GraphInput) -> GraphPair:
    """The rendition's own treatment of the source (deinterlacing before the grid, tone-mapping
    after the scale, as the encoder applied them) is applied to the reference."""
    settings = pair.encoded_with
    pre = (deinterlace_filter(settings),) if settings and settings.deinterlace else ()
    scaled = tuple(tonemap_filters(settings)) if settings and settings.tonemap else ()
    return GraphPair(
        distorted=distorted,
        rate=Fraction(reference.frame_rate) * pair.multiplier,
        multiplier=pair.multiplier,
        sizes=_sizes(pair),
        pix_fmt=compare_format(pair.pix_fmt),
        resample_reference=pair.resample_reference,
        resample_distorted=pair.resample_distorted,
        reference_pre=pre,
        reference_scaled=scaled,
    )


def _chunk_document(plan: MeasurePlan, input: QualityChunkInput) -> dict[str, Any]:
    """The chunk's per-frame values: per comparison, per view, per metric (PSNR as MSE, pooled
    later as the psnr filter pools it), with the frame count checked against the plan."""
    pairs: dict[str, Any] = {}
    for i, pair in enumerate(input.pairs):
        win = plan.windows[i]
        by_size: dict[tuple[int, int], tuple[int, dict[str, Any]]] = {}
        try:
            for size, logs in plan.logs[i].items():
                by_size[size] = read_logs(logs, win)
        except QualityLogError as err:
            raise ApplicationError(f"{pair.name}: {err}") from None
        counts = {n for n, _ in by_size.values()}
        frames = min(counts) if counts else 0
        if len(counts) > 1 or (win.frames is not None and frames != win.frames) or frames == 0:
            raise ApplicationError(
                f"{pair.name}: chunk {input.chunk.index} measured {sorted(counts)} frames, "
                f"expected {win.frames if win.frames is not None else 'at least one'}",
                type=QUALITY_ERROR,
                non_retryable=True,
            )
        views = {}
        for view in pair.views:
            assert view.width is not None and view.height is not None
            _, values = by_size[(view.width, view.height)]
            views[view.at] = {m: values[m] for m in view.metrics}
        pairs[pair.name] = {
            "frames": frames,
            "first_frame": (input.chunk.start_frame) * pair.multiplier,
            "peak": (1 << bit_depth(pair.pix_fmt)) - 1,
            "views": views,
        }
    return {"index": input.chunk.index, "start_frame": input.chunk.start_frame, "pairs": pairs}


def _assemble(
    input: QualityAssembleInput, documents: list[dict[str, Any]]
) -> tuple[QualityResult, list[tuple[str, dict[str, Any]]]]:
    files: list[tuple[str, dict[str, Any]]] = []
    summaries = []
    for pair in input.pairs:
        rate = Fraction(input.reference.frame_rate) * pair.multiplier
        chunks: list[tuple[int, int, int]] = []
        values: dict[str, dict[str, Any]] = {v.at: {} for v in pair.views}
        position = 0
        peak = 255
        for document in sorted(documents, key=lambda d: d["index"]):
            part = document["pairs"][pair.name]
            chunks.append((document["index"], position, position + part["frames"]))
            position += part["frames"]
            peak = part["peak"]
            for at, metrics in part["views"].items():
                for metric, data in metrics.items():
                    _extend(values[at], metric, data)
        views, frames_views = [], {}
        for view in pair.views:
            assert view.width is not None and view.height is not None
            found = values[view.at]
            summary = QualityViewSummary(at=view.at, width=view.width, height=view.height)
            per_frame: dict[str, Any] = {}
            if "vmaf" in found:
                summary = summary.model_copy(
                    update={
                        "vmaf_model": vmaf_model(view.width, view.height),
                        "vmaf": vmaf_summary(found["vmaf"], chunks, rate),
                    }
                )
                per_frame["vmaf"] = [round(v, 6) for v in found["vmaf"]]
            if "psnr" in found:
                psnr, db = psnr_summary(found["psnr"], peak, chunks, rate)
                summary = summary.model_copy(update={"psnr": psnr})
                per_frame["psnr"] = db
            if "ssim" in found:
                summary = summary.model_copy(
                    update={"ssim": ssim_summary(found["ssim"], chunks, rate)}
                )
                per_frame["ssim"] = found["ssim"]
            views.append(summary)
            frames_views[view.at] = {"width": view.width, "height": view.height, **per_frame}
        uri = frames_uri(target_of(input), pair.name)
        files.append(
            (uri, {
                "name": pair.name,
                "frame_rate": f"{rate.numerator}/{rate.denominator}",
                "frames": position,
                "chunks": [list(c) for c in chunks],
                "views": frames_views,
            })
        )  # fmt: skip
        summaries.append(
            QualityComparisonSummary(
                name=pair.name,
                distorted=pair.distorted.file.uri,
                frames=position,
                frame_rate=f"{rate.numerator}/{rate.denominator}",
                duration_s=round(position / rate, 6),
                views=views,
                notes=pair.notes,
                frames_uri=uri,
            )
        )
    quality_uri = join(target_of(input), QUALITY_FILE)
    result = QualityResult(
        job_id=input.job_id,
        reference=input.reference.file.uri,
        of_job=input.of_job,
        comparisons=summaries,
        quality_uri=quality_uri,
    )
    files.append((quality_uri, result.model_dump(mode="json")))
    return result, files


def _extend(into: dict[str, Any], metric: str, data: Any) -> None:
    if isinstance(data, list):
        into.setdefault(metric, []).extend(data)
        return
    table = into.setdefault(metric, {})
    for key, values in data.items():
        table.setdefault(key, []).extend(values)
