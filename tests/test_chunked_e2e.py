"""Chunked encoding for real: the dev server, a worker process, the API over HTTP, ffmpeg.

Audio stays in sync with a title cut into chunks, and a worker killed in the middle of a
chunked job leaves the chunks it finished alone: the new worker encodes only the rest.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import threading
import time
from array import array
from collections.abc import Iterator
from pathlib import Path

import av
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from app.cli.samples import make_video
from app.storage.local import uri_to_path
from tests.media_checks import check_package, keyframe_times
from tests.stack import TERMINAL, Stack
from tests.test_faults import DevServer

pytestmark = pytest.mark.e2e

FLASH_S = 8.0
"""When the white flash and the beep start, together, in the sync source."""
FRAME_S = 1 / 30
SYNC_TOLERANCE_S = FRAME_S + 0.012
"""A frame (video is only sampled that often) plus a little for AAC's own smearing."""
HISTORIES = Path(__file__).parent / "histories"
BEEP_LEVEL = 0.3
"""The beep is at 0.8, the background tone at 0.01: any sample above this is the beep."""


def make_flash_source(path: Path, ffmpeg: str, seconds: float = 10.0) -> Path:
    """Black video and a quiet 440 Hz tone, except for ``FLASH_S`` .. +0.1 s: a white picture
    and a loud 1 kHz beep. 320x180, 30 fps, a keyframe every second, H.264/AAC in MP4."""
    end = FLASH_S + 0.1
    video = (
        f"color=c=black:s=320x180:r=30:d={seconds},"
        f"drawbox=x=0:y=0:w=iw:h=ih:color=white:t=fill:enable='between(t,{FLASH_S},{end})'"
    )
    audio = (
        f"aevalsrc='if(between(t,{FLASH_S},{end}),0.8*sin(2*PI*1000*t),0.01*sin(2*PI*440*t))'"
        f":s=48000:d={seconds}"
    )
    subprocess.run(
        [ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
         "-f", "lavfi", "-i", video, "-f", "lavfi", "-i", audio,
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "30",
         "-c:a", "aac", "-b:a", "96k", "-ac", "2", "-f", "mp4", str(path)],
        check=True, timeout=60,
    )  # fmt: skip
    return path


def mean_luma(frame: av.VideoFrame) -> float:
    plane = frame.planes[0]
    data = bytes(plane)
    width, height, stride = frame.width, frame.height, plane.line_size
    total = sum(sum(data[row * stride : row * stride + width]) for row in range(height))
    return total / (width * height)


def flash_and_beep(media: Path) -> tuple[float | None, float | None]:
    """Presentation time of the first bright video frame and of the first loud audio sample,
    on the one timeline a player sees (HLS master: video variant and audio rendition)."""
    flash: float | None = None
    beep: float | None = None
    options = {"protocol_whitelist": "file", "allowed_extensions": "ALL"}
    with av.open(str(media), options=options) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        for frame in container.decode(video, audio):
            at = frame.time if isinstance(frame, av.VideoFrame | av.AudioFrame) else None
            if at is None:
                continue
            if isinstance(frame, av.VideoFrame):
                if flash is None and mean_luma(frame) > 128:
                    flash = at
            elif isinstance(frame, av.AudioFrame) and beep is None:
                # AAC decodes to planar float: the first plane is the left channel's samples
                assert getattr(frame.format, "name", None) == "fltp", frame.format
                samples = array("f", bytes(frame.planes[0]))[: frame.samples]
                loud = next((i for i, s in enumerate(samples) if abs(s) > BEEP_LEVEL), None)
                if loud is not None:
                    beep = at + loud / frame.sample_rate
            if flash is not None and beep is not None:
                break
    return flash, beep


