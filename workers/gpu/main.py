"""GPU pool: polls only the queues its cards can serve; exits with one line where there are none."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from app.core.settings import Settings, get_settings
from app.core.temporal import connect
from app.observability.metrics import setup_metrics, watch_gpus
from app.observability.telemetry import setup_logging, setup_tracing
from app.stratum.gpu import GpuInfo, GpuProbe, NoGpu, NvmlProbe, queues_for
from app.stratum.registry import gpu_activities
from app.stratum.resources import gpu_slots
from workers.cpu.main import HEARTBEAT_THROTTLE
from workers.runner import run_until_signal

log = logging.getLogger("cosmos.worker.gpu")


def build_workers(
    client: Client,
    settings: Settings,
    gpus: list[GpuInfo],
    activities: Callable[[Settings, str], list[Callable[..., Any]]] = gpu_activities,
) -> list[Worker]:
    """One worker per capability queue; concurrency is GPUs x encoder sessions."""
    identity = f"{os.getpid()}@{socket.gethostname()} " + ", ".join(g.name for g in gpus)
    slots = gpu_slots(len(gpus), settings.nvenc_sessions_per_gpu)
    return [
        Worker(
            client,
            task_queue=queue,
            activities=activities(settings, queue),
            identity=identity,
            max_concurrent_activities=slots,
            graceful_shutdown_timeout=timedelta(seconds=settings.worker_shutdown_grace_s),
            default_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
            max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
        )
        for queue in queues_for(gpus)
    ]


async def main(settings: Settings | None = None, probe: GpuProbe | None = None) -> None:
    settings = settings or get_settings()
    setup_logging()
    setup_tracing("cosmos-worker-gpu")
    setup_metrics(settings.metrics_port)
    gpus = (probe or NvmlProbe()).gpus()
    for gpu in gpus:
        log.info("%s", gpu.describe())
        print(gpu.describe(), flush=True)
    workers = build_workers(await connect(settings), settings, gpus)
    if not workers:
        raise NoGpu("the GPUs found have neither NVENC nor NVDEC")
    print("polling " + ", ".join(w.task_queue for w in workers), flush=True)
    # Utilisation from NVML, only where NVML found these cards (not for a recorded probe).
    watcher = asyncio.create_task(watch_gpus([g.index for g in gpus])) if probe is None else None
    try:
        await run_until_signal(workers)
    finally:
        if watcher is not None:
            watcher.cancel()


def run() -> None:
    try:
        asyncio.run(main())
    except NoGpu as err:
        print(f"cosmos worker gpu: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    run()
