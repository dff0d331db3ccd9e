"""ladder-prepare, ladder-next, ladder-measure, ladder-choose, ladder-cleanup (and
ladder-scope, for histories from before ladder-next): a per-title ladder.

``prepare`` plans the fixed ladder (the job's profiles) and the resolutions to measure (its
sizes that fit, in the auto ladder's codec), reads the scene scores between the source's
keyframes (the split's scan: only keyframes are decoded), sizes and chooses the samples
(``app.media.hull.sample_plan`` and ``choose_samples``) and stores each losslessly
(``SAMPLE_CODEC``) in scratch, with the treatment the renditions get (deinterlacing,
tone-mapping, constant frame rate). ``next`` says from the points so far which resolutions
and quality points to measure next (``next_tasks``: the top at one CRF first, then only what
can bracket a rung). ``measure`` encodes one sample at one resolution at its quality points
(capped CRF, the production encoder flags otherwise: GOP, profile, colour) from one decode,
then measures every encode's VMAF at the display size in one ffmpeg run
(``app.media.quality``'s graph, the sample as the reference). ``choose`` pools the points and
picks the rungs (``app.media.hull``).
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from temporalio import activity
from temporalio.exceptions import ApplicationError

from app.core.models import (
    Codec,
    CustomProfile,
    EncodeJob,
    LadderAnalysis,
    LadderChooseInput,
    LadderInput,
    LadderMeasured,
    LadderMeasureInput,
    LadderNext,
    LadderOptions,
    LadderPoint,
    LadderPrepared,
    LadderRung,
    LadderSample,
    LadderSampleSpan,
    LadderScope,
    LadderTask,
    QualityChunk,
    Rendition,
)
from app.core.settings import Settings
from app.media.chunking import Keyframe
from app.media.formats import OPEN_OPTIONS, count_frames
from app.media.hull import (
    ANALYSIS_BUDGET,
    DEFAULT_CRFS,
    DEFAULT_SAMPLE_S,
    MIN_SAMPLE_S,
    SPREAD_SAMPLE_S,
    choose_rungs,
    choose_samples,
    crf_list,
    mark_hull,
    next_points,
    one_rung_at_top,
    pick_resolutions,
    pool,
    predicted,
    profiles,
    rate_bytes,
    sample_count,
    sample_plan,
    scene_cuts,
    upper_hull,
)
from app.media.ladder import BUFSIZE_FACTOR, CODECS, MAXRATE_FACTOR, PlanError, plan_renditions
from app.media.quality import (
    GraphInput,
    GraphPair,
    QualityLogError,
    compare_format,
    display_size,
    harmonic_mean,
    measure_plan,
    read_logs,
    read_timeline,
    vmaf_model,
)
from app.storage.local import remove_tree
from app.storage.object_store import join, store_for
from app.stratum.functions.chunks import parse_keyframes
from app.stratum.functions.common import (
    ActivityBase,
    discarded_on_error,
    input_args,
    part_path,
)
from app.stratum.functions.encode import deinterlace_filter, tonemap_filters, video_output_args

LADDER_ERROR = "LadderError"
PLAN_ERROR = "PlanError"
SAMPLE_CONTAINER = "matroska"
SAMPLE_CODEC = ("-c:v", "libx264", "-qp", "0", "-preset", "ultrafast")
"""Lossless H.264 (bit-exact in 8 and 10 bits, 4:2:0 to 4:4:4): every sample is decoded about
four times, and it decodes 2.8x faster than FFV1 (0.31 against 0.86 CPU-s for 2 s of busy 720p),
encodes faster and is smaller."""
MAX_BITRATE_FACTOR = 1.5
"""Default max_kbps: the fixed ladder's top bitrate times this (its VBV peak)."""
MIN_BITRATE_FACTOR = 0.5
"""Default min_kbps: the fixed ladder's lowest bitrate times this."""
PROFILE_KBPS = (64, 100_000)
"""What a profile's bitrate may be (``CustomProfile``)."""


def ladder_uri(scratch_uri: str, job_id: str) -> str:
    return join(scratch_uri, job_id, "ladder")


def sample_uri(scratch_uri: str, job_id: str, index: int) -> str:
    return join(ladder_uri(scratch_uri, job_id), "samples", f"{index:02d}.mkv")


