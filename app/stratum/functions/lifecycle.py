"""cleanup (the saga's compensation) and notify: what runs when a job ends, however it ends."""

from __future__ import annotations

import asyncio
import logging

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from app.core.models import CleanupInput, NotifyInput
from app.storage.local import partial_dir, path_to_uri, remove_tree, uri_to_path
from app.storage.object_store import join, store_for
from app.stratum.functions.common import ActivityBase
from app.stratum.webhooks import WebhookRefused, check_webhook

log = logging.getLogger(__name__)


class LifecycleActivities(ActivityBase):
    @activity.defn(name="cleanup")
    async def cleanup(self, input: CleanupInput) -> list[str]:
        """Remove the job's scratch space and, for a failed or cancelled job, everything it
        published, so nothing partial is left looking whole. Idempotent."""
        prefixes = [join(input.scratch_uri, input.job_id)]
        if input.remove_outputs:
            output = join(input.output_uri, input.job_id)
            prefixes.append(output)
            if output.startswith("file:"):
                prefixes.append(path_to_uri(partial_dir(uri_to_path(output))))
        removed = []
        for prefix in prefixes:
            if await asyncio.to_thread(store_for(prefix, self.settings).delete_prefix, prefix):
                removed.append(prefix)
        await asyncio.to_thread(remove_tree, self.work_dir(input.job_id))
        return removed

    @activity.defn(name="notify")
    async def notify(self, input: NotifyInput) -> None:
        body = input.model_dump(mode="json", exclude={"webhook_url"})
        log.info("job %s ended: %s", input.job_id, input.status, extra={"job": body})
        if not input.webhook_url:
            return
        try:  # again: the name may resolve elsewhere now than when the job was submitted
            await asyncio.to_thread(check_webhook, input.webhook_url, self.settings.webhook_hosts)
        except WebhookRefused as err:
            raise ApplicationError(str(err), type="WebhookRefused", non_retryable=True) from None
        async with httpx.AsyncClient(timeout=10, follow_redirects=False) as client:
            try:
                response = await client.post(input.webhook_url, json=body)
            except httpx.HTTPError as err:
                raise ApplicationError(f"webhook unreachable: {err.__class__.__name__}") from None
        if response.status_code >= 500 or response.status_code == 429:
            raise ApplicationError(f"webhook answered {response.status_code}")
        if response.status_code >= 400:
            raise ApplicationError(
                f"webhook refused the notification ({response.status_code})", non_retryable=True
            )
