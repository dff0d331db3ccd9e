"""Prometheus metrics: the project's own on ``COSMOS_METRICS_PORT``, Temporal's SDK metrics on the
port after it.

Two endpoints because the Temporal runtime (Rust core) serves its own Prometheus endpoint and
cannot share ``prometheus_client``'s. Both are per process; each process needs its own port.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from functools import cache
from typing import Any

import temporalio.client
import temporalio.worker
from prometheus_client import Counter, Gauge, Histogram, start_http_server
from temporalio import activity
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

log = logging.getLogger(__name__)

JOBS_SUBMITTED = Counter(
    "cosmos_jobs_submitted",
    "POST /v1/encode answers by outcome (accepted, rejected, error) and HTTP status code.",
    ["outcome", "status_code"],
)
ENCODE_SECONDS = Histogram(
    "cosmos_encode_seconds",
    "Wall-clock seconds of one ffmpeg run, per rendition (or audio / package) and activity.",
    ["rendition", "activity"],
    buckets=(1, 2, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800),
)
ENCODE_SPEED = Histogram(
    "cosmos_encode_speed_ratio",
    "ffmpeg's speed relative to real time (media seconds per wall second) at the end of a run.",
    ["rendition", "activity"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128),
)
QUEUE_WAIT = Histogram(
    "cosmos_activity_queue_wait_seconds",
    "Seconds from an activity attempt's scheduling to a worker starting it.",
    ["activity_type", "task_queue"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600),
)
GPU_UTILIZATION = Gauge(
    "cosmos_gpu_utilization_ratio",
    "NVML utilisation (0..1) per GPU and engine (sm, encoder, decoder), on GPU workers.",
    ["gpu", "engine"],
)

_lock = threading.Lock()
_served: set[int] = set()


def setup_metrics(port: int | None) -> None:
    """Serve ``/metrics`` on ``port`` (this project's) and ``port + 1`` (Temporal's), once per
    process: the API's tests build many apps in one process, and a port binds only once."""
    if port is None:
        return
    with _lock:
        if port not in _served:
            start_http_server(port)
            _served.add(port)
    temporal_runtime(port + 1)


@cache
def temporal_runtime(port: int) -> Runtime:
    """The Temporal runtime exporting the SDK's metrics on ``port``: created once per process
    (each runtime binds its port and runs its own threads) and shared by every client."""
    return Runtime(
        telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"0.0.0.0:{port}"))
    )


def observe_encode(rendition: str, activity_type: str, seconds: float, speed: float | None) -> None:
    """One finished ffmpeg run; ``speed`` is ffmpeg's last ``-progress`` speed (its average)."""
    ENCODE_SECONDS.labels(rendition, activity_type).observe(seconds)
    if speed is not None and speed > 0:
        ENCODE_SPEED.labels(rendition, activity_type).observe(speed)


def count_submission(status_code: int) -> None:
    outcome = "accepted" if status_code < 400 else "rejected" if status_code < 500 else "error"
    JOBS_SUBMITTED.labels(outcome, str(status_code)).inc()


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class SubmissionMetrics:
    """ASGI middleware counting ``POST /v1/encode`` answers: the router stays unaware of it, and
    answers made before the router (422, 413, 401) are counted too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"].rstrip("/").endswith("/v1/encode")
        ):
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            count_submission(status)


class ActivityMetricsInterceptor(temporalio.client.Interceptor, temporalio.worker.Interceptor):
    """On the client (``app/core/temporal.py``), so every worker built from it records how long each
    activity attempt waited in its queue: the signal to add workers to a pool."""

    def intercept_activity(
        self, next: temporalio.worker.ActivityInboundInterceptor
    ) -> temporalio.worker.ActivityInboundInterceptor:
        return _QueueWait(next)


class _QueueWait(temporalio.worker.ActivityInboundInterceptor):
    async def execute_activity(self, input: temporalio.worker.ExecuteActivityInput) -> Any:
        info = activity.info()
        wait = (info.started_time - info.current_attempt_scheduled_time).total_seconds()
        QUEUE_WAIT.labels(info.activity_type, info.task_queue).observe(max(wait, 0.0))
        return await super().execute_activity(input)


_ENGINES: dict[str, Callable[[Any, Any], float]] = {
    "sm": lambda nvml, h: nvml.nvmlDeviceGetUtilizationRates(h).gpu,
    "encoder": lambda nvml, h: nvml.nvmlDeviceGetEncoderUtilization(h)[0],
    "decoder": lambda nvml, h: nvml.nvmlDeviceGetDecoderUtilization(h)[0],
}
"""NVML's percentages: SM (compute), NVENC and NVDEC."""


def sample_gpus(handles: Sequence[tuple[int, Any]]) -> None:
    """Read NVML once per GPU and engine. An engine a card or a MIG slice does not report is
    skipped, so one unsupported query does not hide the others."""
    import pynvml

    for index, handle in handles:
        for engine, read in _ENGINES.items():
            try:
                value = float(read(pynvml, handle)) / 100
            except pynvml.NVMLError:
                continue  # not a 0: an engine that is not reported has no series
            GPU_UTILIZATION.labels(str(index), engine).set(value)


async def watch_gpus(indices: Sequence[int], interval_s: float = 5.0) -> None:
    """Update ``cosmos_gpu_utilization_ratio`` until cancelled. Only GPU workers run it, after
    NVML has found their cards."""
    import pynvml

    await asyncio.to_thread(pynvml.nvmlInit)
    try:
        handles = [(i, pynvml.nvmlDeviceGetHandleByIndex(i)) for i in indices]
        while True:
            await asyncio.to_thread(sample_gpus, handles)
            await asyncio.sleep(interval_s)
    except pynvml.NVMLError as err:
        log.warning("GPU utilisation metrics stopped: NVML: %s", err)
    finally:
        pynvml.nvmlShutdown()
