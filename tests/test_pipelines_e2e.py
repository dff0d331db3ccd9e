"""Plato over HTTP on the real stack: the seed's definition registers and runs as written.

Real dev server, worker and API processes; the seed YAML from the shared folder, real generated
media, and its outputs read back as the encode tests read theirs.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from app.cli.samples import make_video
from app.plato.workflows.pipeline import PipelineWorkflow
from app.plato.workflows.segment import EncodeSegmentWorkflow
from app.storage.local import uri_to_path
from tests.media_checks import check_package, picture_size
from tests.stack import TERMINAL, Stack

pytestmark = pytest.mark.e2e
SEED = Path(__file__).resolve().parents[2] / "shared" / "seed" / "encode-workflow-v3.yaml"
HISTORIES = Path(__file__).parent / "histories"
YAML = {"Content-Type": "application/yaml"}
TINY = [{"name": "180p", "height": 180, "bitrate_kbps": 300}, {"name": "144p", "height": 144,
        "bitrate_kbps": 200}]  # fmt: skip


def register(stack: Stack, text: str) -> tuple[int, dict[str, object]]:
    with stack.http() as http:
        response = http.post("/v1/pipelines", content=text.encode(), headers=YAML)
    return response.status_code, response.json()


async def test_the_seed_registers_and_runs_as_written(
    stack: Stack, media_dir: Path, ffmpeg: str, dev_server: WorkflowEnvironment
) -> None:
    text = SEED.read_text()
    status, first = register(stack, text)
    assert status == 201, first
    assert first["id"] == "encode-workflow-v3"
    assert first["steps"] == ["probe-source", "encode-segment", "mux-final", "publish-manifest",
                              "notify-oncall"]  # fmt: skip
    status, again = register(stack, text)
    assert status == 200 and again["version"] == first["version"]

    with stack.http() as http:
        listed = http.get("/v1/pipelines").json()
        assert [p["id"] for p in listed] == ["encode-workflow-v3"]
        assert (
            http.get("/v1/pipelines/encode-workflow-v3").json()["versions"][0]["version"]
            == (first["version"])
        )
        schema = http.get("/v1/pipelines/schema").json()
        assert "workflow" in json.dumps(schema)
        run = http.post(
            "/v1/pipelines/encode-workflow-v3/runs",
            json={"input": {"source": str(media_dir / "basic.mp4"), "profiles": TINY}},
        )
    assert run.status_code == 202, run.text
    job_id = run.json()["job_id"]
    view = stack.wait(job_id, timeout=180)
    assert view["status"] == "SUCCEEDED", view
    out = uri_to_path(view["manifests"]["manifest"]).parent
    manifest = check_package(out, ffmpeg, 2.0, "30/1")
    assert sorted(r["name"] for r in manifest["renditions"]) == ["144p", "180p"]

    handle = dev_server.client.get_workflow_handle(job_id)
    history = await handle.fetch_history()
    summaries = [
        e.user_metadata.summary.data.decode()
        for e in history.events
        if e.HasField("user_metadata") and e.user_metadata.HasField("summary")
    ]
    assert any("encode-segment [1]" in s for s in summaries), summaries  # the Web UI's names
    replayer = Replayer(workflows=[PipelineWorkflow], data_converter=pydantic_data_converter)
    await replayer.replay_workflow(history)
    if os.environ.get("COSMOS_RECORD_HISTORY"):
        (HISTORIES / "pipeline_seed.json").write_text(json.dumps(history.to_json_dict(), indent=1))

    # The same definition version and input are the same job.
    with stack.http() as http:
        rerun = http.post(
            "/v1/pipelines/encode-workflow-v3/runs",
            json={"input": {"source": str(media_dir / "basic.mp4"), "profiles": TINY}},
        )
    assert rerun.json()["job_id"] == job_id and rerun.json()["deduplicated"]


async def test_the_seeds_encode_segment_is_chunked_over_the_pools_on_a_long_title(
    stack: Stack, media_dir: Path, ffmpeg: str, dev_server: WorkflowEnvironment
) -> None:
    """``encode-segment`` as ``POST /v1/encode`` does it: a title longer than two chunks is
    split on keyframes, its chunks encoded by chunk-range children and assembled, per profile;
    the package is as whole as the short title's."""
    source = make_video(media_dir / "pipeline-long.mp4", width=320, height=180, seconds=9, gop=30)
    status, _ = register(stack, SEED.read_text())
    assert status in (200, 201)
    with stack.http() as http:
        run = http.post(
            "/v1/pipelines/encode-workflow-v3/runs",
            json={"input": {"source": str(source), "profiles": TINY, "chunk_seconds": 3,
                            "min_chunk_seconds": 1}},
        )  # fmt: skip
    assert run.status_code == 202, run.text
    job_id = run.json()["job_id"]
    seen: list[tuple[str, float, str | None]] = []
    deadline = time.monotonic() + 240
    while (view := stack.job(job_id))["status"] not in TERMINAL and time.monotonic() < deadline:
        seen.append((view["status"], view["progress"], view["stage"]))
        time.sleep(0.2)
    assert view["status"] == "SUCCEEDED", view
    progress = [p for _, p, _ in seen]
    assert progress == sorted(progress), f"progress never goes back: {seen}"
    assert any(0 < p < 1 for p in progress), f"a running run reports its progress: {seen}"
    assert "encode-segment" in {stage for _, _, stage in seen}, seen
    manifest = check_package(uri_to_path(view["manifests"]["manifest"]).parent, ffmpeg, 9.0, "30/1")
    assert sorted(r["name"] for r in manifest["renditions"]) == ["144p", "180p"]
    assert all(r["frame_count"] == 270 for r in manifest["renditions"])

    client = dev_server.client
    segments = [
        w async for w in client.list_workflows(
            f'WorkflowType = "EncodeSegmentWorkflow" AND WorkflowId STARTS_WITH "{job_id}-"'
        )
    ]  # fmt: skip
    assert len(segments) == 2, "one per profile"
    chunk_ranges = [
        w async for w in client.list_workflows(
            f'WorkflowType = "ChunkRangeWorkflow" AND WorkflowId STARTS_WITH "{job_id}-"'
        )
    ]  # fmt: skip
    assert len(chunk_ranges) == 2, "each profile's chunks in a chunk-range child"
    child = client.get_workflow_handle(chunk_ranges[0].id)
    encoded = [
        e for e in (await child.fetch_history()).events
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == "encode_chunk"
    ]  # fmt: skip
    assert len(encoded) == 3, "9 s in 3 s chunks"
    segment = await client.get_workflow_handle(segments[0].id).fetch_history()
    replayer = Replayer(workflows=[EncodeSegmentWorkflow], data_converter=pydantic_data_converter)
    await replayer.replay_workflow(segment)
    if os.environ.get("COSMOS_RECORD_HISTORY"):
        (HISTORIES / "encode_segment.json").write_text(json.dumps(segment.to_json_dict(), indent=1))