def resolve_options(
    options: LadderOptions, codec: Codec, fixed: list[Rendition]
) -> tuple[LadderOptions, list[str]]:
    """Every bound set: unset ones from the fixed ladder's bitrates, brought to the auto
    ladder's codec by the codecs' bitrate factors."""
    factor = CODECS[codec].bitrate_factor
    rates = [r.settings.bitrate_kbps * factor / CODECS[r.codec].bitrate_factor for r in fixed]
    low, high = PROFILE_KBPS
    notes = []
    max_kbps = options.max_kbps
    if max_kbps is None:
        max_kbps = max(round(max(rates) * MAX_BITRATE_FACTOR), options.min_kbps or low)
        notes.append(f"max_kbps {max_kbps}: 1.5x the fixed ladder's top")
    min_kbps = options.min_kbps
    if min_kbps is None:
        min_kbps = min(max(low, round(min(rates) * MIN_BITRATE_FACTOR)), max_kbps)
        notes.append(f"min_kbps {min_kbps}: half the fixed ladder's lowest")
    resolved = options.model_copy(
        update={
            "codec": codec,
            "max_kbps": min(max(max_kbps, low), high),
            "min_kbps": min(max(min_kbps, low), high),
        }
    )
    return resolved, notes


def crf_args(args: list[str], crfs: Sequence[float]) -> list[str]:
    """The encoder arguments of ``video_output_args`` (one output per quality point, in
    order) with each output's target bitrate replaced by its CRF: the VBV (maxrate and
    buffer, where the encoder has one) stays, so it is capped CRF."""
    out = list(args)
    positions = [i for i, a in enumerate(out) if a == "-b:v"]
    if len(positions) != len(crfs):
        raise ValueError("one -b:v per output expected")
    for i, crf in zip(positions, crfs, strict=True):
        out[i], out[i + 1] = "-crf", str(crf)
    return out


def video_bytes(path: Path) -> tuple[int, int, int]:
    """The video stream's bytes (packets: no container), its keyframes' bytes, and frames."""
    with av.open(str(path), options=OPEN_OPTIONS) as container:
        stream = container.streams.video[0]
        packets = [(p.size, p.is_keyframe) for p in container.demux(stream) if p.size]
    return sum(s for s, _ in packets), sum(s for s, key in packets if key), len(packets)


