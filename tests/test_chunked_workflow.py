"""Chunked encoding's orchestration in the time-skipping server, with stand-in activities:
retries that touch one chunk only, cancellation, and the simulated two-hour title."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from app.core.models import (
    AssembleInput,
    ChunkOutput,
    ChunkPlan,
    ChunkRangeResult,
    ChunkResult,
    CleanupInput,
    EncodeAudioInput,
    EncodeChunkInput,
    EncodedMedia,
    EncodeJob,
    EncodeResult,
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
    SplitInput,
    WorkflowState,
)
from app.media.chunking import ranges
from app.media.ladder import plan_renditions
from app.plato.workflows.chunks import ChunkRangeWorkflow
from app.plato.workflows.encode import EncodeWorkflow
from app.plato.workflows.webhooks import WebhookWorkflow
from app.stratum.queues import CPU_QUEUE, WORKFLOW_QUEUE, mode_of, nvenc_queue
from tests.test_workflow import probe_result
from tests.webhook_receiver import RecordedWebhooks

LADDER = ["1080p", "720p", "540p", "480p", "360p", "240p"]


def media(name: str, frames: int) -> EncodedMedia:
    return EncodedMedia(name=name, uri=f"file:///scratch/{name}.mp4", size_bytes=1,
                        duration_s=frames / 30, frames=frames, checksum="sha256:0")  # fmt: skip


@dataclass
class ChunkStand:
    """Stand-ins for a ``duration_s`` title cut into ``chunk_s`` chunks; an encode sleeps
    ``encode_s`` (the modelled work of one chunk, all renditions) and records what it did."""

    duration_s: float = 20.0
    chunk_s: float = 2.0
    encode_s: float = 0.05
    fail_chunk: Callable[[int, int], bool] = lambda index, attempt: False
    route_to: str = CPU_QUEUE
    block: bool = False
    attempts: dict[int, int] = field(default_factory=dict)
    running: int = 0
    peak_running: int = 0
    events: list[str] = field(default_factory=list)
    webhooks: RecordedWebhooks = field(default_factory=RecordedWebhooks)
    busy_s: float = 0.0

    @property
    def count(self) -> int:
        return round(self.duration_s / self.chunk_s)

    def activities(self) -> list[Callable[..., Any]]:
        @activity.defn(name="probe_source")
        async def probe(input: ProbeInput) -> ProbeResult:
            return probe_result().model_copy(update={"duration_s": self.duration_s})

        @activity.defn(name="plan_renditions")
        async def plan(input: PlanInput) -> Plan:
            return plan_renditions(input.job, input.probe)

        @activity.defn(name="route_encodes")
        async def route(input: RouteInput) -> list[Route]:
            return [Route(codec=c, queue=self.route_to, mode=mode_of(self.route_to), reason="")
                    for c in input.codecs]  # fmt: skip

        @activity.defn(name="split_source")
        async def split(input: SplitInput) -> ChunkPlan:
            self.events.append("split")
            starts = [round(i * self.chunk_s, 6) for i in range(self.count)]
            return ChunkPlan(starts_s=starts, duration_s=self.duration_s,
                             frames=round(self.duration_s * 30), scene_cuts=0)  # fmt: skip

        @activity.defn(name="encode_chunk")
        async def encode_chunk(input: EncodeChunkInput) -> ChunkResult:
            index = input.chunk.index
            attempt = activity.info().attempt
            self.attempts[index] = self.attempts.get(index, 0) + 1
            self.running += 1
            self.peak_running = max(self.peak_running, self.running)
            started = time.monotonic()
            try:
                while self.block:
                    activity.heartbeat()
                    await asyncio.sleep(0.05)
                await asyncio.sleep(self.encode_s)
                if self.fail_chunk(index, attempt):
                    raise ApplicationError(f"encoder crashed on chunk {index}")
            except asyncio.CancelledError:
                self.events.append(f"cancelled {index}")
                raise
            finally:
                self.running -= 1
                self.busy_s += time.monotonic() - started
            frames = round(input.chunk.duration_s * 30)
            return ChunkResult(
                index=index,
                outputs=[ChunkOutput(name=r.name, frames=frames, size_bytes=1000,
                                     checksum="sha256:0") for r in input.renditions],
                reused=False, encoder="libx264", queue=activity.info().task_queue,
            )  # fmt: skip

        @activity.defn(name="encode_audio")
        async def encode_audio(input: EncodeAudioInput) -> EncodedMedia:
            return media("audio", 0)

        @activity.defn(name="assemble")
        async def assemble(input: AssembleInput) -> EncodedMedia:
            self.events.append(f"assemble {input.rendition.name}")
            return media(input.rendition.name, input.expected_frames)

        @activity.defn(name="package")
        async def package(input: PackageInput) -> PackageResult:
            return PackageResult(staging_uri="file:///scratch/p", hls_master="master.m3u8",
                                 dash_manifest="manifest.mpd", video_playlists=[],
                                 audio_playlist=None)  # fmt: skip

        @activity.defn(name="publish_manifest")
        async def publish(input: PublishInput) -> Manifests:
            return Manifests(hls="file:///o/m.m3u8", dash="file:///o/m.mpd",
                             manifest="file:///o/manifest.json")  # fmt: skip

        @activity.defn(name="cleanup")
        async def cleanup(input: CleanupInput) -> list[str]:
            self.events.append("cleanup")
            return []

        return [probe, plan, route, split, encode_chunk, encode_audio, assemble, package,
                publish, cleanup]  # fmt: skip


def chunked_job(profiles: list[str] | None = None, **overrides: Any) -> EncodeJob:
    fields: dict[str, Any] = {
        "job_id": f"chunked-{uuid.uuid4().hex[:8]}",
        "source_uri": "file:///media/title.mp4",
        "profiles": profiles or ["720p", "480p"],
        "codec": "h264",
        "segment_seconds": 2,
        "output_uri": "file:///out",
        "scratch_uri": "file:///scratch",
        "retry": RetryOptions(max_attempts=3, initial_interval_s=0.1),
        "heartbeat_timeout_s": 5,
        "chunk_seconds": 2,
        "min_chunk_seconds": 1,
        "webhook_url": "https://hooks.example.com/cosmos",
    }
    return EncodeJob(**(fields | overrides))


@pytest.fixture
async def client(time_skipping_env: WorkflowEnvironment) -> Client:
    return time_skipping_env.client


@pytest.fixture
async def serve(client: Client) -> AsyncIterator[Callable[..., Any]]:
    workers: list[Worker] = []

    async def start(stand: ChunkStand, slots: int = 100) -> None:
        for worker in (
            Worker(client, task_queue=WORKFLOW_QUEUE,
                   workflows=[EncodeWorkflow, ChunkRangeWorkflow, WebhookWorkflow]),
            Worker(client, task_queue=CPU_QUEUE, activities=stand.activities(),
                   max_concurrent_activities=slots),
            stand.webhooks.worker(client),
        ):  # fmt: skip
            asyncio.create_task(worker.run())  # noqa: RUF006
            workers.append(worker)

    yield start
    for worker in workers:
        await worker.shutdown()


async def start(client: Client, job: EncodeJob) -> WorkflowHandle[Any, Any]:
    return await client.start_workflow(
        EncodeWorkflow.run, job, id=job.job_id, task_queue=WORKFLOW_QUEUE
    )


async def test_a_chunk_that_fails_twice_retries_alone(client: Client, serve: Any) -> None:
    stand = ChunkStand(fail_chunk=lambda index, attempt: index == 3 and attempt < 3)
    await serve(stand)
    handle = await start(client, chunked_job())
    result: EncodeResult = await handle.result()
    assert stand.attempts[3] == 3
    assert {i: n for i, n in stand.attempts.items() if i != 3} == {
        i: 1 for i in range(stand.count) if i != 3
    }, "no other chunk was encoded again"
    assert set(result.stage_seconds) >= {"split", "encode", "assemble", "package"}
    assert all(r.frames == 600 and r.chunks_done == r.chunks_total == 10
               for r in result.renditions)  # fmt: skip
    assembled = sorted(e for e in stand.events if e.startswith("assemble"))
    assert assembled == ["assemble 480p", "assemble 720p"], "each rendition assembled once"


async def test_a_chunk_out_of_attempts_fails_the_job_with_its_reason(
    client: Client, serve: Any
) -> None:
    stand = ChunkStand(fail_chunk=lambda index, attempt: index == 4)
    await serve(stand)
    handle = await start(client, chunked_job())
    with pytest.raises(WorkflowFailureError) as info:
        await handle.result()
    assert isinstance(info.value.cause, ApplicationError)
    assert info.value.cause.message == "encoder crashed on chunk 4"
    assert stand.attempts[4] == 3
    assert not any(e.startswith("assemble") for e in stand.events)
    assert stand.events[-1] == "cleanup"
    assert (await stand.webhooks.final(client, handle)).type == "job.failed"
    state: WorkflowState = await handle.query(EncodeWorkflow.state)
    assert {r.status for r in state.renditions} == {"failed"}


async def test_cancelling_a_chunked_job_stops_every_chunk_then_compensates(
    client: Client, serve: Any
) -> None:
    stand = ChunkStand(block=True)
    await serve(stand)
    handle = await start(client, chunked_job(window=4))
    for _ in range(200):
        if stand.running == 4:
            break
        await asyncio.sleep(0.05)
    assert stand.running == 4, "the window holds four chunks in flight"
    await asyncio.sleep(0.5)
    await handle.cancel()
    with pytest.raises(WorkflowFailureError) as info:
        await handle.result()
    assert isinstance(info.value.cause, CancelledError)
    cancelled = [e for e in stand.events if e.startswith("cancelled")]
    assert len(cancelled) == 4
    assert max(stand.events.index(e) for e in cancelled) < stand.events.index("cleanup")
    assert stand.events[-1] == "cleanup"
    assert (await stand.webhooks.final(client, handle)).type == "job.cancelled"
    assert stand.running == 0


async def test_chunks_no_gpu_worker_takes_fall_back_to_the_cpu_pool(
    client: Client, serve: Any
) -> None:
    stand = ChunkStand(route_to=nvenc_queue("h264"))
    await serve(stand)
    result: EncodeResult = await (
        await start(client, chunked_job(gpu_schedule_to_start_s=1))
    ).result()
    assert sorted(stand.attempts) == list(range(stand.count))
    assert {r.queue for r in result.renditions} == {CPU_QUEUE}, "where the chunks really ran"


async def test_chunks_asked_on_gpu_and_not_picked_up_fail_with_the_reason(
    client: Client, serve: Any
) -> None:
    stand = ChunkStand(route_to=nvenc_queue("h264"))
    await serve(stand)
    # One chunk in flight: with several, their schedule-to-start timeouts race the cancel of
    # the others, which the Java test server mishandles (ACTIVITY_UNKNOWN, then a hang).
    job = chunked_job(accelerator="gpu", gpu_schedule_to_start_s=1, window=1)
    handle = await start(client, job)
    with pytest.raises(WorkflowFailureError) as info:
        await handle.result()
    assert isinstance(info.value.cause, ApplicationError)
    assert info.value.cause.type == "NoCapablePool"
    assert "no GPU worker on cosmos-gpu-nvenc-h264 took chunk" in info.value.cause.message
    assert stand.attempts == {}
    assert stand.events[-1] == "cleanup"
    assert (await stand.webhooks.final(client, handle)).type == "job.failed"


async def test_progress_counts_chunks_while_encoding(client: Client, serve: Any) -> None:
    stand = ChunkStand(duration_s=60, encode_s=0.2)
    await serve(stand, slots=2)
    handle = await start(client, chunked_job(window=2))
    seen: set[int] = set()
    for _ in range(300):
        state: WorkflowState = await handle.query(EncodeWorkflow.state)
        if state.renditions and state.renditions[0].chunks_done is not None:
            seen.add(state.renditions[0].chunks_done)
        if state.stage in ("assemble", "package", "publish", "cleanup", "done"):
            break
        await asyncio.sleep(0.1)
    await handle.result()
    assert len(seen) >= 3 and max(seen) <= 30, f"progress moved forward: {sorted(seen)}"
    await stand.webhooks.final(client, handle)
    events = stand.webhooks.of(handle.id)
    assert [e.type for e in events if e.type not in ("job.progress", "job.stage")] == [
        "job.accepted", "job.started", "job.succeeded"
    ]  # fmt: skip
    stages = [e.data["stage"] for e in events if e.type == "job.stage"]
    assert stages == ["plan", "route", "split", "encode", "assemble", "package", "publish"]
    percents = [e.data["percent"] for e in events if e.type == "job.progress"]
    assert percents == sorted(percents) and len(percents) >= 8, percents
    buckets = [int(p // 10) for p in percents]
    assert len(set(buckets)) == len(buckets), f"one event per 10 percent: {percents}"


# ---------------------------------------------------------------- the simulated feature film


@dataclass
class HistoryFigures:
    workflow_id: str
    events: int
    size_bytes: int
    largest_event_bytes: int


async def history_figures(client: Client, workflow_id: str) -> HistoryFigures:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    sizes = [event.ByteSize() for event in history.events]
    return HistoryFigures(workflow_id, len(sizes), sum(sizes), max(sizes))


async def test_two_hour_title_in_two_second_chunks_stays_within_temporals_bounds(
    client: Client, serve: Any
) -> None:
    """7,200 s at 2 s chunks = 3,600 chunk tasks (each decodes once for 6 renditions). Every
    workflow stays under 10,000 events, in-flight work under the window, payloads small, and
    the makespan near the ideal of the modelled work spread over the worker slots."""
    slots, encode_s = 64, 0.5
    stand = ChunkStand(duration_s=7200, chunk_s=2, encode_s=encode_s)
    await serve(stand, slots=slots)
    job = chunked_job(LADDER)
    started = time.monotonic()
    handle = await start(client, job)
    result: EncodeResult = await handle.result()
    makespan = time.monotonic() - started

    assert [r.name for r in result.renditions] == LADDER
    assert all(r.chunks_done == 3600 and r.frames == 216_000 for r in result.renditions)
    assert sorted(stand.attempts) == list(range(3600))
    assert set(stand.attempts.values()) == {1}

    children = [f"{job.job_id}-chunks-h264-{first:05d}" for first, _ in ranges(3600)]
    figures = [await history_figures(client, wid) for wid in [job.job_id, *children]]
    peaks = [
        (
            await client.get_workflow_handle(wid, result_type=ChunkRangeResult).result()
        ).peak_in_flight
        for wid in children
    ]
    ideal = 3600 * encode_s / min(slots, job.window)
    report = (
        f"workflows {len(figures)}; largest history "
        f"{max(f.events for f in figures)} events / {max(f.size_bytes for f in figures)} bytes; "
        f"largest event {max(f.largest_event_bytes for f in figures)} bytes; "
        f"peak in flight {sum(peaks)} scheduled, {stand.peak_running} running "
        f"(window {job.window}, slots {slots}); makespan {makespan:.1f}s, ideal {ideal:.1f}s, "
        f"ratio {makespan / ideal:.2f}"
    )
    print(report)
    assert max(f.events for f in figures) < 10_000, report
    assert max(f.largest_event_bytes for f in figures) < 256 * 1024, report
    assert sum(peaks) <= job.window, report
    assert stand.peak_running <= slots, report
    assert stand.peak_running >= slots * 0.9, f"the slots were kept busy: {report}"
    assert makespan < ideal * 2, report