async def test_a_changed_definition_leaves_the_first_runs_history_replayable(
    stack: Stack, media_dir: Path, dev_server: WorkflowEnvironment
) -> None:
    first_text = "workflow:\n  id: probe-only\n  rules:\n    - when: workflow.started\n      do:\n        - probe-source\n"  # noqa: E501
    status, first = register(stack, first_text)
    assert status == 201, first
    with stack.http() as http:
        run = http.post("/v1/pipelines/probe-only/runs",
                        json={"input": {"source": str(media_dir / "basic.mp4")}})  # fmt: skip
    job_id = run.json()["job_id"]
    assert stack.wait(job_id, timeout=60)["status"] == "SUCCEEDED"
    second_text = (
        first_text + "    - when: probe-source.completed\n      do:\n        - notify-oncall\n"
    )
    status, second = register(stack, second_text)
    assert status == 201 and second["version"] != first["version"]
    with stack.http() as http:
        versions = http.get("/v1/pipelines/probe-only").json()["versions"]
    assert [v["version"] for v in versions] == [first["version"], second["version"]]

    history = await dev_server.client.get_workflow_handle(job_id).fetch_history()
    replayer = Replayer(workflows=[PipelineWorkflow], data_converter=pydantic_data_converter)
    await replayer.replay_workflow(WorkflowHistory.from_json(job_id, history.to_json_dict()))


def test_a_broken_definition_is_refused_with_line_and_column(stack: Stack) -> None:
    text = SEED.read_text().replace("run: encode-segment", "run: encode-segmnt")
    status, body = register(stack, text)
    assert status == 422
    (issue,) = [e for e in body["errors"] if "encode-segmnt" in e["message"]]
    line = next(n for n, t in enumerate(text.splitlines(), 1) if "encode-segmnt" in t)
    assert issue["line"] == line and issue["column"] > 1
    assert "encode-segment" in issue["message"]  # did you mean
    status, body = register(stack, "workflow: [unclosed")
    assert status == 422 and body["errors"][0]["line"] == 1