def test_chunked_job_keeps_audio_in_sync(stack: Stack, media_dir: Path, ffmpeg: str) -> None:
    source = make_flash_source(media_dir / "chunked-sync.mp4", ffmpeg)
    assert flash_and_beep(source) == pytest.approx((FLASH_S, FLASH_S), abs=0.002)

    job_id = stack.submit(
        source=str(source),
        profiles=[{"name": "small", "height": 144, "bitrate_kbps": 200}],
        chunk_seconds=2,
        min_chunk_seconds=1,
        segment_seconds=2,
    )["job_id"]
    view = stack.wait(job_id, timeout=120)
    assert view["status"] == "SUCCEEDED", view
    (small,) = view["renditions"]
    # cut at 2, 4, 6 and 8 s (a scene cut: the flash): the flash is a chunk's first frame
    assert small["chunks_total"] >= 3, small
    assert small["chunks_done"] == small["chunks_total"], small
    assert small["frames"] == 300, small

    out_dir = uri_to_path(view["manifests"]["hls"]).parent
    manifest = check_package(out_dir, ffmpeg, 10.0, "30/1")
    assert manifest["audio"], "the source has audio: so must the package"

    flash, beep = flash_and_beep(uri_to_path(view["manifests"]["hls"]))
    assert flash is not None and beep is not None, (flash, beep)
    assert abs(flash - FLASH_S) <= 0.1, f"the flash moved: {flash:.3f}s, not {FLASH_S}s"
    assert abs(beep - FLASH_S) <= 0.1, f"the beep moved: {beep:.3f}s, not {FLASH_S}s"
    assert abs(flash - beep) <= SYNC_TOLERANCE_S, (
        f"audio and video out of sync by {(beep - flash) * 1000:+.1f} ms "
        f"(flash {flash:.4f}s, beep {beep:.4f}s)"
    )
    if os.environ.get("COSMOS_RECORD_HISTORY"):
        asyncio.run(record_histories(stack.temporal_address, job_id))


async def record_histories(address: str, job_id: str) -> None:
    """The chunked job's history and its first child's, for tests/test_replay.py."""
    client = await Client.connect(address, data_converter=pydantic_data_converter)
    parent = await client.get_workflow_handle(job_id).fetch_history()
    child = next(
        e.child_workflow_execution_started_event_attributes.workflow_execution.workflow_id
        for e in parent.events
        if e.event_type == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED
    )
    first = await client.get_workflow_handle(child).fetch_history()
    for name, history in (("encode_chunked", parent), ("chunk_range", first)):
        (HISTORIES / f"{name}.json").write_text(json.dumps(history.to_json_dict(), indent=1))


# ---------------------------------------------------------------- chunk only where it pays

WHOLE_PROFILES = [
    {"name": "mid", "height": 288, "bitrate_kbps": 500},
    {"name": "low", "height": 144, "bitrate_kbps": 150},
]


