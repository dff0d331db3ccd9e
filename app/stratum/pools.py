"""The worker pools as Temporal sees them: who polls which queue, and what each queue can do."""

from __future__ import annotations

import asyncio
import os
import re
import socket
from datetime import UTC, datetime, timedelta

from temporalio.api.enums.v1 import TaskQueueKind, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from app.core.models import Accelerator, Codec, Poller, Pool, Route
from app.stratum.queues import (
    CPU_QUEUE,
    CUDA_QUEUE,
    NOTIFY_QUEUE,
    NVENC_QUEUES,
    WORKFLOW_QUEUE,
    nvenc_queue,
)

FRESH = timedelta(seconds=90)
"""A poller seen this recently is alive: long polls last up to a minute, then start again."""


SLOTS = re.compile(r"\[(\d+) encode slots?\]$")


def worker_identity(name: str = "", slots: int | None = None, pid: int | None = None) -> str:
    """``pid@host``, the worker's name where it has one (``cosmos dev`` names its workers
    ``worker-cpu-1`` ...), and its encode slots: Temporal lists pollers by identity, and the
    slots tell the workflow whether chunks would run side by side."""
    identity = f"{pid or os.getpid()}@{socket.gethostname()}" + (f" {name}" if name else "")
    if slots is not None:
        identity += f" [{slots} encode slot{'s' if slots != 1 else ''}]"
    return identity


def live_slots(found: list[Poller]) -> int | None:
    """Encode slots of the live pollers; None if any does not say (older workers)."""
    counts = [SLOTS.search(p.identity) for p in alive(found)]
    if not counts or any(c is None for c in counts):
        return None
    return sum(int(c.group(1)) for c in counts if c is not None)


class NoCapablePool(ValueError):
    """``accelerator: gpu`` was asked and no GPU pool can do the work."""


async def pollers(client: Client, queue: str, *, workflow: bool = False) -> list[Poller]:
    kind = (
        TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW
        if workflow
        else TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY
    )
    response = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
            task_queue_type=kind,
        )
    )
    return [
        Poller(
            identity=p.identity,
            last_seen=p.last_access_time.ToDatetime(tzinfo=UTC)
            if p.last_access_time.seconds
            else None,
        )
        for p in response.pollers
    ]


def alive(found: list[Poller], now: datetime | None = None) -> list[Poller]:
    now = now or datetime.now(UTC)
    return [p for p in found if p.last_seen is not None and now - p.last_seen <= FRESH]


async def live_gpu_queues(client: Client) -> set[str]:
    queues = [*NVENC_QUEUES, CUDA_QUEUE]
    found = await asyncio.gather(*(pollers(client, queue) for queue in queues))
    return {queue for queue, seen in zip(queues, found, strict=True) if alive(seen)}


def choose_route(codec: Codec, accelerator: Accelerator, live: set[str]) -> Route:
    """The routing rule, as a pure function of what polls now.

    NVENC for the codec when ``auto`` or ``gpu``; for ``gpu`` without NVENC, GPU decode and
    scaling with software encoding (H100-class cards have NVDEC but no NVENC); CPU otherwise.
    """
    nvenc = nvenc_queue(codec)
    if accelerator == "cpu":
        return Route(codec=codec, queue=CPU_QUEUE, mode="cpu", reason="accelerator cpu asked")
    if nvenc in live:
        return Route(codec=codec, queue=nvenc, mode="nvenc", reason=f"an NVENC {codec} pool polls")
    if accelerator == "gpu":
        if CUDA_QUEUE in live:
            return Route(
                codec=codec,
                queue=CUDA_QUEUE,
                mode="cuda",
                reason=f"no NVENC {codec} pool; NVDEC decode and scale_cuda, software encode",
            )
        raise NoCapablePool(
            f"accelerator gpu asked, but no GPU pool can encode {codec}: "
            f"no worker polls {nvenc} or {CUDA_QUEUE}"
        )
    return Route(codec=codec, queue=CPU_QUEUE, mode="cpu", reason=f"no NVENC {codec} pool polls")


CAPABILITIES = {
    WORKFLOW_QUEUE: ("workflow", ["workflows"]),
    CPU_QUEUE: ("cpu", ["probe", "encode h264/hevc/av1 in software", "package", "publish"]),
    NOTIFY_QUEUE: ("notify", ["webhook deliveries"]),
    CUDA_QUEUE: ("cuda", ["nvdec decode", "scale_cuda", "encode h264/hevc/av1 in software"]),
    **{queue: ("nvenc", [f"nvenc {codec}"]) for queue, codec in NVENC_QUEUES.items()},
}


async def describe_pools(client: Client) -> list[Pool]:
    pools = []
    for queue, (kind, capabilities) in CAPABILITIES.items():
        found = await pollers(client, queue, workflow=kind == "workflow")
        pools.append(
            Pool(queue=queue, kind=kind, capabilities=capabilities, pollers=alive(found))  # type: ignore[arg-type]
        )
    return pools
