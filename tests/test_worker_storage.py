"""A worker waits for its storage before it polls: one line per reason, retries with backoff
(workers/storage.py), and what ``storage_problem`` says of a store that does not answer."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from app.cli.seaweed import Seaweed
from app.core.settings import Settings
from app.storage.object_store import storage_problem
from workers.storage import RETRY_MAX_S, storage_uris, wait_for_storage


class Clock:
    """Time that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


async def test_one_line_per_reason_backoff_and_ready() -> None:
    """Same reason: said once, again after a minute; a new reason is said at once."""
    answers = ["endpoint down"] * 12 + ["bucket missing"] * 2 + [None]
    clock, lines = Clock(), list[str]()

    async def check(_: Settings) -> str | None:
        return answers.pop(0)

    waited = await wait_for_storage(
        Settings(), check=check, sleep=clock.sleep, clock=clock, say=lines.append
    )
    assert clock.sleeps[:6] == [1, 2, 4, 8, 10, 10]
    assert max(clock.sleeps) == RETRY_MAX_S
    assert waited == sum(clock.sleeps)
    assert lines[0] == (
        "worker waiting for storage: endpoint down; retrying every 1s (backing off to 10s)"
    )
    # 12 failed checks take 95 s: the reason is said again once, a minute after the first
    assert lines[1] == "worker waiting for storage (waiting 65s): endpoint down; retrying every 10s"
    assert lines[2].startswith("worker waiting for storage (waiting 95s): bucket missing;")
    assert lines[3] == f"worker storage reachable after {waited:.0f}s"
    assert len(lines) == 4


async def test_reachable_storage_says_nothing() -> None:
    clock, lines = Clock(), list[str]()

    async def check(_: Settings) -> str | None:
        return None

    waited = await wait_for_storage(
        Settings(), check=check, sleep=clock.sleep, clock=clock, say=lines.append
    )
    assert (waited, clock.sleeps, lines) == (0.0, [], [])


def test_the_stores_checked_are_scratch_and_outputs(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, scratch_uri="s3://b/scratch", output_uri="s3://b/out")
    assert storage_uris(settings) == ["s3://b/scratch", "s3://b/out"]
    assert storage_uris(Settings(data_dir=tmp_path)) == [
        (tmp_path / "scratch").as_uri(),
        (tmp_path / "outputs").as_uri(),
    ]


def test_storage_problem_names_the_endpoint_and_the_cause(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{closed.getsockname()[1]}"
    settings = Settings(s3_endpoint_url=endpoint)
    assert storage_problem("s3://cosmos/scratch", settings, timeout_s=2) == (
        f"s3 endpoint {endpoint} unreachable (Connection refused)"
    )
    assert storage_problem((tmp_path / "scratch").as_uri(), settings) is None


@pytest.mark.e2e
def test_storage_problem_against_a_real_s3_server(s3_server: Seaweed) -> None:
    s3_server.create_buckets("storage-check")
    settings = Settings(s3_endpoint_url=s3_server.endpoint)
    with pytest.MonkeyPatch.context() as mp:
        for name, value in s3_server.client_env().items():
            mp.setenv(name, value)
        assert storage_problem("s3://storage-check/scratch", settings) is None
        assert storage_problem("s3://no-such-bucket/scratch", settings) == (
            f"s3 bucket no-such-bucket does not exist at {s3_server.endpoint}"
        )
        mp.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
        problem = storage_problem("s3://storage-check/scratch", settings)
        assert problem is not None and "access denied" in problem, problem
