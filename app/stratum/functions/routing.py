"""route: which pool encodes each codec of a job, decided from who polls right now."""

from __future__ import annotations

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from app.core.models import Route, RouteInput
from app.core.settings import Settings
from app.stratum.pools import NoCapablePool, choose_route, live_gpu_queues


class RoutingActivities:
    def __init__(self, settings: Settings, client: Client) -> None:
        self.settings = settings
        self.client = client

    @activity.defn(name="route_encodes")
    async def route(self, input: RouteInput) -> list[Route]:
        """An activity, because the workflow may not do I/O: Temporal's task-queue description
        says which GPU pools poll."""
        live = set() if input.accelerator == "cpu" else await live_gpu_queues(self.client)
        try:
            return [choose_route(codec, input.accelerator, live) for codec in input.codecs]
        except NoCapablePool as err:
            raise ApplicationError(str(err), type="NoCapablePool", non_retryable=True) from None