def test_runs_are_refused_clearly(stack: Stack, media_dir: Path) -> None:
    with stack.http() as http:
        assert http.post("/v1/pipelines/nothing-here/runs", json={"input": {}}).status_code == 404
        register(stack, SEED.read_text())
        outside = http.post(
            "/v1/pipelines/encode-workflow-v3/runs",
            json={"input": {"source": "/etc/passwd", "profiles": TINY}},
        )
        assert outside.status_code == 422 and "input.source" in outside.text
        for version in ("../../../etc/passwd", "sha256:\u0000", "sha256:" + "0" * 64):
            run = http.post(
                "/v1/pipelines/encode-workflow-v3/runs", json={"input": {}, "version": version}
            )
            # not a version: 422 naming it; a well-formed one never registered: 404
            assert run.status_code == (404 if version.endswith("0" * 64) else 422), run.text
        bad_kind = http.post("/v1/pipelines", content=b"x", headers={"Content-Type": "image/png"})
        assert bad_kind.status_code == 415


TEAM = """
workflow:
  id: team-strip
  rules:
    - when: workflow.started
      do:
        - probe-source
    - when: probe-source.completed
      do:
        - fanout:
            for: each profile in input.profiles
            run: encode-segment
        - run: thumbnail-strip
          with: {frames: 4, width: 96}
        - run: scale-frame
          with: {size: "'160x90'"}
    - when: all encode-segment.completed
      do:
        - mux-final
        - publish-manifest
"""


def test_a_teams_plugin_and_command_function_run_beside_the_built_ins(
    tmp_path: Path, media_dir: Path, ffmpeg: str, plugin_dir: Path
) -> None:
    """A function from an installed package (tests/plugins/thumbnail-strip, on the worker's
    and the API's path, as pip would put it) and a command function registered with the admin
    key, in one YAML pipeline with the built-ins; everything read back from the outputs."""
    from tests.test_faults import DevServer
    from tests.test_functions import SCALE

    server = DevServer(tmp_path / "temporal.db")
    server.start()
    stack = Stack(
        data_dir=tmp_path / "data",
        temporal_address=server.address,
        source_roots=[media_dir],
        extra_env={"PYTHONPATH": str(plugin_dir), "COSMOS_ADMIN_API_KEYS": "admin-key"},
    )
    try:
        stack.start_worker()
        stack.start_api()
        with stack.http() as http:
            assert http.post("/v1/functions", json=SCALE).status_code == 401
            created = http.post("/v1/functions", json=SCALE, headers={"X-API-Key": "admin-key"})
            assert created.status_code == 201, created.text
            listed = {f["name"]: f for f in http.get("/v1/functions").json()["functions"]}
            assert listed["thumbnail-strip"]["origin"] == "cosmos-thumbnail-strip"
            assert listed["scale-frame"]["origin"] == "command"
        status, body = register(stack, TEAM)
        assert status == 201, body
        with stack.http() as http:
            run = http.post(
                "/v1/pipelines/team-strip/runs",
                json={"input": {"source": str(media_dir / "basic.mp4"), "profiles": TINY}},
            )
        assert run.status_code == 202, run.text
        view = stack.wait(run.json()["job_id"], timeout=180)
        assert view["status"] == "SUCCEEDED", view
        out = uri_to_path(view["manifests"]["manifest"]).parent
        check_package(out, ffmpeg, 2.0, "30/1")
        (strip,) = (out / "files" / "thumbnail-strip").glob("*.jpg")
        assert picture_size(strip)[:1] == (4 * 96,)
        (frame,) = (out / "files" / "scale-frame").glob("*.png")
        assert picture_size(frame)[:2] == (160, 90)
    finally:
        stack.stop_all()
        server.stop()


def test_the_cli_validates_registers_lists_and_runs(
    stack: Stack, media_dir: Path, tmp_path: Path
) -> None:
    from tests.test_cli import cosmos

    seed = tmp_path / "seed.yaml"
    seed.write_text(SEED.read_text())
    valid = cosmos(stack, "pipeline", "validate", str(seed))
    assert valid.returncode == 0 and "encode-workflow-v3 is valid" in valid.stdout
    broken = tmp_path / "broken.yaml"
    broken.write_text(SEED.read_text().replace("all encode-segment", "all probe-source"))
    refused = cosmos(stack, "pipeline", "validate", str(broken))
    assert refused.returncode == 1
    assert f"{broken}:16:13:" in refused.stderr and "no rule fans it out" in refused.stderr

    registered = cosmos(stack, "pipeline", "register", str(seed))
    assert registered.returncode == 0 and "encode-workflow-v3" in registered.stdout
    listed = cosmos(stack, "pipeline", "list")
    assert "encode-workflow-v3" in listed.stdout and "probe-source" in listed.stdout
    source = json.dumps({"source": str(media_dir / "basic.mp4"), "profiles": TINY[:1]})
    ran = cosmos(stack, "pipeline", "run", "encode-workflow-v3", "--input", source, "--wait")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "SUCCEEDED" in ran.stdout and "HLS:" in ran.stdout