class LadderActivities(ActivityBase):
    def __init__(self, settings: Settings, threads: int = 1) -> None:
        super().__init__(settings)
        self.threads = threads

    def activities(self) -> list[Callable[..., Any]]:
        """Every activity LadderWorkflow calls, for a worker to serve."""
        return [self.prepare, self.measure, self.next, self.scope, self.choose, self.cleanup]

    # ------------------------------------------------------------------ prepare

    @activity.defn(name="ladder_prepare")
    async def prepare(self, input: LadderInput) -> LadderPrepared:
        job, probe = input.job, input.probe
        codec = job.ladder_options.codec or job.codec
        try:
            fixed = plan_renditions(job, probe).renditions
            sides = pick_resolutions([min(r.width, r.height) for r in fixed])
            wanted = [
                CustomProfile(name=f"{side}p", height=side, bitrate_kbps=1000, codec=codec,
                              preset=input.preset)
                for side in sides
            ]  # fmt: skip
            plan = plan_renditions(job.model_copy(update={"profiles": wanted}), probe)
        except PlanError as err:
            raise ApplicationError(str(err), type=PLAN_ERROR, non_retryable=True) from None
        options, notes = resolve_options(job.ladder_options, codec, fixed)
        assert options.max_kbps is not None
        spec = CODECS[codec]
        cap = round(options.max_kbps * MAXRATE_FACTOR) if spec.vbv else None
        candidates = [_capped(r, options.max_kbps, spec.vbv) for r in plan.renditions]
        top = max(fixed, key=lambda r: (r.width * r.height, r.settings.bitrate_kbps))
        display = display_size(top.width, top.height, top.sample_aspect_ratio)

        crfs = list(input.crfs or DEFAULT_CRFS[codec])
        count, seconds = self._sampling(input, fixed, candidates, display, len(crfs), notes)

        src = await self.local_source(job.source_uri, job.job_id)
        keyframes = await self._keyframes(src, probe.container, probe.duration_s)
        starts = choose_samples(keyframes, probe.duration_s, count, seconds)
        samples = []
        for index, start in enumerate(starts):
            samples.append(
                await self._sample(job, src, probe.container, candidates[0], index, start,
                                   seconds)
            )  # fmt: skip
        return LadderPrepared(
            codec=codec,
            options=options,
            fixed=fixed,
            candidates=candidates,
            display_width=display[0],
            display_height=display[1],
            vmaf_model=vmaf_model(*display),
            samples=samples,
            crfs=crfs,
            cap_kbps=cap,
            keyframes=len(keyframes),
            scene_cuts=len(scene_cuts(keyframes)),
            notes=notes,
        )

    @staticmethod
    def _sampling(
        input: LadderInput,
        fixed: list[Rendition],
        candidates: list[Rendition],
        display: tuple[int, int],
        points: int,
        notes: list[str],
    ) -> tuple[int, float]:
        """The samples' count and length: the input's where it sets them (tests, the bench),
        else sized to the budget (``sample_plan``); the note says which and what it costs."""
        duration = input.probe.duration_s
        if input.samples is not None or input.sample_seconds is not None:
            seconds = input.sample_seconds or DEFAULT_SAMPLE_S
            return input.samples or sample_count(duration, seconds), seconds
        plan = sample_plan(
            duration,
            [r.width * r.height for r in fixed],
            [r.width * r.height for r in candidates],
            display[0] * display[1],
            points,
        )
        least = plan.count == 1 and plan.seconds <= MIN_SAMPLE_S
        why = "the title is short" if least else f"whole samples of at least {SPREAD_SAMPLE_S:g} s"
        notes.append(
            f"samples: {plan.count} of {plan.seconds:g} s"
            f"{', the least the analysis takes' if least else ''}: an estimated "
            f"{plan.cost_share:.0%} of the fixed ladder's encode, "
            + (f"over the {ANALYSIS_BUDGET:.0%} budget ({why})"
               if plan.cost_share > ANALYSIS_BUDGET
               else f"within the {ANALYSIS_BUDGET:.0%} budget")
        )  # fmt: skip
        return plan.count, plan.seconds

    async def _keyframes(self, src: Path, container: str, duration_s: float) -> list[Keyframe]:
        """The scene score between consecutive keyframes, as the split reads it."""
        with tempfile.TemporaryDirectory(prefix="cosmos-ladder-keys-") as tmp:
            metadata = Path(tmp) / "keys.txt"
            scan = (
                "scale=64:64,select='gte(scene\\,0)',"
                f"metadata=mode=print:key=lavfi.scene_score:file={metadata}"
            )
            await self.ffmpeg(
                ["-skip_frame", "nokey", *input_args(src, container), "-map", "0:v:0",
                 "-vf", scan, "-an", "-f", "null", "-"],
                total_s=duration_s, label="ladder keyframes", metric="ladder", encodes=False,
            )  # fmt: skip
            text = metadata.read_text() if metadata.exists() else ""
        return parse_keyframes(text)

    async def _sample(
        self,
        job: EncodeJob,
        src: Path,
        container: str,
        rendition: Rendition,
        index: int,
        start_s: float,
        seconds: float,
    ) -> LadderSample:
        """The sample as the encoders see it: deinterlaced and tone-mapped as the renditions
        are, at their constant frame rate, lossless. A retry finds it whole and keeps it."""
        s = rendition.settings
        rate = Fraction(s.frame_rate)
        uri = sample_uri(job.scratch_uri, job.job_id, index)
        if not await asyncio.to_thread(store_for(uri, self.settings).exists, uri):
            chain = [deinterlace_filter(s)] if s.deinterlace else []
            if s.tonemap:
                chain += tonemap_filters(s)
            part = part_path(self.scratch_path(uri, job.job_id))
            part.parent.mkdir(parents=True, exist_ok=True)
            frames = max(1, round(seconds * rate))
            with discarded_on_error(part):
                await self.ffmpeg(
                    ["-y", "-ss", f"{start_s:.6f}", *input_args(src, container),
                     "-map", "0:v:0", "-frames:v", str(frames),
                     *(["-vf", ",".join(chain)] if chain else []),
                     "-r", s.frame_rate, "-fps_mode", "cfr", "-pix_fmt", s.pix_fmt,
                     *SAMPLE_CODEC, "-threads", str(max(1, self.threads)), "-an", "-sn", "-dn",
                     "-map_metadata", "-1", "-f", SAMPLE_CONTAINER, str(part)],
                    total_s=seconds, label=f"ladder sample {index}", metric="ladder",
                )  # fmt: skip
            await self.place(part, uri, job.job_id)
        path = await self.fetch(uri, job.job_id)
        frames, _ = await asyncio.to_thread(count_frames, path)
        if frames < 1:
            raise ApplicationError(f"sample {index} at {start_s:.3f}s has no frames",
                                   type=LADDER_ERROR, non_retryable=True)  # fmt: skip
        return LadderSample(
            index=index,
            start_s=start_s,
            duration_s=round(frames / rate, 6),
            frames=frames,
            frame_rate=s.frame_rate,
            uri=uri,
        )

    # ------------------------------------------------------------------ measure

    @activity.defn(name="ladder_measure")
    async def measure(self, input: LadderMeasureInput) -> LadderMeasured:
        """One sample at one resolution: every quality point from one decode, then every
        encode's VMAF at the display size in one run (the sample decoded once)."""
        sample, rendition = input.sample, input.rendition
        label = f"ladder {rendition.width}x{rendition.height} sample {sample.index}"
        path = await self.fetch(sample.uri, input.job_id)
        rate = Fraction(sample.frame_rate)
        with tempfile.TemporaryDirectory(prefix="cosmos-ladder-") as tmp:
            outs = [Path(tmp) / f"crf{crf}.mp4" for crf in input.crfs]
            args = point_args(rendition, input.crfs, outs, self.threads)
            await self.ffmpeg(
                ["-y", *input_args(path, SAMPLE_CONTAINER), *args],
                total_s=sample.duration_s, label=label, metric="ladder",
            )  # fmt: skip
            vmaf = await self._vmaf(input, path, outs, Path(tmp) / "logs", rate)
            found = []
            weight = round(min(1.0, sample.frames / rendition.settings.gop_frames), 6)
            for crf, out, scores in zip(input.crfs, outs, vmaf, strict=True):
                size, key, frames = await asyncio.to_thread(video_bytes, out)
                seconds = frames / rate
                bits = 8 * rate_bytes(size, key, weight)
                found.append(
                    LadderPoint(
                        width=rendition.width,
                        height=rendition.height,
                        crf=crf,
                        sample=sample.index,
                        kbps=round(bits / 1000 / float(seconds), 3),
                        vmaf=round(sum(scores) / len(scores), 4),
                        vmaf_harmonic_mean=round(harmonic_mean(scores), 4),
                        frames=frames,
                        duration_s=round(float(seconds), 6),
                        size_bytes=size,
                        keyframe_bytes=key,
                        keyframe_weight=weight,
                    )
                )
        return LadderMeasured(
            sample=sample.index, width=rendition.width, height=rendition.height, points=found
        )

    async def _vmaf(
        self, input: LadderMeasureInput, sample: Path, outs: list[Path], logs: Path, rate: Fraction
    ) -> list[list[float]]:
        logs.mkdir()
        timelines = await asyncio.to_thread(lambda: [read_timeline(p) for p in [sample, *outs]])
        ref = timelines[0]
        reference = GraphInput(sample, SAMPLE_CONTAINER, ref.first_s, ref.start_s, ref.colour)
        size = (input.display_width, input.display_height)
        pairs = [
            GraphPair(
                distorted=GraphInput(out, "mov", t.first_s, t.start_s, t.colour),
                rate=rate,
                multiplier=1,
                sizes=((*size, ("vmaf",)),),
                pix_fmt=compare_format(input.rendition.settings.pix_fmt),
            )
            for out, t in zip(outs, timelines[1:], strict=True)
        ]
        chunk = QualityChunk(index=0, start_frame=0, duration_s=input.sample.duration_s)
        plan = measure_plan(reference, pairs, chunk, logs, context=False, threads=self.threads)
        await self.ffmpeg(
            plan.args,
            total_s=plan.total_s,
            label=f"ladder vmaf sample {input.sample.index}",
            metric="ladder",
            encodes=False,
        )
        found = []
        for i, out in enumerate(outs):
            try:
                frames, values = read_logs(plan.logs[i][size], plan.windows[i])
            except QualityLogError as err:
                raise ApplicationError(f"{out.name}: {err}", type=LADDER_ERROR) from None
            scores = values["vmaf"]
            assert isinstance(scores, list)
            if abs(frames - input.sample.frames) > 1 or not scores:
                raise ApplicationError(
                    f"{out.name}: VMAF of {frames} frames, the sample has {input.sample.frames}",
                    type=LADDER_ERROR,
                    non_retryable=True,
                )
            found.append([float(v) for v in scores])
        return found

    # ------------------------------------------------------------------ scope

    @activity.defn(name="ladder_next")
    async def next(self, input: LadderChooseInput) -> LadderNext:
        """What to measure next, from the points so far: an activity, so a change of the
        rules never changes a running history."""
        return next_tasks(input)

    @activity.defn(name="ladder_scope")
    async def scope(self, input: LadderChooseInput) -> LadderScope:
        """The lower resolutions worth measuring, from the top one's points (histories from
        before ``ladder_next``)."""
        return lower_scope(input)

    # ------------------------------------------------------------------ choose

    @activity.defn(name="ladder_choose")
    async def choose(self, input: LadderChooseInput) -> LadderAnalysis:
        """The hull and the rungs: an activity, so a change of the rules never changes a
        running history."""
        try:
            return choose_ladder(input)
        except ValueError as err:
            raise ApplicationError(str(err), type=LADDER_ERROR, non_retryable=True) from None

    # ------------------------------------------------------------------ cleanup

    @activity.defn(name="ladder_cleanup")
    async def cleanup(self, input: LadderInput) -> bool:
        """The samples go once the rungs are chosen (or the analysis failed)."""
        uri = ladder_uri(input.job.scratch_uri, input.job.job_id)
        removed = await asyncio.to_thread(store_for(uri, self.settings).delete_prefix, uri)
        local = self.work_dir(input.job.job_id) / "ladder"
        await asyncio.to_thread(remove_tree, local)
        return bool(removed)


