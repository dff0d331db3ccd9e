"""``cosmos dev``'s restart policy on real short-lived processes and a clock of the test's own:
the backoff, its reset, the give-up, stopping; and how ``--workers N`` share the cores."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from app.cli.dev import cores_per_worker
from app.cli.supervisor import RestartPolicy, Supervisor
from app.stratum.resources import ENCODE_CPU, cpu_slots, encode_slots, machine_share

FAIL = ["sh", "-c", "exit 3"]
SLEEP = ["sleep", "60"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def settle(sup: Supervisor, name: str) -> None:
    """Let the child's process end (it was killed or exits at once) before the next tick."""
    proc = sup.child(name).proc
    if proc is not None:
        proc.wait(timeout=10)


@pytest.fixture
def said() -> list[str]:
    return []


def test_backoff_doubles_from_1s_to_30s() -> None:
    policy = RestartPolicy()
    assert [policy.delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]


def test_a_child_that_keeps_failing_is_restarted_with_backoff_then_given_up(
    tmp_path: Path, said: list[str]
) -> None:
    clock = Clock()
    sup = Supervisor(RestartPolicy(), say=said.append, clock=clock)
    sup.spawn("worker-cpu-1", FAIL, {}, tmp_path / "w.log", 1.0)
    sup.spawn("api", SLEEP, {}, tmp_path / "api.log", 1.0)
    try:
        waits = []
        for _ in range(4):
            settle(sup, "worker-cpu-1")
            sup.tick()  # notices the exit
            child = sup.child("worker-cpu-1")
            assert child.proc is None and child.restart_at is not None
            waits.append(child.restart_at - clock.now)
            clock.now = child.restart_at - 0.01
            sup.tick()
            assert child.proc is None, "not before its backoff is over"
            clock.now = child.restart_at
            sup.tick()
            assert child.proc is not None, "restarted once its backoff is over"
        assert waits == [1, 2, 4, 8]
        settle(sup, "worker-cpu-1")
        sup.tick()  # the fifth failure within 60 s
        child = sup.child("worker-cpu-1")
        assert child.given_up and child.restart_at is None and child.starts == 5
        clock.now += 100
        sup.tick()
        assert child.proc is None, "a child given up on stays down"
        assert said[:4] == [
            f"worker-cpu-1 exited with status 3; restarting in {n}s" for n in (1, 2, 4, 8)
        ]
        assert len(said) == 5 and said[4].startswith(
            "worker-cpu-1 exited with status 3; giving up on it after 5 failures within 60s"
        )
        assert said[4].endswith("the rest keep serving")
        api = sup.child("api")
        assert api.proc is not None and api.proc.poll() is None and api.starts == 1
        log = (tmp_path / "w.log").read_text()
        assert log.count("--- cosmos dev: worker-cpu-1 started (pid ") == 5
    finally:
        sup.stop()


def test_a_child_that_stayed_up_starts_its_backoff_again(tmp_path: Path, said: list[str]) -> None:
    """Killed (the OOM killer), restarted after 1 s, killed again soon: 2 s; after a minute up
    it is 1 s again, and failures spread over more than the window never give up."""
    clock = Clock()
    sup = Supervisor(RestartPolicy(), say=said.append, clock=clock)
    sup.spawn("worker-cpu-2", SLEEP, {}, tmp_path / "w.log", 1.0)
    try:
        for up_s in (5, 5, 61, 61, 61, 61, 61):
            clock.now += up_s
            child = sup.child("worker-cpu-2")
            assert child.proc is not None
            child.proc.send_signal(signal.SIGKILL)
            settle(sup, "worker-cpu-2")
            sup.tick()
            assert child.restart_at is not None
            clock.now = child.restart_at
            sup.tick()
        assert said == [
            "worker-cpu-2 exited with status -9 (SIGKILL); restarting in 1s",
            "worker-cpu-2 exited with status -9 (SIGKILL); restarting in 2s",
            *["worker-cpu-2 exited with status -9 (SIGKILL); restarting in 1s"] * 5,
        ]
        assert not sup.child("worker-cpu-2").given_up
    finally:
        sup.stop()


def test_stop_terminates_every_child_and_kills_one_that_ignores_sigterm(
    tmp_path: Path, said: list[str]
) -> None:
    sup = Supervisor(say=said.append)
    stubborn = sup.spawn(
        "stubborn", ["sh", "-c", "trap '' TERM; exec sleep 60"], {}, tmp_path / "s.log", 0.5
    )
    polite = sup.spawn("polite", SLEEP, {}, tmp_path / "p.log", 5.0)
    sup.watch()
    sup.stop()
    assert polite.returncode == -signal.SIGTERM
    assert stubborn.returncode == -signal.SIGKILL
    sup.tick()
    assert said == [], "a stop is not a failure: nothing is restarted"
    assert sup.child("polite").proc is polite and sup.child("polite").starts == 1


def test_workers_share_the_cores() -> None:
    assert cores_per_worker(1, cores=16) == 16
    assert cores_per_worker(4, cores=16) == 4
    assert cores_per_worker(3, cores=2) == 1, "at least one core each"
    total, memory = machine_share(None)
    assert machine_share(total + 5) == (total, memory)
    one, share = machine_share(1)
    assert one == 1 and share <= memory
    assert encode_slots(None, cores=1) == 1 == cpu_slots(ENCODE_CPU, cores=1, memory_mib=share)
    assert encode_slots(3, cores=1) == 3, "the operator's figure wins"
