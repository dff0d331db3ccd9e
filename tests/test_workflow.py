"""Plato's semantics in the time-skipping server, with stand-in activities.

Retry, saga compensation, cancellation, idempotent starts and fan-out are orchestration: the
activities here only record what happened to them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, CancelledError, WorkflowAlreadyStartedError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from app.core.models import (
    AudioInfo,
    CleanupInput,
    CustomProfile,
    EncodeAudioInput,
    EncodedMedia,
    EncodeJob,
    EncodeResult,
    EncodeVideoInput,
    Manifests,
    PackageInput,
    PackageResult,
    Plan,
    PlanInput,
    ProbeInput,
    ProbeResult,
    PublishInput,
    RetryOptions,
    Route,
    RouteInput,
    VideoInfo,
    WorkflowState,
)
from app.media.ladder import plan_renditions
from app.plato.workflows.encode import EncodeWorkflow
from app.plato.workflows.webhooks import WebhookWorkflow
from app.stratum.pools import NoCapablePool, choose_route
from app.stratum.queues import CPU_QUEUE, CUDA_QUEUE, WORKFLOW_QUEUE, nvenc_queue
from tests.polling import in_history, until
from tests.webhook_receiver import RecordedWebhooks


def probe_result(audio: bool = True) -> ProbeResult:
    return ProbeResult(
        container="mov",
        duration_s=10.0,
        size_bytes=1000,
        video=VideoInfo(
            codec="h264", width=1920, height=1080, sample_aspect_ratio="1:1",
            display_aspect_ratio="16:9", rotation=0, frame_rate="30/1",
            display_width=1920, display_height=1080,
        ),
        audio=AudioInfo(codec="aac", channels=2, channel_layout="stereo", sample_rate=48000)
        if audio
        else None,
        streams=["#0 video h264"],
    )  # fmt: skip


def media(name: str) -> EncodedMedia:
    return EncodedMedia(
        name=name, uri=f"file:///scratch/{name}.mp4", size_bytes=1, duration_s=10, frames=300,
        checksum="sha256:0",
    )  # fmt: skip


@dataclass
class Stand:
    """Stand-in activities with knobs; ``events`` records the order things happened in."""

    audio: bool = True
    probe_error: Exception | None = None
    fail_video: Callable[[str, int], Exception | None] = lambda name, attempt: None
    block_video: set[str] = field(default_factory=set)
    events: list[str] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)
    running: int = 0
    peak: int = 0
    cleanups: list[CleanupInput] = field(default_factory=list)
    webhooks: RecordedWebhooks = field(default_factory=RecordedWebhooks)
    audio_inputs: list[EncodeAudioInput] = field(default_factory=list)
    packages: list[PackageInput] = field(default_factory=list)
    live_gpu_queues: set[str] = field(default_factory=set)
    ran_on: dict[str, str] = field(default_factory=dict)
    routed: list[list[str]] = field(default_factory=list)
    """The codecs of each route read, in order."""
    probe_waits_for_route: bool = False
    route_blocks: bool = False
    """The first route read heartbeats until it is cancelled."""
    probe_s: float = 0.0
    """How long the stand-in probe takes (it does not heartbeat, as the real one does not)."""

    def activities(self) -> list[Callable[..., Any]]:
        @activity.defn(name="probe_source")
        async def probe_source(input: ProbeInput) -> ProbeResult:
            self.events.append("probe")
            self.attempts["probe"] = self.attempts.get("probe", 0) + 1
            if self.probe_error:
                raise self.probe_error
            await asyncio.sleep(self.probe_s)
            if self.probe_waits_for_route:
                for _ in range(100):
                    if self.routed:
                        break
                    await asyncio.sleep(0.05)
                else:
                    raise ApplicationError("no route was read beside the probe", non_retryable=True)
            return probe_result(self.audio)

        @activity.defn(name="plan_renditions")
        async def plan(input: PlanInput) -> Plan:
            return plan_renditions(input.job, input.probe)

        @activity.defn(name="route_encodes")
        async def route(input: RouteInput) -> list[Route]:
            self.routed.append(list(input.codecs))
            if self.route_blocks and len(self.routed) == 1:
                try:
                    while True:
                        activity.heartbeat()
                        await asyncio.sleep(0.05)
                except asyncio.CancelledError:
                    self.events.append("route cancelled")
                    raise
            try:
                return [
                    choose_route(c, input.accelerator, self.live_gpu_queues) for c in input.codecs
                ]
            except NoCapablePool as err:
                raise ApplicationError(str(err), type="NoCapablePool", non_retryable=True) from None

        @activity.defn(name="encode_video")
        async def encode_video(input: EncodeVideoInput) -> EncodedMedia:
            name = input.rendition.name
            attempt = activity.info().attempt
            self.ran_on[name] = activity.info().task_queue
            self.attempts[name] = attempt
            self.running += 1
            self.peak = max(self.peak, self.running)
            try:
                if name in self.block_video:
                    self.events.append(f"blocking {name}")
                    while True:
                        activity.heartbeat({"label": name, "done_s": 1, "total_s": 10})
                        await asyncio.sleep(0.1)
                await asyncio.sleep(0.2)
                error = self.fail_video(name, attempt)
                if error:
                    raise error
                self.events.append(f"encoded {name}")
                return media(name)
            except asyncio.CancelledError:
                self.events.append(f"cancelled {name}")
                raise
            finally:
                self.running -= 1

        @activity.defn(name="encode_audio")
        async def encode_audio(input: EncodeAudioInput) -> EncodedMedia:
            self.audio_inputs.append(input)
            self.events.append("audio")
            return media("audio")

        @activity.defn(name="package")
        async def package(input: PackageInput) -> PackageResult:
            self.packages.append(input)
            return PackageResult(
                staging_uri="file:///scratch/package", hls_master="master.m3u8",
                dash_manifest="manifest.mpd", video_playlists=[], audio_playlist=None,
            )  # fmt: skip

        @activity.defn(name="publish_manifest")
        async def publish_manifest(input: PublishInput) -> Manifests:
            self.events.append("publish")
            return Manifests(
                hls="file:///out/master.m3u8", dash="file:///out/manifest.mpd",
                manifest="file:///out/manifest.json",
            )  # fmt: skip

        @activity.defn(name="cleanup")
        async def cleanup(input: CleanupInput) -> list[str]:
            self.events.append("cleanup")
            self.cleanups.append(input)
            return []

        return [probe_source, plan, route, encode_video, encode_audio, package, publish_manifest,
                cleanup]  # fmt: skip


def job(profiles: list[str | CustomProfile] | None = None, **overrides: Any) -> EncodeJob:
    fields: dict[str, Any] = {
        "job_id": f"job-{uuid.uuid4().hex[:8]}",
        "source_uri": "file:///media/source.mp4",
        "profiles": profiles or ["1080p", "720p", "480p"],
        "codec": "h264",
        "segment_seconds": 4,
        "output_uri": "file:///out",
        "scratch_uri": "file:///scratch",
        "retry": RetryOptions(max_attempts=3, initial_interval_s=0.1),
        "heartbeat_timeout_s": 5,
        "webhook_url": "https://hooks.example.com/cosmos",
    }
    return EncodeJob(**(fields | overrides))


@pytest.fixture
async def client(time_skipping_env: WorkflowEnvironment) -> Client:
    return time_skipping_env.client


@pytest.fixture
async def run_workers(client: Client) -> AsyncIterator[Callable[[Stand], Any]]:
    """Start workers serving the given stand-ins; all are shut down at the end of the test."""
    started: list[Worker] = []

    async def start(stand: Stand, *, workflows: bool = True, activities: bool = True) -> None:
        queue_suffix = uuid.uuid4().hex[:6]
        stand.queue_suffix = queue_suffix  # type: ignore[attr-defined]
        workers = []
        if workflows:
            workers += [
                Worker(client, task_queue=WORKFLOW_QUEUE,
                       workflows=[EncodeWorkflow, WebhookWorkflow]),
                stand.webhooks.worker(client),
            ]  # fmt: skip
        if activities:
            workers.append(
                Worker(client, task_queue=CPU_QUEUE, activities=stand.activities(),
                       # a cancel reaches a heartbeating stand-in at once, not after 30 s
                       default_heartbeat_throttle_interval=timedelta(milliseconds=50))
            )  # fmt: skip
        for worker in workers:
            asyncio.create_task(worker.run())  # noqa: RUF006
            started.append(worker)

    yield start
    for worker in started:
        await worker.shutdown()


async def wait_for_event(stand: Stand, event: str) -> None:
    for _ in range(200):
        if event in stand.events:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{event!r} never happened: {stand.events}")


async def cancel_when_all_blocked(stand: Stand, handle: Any) -> None:
    """Cancel only once every rendition is blocked and the short activities have settled: the
    Java test server mishandles a cancel that races the completion of an activity
    (ACTIVITY_UNKNOWN, then the workflow hangs), which the real server does not."""
    for name in sorted(stand.block_video):
        await wait_for_event(stand, f"blocking {name}")
    await wait_for_event(stand, "audio")
    await asyncio.sleep(0.5)
    await handle.cancel()


async def start(client: Client, encode_job: EncodeJob) -> Any:
    return await client.start_workflow(
        EncodeWorkflow.run,
        encode_job,
        id=encode_job.job_id,
        task_queue=WORKFLOW_QUEUE,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
    )


async def test_fan_out_encodes_every_rendition_in_parallel(
    client: Client, run_workers: Any
) -> None:
    stand = Stand()
    await run_workers(stand)
    handle = await start(client, job())
    result: EncodeResult = await handle.result()
    assert sorted(r.name for r in result.renditions) == ["1080p", "480p", "720p"]
    assert all(r.status == "done" and r.frames == 300 for r in result.renditions)
    assert stand.peak == 3, "all renditions should encode at once"
    assert len(stand.audio_inputs) == 1, "audio is encoded once per job"
    assert stand.packages[0].audio is not None
    assert [v.name for v in stand.packages[0].videos] == ["1080p", "720p", "480p"]
    assert set(result.stage_seconds) == {"probe", "plan", "route", "encode", "package", "publish"}
    assert set(stand.ran_on.values()) == {CPU_QUEUE}
    assert stand.events[-1] == "cleanup"
    assert (await stand.webhooks.final(client, handle)).type == "job.succeeded"
    assert stand.cleanups[0].remove_outputs is False
    state: WorkflowState = await handle.query(EncodeWorkflow.state)
    assert state.stage == "done" and state.manifests is not None


async def test_rungs_above_the_source_are_dropped_and_reported(
    client: Client, run_workers: Any
) -> None:
    stand = Stand()
    await run_workers(stand)
    result: EncodeResult = await (await start(client, job(["2160p", "1080p"]))).result()
    assert [r.name for r in result.renditions] == ["1080p"]
    assert [d.name for d in result.dropped] == ["2160p"]
    assert "upscale" in result.dropped[0].reason


async def test_no_audio_gives_outputs_without_audio(client: Client, run_workers: Any) -> None:
    stand = Stand(audio=False)
    await run_workers(stand)
    await (await start(client, job())).result()
    assert stand.audio_inputs == []
    assert stand.packages[0].audio is None


async def test_transient_failures_are_retried_with_backoff(
    client: Client, run_workers: Any
) -> None:
    def flaky(name: str, attempt: int) -> Exception | None:
        return ApplicationError("disk hiccup") if name == "720p" and attempt < 3 else None

    stand = Stand(fail_video=flaky)
    await run_workers(stand)
    handle = await start(client, job())
    await handle.result()
    assert stand.attempts["720p"] == 3
    assert stand.attempts["1080p"] == 1
    assert (await stand.webhooks.final(client, handle)).data["status"] == "SUCCEEDED"


async def test_bad_input_fails_at_once_and_compensates(client: Client, run_workers: Any) -> None:
    error = ApplicationError("source is audio-only", type="InvalidSource", non_retryable=True)
    stand = Stand(probe_error=error)
    await run_workers(stand)
    handle = await start(client, job())
    with pytest.raises(WorkflowFailureError) as info:
        await handle.result()
    cause = info.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.type == "InvalidSource"
    assert cause.message == "source is audio-only"
    assert stand.attempts["probe"] == 1
    assert stand.events == ["probe", "cleanup"]
    assert stand.cleanups[0].remove_outputs is True
    final = await stand.webhooks.final(client, handle)
    assert final.type == "job.failed" and final.data["error"]["type"] == "InvalidSource"
    assert [e.type for e in stand.webhooks.of(handle.id)] == ["job.accepted", "job.failed"]


async def test_exhausted_retries_cancel_siblings_then_compensate(
    client: Client, run_workers: Any
) -> None:
    stand = Stand(
        fail_video=lambda name, attempt: (
            ApplicationError("encoder crashed") if name == "480p" else None
        ),
        block_video={"1080p"},
    )
    await run_workers(stand)
    handle = await start(client, job())
    with pytest.raises(WorkflowFailureError) as info:
        await handle.result()
    assert isinstance(info.value.cause, ApplicationError)
    assert "encoder crashed" in info.value.cause.message
    assert stand.attempts["480p"] == 3
    # The blocked sibling was cancelled (its ffmpeg would be killed) before compensation ran.
    assert stand.events.index("cancelled 1080p") < stand.events.index("cleanup")
    assert stand.events[-1] == "cleanup"
    assert (await stand.webhooks.final(client, handle)).type == "job.failed"
    assert "publish" not in stand.events
    state: WorkflowState = await handle.query(EncodeWorkflow.state)
    statuses = {r.name: r.status for r in state.renditions}
    assert statuses == {"1080p": "cancelled", "720p": "done", "480p": "failed"}


async def test_cancellation_reaches_activities_and_compensates(
    client: Client, run_workers: Any
) -> None:
    stand = Stand(block_video={"1080p", "720p", "480p"})
    await run_workers(stand)
    handle = await start(client, job())
    await cancel_when_all_blocked(stand, handle)
    with pytest.raises(WorkflowFailureError) as info:
        await handle.result()
    assert isinstance(info.value.cause, CancelledError)
    cancelled = [e for e in stand.events if e.startswith("cancelled")]
    assert len(cancelled) == 3
    assert max(stand.events.index(e) for e in cancelled) < stand.events.index("cleanup")
    assert stand.events[-1] == "cleanup"
    assert (await stand.webhooks.final(client, handle)).type == "job.cancelled"
    assert stand.cleanups[0].remove_outputs is True


async def test_a_cancel_before_a_worker_takes_the_probe_cancels_the_job(
    client: Client, run_workers: Any
) -> None:
    """The cancel reaches the probe while it waits for a worker: it comes back as the
    activity's cancellation, not as asyncio's, and the job is cancelled all the same (it was
    reported FAILED, "CancelledError", when a cancel right after a submit won this race)."""
    stand = Stand()
    await run_workers(stand, activities=False)
    handle = await start(client, job())
    await until(in_history(handle, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED), "a probe")
    await handle.cancel()
    await until(in_history(handle, EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED), "its cancel")
    await run_workers(stand, workflows=False)  # for the compensation
    with pytest.raises(WorkflowFailureError) as info:
        await handle.result()
    assert isinstance(info.value.cause, CancelledError)
    assert stand.events == ["cleanup"], "the probe never ran; the job compensated"
    assert stand.cleanups[0].remove_outputs is True
    assert (await stand.webhooks.final(client, handle)).type == "job.cancelled"
    assert [e.type for e in stand.webhooks.of(handle.id)] == ["job.accepted", "job.cancelled"]


async def test_a_cancel_while_the_probe_runs_cancels_the_job(
    client: Client, run_workers: Any
) -> None:
    """The probe does not heartbeat, so the cancel cannot stop it: it finishes, and the job
    is cancelled then, before the plan (not run to the end with the cancel lost)."""
    stand = Stand(probe_s=1.0)
    await run_workers(stand)
    handle = await start(client, job())
    await wait_for_event(stand, "probe")
    await handle.cancel()
    with pytest.raises(WorkflowFailureError) as info:
        await handle.result()
    assert isinstance(info.value.cause, CancelledError)
    assert stand.events == ["probe", "cleanup"]
    assert (await stand.webhooks.final(client, handle)).type == "job.cancelled"


async def test_the_same_job_twice_is_one_workflow(client: Client, run_workers: Any) -> None:
    stand = Stand(block_video={"1080p", "720p", "480p"})
    await run_workers(stand)
    encode_job = job()
    first = await start(client, encode_job)
    second = await start(client, encode_job)
    assert second.result_run_id == first.result_run_id
    await cancel_when_all_blocked(stand, first)
    with pytest.raises(WorkflowFailureError):
        await first.result()
    assert stand.attempts["probe"] == 1


async def test_a_finished_job_is_found_not_encoded_again(client: Client, run_workers: Any) -> None:
    stand = Stand()
    await run_workers(stand)
    finished = job()
    await (await start(client, finished)).result()
    with pytest.raises(WorkflowAlreadyStartedError):
        await start(client, finished)


# ---------------------------------------------------------------- routing (Stratum)


async def test_gpu_work_not_picked_up_falls_back_to_cpu(client: Client, run_workers: Any) -> None:
    """A GPU pool was seen polling, but nobody takes the task: after the schedule-to-start
    timeout the rendition runs on the CPU pool, and the job says where it ran."""
    stand = Stand(live_gpu_queues={nvenc_queue("h264")})
    await run_workers(stand)
    handle = await start(client, job(["720p"], gpu_schedule_to_start_s=2))
    result: EncodeResult = await handle.result()
    assert stand.ran_on == {"720p": CPU_QUEUE}
    assert result.renditions[0].queue == CPU_QUEUE


async def test_gpu_asked_and_not_picked_up_fails_with_the_reason(
    client: Client, run_workers: Any
) -> None:
    stand = Stand(live_gpu_queues={CUDA_QUEUE})
    await run_workers(stand)
    handle = await start(client, job(["720p"], accelerator="gpu", gpu_schedule_to_start_s=2))
    with pytest.raises(WorkflowFailureError) as info:
        await handle.result()
    assert isinstance(info.value.cause, ApplicationError)
    assert info.value.cause.type == "NoCapablePool"
    assert f"no GPU worker on {CUDA_QUEUE} took 720p" in info.value.cause.message
    assert stand.ran_on == {}
    assert stand.events[-1] == "cleanup"
    assert (await stand.webhooks.final(client, handle)).type == "job.failed"


async def test_the_pools_are_read_while_the_probe_runs(client: Client, run_workers: Any) -> None:
    """Routing needs only the job's codecs, so it is off the critical path: this probe
    finishes only once a route has been read."""
    stand = Stand(probe_waits_for_route=True)
    await run_workers(stand)
    result: EncodeResult = await (await start(client, job(["720p"]))).result()
    assert stand.routed == [["h264"]]
    assert result.renditions[0].queue == CPU_QUEUE and "route" in result.stage_seconds


async def test_a_codec_the_plan_drops_needs_no_pool(client: Client, run_workers: Any) -> None:
    """Read beside the probe, the route covers every codec the job asks for; when one has no
    capable pool but the plan drops its renditions, the plan's codecs are routed again."""
    stand = Stand(live_gpu_queues={nvenc_queue("h264")})
    await run_workers(stand)
    uhd = CustomProfile(name="uhd", height=2160, bitrate_kbps=12000, codec="hevc")
    handle = await start(client, job(["720p", uhd], accelerator="gpu", gpu_schedule_to_start_s=2))
    with pytest.raises(WorkflowFailureError) as info:
        await handle.result()
    assert stand.routed == [["h264", "hevc"], ["h264"]]
    # past routing: h264 went to its NVENC pool, which this test runs no worker for
    assert isinstance(info.value.cause, ApplicationError)
    assert f"no GPU worker on {nvenc_queue('h264')} took 720p" in info.value.cause.message


