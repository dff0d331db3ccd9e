"""Per-title ladders (``ladder: auto``): LadderWorkflow on the time-skipping server with the real
activities, on generated titles of opposite complexity (a still test card and a pattern under
heavy temporal noise, 640x360, 12 s) and one that cuts from one to the other; and the request
fields, their checks and the job ID.

Small on purpose (2 cores): two resolutions, three CRF points, ultrafast analysis encodes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from app.api.routers.encode import job_id_for
from app.core.models import (
    EncodeJob,
    EncodeRequest,
    EncoderSettings,
    LadderAnalysis,
    LadderInput,
    LadderOptions,
    ProbeResult,
    Rendition,
)
from app.core.settings import Settings
from app.media.hull import probe_crf
from app.media.ladder import plan_renditions
from app.plato.workflows.ladder import LadderWorkflow, ladder_workflow_id, per_title_ladder
from app.storage.local import path_to_uri, uri_to_path
from app.stratum.functions.ladder import LadderActivities, point_args
from app.stratum.functions.probe import probe_file
from app.stratum.queues import CPU_QUEUE, WORKFLOW_QUEUE
from tests.media_checks import check_package
from tests.stack import Stack

SECONDS = 12
PROFILES: list[Any] = ["360p", "240p"]
CRFS = [22, 32, 42]
PROBE = probe_crf(CRFS)

# ---------------------------------------------------------------- media

TITLES = {
    # a test card that never moves: VMAF 95 for a few kb/s
    "still": "smptehdbars=size=640x360:rate=30",
    # a moving pattern under strong noise that changes every frame: as hard as it gets
    "noisy": "testsrc2=size=640x360:rate=30,noise=alls=40:allf=t",
    # the still, then a hard cut at 5 s to the noisy pattern
    "cut": "smptehdbars=size=640x360:rate=30:duration=5[a];"
    "testsrc2=size=640x360:rate=30:duration=7,noise=alls=40:allf=t[b];"
    "[a][b]concat=n=2:v=1:a=0",
}


@pytest.fixture(scope="module")
def titles(media_dir: Path, ffmpeg: str) -> dict[str, Path]:
    root = media_dir / "ladder"
    root.mkdir(exist_ok=True)
    made = {}
    for name, source in TITLES.items():
        path = root / f"{name}.mp4"
        subprocess.run(
            [ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-f", "lavfi",
             "-i", source, "-t", str(SECONDS), "-c:v", "libx264", "-preset", "ultrafast",
             "-crf", "12", "-g", "30", "-pix_fmt", "yuv420p", str(path)],
            check=True,
        )  # fmt: skip
        made[name] = path
    return made


@pytest.fixture(scope="module")
def settings(titles: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Settings:
    data = tmp_path_factory.mktemp("ladder-data")
    return Settings(data_dir=data, source_roots=str(titles["still"].parent))


def job_of(settings: Settings, source: Path, **fields: Any) -> EncodeJob:
    return EncodeJob(
        job_id=f"enc-ladder-{uuid.uuid4().hex[:8]}",
        source_uri=path_to_uri(source),
        profiles=fields.pop("profiles", PROFILES),
        codec="h264",
        segment_seconds=2,
        output_uri=settings.resolved_output_uri,
        scratch_uri=settings.resolved_scratch_uri,
        ladder="auto",
        **fields,
    )


Run = Callable[..., Awaitable[tuple[EncodeJob, LadderAnalysis]]]


@workflow.defn(sandboxed=False)
class EncodeLike:
    """Stands in for EncodeWorkflow: what it does with ``ladder: auto`` after the probe."""

    @workflow.run
    async def run(self, input: LadderInput) -> LadderAnalysis:
        return await per_title_ladder(input.job, input.probe)


@pytest.fixture(scope="module")
async def run_ladder(
    time_skipping_env: WorkflowEnvironment, settings: Settings
) -> AsyncIterator[Run]:
    """LadderWorkflow on the time-skipping server, the real activities two at a time."""
    client: Client = time_skipping_env.client
    ladder = LadderActivities(settings, threads=1)
    activities = ladder.activities()
    workflows = Worker(client, task_queue=WORKFLOW_QUEUE, workflows=[LadderWorkflow, EncodeLike])
    pool = Worker(client, task_queue=CPU_QUEUE, activities=activities, max_concurrent_activities=2)

    async def run(
        source: Path, *, as_child: bool = False, **fields: Any
    ) -> tuple[EncodeJob, LadderAnalysis]:
        """The analysis of ``source`` (cheap settings), or as the encode job runs it: a child
        of a job's workflow, with the defaults."""
        job = job_of(settings, source, **fields)
        probe: ProbeResult = await asyncio.to_thread(probe_file, source)
        if as_child:
            handle = await client.start_workflow(
                EncodeLike.run, LadderInput(job=job, probe=probe), id=job.job_id,
                task_queue=WORKFLOW_QUEUE,
            )  # fmt: skip
        else:
            handle = await client.start_workflow(
                LadderWorkflow.run,
                LadderInput(
                    job=job,
                    probe=probe,
                    crfs=CRFS,
                    preset="ultrafast",
                    samples=3,
                    sample_seconds=2.0,
                ),
                id=ladder_workflow_id(job.job_id),
                task_queue=WORKFLOW_QUEUE,
            )
        return job, await asyncio.wait_for(handle.result(), 150)

    async with workflows, pool:
        yield run


