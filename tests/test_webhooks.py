"""Signed webhook events: every state change of a job, delivered with retries by a workflow of
their own, listed in the job status; a receiver that is down never holds the job up."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from app.api import main
from app.core.models import WebhookDelivery, WebhookEvent, WebhookRun, WebhookTarget
from app.core.settings import Settings
from app.plato.workflows.webhooks import WebhookWorkflow
from app.stratum.queues import NOTIFY_QUEUE, WORKFLOW_QUEUE
from app.stratum.registry import notify_activities
from app.stratum.webhooks import signature
from tests.stack import Stack
from tests.webhook_receiver import SECRET, Receiver, verified

HISTORIES = Path(__file__).parent / "histories"
HOOK_PROFILE = {"name": "hook144", "height": 144, "bitrate_kbps": 150, "preset": "veryfast"}


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    body = b'{"id":"evt_1"}'
    header = signature(SECRET, int(time.time()), body)
    assert header.startswith("t=") and ",v1=" in header
    assert verified(SECRET, header, body)
    assert not verified(SECRET, header, body + b" "), "a changed body fails"
    assert not verified("another-secret-of-16+", header, body), "another secret fails"
    old = signature(SECRET, int(time.time()) - 3600, body)
    assert not verified(SECRET, old, body), "an hour-old delivery is refused as a replay"


def test_the_readmes_verifier_accepts_a_real_signature_and_nothing_else() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    snippet = readme.split("### Webhooks", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    assert len(snippet.strip().splitlines()) <= 5
    scope: dict[str, Any] = {"hmac": hmac, "hashlib": hashlib, "time": time}
    exec(snippet, scope)  # the README's own five lines
    body = b'{"id":"evt_2","type":"job.started"}'
    header = signature(SECRET, int(time.time()), body)
    assert scope["verified"](SECRET, header, body)
    assert not scope["verified"](SECRET, header, body.replace(b"started", b"failed"))


@pytest.mark.e2e
async def test_every_state_change_is_signed_retried_and_counted_once(
    stack: Stack, media_dir: Path, dev_server: WorkflowEnvironment
) -> None:
    """The receiver takes the first event in and then fails to answer, twice: the platform
    retries with the same event ID, the receiver drops the repeats, and the job neither waits
    for it nor fails."""
    with Receiver(fail_first=2) as receiver:
        submitted = stack.submit(
            source=str(media_dir / "basic.mp4"),
            profiles=[HOOK_PROFILE],
            thumbnails=False,
            webhook_url=receiver.url,
        )
        job_id = submitted["job_id"]
        assert stack.wait(job_id)["status"] == "SUCCEEDED"
        final = receiver.wait_for("job.succeeded")
        view = _delivered(stack, job_id)

    assert receiver.forged == 0
    types = receiver.types()
    assert types[:2] == ["job.accepted", "job.started"] and types[-1] == "job.succeeded"
    stages = [e["data"]["stage"] for e in receiver.events if e["type"] == "job.stage"]
    assert stages == ["plan", "route", "encode", "package", "publish"]
    percents = [e["data"]["percent"] for e in receiver.events if e["type"] == "job.progress"]
    assert percents and percents == sorted(percents) and all(0 < p < 100 for p in percents)
    assert {e["job_id"] for e in receiver.events} == {job_id}
    assert final["data"]["manifests"]["hls"].endswith("master.m3u8")
    created = [datetime.fromisoformat(e["created_at"]) for e in receiver.events]
    assert created == sorted(created) and all(c.tzinfo is not None for c in created)

    first = receiver.events[0]["id"]
    assert receiver.seen[first] == 3, "two failed answers, then the third attempt"
    assert all(receiver.seen[e["id"]] == 1 for e in receiver.events[1:])
    assert receiver.requests == len(receiver.events) + 2

    deliveries = view["webhooks"]
    assert [d["event_id"] for d in deliveries] == [e["id"] for e in receiver.events]
    assert {d["state"] for d in deliveries} == {"delivered"}
    assert (deliveries[0]["attempts"], deliveries[0]["last_status"]) == (3, 204)
    assert all(d["attempts"] == 1 for d in deliveries[1:])

    if os.environ.get("COSMOS_RECORD_HISTORY"):  # replayed by tests/test_replay.py
        client = dev_server.client
        job = client.get_workflow_handle(job_id)
        run_id = (await job.describe()).run_id
        for name, handle in (
            ("encode_webhooks", job),
            ("webhooks", client.get_workflow_handle(f"{job_id}-webhooks-{run_id}")),
        ):
            history = await handle.fetch_history()
            (HISTORIES / f"{name}.json").write_text(json.dumps(history.to_json_dict(), indent=1))


def _delivered(stack: Stack, job_id: str, timeout_s: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        view = stack.job(job_id)
        hooks = view["webhooks"]
        if hooks and all(d["state"] == "delivered" for d in hooks):
            return view
        time.sleep(0.3)
    raise AssertionError(f"deliveries not all done: {view['webhooks']}")


@pytest.fixture
async def deliverer(dev_server: WorkflowEnvironment) -> AsyncIterator[Client]:
    """The real WebhookWorkflow and deliver_webhook activity, on loopback."""
    client = dev_server.client
    settings = Settings(webhook_allowed_hosts="127.0.0.1", webhook_secret=SECRET)
    workers = [
        Worker(client, task_queue=WORKFLOW_QUEUE, workflows=[WebhookWorkflow]),
        Worker(client, task_queue=NOTIFY_QUEUE, activities=notify_activities(settings)),
    ]
    async with workers[0], workers[1]:
        yield client


def _run(url: str, retry_hours: float) -> WebhookRun:
    event = WebhookEvent(
        id=f"evt_{time.monotonic_ns()}",
        type="job.failed",
        job_id="job-hook",
        created_at=datetime.now(UTC),
        data={"status": "FAILED"},
    )
    return WebhookRun(target=WebhookTarget(url=url, retry_hours=retry_hours), first=event)


async def test_a_receiver_that_stays_down_is_retried_until_the_hours_run_out(
    deliverer: Client,
) -> None:
    with Receiver(fail_always=True) as receiver:
        started = time.monotonic()
        deliveries: list[WebhookDelivery] = await deliverer.execute_workflow(
            WebhookWorkflow.run,
            _run(receiver.url, retry_hours=6 / 3600),  # 6 s
            id=f"hooks-down-{time.monotonic_ns()}",
            task_queue=WORKFLOW_QUEUE,
        )
        took = time.monotonic() - started
    (delivery,) = deliveries
    assert delivery.state == "failed" and delivery.last_status == 503
    assert delivery.last_error == "webhook answered 503"
    # one more request where the deadline cut the last attempt short of its answer
    assert delivery.attempts >= 3
    assert delivery.attempts <= receiver.requests <= delivery.attempts + 1
    assert 5 < took < 30, f"gave up after the 6 s it was given ({took:.1f}s)"


async def test_an_address_refused_is_not_retried(deliverer: Client) -> None:
    """Names move: the address is checked again before each delivery. ``localhost`` is not
    among the allowed hosts (127.0.0.1 is), so it fails at once, with the reason."""
    deliveries: list[WebhookDelivery] = await deliverer.execute_workflow(
        WebhookWorkflow.run,
        _run("http://localhost:9/hook", retry_hours=1),
        id=f"hooks-refused-{time.monotonic_ns()}",
        task_queue=WORKFLOW_QUEUE,
    )
    (delivery,) = deliveries
    assert delivery.state == "failed" and delivery.attempts == 1
    assert delivery.last_error is not None and "private, loopback" in delivery.last_error


async def test_a_webhook_without_a_signing_secret_is_refused(
    dev_server: WorkflowEnvironment, media_dir: Path, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        source_roots=str(media_dir),
        temporal_address=dev_server.client.service_client.config.target_host,
        webhook_allowed_hosts="127.0.0.1",
    )
    body = {"source": str(media_dir / "basic.mp4"), "webhook_url": "http://127.0.0.1:9/hook"}
    with TestClient(main.create_app(settings)) as api:
        refused = api.post("/v1/encode", json=body)
        short = api.post("/v1/encode", json=body | {"webhook_secret": "short"})
    assert refused.status_code == 422
    (error,) = refused.json()["detail"]
    assert error["loc"] == ["body", "webhook_secret"] and "COSMOS_WEBHOOK_SECRET" in error["msg"]
    assert short.status_code == 422 and short.json()["detail"][0]["loc"][-1] == "webhook_secret"
