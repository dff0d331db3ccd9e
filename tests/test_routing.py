"""Stratum routing: capabilities read from (recorded) hardware, pools sized from resources,
and the routing matrix run through real task queues of the dev server."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import cast

import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from app.core.models import Accelerator, Codec, EncodeResult, Poller
from app.core.settings import Settings
from app.media.chunking import chunk_decision
from app.observability.search import KEYS
from app.plato.workflows.encode import EncodeWorkflow
from app.stratum.functions.routing import RoutingActivities
from app.stratum.gpu import H100, L4, T4, GpuInfo, NoGpu, RecordedProbe, queues_for
from app.stratum.pools import (
    NoCapablePool,
    choose_route,
    describe_pools,
    live_slots,
    worker_identity,
)
from app.stratum.queues import CPU_QUEUE, CUDA_QUEUE, WORKFLOW_QUEUE, nvenc_queue
from app.stratum.registry import cpu_activities
from app.stratum.resources import (
    ENCODE_CPU,
    cpu_slots,
    encode_slots,
    gpu_slots,
    threads_per_job,
    worker_concurrency,
)
from tests.conftest import BIN
from tests.test_workflow import Stand, job, start
from workers.gpu.main import build_workers as build_gpu_workers

HARDWARE: dict[str, list[GpuInfo]] = {"none": [], "h100": [H100], "t4": [T4]}
CODECS: list[Codec] = ["h264", "hevc", "av1"]
ACCELERATORS: list[Accelerator] = ["auto", "cpu", "gpu"]


def expected_queue(hardware: str, accelerator: Accelerator, codec: Codec) -> str | None:
    """The rule, written out: None means the job fails with NoCapablePool."""
    if accelerator == "cpu":
        return CPU_QUEUE
    if hardware == "t4" and codec in ("h264", "hevc"):
        return nvenc_queue(codec)
    if accelerator == "auto":
        return CPU_QUEUE
    return None if hardware == "none" else CUDA_QUEUE


# ---------------------------------------------------------------- capabilities and sizing


def test_workers_poll_only_what_their_cards_can_serve() -> None:
    assert queues_for([H100]) == [CUDA_QUEUE]  # NVDEC, no NVENC
    assert queues_for([T4]) == [nvenc_queue("h264"), nvenc_queue("hevc"), CUDA_QUEUE]
    assert queues_for([L4]) == [*(nvenc_queue(c) for c in ("av1", "h264", "hevc")), CUDA_QUEUE]
    assert queues_for([H100, L4]) == queues_for([L4])
    with pytest.raises(NoGpu, match="no NVIDIA driver or GPU"):
        RecordedProbe([]).gpus()


@pytest.mark.parametrize(
    ("cores", "memory_mib", "slots"),
    [(2, 24 * 1024, 1), (16, 128 * 1024, 8), (64, 256 * 1024, 32), (64, 8 * 1024, 8), (1, 512, 1)],
)
def test_cpu_pools_size_themselves_from_cores_and_memory(
    cores: int, memory_mib: int, slots: int
) -> None:
    assert cpu_slots(ENCODE_CPU, cores=cores, memory_mib=memory_mib) == slots


def test_gpu_pools_size_from_gpus_times_sessions() -> None:
    assert gpu_slots(1, 3) == 3
    assert gpu_slots(8, 2) == 16
    assert worker_concurrency(None) == cpu_slots(ENCODE_CPU) + 1


def test_encoder_threads_fill_the_encode_slots_not_the_spare_one() -> None:
    """The spare bookkeeping slot must not halve every encoder's threads (on 2 cores, x264 with
    one thread per rendition leaves a core idle whenever one chunk runs alone)."""
    settings = Settings(worker_max_activities=None)
    slots = cpu_slots(ENCODE_CPU)
    assert encode_slots(None) == slots
    assert worker_concurrency(None) == slots + 1
    activities = cpu_activities(settings, cast(Client, None))
    for name in ("encode_video", "encode_chunk"):
        bound = next(a for a in activities if a.__name__ == name)
        assert bound.__self__.threads == threads_per_job(slots)  # type: ignore[attr-defined]
    assert threads_per_job(slots, cores=2 * slots) == ENCODE_CPU.cpu_threads
    assert encode_slots(4) == 4 and worker_concurrency(4) == 4


@pytest.mark.parametrize(
    ("hardware", "accelerator", "codec"),
    list(itertools.product(HARDWARE, ACCELERATORS, CODECS)),
)
def test_routing_rule(hardware: str, accelerator: Accelerator, codec: Codec) -> None:
    live = set(queues_for(HARDWARE[hardware])) if HARDWARE[hardware] else set()
    want = expected_queue(hardware, accelerator, codec)
    if want is None:
        with pytest.raises(NoCapablePool, match=f"no GPU pool can encode {codec}"):
            choose_route(codec, accelerator, live)
    else:
        assert choose_route(codec, accelerator, live).queue == want


# ---------------------------------------------------------------- through real task queues


@pytest.fixture(scope="module")
async def dev_server() -> AsyncIterator[WorkflowEnvironment]:
    extra = [arg for hw in HARDWARE for arg in ("--namespace", f"hw-{hw}")]
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(BIN / "temporal"),
        dev_server_extra_args=extra,
        search_attributes=KEYS,
    )
    async with env:
        yield env


async def pool_ready(client: Client, queues: list[str]) -> None:
    for _ in range(100):
        polled = {p.queue for p in await describe_pools(client) if p.pollers}
        if set(queues) <= polled:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"pools never polled: {queues}")


@pytest.mark.e2e
@pytest.mark.parametrize("hardware", list(HARDWARE))
async def test_routing_matrix_through_task_queues(
    dev_server: WorkflowEnvironment, hardware: str
) -> None:
    target = dev_server.client.service_client.config.target_host
    client = await Client.connect(
        target, namespace=f"hw-{hardware}", data_converter=pydantic_data_converter
    )
    stand = Stand()
    settings = Settings()
    stand_ins = [a for a in stand.activities() if a.__name__ != "route"]
    encode = next(a for a in stand_ins if a.__name__ == "encode_video")
    workers = [
        Worker(client, task_queue=WORKFLOW_QUEUE, workflows=[EncodeWorkflow]),
        Worker(
            client,
            task_queue=CPU_QUEUE,
            activities=[*stand_ins, RoutingActivities(settings, client).route],
        ),
        *build_gpu_workers(
            client, settings, HARDWARE[hardware], activities=lambda _s, _q: [encode]
        ),
    ]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        await pool_ready(client, [w.task_queue for w in workers])
        for accelerator, codec in itertools.product(ACCELERATORS, CODECS):
            want = expected_queue(hardware, accelerator, codec)
            encode_job = job(["720p"], codec=codec, accelerator=accelerator)
            handle = await start(client, encode_job)
            if want is None:
                with pytest.raises(WorkflowFailureError) as info:
                    await handle.result()
                assert isinstance(info.value.cause, ApplicationError)
                assert info.value.cause.type == "NoCapablePool"
                continue
            result: EncodeResult = await handle.result()
            assert stand.ran_on["720p"] == want, (hardware, accelerator, codec)
            assert result.renditions[0].queue == want
    finally:
        for worker in workers:
            await worker.shutdown()
        await asyncio.gather(*tasks, return_exceptions=True)


def test_workers_name_their_encode_slots_and_the_pool_adds_them_up() -> None:
    """The chunking decision reads the CPU pool's slots from its pollers' identities; one
    poller that does not say (an older worker) makes the count unknown, not smaller."""
    now = datetime.now(UTC)
    one, four = worker_identity("a", 1, pid=7), worker_identity("b", 4, pid=8)
    assert one.endswith(" a [1 encode slot]") and four.endswith(" b [4 encode slots]")
    assert live_slots([Poller(identity=one, last_seen=now)]) == 1
    assert live_slots([Poller(identity=i, last_seen=now) for i in (one, four)]) == 5
    stale = Poller(identity=four, last_seen=now - timedelta(minutes=5))
    assert live_slots([Poller(identity=one, last_seen=now), stale]) == 1
    older = Poller(identity="9@host", last_seen=now)
    assert live_slots([Poller(identity=one, last_seen=now), older]) is None
    assert live_slots([]) is None


@pytest.mark.parametrize(
    ("duration", "auto", "slots", "chunked", "why"),
    [
        (30.0, True, 1, False, "one encode slot polls"),
        (30.0, True, 4, True, "4 encode slots poll"),
        (30.0, True, None, True, "not known"),
        (30.0, False, 1, True, "chunk_seconds 6 asked"),
        (3600.0, True, 1, True, "longer than 600 s"),
        (5.0, True, 8, False, "too short"),
    ],
)
def test_chunks_only_where_they_pay(
    duration: float, auto: bool, slots: int | None, chunked: bool, why: str
) -> None:
    decision = chunk_decision(duration, False, 6.0, 2.0, auto=auto, slots=slots)
    assert decision.chunked is chunked and why in decision.reason, decision
    assert decision.slots == slots
    assert not chunk_decision(30.0, False, 0.0, 2.0, auto=False, slots=8).chunked
    vfr = chunk_decision(30.0, True, 6.0, 2.0, auto=True, slots=8)
    assert not vfr.chunked and "variable frame rate" in vfr.reason