# ---------------------------------------------------------------- the workflow


def check_ladder(job: EncodeJob, analysis: LadderAnalysis, settings: Settings) -> None:
    """What every auto ladder is: rungs up in bitrate, never down in height, within the
    bounds; the analysis complete; plannable; its samples gone from scratch."""
    rungs = analysis.rungs
    assert rungs, analysis
    kbps = [r.bitrate_kbps for r in rungs]
    sides = [min(r.width, r.height) for r in rungs]
    assert kbps == sorted(set(kbps)), f"bitrates strictly increase: {kbps}"
    assert sides == sorted(sides), f"heights never fall as bitrates rise: {sides}"
    assert analysis.options.max_kbps is not None and kbps[-1] <= analysis.options.max_kbps
    assert len(rungs) <= analysis.options.max_rungs
    assert all(r.predicted_vmaf is not None for r in rungs)
    assert [p.name for p in analysis.profiles] == [r.name for r in rungs]
    assert [p.bitrate_kbps for p in analysis.profiles] == kbps

    samples = analysis.samples
    assert len(samples) == 3, "12 s of title: three 2 s samples"
    starts = [s.start_s for s in samples]
    assert starts == sorted(starts) and starts[0] > 0 and starts[-1] + 2 <= SECONDS
    assert all(s.frames == 60 for s in samples), samples
    sizes = {(p.width, p.height) for p in analysis.points}
    assert (640, 360) in sizes and sizes <= {(640, 360), (428, 240)}, "the top size first"
    assert {p.crf for p in analysis.points} <= set(CRFS) and (640, 360, PROBE) in {
        (p.width, p.height, p.crf) for p in analysis.points
    }, "the top size's probe"
    assert len(analysis.sample_points) == 3 * len(analysis.points), "pooled over the samples"
    assert analysis.hull and all(p.on_hull for p in analysis.hull)
    hull_kbps = [p.kbps for p in analysis.hull]
    assert hull_kbps == sorted(hull_kbps)
    assert {(r.name, r.bitrate_kbps) for r in analysis.fixed} == {("360p", 800), ("240p", 400)}
    assert analysis.display_width == 640 and analysis.display_height == 360
    assert analysis.vmaf_model == "vmaf_v0.6.1" and analysis.method

    planned = plan_renditions(job.model_copy(update={"profiles": analysis.profiles}), probe_of(job))
    assert sorted(r.settings.bitrate_kbps for r in planned.renditions) == kbps
    assert all(r.settings.rate_control == "constrained-vbr" for r in planned.renditions)
    scratch = settings.data_path / "scratch" / job.job_id / "ladder"
    assert not scratch.exists(), "the samples are removed"


def probe_of(job: EncodeJob) -> ProbeResult:
    return probe_file(Path(job.source_uri.removeprefix("file://")))


async def measured(env: WorkflowEnvironment, job: EncodeJob) -> list[tuple[int, int, list[int]]]:
    """The (width, height, CRFs) of every ``ladder_measure`` the analysis scheduled, in order."""
    handle = env.client.get_workflow_handle(ladder_workflow_id(job.job_id))
    found = []
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            scheduled = event.activity_task_scheduled_event_attributes
            if scheduled.activity_type.name == "ladder_measure":
                (payload,) = scheduled.input.payloads
                request = json.loads(payload.data)
                rendition = request["rendition"]
                found.append((rendition["width"], rendition["height"], request["crfs"]))
    return found