async def test_one_encode_slot_encodes_the_ladder_from_one_decode(
    stack: Stack, media_dir: Path, ffmpeg: str
) -> None:
    """The suite's worker sizes itself for 2 cores: one encode slot. Left to decide, the job
    does not chunk (chunks would run one after another) and one ffmpeg encodes every rendition
    from one decode; asked for chunks, it chunks. The two packages are the same streams: the
    same frames, keyframes at the same instants, the same codec strings."""
    source = make_video(media_dir / "whole-ladder.mp4", width=640, height=360, seconds=12, gop=30)
    request = {"source": str(source), "profiles": WHOLE_PROFILES, "segment_seconds": 2}
    whole_id = stack.submit(**request)["job_id"]
    chunked_id = stack.submit(**request, chunk_seconds=4)["job_id"]
    packages = {}
    for job_id in (whole_id, chunked_id):
        view = stack.wait(job_id, timeout=180)
        assert view["status"] == "SUCCEEDED", view
        out_dir = uri_to_path(view["manifests"]["manifest"]).parent
        packages[job_id] = (out_dir, check_package(out_dir, ffmpeg, 12.0, "30/1"))
    (whole_dir, whole), (chunked_dir, chunked) = packages[whole_id], packages[chunked_id]

    assert whole["chunking"]["chunked"] is False, whole["chunking"]
    assert whole["chunking"]["slots"] == 1 and "one encode slot" in whole["chunking"]["reason"]
    assert chunked["chunking"] == {
        "chunked": True, "reason": "chunk_seconds 4 asked", "slots": 1, "chunk_seconds": 4.0
    }  # fmt: skip
    assert "split" not in whole["stage_seconds"] and "split" in chunked["stage_seconds"]

    client = await Client.connect(stack.temporal_address, data_converter=pydantic_data_converter)
    history = await client.get_workflow_handle(whole_id).fetch_history()
    activities = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert activities.count("encode_renditions") == 1, activities
    assert not {"encode_video", "split_source", "assemble"} & set(activities), activities

    for rep, (a, b) in enumerate(zip(whole["renditions"], chunked["renditions"], strict=True)):
        assert (a["name"], a["width"], a["height"]) == (b["name"], b["width"], b["height"])
        assert a["codecs"] == b["codecs"] and a["frame_count"] == b["frame_count"] == 360
        assert keyframe_times(whole_dir, rep) == keyframe_times(chunked_dir, rep)
        assert keyframe_times(whole_dir, rep) == [float(t) for t in range(0, 12, 2)]
        assert a["bitrate_kbps"] == pytest.approx(b["bitrate_kbps"], rel=0.25), (a, b)


# ---------------------------------------------------------------- a worker killed mid-job


@pytest.fixture
def own(tmp_path: Path, media_dir: Path) -> Iterator[Stack]:
    """A dev server and stack of its own: no other worker may take this job's tasks."""
    server = DevServer(tmp_path / "temporal.db")
    server.start()
    stack = Stack(
        data_dir=tmp_path / "data", temporal_address=server.address, source_roots=[media_dir]
    )
    try:
        yield stack
    finally:
        stack.stop_all()
        if server.proc and server.proc.poll() is None:
            server.stop()


def finished_chunks(scratch: Path) -> dict[Path, Path]:
    """Chunk output -> its record, for every chunk output that has its record (committed)."""
    return {
        mp4: mp4.with_name(mp4.name + ".json")
        for mp4 in scratch.glob("video/*/*.mp4")
        if mp4.with_name(mp4.name + ".json").exists()
    }


def chunk_index(path: Path) -> int:
    """``00003-<settings hash>.mp4`` (or ``.part``, while ffmpeg writes it) -> 3."""
    return int(path.name.split("-", 1)[0])


def mtimes(paths: list[Path]) -> dict[Path, int | None]:
    found: dict[Path, int | None] = {}
    for path in paths:
        try:
            found[path] = path.stat().st_mtime_ns
        except FileNotFoundError:
            found[path] = None
    return found


async def chunk_attempts(address: str, job_id: str) -> dict[int, list[tuple[int, bool]]]:
    """Chunk index -> (attempt, reused) of each encode_chunk that completed, from the histories
    of the job's chunk-range children (a started event names the attempt that completed)."""
    client = await Client.connect(address, data_converter=pydantic_data_converter)
    parent = await client.get_workflow_handle(job_id).fetch_history()
    children = [
        e.child_workflow_execution_started_event_attributes.workflow_execution.workflow_id
        for e in parent.events
        if e.event_type == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED
    ]
    found: dict[int, list[tuple[int, bool]]] = {}
    for child in children:
        history = await client.get_workflow_handle(child).fetch_history()
        index: dict[int, int] = {}
        attempt: dict[int, int] = {}
        for e in history.events:
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                scheduled = e.activity_task_scheduled_event_attributes
                if scheduled.activity_type.name == "encode_chunk":
                    request = json.loads(scheduled.input.payloads[0].data)
                    index[e.event_id] = request["chunk"]["index"]
            elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                started = e.activity_task_started_event_attributes
                attempt[started.scheduled_event_id] = started.attempt
            elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                completed = e.activity_task_completed_event_attributes
                if completed.scheduled_event_id in index:
                    result = json.loads(completed.result.payloads[0].data)
                    found.setdefault(index[completed.scheduled_event_id], []).append(
                        (attempt[completed.scheduled_event_id], result["reused"])
                    )
    return found


