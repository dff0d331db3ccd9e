"""One way to reach Temporal: the namespace, the pydantic data converter, the workflow's queue."""

from __future__ import annotations

import dataclasses

from temporalio.client import Client, Interceptor
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter

from app.core.codec import AesGcmCodec, parse_keys
from app.core.settings import Settings
from app.observability.metrics import ActivityMetricsInterceptor, temporal_runtime


def data_converter(settings: Settings) -> DataConverter:
    """Pydantic payloads, encrypted when ``COSMOS_PAYLOAD_KEYS`` is set. The workers and the API
    all connect through ``connect``, so they all read and write the same payloads."""
    keys = parse_keys(settings.payload_keys)
    if not keys:
        return pydantic_data_converter
    return dataclasses.replace(pydantic_data_converter, payload_codec=AesGcmCodec(keys))


def interceptors() -> list[Interceptor]:
    """Tracing (one trace per job: StartWorkflow, RunWorkflow, RunActivity spans) and queue-wait
    metrics. On the client, so the workers built from it inherit both."""
    return [TracingInterceptor(), ActivityMetricsInterceptor()]


async def connect(settings: Settings, *, lazy: bool = False) -> Client:
    """``lazy`` lets a process start while Temporal is away and connect on first use. With
    ``COSMOS_METRICS_PORT`` set, the SDK's metrics are served on the port after it."""
    port = settings.metrics_port
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.namespace,
        data_converter=data_converter(settings),
        interceptors=interceptors(),
        runtime=temporal_runtime(port + 1) if port is not None else None,
        lazy=lazy,
    )