def _capped(rendition: Rendition, max_kbps: int, vbv: bool) -> Rendition:
    """The analysis encodes' VBV: the top rung's (``max_kbps``'s maxrate and buffer) for
    every point, so no point spends more than a rung could; none without a VBV (SVT-AV1)."""
    settings = rendition.settings.model_copy(
        update={
            "maxrate_kbps": round(max_kbps * MAXRATE_FACTOR) if vbv else None,
            "bufsize_kbps": round(max_kbps * BUFSIZE_FACTOR) if vbv else None,
        }
    )
    return rendition.model_copy(update={"settings": settings})


def point_args(
    rendition: Rendition, crfs: Sequence[float], outs: Sequence[Path], threads: int
) -> list[str]:
    """The encoder arguments of one sample at one size and every quality point: the
    production ones (``video_output_args``: scale, SAR, GOP, preset, profile, colour tags,
    VBV), a CRF for each output instead of its bitrate. The sample is deinterlaced and
    tone-mapped already: those treatments are not applied twice."""
    settings = rendition.settings.model_copy(
        update={"deinterlace": None, "field_order": None, "tonemap": False, "tonemap_from": None}
    )
    points = [
        (rendition.model_copy(update={"name": f"crf{crf:g}", "settings": settings}), out)
        for crf, out in zip(crfs, outs, strict=True)
    ]
    return crf_args(video_output_args(points, threads=threads), crfs)


