"""Shared fixtures: real binaries from the venv, generated media, Temporal test servers."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from app.cli.samples import make_video
from app.cli.seaweed import INTERNAL_PORTS, Seaweed
from app.cli.seaweed import READY_TIMEOUT_S as S3_READY_TIMEOUT_S
from app.cli.seaweed import STOP_GRACE_S as S3_STOP_GRACE_S
from app.core.processes import die_with_parent
from app.observability.search import KEYS
from app.stratum.functions.ffmpeg import ffmpeg_binary
from tests.stack import Stack, free_ports

BIN = Path(sys.executable).parent
PLUGINS = Path(__file__).resolve().parent / "plugins"

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


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seaweed]:
    """The suite's S3: SeaweedFS (``weed server -s3``, app/cli/seaweed.py, as ``cosmos dev
    --storage s3`` runs it) on loopback, one per session, signed requests with its own key
    (``client_env()``, ``client()``). Each test module makes buckets of its own."""
    s3_port, *internal = free_ports(1 + len(INTERNAL_PORTS))
    server = Seaweed(tmp_path_factory.mktemp("s3"), s3_port, internal)
    log_path = server.root / "weed.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            server.command(), stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
        )
    try:
        deadline = time.monotonic() + S3_READY_TIMEOUT_S
        while not server.ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"SeaweedFS did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=S3_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        server.remove_sockets()


@pytest.fixture(scope="session")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/plugins/thumbnail-strip installed as a team installs a function package (pip, its
    entry point in its dist-info), into a folder of its own: put the folder on ``sys.path``
    (``monkeypatch.syspath_prepend``) or a worker's PYTHONPATH to have the plugin loaded."""
    root = tmp_path_factory.mktemp("plugins")
    # a copy: building writes build/ and *.egg-info beside the source
    source = shutil.copytree(PLUGINS / "thumbnail-strip", root / "thumbnail-strip")
    target = root / "site-packages"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(source)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return target


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
        # the machine kind this suite is written for, whatever runs it: one encode slot
        extra_env={"COSMOS_WORKER_CORES": "2"},
    )
    stack.start_worker()
    stack.start_api()
    yield stack
    stack.stop_all()
