"""GPU pool: started only where NVML finds a GPU; exits with one line where it does not."""

from __future__ import annotations

import asyncio
import logging
import sys
from datetime import timedelta

from temporalio.worker import Worker

from app.activities.registry import gpu_activities
from app.gpu import GpuProbe, NoGpu, NvmlProbe
from app.queues import GPU_QUEUE
from app.settings import Settings, get_settings
from app.temporal import connect
from workers.runner import run_until_signal

log = logging.getLogger("cosmos.worker.gpu")


async def main(settings: Settings | None = None, probe: GpuProbe | None = None) -> None:
    settings = settings or get_settings()
    gpus = (probe or NvmlProbe()).gpus()
    for gpu in gpus:
        log.info("%s", gpu.describe())
        print(gpu.describe(), flush=True)
    client = await connect(settings)
    worker = Worker(
        client,
        task_queue=GPU_QUEUE,
        activities=gpu_activities(settings),
        max_concurrent_activities=max(1, len(gpus) * 2),
        graceful_shutdown_timeout=timedelta(seconds=settings.worker_shutdown_grace_s),
    )
    await run_until_signal([worker])


def run() -> None:
    try:
        asyncio.run(main())
    except NoGpu as err:
        print(f"cosmos worker gpu: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    run()