async def test_a_cancel_while_waiting_for_the_route_is_not_routed_again(
    client: Client, run_workers: Any
) -> None:
    """A cancel that reaches the route read beside the probe is the job's cancel, even where
    the plan dropped a codec (which, for a route that failed, means routing again)."""
    stand = Stand(live_gpu_queues={nvenc_queue("h264")}, route_blocks=True)
    await run_workers(stand)
    uhd = CustomProfile(name="uhd", height=2160, bitrate_kbps=12000, codec="hevc")
    handle = await start(client, job(["720p", uhd], accelerator="gpu", gpu_schedule_to_start_s=2))

    async def routing() -> bool:
        return (await handle.query(EncodeWorkflow.state)).stage == "route"

    await until(routing, "the wait for the route")
    await handle.cancel()
    with pytest.raises(WorkflowFailureError) as info:
        await handle.result()
    assert isinstance(info.value.cause, CancelledError), info.value.cause
    assert stand.routed == [["h264", "hevc"]], "routed once"
    assert stand.events[-2:] == ["route cancelled", "cleanup"], stand.events


async def test_gpu_asked_without_any_gpu_pool_fails_fast(client: Client, run_workers: Any) -> None:
    stand = Stand()
    await run_workers(stand)
    handle = await start(client, job(["720p"], accelerator="gpu"))
    with pytest.raises(WorkflowFailureError) as info:
        await handle.result()
    assert isinstance(info.value.cause, ApplicationError)
    assert info.value.cause.type == "NoCapablePool"
    assert "no GPU pool can encode h264" in info.value.cause.message
    assert "encoded" not in " ".join(stand.events)
