"""One way to reach Temporal: the namespace, the pydantic data converter, the workflow's queue."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from app.settings import Settings


async def connect(settings: Settings, *, lazy: bool = False) -> Client:
    """``lazy`` lets a process start while Temporal is away and connect on first use."""
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.namespace,
        data_converter=pydantic_data_converter,
        lazy=lazy,
    )
