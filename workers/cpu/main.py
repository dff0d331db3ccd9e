"""CPU pool: the workflows (Plato) and the software-encoding activities (Stratum)."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker

from app.core.settings import Settings, get_settings
from app.core.temporal import connect
from app.observability.metrics import setup_metrics
from app.observability.telemetry import setup_logging, setup_tracing
from app.plato.workflows.catalog import WORKFLOWS
from app.stratum.pools import worker_identity
from app.stratum.queues import CPU_QUEUE, NOTIFY_QUEUE, WORKFLOW_QUEUE
from app.stratum.registry import cpu_activities, notify_activities
from app.stratum.resources import encode_slots, worker_concurrency
from workers.runner import run_until_signal
from workers.storage import wait_for_storage

HEARTBEAT_THROTTLE = timedelta(seconds=2)
NOTIFY_SLOTS = 16
"""Webhook deliveries at once: each is a wait on someone else's server, not work."""


def identity(settings: Settings) -> str:
    slots = encode_slots(settings.worker_max_activities, settings.worker_cores)
    return worker_identity(settings.worker_name.strip(), slots)


def build_workers(client: Client, settings: Settings) -> list[Worker]:
    return [
        Worker(
            client,
            task_queue=WORKFLOW_QUEUE,
            identity=identity(settings),
            workflows=list(WORKFLOWS),
        ),
        Worker(
            client,
            task_queue=NOTIFY_QUEUE,
            activities=notify_activities(settings),
            identity=identity(settings),
            max_concurrent_activities=NOTIFY_SLOTS,
        ),
        Worker(
            client,
            task_queue=CPU_QUEUE,
            activities=cpu_activities(settings, client),
            identity=identity(settings),
            max_concurrent_activities=worker_concurrency(
                settings.worker_max_activities, settings.worker_cores
            ),
            graceful_shutdown_timeout=timedelta(seconds=settings.worker_shutdown_grace_s),
            # Progress reaches the API through heartbeat details: send them often enough.
            default_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
            max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
        ),
    ]


async def main(settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    setup_logging()
    setup_tracing("cosmos-worker-cpu")
    setup_metrics(settings.metrics_port)
    client = await connect(settings)
    # No task is taken before the scratch and output stores answer: one line says why.
    await wait_for_storage(settings)
    await run_until_signal(build_workers(client, settings))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    asyncio.run(main())
