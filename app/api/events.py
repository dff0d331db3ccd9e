"""A job's progress as server-sent events: poll Temporal through ``job_view``, send what changed.

Wire format (``text/event-stream``)::

    data: {JobView JSON}          whenever the view changed (the first one at once)
    : heartbeat                   every HEARTBEAT_S without a change, so proxies keep the line
    event: end                    once, at the terminal state, with the final view, then close
    data: {JobView JSON}

Nothing is kept between requests: a client that reconnects gets the current view first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.responses import StreamingResponse
from temporalio.service import RPCError, RPCStatusCode

from app.api.errors import UNAVAILABLE
from app.core.models import JobStatus, JobView

log = logging.getLogger("cosmos.api")

POLL_S = 1.0
HEARTBEAT_S = 15.0
TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

OPENAPI_200: dict[str, Any] = {
    "description": "Server-sent events: `data: <JobView JSON>` on every change, a"
    " `: heartbeat` comment every 15 s, and `event: end` with the final view when the job"
    " has ended.",
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
}


class EventStream(StreamingResponse):
    media_type = "text/event-stream"


def sse(data: str, event: str | None = None) -> str:
    lines = [f"event: {event}"] if event else []
    lines += [f"data: {line}" for line in data.splitlines() or [""]]
    return "\n".join(lines) + "\n\n"


def _degraded(view: JobView, previous: JobView | None) -> bool:
    """A read where the workflow did not answer its query: describe alone knows less than
    the last view did; that is not news about the job."""
    return (
        previous is not None
        and previous.stage is not None
        and view.stage is None
        and view.status not in TERMINAL
    )


async def job_events(
    read: Callable[[], Awaitable[JobView]],
    first: JobView,
    disconnected: Callable[[], Awaitable[bool]],
    *,
    poll_s: float = POLL_S,
    heartbeat_s: float = HEARTBEAT_S,
) -> AsyncIterator[str]:
    """Events from ``first`` until the job ends or the client goes away."""
    view, sent, last_sent = first, "", time.monotonic()
    previous: JobView | None = None
    while True:
        if view.status in TERMINAL:
            yield sse(view.model_dump_json(), event="end")
            return
        body = view.model_dump_json()
        if body != sent and not _degraded(view, previous):
            yield sse(body)
            sent, last_sent, previous = body, time.monotonic(), view
        elif time.monotonic() - last_sent >= heartbeat_s:
            yield ": heartbeat\n\n"
            last_sent = time.monotonic()
        await asyncio.sleep(poll_s)
        if await disconnected():
            return
        try:
            view = await read()
        except RPCError as err:
            if err.status in UNAVAILABLE:  # Temporal away for a moment: keep the line, retry
                continue
            if err.status == RPCStatusCode.NOT_FOUND:
                yield sse('{"detail": "the job no longer exists"}', event="error")
                return
            log.error("events stream: Temporal error: %s", err)
            yield sse('{"detail": "Temporal refused the request"}', event="error")
            return