def next_tasks(input: LadderChooseInput) -> LadderNext:
    """What to measure next, from the points so far (pure: ``ladder_next``'s body): the
    candidates at the quality points ``app.media.hull.next_points`` asks for."""
    prepared = input.prepared
    options = prepared.options
    assert options.min_kbps is not None and options.max_kbps is not None
    by_size = {(r.width, r.height): r for r in prepared.candidates}
    step = next_points(
        [p for m in input.measured for p in m.points],
        list(by_size),
        prepared.crfs,
        options.top_vmaf,
        options.min_kbps,
        options.max_kbps,
    )
    return LadderNext(
        tasks=[LadderTask(rendition=by_size[size], crfs=crfs) for size, crfs in step.measure],
        notes=step.notes,
    )


def lower_scope(input: LadderChooseInput) -> LadderScope:
    """Every lower resolution, or none where the top one (``input.measured``: the top
    resolution of every sample) makes a one-rung ladder by itself (``one_rung_at_top``)."""
    prepared = input.prepared
    top, *lower = prepared.candidates
    options = prepared.options
    assert options.min_kbps is not None
    points = [p for m in input.measured for p in m.points]
    kbps = one_rung_at_top(points, options.top_vmaf, options.min_kbps)
    if kbps is None or not lower:
        return LadderScope(renditions=lower)
    sizes = ", ".join(f"{r.width}x{r.height}" for r in lower)
    return LadderScope(
        renditions=[],
        notes=[
            f"{top.width}x{top.height} reaches VMAF {options.top_vmaf:g} at {kbps:.0f} kb/s, "
            f"at or below min_kbps {options.min_kbps}: one rung at that size, and {sizes} "
            "not measured (the bits a smaller size could save are below the floor)"
        ],
    )


