"""SIGTERM drains a real worker process: nothing lost, nothing finished is encoded twice."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from app.cli.samples import make_video
from app.observability.search import KEYS
from tests.conftest import BIN
from tests.stack import Stack

pytestmark = pytest.mark.e2e


@pytest.fixture
async def dev_server(tmp_path: Path) -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(BIN / "temporal"),
        search_attributes=KEYS,
    )
    async with env:
        yield env


async def encode_attempts(env: WorkflowEnvironment, job_id: str) -> dict[str, int]:
    """Started attempts per rendition, read from the workflow's history."""
    history = await env.client.get_workflow_handle(job_id).fetch_history()
    names: dict[int, str] = {}
    attempts: dict[str, int] = {}
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            if attrs.activity_type.name == "encode_video":
                payload = attrs.input.payloads[0].data.decode()
                names[event.event_id] = "long" if '"name":"long"' in payload else "short"
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            attrs = event.activity_task_started_event_attributes
            if attrs.scheduled_event_id in names:
                attempts[names[attrs.scheduled_event_id]] = attrs.attempt
    return attempts


async def test_sigterm_drains_then_hands_the_rest_to_another_worker(
    dev_server: WorkflowEnvironment, tmp_path: Path
) -> None:
    media = tmp_path / "media"
    source = make_video(media / "drain.mp4", width=1280, height=720, seconds=8, audio_channels=None)
    stack = Stack(
        data_dir=tmp_path / "data",
        temporal_address=dev_server.client.service_client.config.target_host,
        source_roots=[media],
        extra_env={"COSMOS_WORKER_SHUTDOWN_GRACE_S": "2", "COSMOS_WORKER_MAX_ACTIVITIES": "2"},
    )
    stack.start_api()
    stack.start_worker()
    first = stack.procs["worker"]
    try:
        profiles = [
            {"name": "short", "height": 144, "bitrate_kbps": 100, "preset": "ultrafast"},
            {"name": "long", "height": 720, "bitrate_kbps": 2000, "preset": "slower"},
        ]
        job_id = stack.submit(source=str(source), profiles=profiles)["job_id"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            renditions = {r["name"]: r for r in stack.job(job_id)["renditions"]}
            if (
                renditions.get("short", {}).get("status") == "done"
                and renditions["long"]["progress"] > 0
            ):
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"never got to a half-done job: {stack.job(job_id)}")

        first.send_signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        first.wait(timeout=30)
        assert time.monotonic() - stopped_at < 15, "drain is bounded by the grace period"
        assert first.returncode == 0
        leftover = subprocess.run(["pgrep", "-af", job_id], capture_output=True, text=True).stdout
        assert "ffmpeg" not in leftover, leftover

        stack.procs.pop("worker")
        stack.start_worker()  # another worker takes over
        view = stack.wait(job_id, timeout=180)
        assert view["status"] == "SUCCEEDED", view
        assert await encode_attempts(dev_server, job_id) == {"short": 1, "long": 2}
    finally:
        stack.stop_all()
