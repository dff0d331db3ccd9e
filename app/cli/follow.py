"""Follow a job from the CLI: read ``GET /v1/jobs/{id}/events`` and show its progress.

On a terminal, rich progress bars (overall and one per rendition, with ffmpeg's speed and an
ETA); otherwise one plain line per change, so logs and CI stay readable.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Protocol

import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)

from app.cli.client import api_client
from app.core.models import JobStatus, JobView, RenditionState

RECONNECTS = 10
"""Consecutive failed connections (API restarting, network blip) before giving up."""
READ_TIMEOUT_S = 60.0
"""The API sends a heartbeat every 15 s: a silent minute means the line is dead."""
TERMINAL = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}


class FollowError(RuntimeError):
    """The job cannot be followed (unknown job, API refusing); the message says why."""


class Display(Protocol):
    def update(self, view: JobView) -> None: ...
    def close(self) -> None: ...


def parse_events(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """``(event, data)`` pairs from server-sent event lines; comments are skipped."""
    event = "message"
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", list[str]()
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)


def job_views(api_url: str | None, job_id: str) -> Iterator[JobView]:
    """Every view the API sends until the job ends; reconnects when the line drops."""
    failures = 0
    timeout = httpx.Timeout(10.0, read=READ_TIMEOUT_S)
    while True:
        try:
            with (
                api_client(api_url) as http,
                http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=timeout) as response,
            ):
                if response.status_code != 200:
                    response.read()
                    raise FollowError(f"{response.status_code}: {response.text}")
                failures = 0
                for event, data in parse_events(response.iter_lines()):
                    if event == "error":
                        raise FollowError(json.loads(data).get("detail", data))
                    view = JobView.model_validate_json(data)
                    yield view
                    if event == "end" or view.status in TERMINAL:
                        return
        except httpx.HTTPError as err:
            failures += 1
            if failures > RECONNECTS:
                raise FollowError(f"lost the API: {err}") from err
            time.sleep(min(0.5 * 2**failures, 5.0))


# ---------------------------------------------------------------- displays


def _speed(r: RenditionState) -> str:
    parts = []
    if r.chunks_total:
        parts.append(f"{r.chunks_done or 0}/{r.chunks_total} chunks")
    if r.speed:
        parts.append(f"{r.speed:.2f}x")
    if r.fps:
        parts.append(f"{r.fps:.0f} fps")
    return " ".join(parts)


class PlainDisplay:
    """One line per change: ``RUNNING   encode    45.0%  720p 50% 2.10x  480p 40% 3.00x``."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.last = ""

    def update(self, view: JobView) -> None:
        renditions = "  ".join(
            f"{r.name} {r.progress:.0%}" + (f" {r.speed:.2f}x" if r.speed else "")
            for r in view.renditions
        )
        line = f"{view.status:<9} {view.stage or '-':<8} {view.progress:6.1%}  {renditions}"
        if line != self.last:
            self.console.out(line.rstrip(), highlight=False)
            self.last = line

    def close(self) -> None:
        pass


class BarsDisplay:
    """rich progress bars: the job, then one per rendition (ETA from the bar's own rate)."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description:<22}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[detail]:<18}"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
        )
        self.overall = self.progress.add_task("job", total=100, detail="")
        self.renditions: dict[str, TaskID] = {}
        self.progress.start()

    def update(self, view: JobView) -> None:
        stage = view.stage or view.status.lower()
        self.progress.update(
            self.overall, completed=view.progress * 100, description=f"job ({stage})", detail=""
        )
        for r in view.renditions:
            if r.name not in self.renditions:
                label = f"  {r.name} {r.width}x{r.height}"
                self.renditions[r.name] = self.progress.add_task(label, total=100, detail="")
            detail = _speed(r) if r.status == "encoding" else r.status
            self.progress.update(self.renditions[r.name], completed=r.progress * 100, detail=detail)

    def close(self) -> None:
        self.progress.stop()


def follow(
    api_url: str | None, job_id: str, *, console: Console | None = None, bars: bool | None = None
) -> JobView:
    """Show the job's progress until it ends; return its final view."""
    console = console or Console(highlight=False)
    use_bars = console.is_terminal if bars is None else bars
    display: Display = BarsDisplay(console) if use_bars else PlainDisplay(console)
    view: JobView | None = None
    try:
        for view in job_views(api_url, job_id):
            display.update(view)
    finally:
        display.close()
    if view is None:  # pragma: no cover - the stream always sends a view first
        raise FollowError("the API sent no job state")
    return view
