"""cleanup (the saga's compensation) and notify: what runs when a job ends, however it ends."""

from __future__ import annotations

import asyncio
import logging

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from app.core.models import CleanupInput, NotifyInput, WebhookAnswer, WebhookCall
from app.storage.local import partial_dir, path_to_uri, remove_tree, uri_to_path
from app.storage.object_store import join, store_for
from app.stratum.functions.common import ActivityBase
from app.stratum.webhooks import WebhookFailed, WebhookRefused, check_webhook, post_event

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

    @activity.defn(name="deliver_webhook")
    async def deliver_webhook(self, input: WebhookCall) -> WebhookAnswer:
        """One attempt at one event; Temporal's retry policy makes the next. A failure carries
        the HTTP status and the attempt, for the job status's list of deliveries."""
        attempt = activity.info().attempt if activity.in_activity() else 1
        secret = input.target.secret or (
            self.settings.webhook_secret and self.settings.webhook_secret.get_secret_value()
        )
        if not secret:
            raise ApplicationError(
                "no webhook secret: set COSMOS_WEBHOOK_SECRET on the workers",
                {"attempt": attempt},
                type="WebhookNoSecret",
                non_retryable=True,
            )
        try:
            status = await post_event(
                input.target.url, secret, input.event, self.settings.webhook_hosts, attempt
            )
        except WebhookRefused as err:
            raise ApplicationError(
                str(err), {"attempt": attempt}, type="WebhookRefused", non_retryable=True
            ) from None
        except WebhookFailed as err:
            raise ApplicationError(
                str(err), {"attempt": attempt, "status": err.status_code}, type="WebhookFailed"
            ) from None
        return WebhookAnswer(status_code=status, attempt=attempt)

    @activity.defn(name="notify")
    async def notify(self, input: NotifyInput) -> None:
        """Runs of EncodeWorkflow from before webhook events end with this one unsigned POST."""
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