async def test_simple_content_gets_fewer_bits_and_no_more_rungs_than_complex(
    run_ladder: Run, titles: dict[str, Path], settings: Settings,
    time_skipping_env: WorkflowEnvironment,
) -> None:  # fmt: skip
    still_job, still = await run_ladder(titles["still"])
    noisy_job, noisy = await run_ladder(titles["noisy"])
    check_ladder(still_job, still, settings)
    check_ladder(noisy_job, noisy, settings)
    # the top size of every sample at one point first; the still is one rung there: no more
    assert await measured(time_skipping_env, still_job) == [(640, 360, [PROBE])] * 3
    assert any("428x240 not measured" in n for n in still.notes), still.notes
    assert "each at 1 of 6 points (1 of 2 resolutions" in still.method
    # the noisy one: the probe, the top's other points, then the smaller size
    steps = await measured(time_skipping_env, noisy_job)
    assert steps[:3] == [(640, 360, [PROBE])] * 3, steps
    assert [s[:2] for s in steps[3:]] == [(640, 360)] * 3 + [(428, 240)] * 3, steps
    assert PROBE not in steps[3][2] and len(set(map(tuple, (s[2] for s in steps[3:6])))) == 1

    assert still.rungs[-1].bitrate_kbps < noisy.rungs[-1].bitrate_kbps / 4, (
        still.rungs,
        noisy.rungs,
    )
    assert len(still.rungs) <= len(noisy.rungs)
    assert len(still.rungs) == 1, "a still reaches VMAF 95 below min_kbps: one rung is enough"
    assert still.rungs[0].predicted_vmaf and still.rungs[0].predicted_vmaf >= 95
    # the noisy title cannot reach 95 within max_kbps (1.5x the fixed 800k): capped there
    assert noisy.rungs[-1].bitrate_kbps == noisy.options.max_kbps == 1200
    assert noisy.rungs[0].bitrate_kbps == noisy.options.min_kbps == 200
    assert len(noisy.rungs) >= 2 and any("capped at max_kbps" in n for n in noisy.notes)
    # the same bitrate buys far less quality in the noisy title
    assert still.hull[-1].vmaf > noisy.points[-1].vmaf


async def test_samples_avoid_the_scene_cut_and_the_bounds_are_applied(
    run_ladder: Run, titles: dict[str, Path], settings: Settings
) -> None:
    options = LadderOptions(max_rungs=2, min_kbps=300, max_kbps=900, top_vmaf=80)
    job, analysis = await run_ladder(titles["cut"], ladder_options=options)
    check_ladder(job, analysis, settings)
    assert analysis.scene_cuts == 1 and analysis.keyframes == SECONDS
    # the middle of each third is 1, 5 and 9 s; 5 s is the cut: the sample starts after it
    assert [s.start_s for s in analysis.samples] == [1.0, 5.5, 9.0]
    assert len(analysis.rungs) <= 2
    assert analysis.rungs[0].bitrate_kbps >= 300 and analysis.rungs[-1].bitrate_kbps <= 900
    assert analysis.options.min_kbps == 300 and analysis.options.max_kbps == 900


async def test_the_encode_job_runs_it_as_its_child_with_the_defaults(
    run_ladder: Run, titles: dict[str, Path], time_skipping_env: WorkflowEnvironment
) -> None:
    job, analysis = await run_ladder(titles["still"], as_child=True)
    child = time_skipping_env.client.get_workflow_handle(f"{job.job_id}-ladder")
    described = await child.describe()
    assert described.status == WorkflowExecutionStatus.COMPLETED
    assert described.parent_id == job.job_id
    assert analysis.crfs == [20, 27, 34, 41] and analysis.preset == "fast"
    assert len(analysis.rungs) == 1 and analysis.profiles[0].codec == "h264"
    # 12 s of title: even the shortest sample, 0.5 s, costs a third of the fixed ladder's encode
    ((sample),) = analysis.samples
    assert sample.frames == 15, analysis.samples
    assert any("the least the analysis takes" in n and "over the 30% budget" in n
               for n in analysis.notes), analysis.notes  # fmt: skip
    # a quarter of a GOP (2 s segments): its keyframe is charged a quarter
    for p in analysis.sample_points:
        assert p.keyframe_weight == 0.25 and 0 < p.keyframe_bytes < p.size_bytes, p
        assert p.kbps < p.size_bytes * 8 / 1000 / p.duration_s


async def test_a_ladder_that_fits_no_resolution_fails_as_a_plan_error(
    run_ladder: Run, titles: dict[str, Path]
) -> None:
    with pytest.raises(WorkflowFailureError) as failure:
        await run_ladder(titles["still"], profiles=["1080p"])
    cause = failure.value.cause
    while cause is not None and not isinstance(cause, ApplicationError):
        cause = cause.cause
    assert isinstance(cause, ApplicationError) and cause.type == "PlanError", failure.value
    assert "would upscale" in cause.message


# ---------------------------------------------------------------- the request