class Watcher(threading.Thread):
    """Every 0.1 s, the mtime of each watched file; records any that differs from the first
    one seen. A missing file is noted apart (cleanup removes the scratch dir at the end)."""

    def __init__(self, files: dict[Path, int]) -> None:
        super().__init__(daemon=True)
        self.files = files
        self.changes: list[tuple[Path, int, int]] = []
        self.missing: set[Path] = set()
        self.polls = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            for path, mtime in mtimes(list(self.files)).items():
                if mtime is None:
                    self.missing.add(path)
                elif mtime != self.files[path]:
                    self.changes.append((path, self.files[path], mtime))
            self.polls += 1
            self.halt.wait(0.1)


def test_worker_killed_mid_chunked_job_keeps_finished_chunks(
    own: Stack, media_dir: Path, ffmpeg: str
) -> None:
    stack = own
    seconds = 12.0
    source = make_video(
        media_dir / "chunked-kill.mp4", width=640, height=360, seconds=seconds, gop=30
    )
    stack.start_api()
    stack.start_worker()
    profiles = [{"name": "360", "height": 360, "bitrate_kbps": 600, "preset": "medium"}]
    # 1 s chunks on 1 s segments: every keyframe a chunk start forces is a segment start too,
    # which check_package expects (one keyframe per GOP).
    job_id = stack.submit(
        source=str(source),
        profiles=profiles,
        chunk_seconds=1.5,
        min_chunk_seconds=1,
        segment_seconds=1,
    )["job_id"]
    scratch = stack.data_dir / "scratch" / job_id

    # The state query needs a live worker: ask it now, once the chunks are planned.
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        view = stack.job(job_id)
        if view["stage"] not in (None, "queued", "probe", "plan", "route", "split"):
            break
        time.sleep(0.1)
    assert view["status"] == "RUNNING" and view["stage"] == "encode", view
    total = view["renditions"][0]["chunks_total"]
    assert total >= 8, view["renditions"]

    # Kill as soon as two chunks are committed while another is being encoded. The worker is
    # frozen first (SIGSTOP): it cannot commit anything while we look, so what we see is what
    # the kill leaves. Its ffmpeg may finish meanwhile, but only the worker renames a ``.part``.
    worker = stack.procs["worker"]
    done: dict[Path, Path] = {}
    interrupted: set[int] = set()
    while time.monotonic() < deadline:
        if len(finished_chunks(scratch)) >= 2:
            worker.send_signal(signal.SIGSTOP)
            done = finished_chunks(scratch)
            interrupted = {chunk_index(p) for p in scratch.glob("video/*/*.part")}
            if interrupted:
                break
            worker.send_signal(signal.SIGCONT)
        time.sleep(0.005)
    worker.send_signal(signal.SIGKILL)
    stack.procs.pop("worker").wait()
    assert interrupted, f"never caught a chunk mid-encode: {len(done)} of {total} done"
    assert 2 <= len(done) < total, f"{len(done)} of {total} chunks done at the kill"
    before = mtimes([*done, *done.values()])
    assert None not in before.values(), before

    watcher = Watcher({p: m for p, m in before.items() if m is not None})
    watcher.start()
    stages: list[str | None] = []
    try:
        stack.start_worker()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            view = stack.job(job_id)
            stages.append(view["stage"])
            # stage None: no worker answered the state query yet (the new one is replaying)
            if view["status"] in TERMINAL or view["stage"] not in (None, "encode", "assemble"):
                break
            time.sleep(0.1)
    finally:
        watcher.halt.set()
        watcher.join()
    assert view["stage"] in ("package", "publish", "cleanup", "done"), (view, stages)
    assert watcher.polls > 10, "the watcher never ran"
    assert watcher.changes == [], "finished chunks were written again after the restart"
    assert watcher.missing == set() or view["status"] in TERMINAL, watcher.missing

    view = stack.wait(job_id, timeout=120)
    assert view["status"] == "SUCCEEDED", view
    frames = round(seconds * 30)
    (rendition,) = view["renditions"]
    assert rendition["chunks_done"] == rendition["chunks_total"] == total
    assert abs(rendition["frames"] - frames) <= 1, rendition
    check_package(uri_to_path(view["manifests"]["hls"]).parent, ffmpeg, seconds, "30/1")
    assert not scratch.exists()

    # Each chunk completed once. The chunks the kill interrupted ran again on the new worker.
    # A chunk committed before the kill never encoded again: it completed on its first
    # attempt, or (its completion lost with the worker) a retry found it whole and reused it.
    attempts = asyncio.run(chunk_attempts(stack.temporal_address, job_id))
    assert sorted(attempts) == list(range(total)), attempts
    assert all(len(runs) == 1 for runs in attempts.values()), attempts
    for i in interrupted:
        ((attempt, reused),) = attempts[i]
        assert attempt > 1 and not reused, (i, attempts)
    committed = {chunk_index(p) for p in done}
    reencoded = {i for i in committed if attempts[i][0][0] > 1 and not attempts[i][0][1]}
    assert reencoded == set(), (reencoded, attempts)


