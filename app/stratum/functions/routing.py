"""route: which pool encodes each codec of a job, decided from who polls right now."""

from __future__ import annotations

import asyncio

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from app.core.models import Route, RouteInput
from app.core.settings import Settings
from app.stratum.pools import NoCapablePool, choose_route, live_gpu_queues, live_slots, pollers
from app.stratum.queues import CPU_QUEUE


class RoutingActivities:
    def __init__(self, settings: Settings, client: Client) -> None:
        self.settings = settings
        self.client = client

    @activity.defn(name="route_encodes")
    async def route(self, input: RouteInput) -> list[Route]:
        """An activity, because the workflow may not do I/O: Temporal's task-queue description
        says which GPU pools poll, and the encode slots of the CPU pool's workers."""

        async def gpus() -> set[str]:
            return set() if input.accelerator == "cpu" else await live_gpu_queues(self.client)

        async def cpu_slots() -> int | None:
            try:
                return live_slots(await pollers(self.client, CPU_QUEUE))
            except RPCError:  # a server without task-queue descriptions: unknown, so chunked
                return None

        live, slots = await asyncio.gather(gpus(), cpu_slots())
        try:
            routes = [choose_route(codec, input.accelerator, live) for codec in input.codecs]
        except NoCapablePool as err:
            raise ApplicationError(str(err), type="NoCapablePool", non_retryable=True) from None
        return [r.model_copy(update={"slots": slots}) if r.queue == CPU_QUEUE else r
                for r in routes]  # fmt: skip
