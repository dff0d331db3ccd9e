"""Run Temporal workers until SIGINT/SIGTERM, then drain them within the grace period."""

from __future__ import annotations

import asyncio
import logging
import signal
from contextlib import AsyncExitStack

from temporalio.worker import Worker

log = logging.getLogger("cosmos.worker")


async def run_until_signal(workers: list[Worker], stop: asyncio.Event | None = None) -> None:
    """``Worker``'s context manager stops polling, waits for running activities up to its
    ``graceful_shutdown_timeout``, then cancels the rest so Temporal retries them elsewhere."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with AsyncExitStack() as stack:
        for worker in workers:
            await stack.enter_async_context(worker)
        queues = ", ".join(w.task_queue for w in workers)
        log.info("worker polling %s", queues)
        print(f"worker ready: polling {queues}", flush=True)
        await stop.wait()
        log.info("worker draining %s", queues)
