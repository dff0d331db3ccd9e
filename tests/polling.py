"""Waiting in tests for something a server does in its own time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 10) -> None:
    """Ask ``check`` every 50 ms until it holds; fail naming ``what`` after ``timeout_s``."""
    for _ in range(int(timeout_s / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} within {timeout_s:g}s")


def in_history(
    handle: WorkflowHandle[Any, Any], event_type: EventType.ValueType
) -> Callable[[], Awaitable[bool]]:
    """A check for :func:`until`: the workflow's history holds an event of ``event_type``."""

    async def check() -> bool:
        return any([e.event_type == event_type async for e in handle.fetch_history_events()])

    return check
