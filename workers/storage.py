"""A worker takes no task before its storage answers: it says why in one line and retries.

A CPU worker whose scratch or outputs are on S3 cannot do any encode without it. Polling
anyway would take tasks only to fail them (and spend their attempts), so at start it checks
each store (``storage_problem``: a HeadBucket with short timeouts) and polls only once all
answer. While they do not, one line says why (again once a minute, or when the reason
changes), and it retries with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from app.core.settings import Settings
from app.storage.object_store import storage_problem

log = logging.getLogger("cosmos.worker")

RETRY_FIRST_S = 1.0
RETRY_MAX_S = 10.0
REPEAT_S = 60.0
"""The same reason is said again at most this often."""
CHECK_TIMEOUT_S = 5.0


def storage_uris(settings: Settings) -> list[str]:
    """The stores a worker writes: scratch and outputs (once each)."""
    return list(dict.fromkeys([settings.resolved_scratch_uri, settings.resolved_output_uri]))


async def first_problem(settings: Settings) -> str | None:
    for uri in storage_uris(settings):
        problem = await asyncio.to_thread(storage_problem, uri, settings, CHECK_TIMEOUT_S)
        if problem:
            return problem
    return None


async def wait_for_storage(
    settings: Settings,
    *,
    check: Callable[[Settings], Awaitable[str | None]] = first_problem,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    say: Callable[[str], None] = lambda line: print(line, flush=True),
) -> float:
    """Return once every store answers; the seconds it waited (0 when they answered at once)."""
    started = clock()
    delay = RETRY_FIRST_S
    said: tuple[str, float] | None = None  # the last reason said, and when
    while problem := await check(settings):
        now = clock()
        if said is None or said[0] != problem or now - said[1] >= REPEAT_S:
            waited = f" (waiting {now - started:.0f}s)" if said is not None else ""
            backoff = f" (backing off to {RETRY_MAX_S:g}s)" if delay < RETRY_MAX_S else ""
            line = (
                f"worker waiting for storage{waited}: {problem}; retrying every {delay:g}s"
                + backoff
            )
            log.warning("%s", line)
            say(line)
            said = (problem, now)
        await sleep(delay)
        delay = min(delay * 2, RETRY_MAX_S)
    waited_s = clock() - started
    if said is not None:
        line = f"worker storage reachable after {waited_s:.0f}s"
        log.info("%s", line)
        say(line)
    return waited_s
