"""Shared fixtures: real binaries from the venv, generated media, Temporal test servers."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from app.cli.samples import make_video
from app.observability.search import KEYS
from app.stratum.functions.ffmpeg import ffmpeg_binary
from tests.stack import Stack, free_port

BIN = Path(sys.executable).parent

# name -> make_video arguments; tiny so the suite stays fast on 2 cores.
MEDIA = {
    "basic": {"width": 320, "height": 180, "seconds": 2.0},
    "no_audio": {"width": 320, "height": 180, "seconds": 2.0, "audio_channels": None},
    "surround": {"width": 320, "height": 180, "seconds": 2.0, "audio_channels": 6},
    "odd": {"width": 321, "height": 241, "seconds": 2.0},
    "anamorphic": {"width": 360, "height": 288, "seconds": 2.0, "sar": "16:15"},
    "ntsc": {"width": 320, "height": 180, "seconds": 2.0, "rate": "30000/1001"},
    "portrait": {"width": 180, "height": 320, "seconds": 2.0},
    "rotated": {"width": 320, "height": 180, "seconds": 2.0, "rotation": 90},
}


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """moto's standalone S3 server on loopback, one per test module that asks for it."""
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(endpoint, timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.2)
    yield endpoint
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def ffmpeg() -> str:
    return ffmpeg_binary()


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every generated source, plus broken ones, made once per session."""
    root = tmp_path_factory.mktemp("media")
    for name, kwargs in MEDIA.items():
        make_video(root / f"{name}.mp4", **kwargs)  # type: ignore[arg-type]
    whole = (root / "basic.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(whole[: len(whole) // 2])
    (root / "text.mp4").write_text("this is not a video\n" * 50)
    (root / "empty.mp4").write_bytes(b"")
    return root


@pytest.fixture(scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=str(BIN / "temporal-test-server"),
    )
    async with env:
        yield env


@pytest.fixture(scope="session")
async def dev_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[WorkflowEnvironment]:
    db = tmp_path_factory.mktemp("temporal") / "temporal.db"
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(BIN / "temporal"),
        dev_server_database_filename=str(db),
        search_attributes=KEYS,
    )
    async with env:
        yield env


@pytest.fixture(scope="session")
def stack(
    dev_server: WorkflowEnvironment, media_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    stack = Stack(
        data_dir=tmp_path_factory.mktemp("data"),
        temporal_address=dev_server.client.service_client.config.target_host,
        source_roots=[media_dir],
    )
    stack.start_worker()
    stack.start_api()
    yield stack
    stack.stop_all()