def test_resubmitting_a_terminated_chunked_job_resumes_it(
    stack: Stack, media_dir: Path, ffmpeg: str
) -> None:
    """An operator terminates a job (no compensation runs); the same request, sent again,
    starts a new run of the same job ID that takes the split and the finished chunks as
    they are and encodes only the rest."""
    seconds = 10.0
    source = make_video(
        media_dir / "chunked-resume.mp4", width=640, height=360, seconds=seconds, gop=30
    )
    body = {
        "source": str(source),
        "profiles": [{"name": "360", "height": 360, "bitrate_kbps": 600, "preset": "medium"}],
        "chunk_seconds": 1,
        "segment_seconds": 1,
    }
    job_id = stack.submit(**body)["job_id"]
    scratch = stack.data_dir / "scratch" / job_id
    deadline = time.monotonic() + 90
    while len(finished_chunks(scratch)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)

    async def terminate() -> None:
        client = await Client.connect(stack.temporal_address)
        await client.get_workflow_handle(job_id).terminate(reason="operator: resume test")

    asyncio.run(terminate())
    assert stack.job(job_id)["status"] == "FAILED"
    # The terminated run's encodes stop at their next heartbeat; then nothing writes.
    deadline = time.monotonic() + 30
    while list(scratch.glob("video/*/*.part")) and time.monotonic() < deadline:
        time.sleep(0.1)
    done = finished_chunks(scratch)
    plan = scratch / "chunks" / "plan.json"
    before = mtimes([plan, *done, *done.values()])
    assert len(done) >= 3 and None not in before.values(), before

    watcher = Watcher({p: m for p, m in before.items() if m is not None})
    watcher.start()
    try:
        again = stack.submit(**body)
        assert again["job_id"] == job_id and not again["deduplicated"], again
        while time.monotonic() < deadline + 90:
            view = stack.job(job_id)
            if view["status"] in TERMINAL or view["stage"] in ("package", "publish", "cleanup"):
                break
            time.sleep(0.1)
    finally:
        watcher.halt.set()
        watcher.join()
    assert watcher.changes == [], "the split and the finished chunks were not redone"
    view = stack.wait(job_id, timeout=120)
    assert view["status"] == "SUCCEEDED", view
    check_package(uri_to_path(view["manifests"]["hls"]).parent, ffmpeg, seconds, "30/1")
    attempts = asyncio.run(chunk_attempts(stack.temporal_address, job_id))
    reused = {i for i, runs in attempts.items() if runs[-1][1]}
    assert {chunk_index(p) for p in done} <= reused, (attempts, sorted(done))