def test_ladder_fields_default_to_fixed_and_nonsense_is_refused_naming_the_field() -> None:
    request = EncodeRequest(source="/x.mp4")
    assert request.ladder == "fixed" and request.ladder_options == LadderOptions()
    options = LadderOptions()
    assert (options.max_rungs, options.top_vmaf, options.min_kbps, options.max_kbps) == (
        5, 95.0, None, None,
    )  # fmt: skip
    cases = [
        ({"ladder": "best"}, ("ladder",)),
        ({"ladder_options": {"min_kbps": 900, "max_kbps": 300}}, ("ladder_options", "max_kbps")),
        ({"ladder_options": {"top_vmaf": 120}}, ("ladder_options", "top_vmaf")),
        ({"ladder_options": {"max_rungs": 0}}, ("ladder_options", "max_rungs")),
        ({"ladder_options": {"min_kbps": 10}}, ("ladder_options", "min_kbps")),
        ({"ladder_options": {"codec": "prores"}}, ("ladder_options", "codec")),
        ({"ladder_options": {"rungs": 3}}, ("ladder_options", "rungs")),
    ]
    for body, loc in cases:
        with pytest.raises(ValidationError) as err:
            EncodeRequest.model_validate({"source": "/x.mp4", "ladder": "auto", **body})
        assert any(e["loc"][: len(loc)] == loc for e in err.value.errors()), (body, err.value)
    # jobs recorded before the fields existed still decode
    old = job_of(Settings(), Path("/x.mp4")).model_dump(exclude={"ladder", "ladder_options"})
    assert EncodeJob.model_validate(old).ladder == "fixed"


def test_job_ids_change_only_when_the_ladder_does() -> None:
    def job_id(**fields: Any) -> str:
        return job_id_for(EncodeRequest(source="/x.mp4", **fields), "file:///x.mp4", None)

    plain = job_id()
    assert job_id(ladder="fixed") == plain == job_id(ladder_options=LadderOptions())
    auto = job_id(ladder="auto")
    assert auto != plain
    assert job_id(ladder="auto", ladder_options={"top_vmaf": 95}) == auto, "defaults left out"
    assert job_id(ladder="auto", ladder_options={"top_vmaf": 93}) != auto


def test_analysis_encodes_are_capped_crf_with_the_production_arguments() -> None:
    settings = EncoderSettings(
        encoder="libx264", preset="fast", rate_control="constrained-vbr", bitrate_kbps=1000,
        maxrate_kbps=1500, bufsize_kbps=2000, gop_frames=60, frame_rate="30/1",
        deinterlace="frame", field_order="tff", tonemap=True, tonemap_from="smpte2084",
    )  # fmt: skip
    rendition = Rendition(name="360p", codec="h264", width=640, height=360,
                          sample_aspect_ratio="1:1", settings=settings)  # fmt: skip
    args = point_args(rendition, [20, 30], [Path("/tmp/a.mp4"), Path("/tmp/b.mp4")], 1)
    assert "-b:v" not in args
    assert [args[i + 1] for i, a in enumerate(args) if a == "-crf"] == ["20", "30"]
    assert [args[i + 1] for i, a in enumerate(args) if a == "-maxrate"] == ["1500k", "1500k"]
    graph = args[args.index("-filter_complex") + 1]
    assert "scale=640:360" in graph and "split=2" in graph
    assert "bwdif" not in graph and "tonemap" not in graph, "the sample is treated already"
    assert args.count("-g") == 2 and "libx264" in args and "fast" in args


# ---------------------------------------------------------------- through the real stack


@pytest.mark.e2e
async def test_an_auto_ladder_job_encodes_the_rungs_it_chose_and_publishes_the_analysis(
    stack: Stack, titles: dict[str, Path], ffmpeg: str, dev_server: WorkflowEnvironment
) -> None:
    job_id = stack.submit(
        source=str(titles["still"]), profiles=PROFILES, ladder="auto", thumbnails=False,
        segment_seconds=2,
    )["job_id"]  # fmt: skip
    view = stack.wait(job_id, timeout=400)
    assert view["status"] == "SUCCEEDED", view
    out = uri_to_path(view["manifests"]["manifest"]).parent
    manifest = check_package(out, ffmpeg, float(SECONDS), "30/1")
    analysis = LadderAnalysis.model_validate(manifest["ladder_analysis"])
    encoded = {r["name"]: r["settings"]["bitrate_kbps"] for r in manifest["renditions"]}
    assert encoded == {p.name: p.bitrate_kbps for p in analysis.profiles}, "the rungs it chose"
    assert analysis.hull and analysis.fixed and "ladder" in view["stage_seconds"]
    fixed_top = max(r.bitrate_kbps for r in analysis.fixed)
    assert max(encoded.values()) < fixed_top, "a still title needs less than the fixed top rung"
    if os.environ.get("COSMOS_RECORD_HISTORY"):  # replayed by tests/test_replay.py
        histories = Path(__file__).parent / "histories"
        for name, workflow_id in (("encode_ladder", job_id), ("ladder", f"{job_id}-ladder")):
            recorded = await dev_server.client.get_workflow_handle(workflow_id).fetch_history()
            (histories / f"{name}.json").write_text(json.dumps(recorded.to_json_dict(), indent=1))