def choose_ladder(input: LadderChooseInput) -> LadderAnalysis:
    """Pool, hull, rungs and the record of it all (pure: the activity's body)."""
    prepared = input.prepared
    options = prepared.options
    assert options.min_kbps is not None and options.max_kbps is not None
    measured = sorted(input.measured, key=lambda m: (m.sample, m.height, m.width))
    sample_points: list[LadderPoint] = []
    for sample in prepared.samples:
        own = [p for m in measured if m.sample == sample.index for p in m.points]
        sample_points += mark_hull(own)
    pooled = mark_hull(pool(sample_points))
    ladder = choose_rungs(
        pooled,
        top_vmaf=options.top_vmaf,
        min_kbps=options.min_kbps,
        max_kbps=options.max_kbps,
        max_rungs=options.max_rungs,
    )
    fixed = [
        LadderRung(
            name=r.name,
            width=r.width,
            height=r.height,
            bitrate_kbps=r.settings.bitrate_kbps,
            predicted_vmaf=predicted(pooled, r.width, r.height, r.settings.bitrate_kbps)
            if r.codec == prepared.codec
            else None,
        )
        for r in sorted(prepared.fixed, key=lambda r: r.settings.bitrate_kbps)
    ]
    top = prepared.candidates[0].settings
    sizes = len({(m.width, m.height) for m in measured})
    seconds = prepared.samples[0].duration_s if prepared.samples else 0.0
    cap = f", capped at {prepared.cap_kbps} kb/s" if prepared.cap_kbps else ""
    method = (
        f"{len(prepared.samples)} samples of {seconds:g} s, one per equal span of the title, "
        f"off scene cuts ({prepared.scene_cuts} found between {prepared.keyframes} keyframes); "
        f"each at {len(pooled)} of {len(prepared.candidates) * len(prepared.crfs)} points "
        f"({sizes} of {len(prepared.candidates)} resolutions x CRF {crf_list(prepared.crfs)}: "
        "the top resolution first, then the points that can still bracket a rung; "
        f"{top.encoder} {top.preset}{cap}); VMAF "
        f"{prepared.vmaf_model} at {prepared.display_width}x{prepared.display_height}; pooled "
        "per point over the samples; upper convex hull across resolutions; rungs evenly "
        f"spaced in VMAF from min_kbps to VMAF {options.top_vmaf:g} or max_kbps, each at the "
        "resolution best at its bitrate; encoded with capped VBR"
    )
    return LadderAnalysis(
        method=method,
        codec=prepared.codec,
        profiles=profiles(ladder.rungs, prepared.codec),
        rungs=ladder.rungs,
        fixed=fixed,
        hull=upper_hull(pooled),
        points=pooled,
        sample_points=sample_points,
        samples=[
            LadderSampleSpan(
                index=s.index, start_s=s.start_s, duration_s=s.duration_s, frames=s.frames
            )
            for s in prepared.samples
        ],
        options=options,
        display_width=prepared.display_width,
        display_height=prepared.display_height,
        vmaf_model=prepared.vmaf_model,
        crfs=prepared.crfs,
        preset=top.preset,
        keyframes=prepared.keyframes,
        scene_cuts=prepared.scene_cuts,
        notes=[*prepared.notes, *input.notes, *ladder.notes],
    )
