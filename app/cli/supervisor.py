"""Children that are kept running: ``cosmos dev``'s restart policy.

A child that exits while the stack is not stopping (the OOM killer's SIGKILL, a crash) is
started again after a backoff, 1 s doubling to 30 s, reset once it stayed up a minute; one
line says so. A child that failed ``max_failures`` times within ``window_s`` is given up on,
with one line, and the rest keep serving. Stopping sends every child SIGTERM, then SIGKILL to
the ones still there after their grace.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from app.core.processes import die_with_parent

TICK_S = 0.2


@dataclass(frozen=True)
class RestartPolicy:
    first_delay_s: float = 1.0
    max_delay_s: float = 30.0
    reset_after_s: float = 60.0
    """A child that stayed up this long starts its backoff again from ``first_delay_s``."""
    max_failures: int = 5
    window_s: float = 60.0
    """``max_failures`` exits within this many seconds: the child is given up on."""

    def delay(self, streak: int) -> float:
        """The wait before the ``streak``-th restart in a row (1, 2, ...): 1, 2, 4 ... 30 s."""
        return min(self.max_delay_s, self.first_delay_s * 2.0 ** max(0, streak - 1))


@dataclass
class Child:
    name: str
    cmd: list[str]
    env: dict[str, str]
    log_path: Path
    stop_grace_s: float
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    starts: int = 0
    streak: int = 0
    """Restarts in a row, each after less than ``reset_after_s`` up."""
    failures: list[float] = field(default_factory=list)
    """When it exited unexpectedly, within the policy's window."""
    restart_at: float | None = None
    given_up: bool = False
    log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


def describe_exit(code: int) -> str:
    """``status -9 (SIGKILL)``: the signal's name where a signal ended it."""
    if code < 0:
        try:
            return f"status {code} ({signal.Signals(-code).name})"
        except ValueError:
            pass
    return f"status {code}"


class Supervisor:
    """Starts children, restarts them by ``policy`` from a watcher thread, stops them all."""

    def __init__(
        self,
        policy: RestartPolicy | None = None,
        say: Callable[[str], None] = print,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy or RestartPolicy()
        self.say = say
        self.clock = clock
        self.children: list[Child] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def child(self, name: str) -> Child:
        return next(c for c in self.children if c.name == name)

    def spawn(
        self, name: str, cmd: list[str], env: dict[str, str], log_path: Path, stop_grace_s: float
    ) -> subprocess.Popen[bytes]:
        child = Child(name, cmd, env, log_path, stop_grace_s)
        with self._lock:
            self.children.append(child)
            self._start(child)
        assert child.proc is not None
        return child.proc

    def _start(self, child: Child) -> None:
        child.log_path.parent.mkdir(parents=True, exist_ok=True)
        child.log = child.log_path.open("ab")
        child.proc = subprocess.Popen(
            child.cmd,
            env=child.env,
            stdin=subprocess.DEVNULL,
            stdout=child.log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
        child.started_at = self.clock()
        child.starts += 1
        child.log.write(f"--- cosmos dev: {child.name} started (pid {child.proc.pid})\n".encode())
        child.log.flush()

    def tick(self) -> None:
        """Notice exits, start the children whose backoff is over."""
        with self._lock:
            if self._stopping.is_set():
                return
            now = self.clock()
            for child in self.children:
                if child.given_up:
                    continue
                if child.proc is not None:
                    code = child.proc.poll()
                    if code is not None:
                        self._exited(child, code, now)
                elif child.restart_at is not None and now >= child.restart_at:
                    child.restart_at = None
                    self._start(child)

    def _exited(self, child: Child, code: int, now: float) -> None:
        child.proc = None
        if child.log is not None:
            child.log.close()
            child.log = None
        policy = self.policy
        if now - child.started_at >= policy.reset_after_s:
            child.streak = 0
        child.failures = [t for t in child.failures if now - t < policy.window_s] + [now]
        status = describe_exit(code)
        if len(child.failures) >= policy.max_failures:
            child.given_up = True
            self.say(
                f"{child.name} exited with {status}; giving up on it after "
                f"{len(child.failures)} failures within {policy.window_s:g}s "
                f"(see {child.log_path}); the rest keep serving"
            )
            return
        child.streak += 1
        delay = policy.delay(child.streak)
        child.restart_at = now + delay
        self.say(f"{child.name} exited with {status}; restarting in {delay:g}s")

    def watch(self) -> None:
        """Supervise from a thread of its own until :meth:`stop`."""

        def loop() -> None:
            while not self._stopping.wait(TICK_S):
                self.tick()

        self._thread = threading.Thread(target=loop, name="cosmos-dev-supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """No more restarts; SIGTERM to every child in reverse start order, SIGKILL to the ones
        still running after their grace."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            running = [c for c in reversed(self.children) if c.proc is not None]
            for child in running:
                assert child.proc is not None
                if child.proc.poll() is None:
                    child.proc.send_signal(signal.SIGTERM)
            began = time.monotonic()
            for child in running:
                assert child.proc is not None
                left = began + child.stop_grace_s - time.monotonic()
                try:
                    child.proc.wait(timeout=max(0.1, left))
                except subprocess.TimeoutExpired:
                    child.proc.kill()
                    child.proc.wait()
            for child in self.children:
                if child.log is not None:
                    child.log.close()
                    child.log = None
