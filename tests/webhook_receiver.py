"""A webhook receiver as a user would write one: a real HTTP server on loopback that checks
each signature with nothing but ``hmac`` (not the platform's code), drops repeats by event ID,
and can be told to fail its first answers."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from temporalio import activity
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from app.core.models import FINAL_EVENTS, WebhookAnswer, WebhookCall, WebhookEvent
from app.stratum.queues import NOTIFY_QUEUE
from tests.stack import WEBHOOK_SECRET as SECRET


def verified(secret: str, header: str, body: bytes, tolerance_s: float = 300) -> bool:
    """What the README shows a receiver doing."""
    parts = dict(item.split("=", 1) for item in header.split(","))
    signed = f"{parts['t']}.".encode() + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    fresh = abs(time.time() - int(parts["t"])) <= tolerance_s
    return fresh and hmac.compare_digest(expected, parts["v1"])


@dataclass
class Receiver:
    secret: str = SECRET
    fail_first: int = 0
    """Answer 503 to this many requests, after taking their events in (a receiver that
    crashed before answering): the retries then bring the same event IDs again."""
    fail_always: bool = False
    requests: int = 0
    forged: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    """Each event once, in the order first received."""
    seen: Counter[str] = field(default_factory=Counter)
    """Requests per event ID (attempts, duplicates included)."""
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver._lock:
                    receiver.requests += 1
                    if not verified(receiver.secret, self.headers["Cosmos-Signature"], body):
                        receiver.forged += 1
                        status = 400
                    elif receiver.fail_always:
                        status = 503
                    else:
                        event = json.loads(body)
                        receiver.seen[event["id"]] += 1
                        if receiver.seen[event["id"]] == 1:
                            receiver.events.append(event)
                        status = 503 if receiver.requests <= receiver.fail_first else 204
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    def wait_for(self, event_type: str, timeout_s: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                found = [e for e in self.events if e["type"] == event_type]
            if found:
                return found[-1]
            time.sleep(0.1)
        raise AssertionError(f"no {event_type} event within {timeout_s}s; got {self.types()}")


@dataclass
class RecordedWebhooks:
    """A stand-in ``deliver_webhook`` for workflow tests: records what the job emitted.

    Delivery is at least once (an attempt whose answer the server never heard is run again),
    so, as a receiver does, a repeat of an event ID is counted, not recorded twice."""

    events: list[WebhookEvent] = field(default_factory=list)
    repeats: Counter[str] = field(default_factory=Counter)

    def worker(self, client: Client) -> Worker:
        @activity.defn(name="deliver_webhook")
        async def deliver(input: WebhookCall) -> WebhookAnswer:
            if any(e.id == input.event.id for e in self.events):
                self.repeats[input.event.id] += 1
            else:
                self.events.append(input.event)
            return WebhookAnswer(status_code=204, attempt=activity.info().attempt)

        return Worker(client, task_queue=NOTIFY_QUEUE, activities=[deliver])

    async def final(self, client: Client, job: WorkflowHandle[Any, Any]) -> WebhookEvent:
        """The job's last event, once its deliverer has finished (it outlives the job)."""
        run_id = (await job.describe()).run_id
        await client.get_workflow_handle(f"{job.id}-webhooks-{run_id}").result()
        mine = self.of(job.id)
        assert mine[0].type == "job.accepted" and mine[-1].type in FINAL_EVENTS
        return mine[-1]

    def of(self, job_id: str) -> list[WebhookEvent]:
        """One job's events. The notify queue is shared: a deliverer an earlier test left
        running (its job ended without ``final``) goes on here, with this worker."""
        return [e for e in self.events if e.job_id == job_id]
