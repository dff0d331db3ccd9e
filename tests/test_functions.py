"""Stratum functions: the catalog, the decorator, plugins, the built-ins on real media, the
API's list, and command functions under their limits."""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from app.api import main
from app.core.settings import Settings
from app.storage.local import uri_to_path
from app.stratum.catalog import (
    CONTEXT_FIELDS,
    TAKEN,
    FunctionError,
    FunctionSpec,
    bind,
    catalog,
    describe,
    function,
    load_plugins,
    output_file_uri,
    spec_of,
)
from app.stratum.commands import (
    CommandSpec,
    CommandStore,
    RunCommandInput,
    command_activity,
    run_command,
)
from app.stratum.queues import CPU_QUEUE, CUDA_QUEUE
from app.stratum.registry import cpu_activities, gpu_activities
from tests.media_checks import check_package, picture_size
from tests.stack import Stack
from tests.webhook_receiver import SECRET, Receiver

SEED = ["probe-source", "encode-segment", "mux-final", "publish-manifest", "notify-oncall"]


@pytest.fixture
def settings(tmp_path: Path, media_dir: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        source_roots=str(media_dir),
        heartbeat_timeout_s=20,
        webhook_allowed_hosts="127.0.0.1",
        webhook_secret=SECRET,
    )


def activity_name(fn: Any) -> str | None:
    return activity._Definition.must_from_callable(fn).name


async def call(settings: Settings, name: str, **fields: Any) -> dict[str, Any]:
    """A function as the runtime calls it: by name, a JSON object in, a JSON object out (the
    model validation and dump stand in for Temporal's pydantic converter)."""
    spec = catalog(settings, implementations=True)[name]
    assert spec.implementation is not None
    arg = spec.input.model_validate(json.loads(json.dumps(fields)))
    result = await ActivityEnvironment().run(spec.implementation, arg)
    assert isinstance(result, spec.output)
    return dict(result.model_dump(mode="json"))


# ---------------------------------------------------------------- the catalog


def test_the_catalog_lists_the_seeds_functions_with_their_schemas(settings: Settings) -> None:
    specs = catalog(settings, implementations=False)
    assert set(SEED) | {"inspect", "split", "assemble"} <= set(specs)
    for name in SEED:
        spec = specs[name]
        assert spec.implementation is None and spec.origin == "builtin"
        described = describe(spec)
        json.dumps(described)  # plain JSON
        assert described["name"] == name and described["task_queue"] == CPU_QUEUE
        assert described["input_schema"]["type"] == "object"
        assert "job_id" in described["input_schema"]["properties"]
        assert set(described["context"]) <= set(CONTEXT_FIELDS)
    segment = describe(specs["encode-segment"])
    assert {"source", "probe", "profile", "codec", "segment_seconds", "scratch_uri"} <= set(
        segment["input_schema"]["properties"]
    )
    assert segment["consumes"] == {"probe": "probe-source"}
    assert segment["shape"] == {"cpu_threads": 2, "memory_mib": 1024, "gpu_sessions": 0}
    assert {"rendition", "media"} <= set(segment["output_schema"]["properties"])
    assert describe(specs["mux-final"])["consumes"] == {
        "probe": "probe-source",
        "videos": "encode-segment",
    }
    assert describe(specs["publish-manifest"])["consumes"] == {
        "package": "mux-final",
        "videos": "encode-segment",
        "probe": "probe-source",
    }
    assert specs["notify-oncall"].idempotent is False
    assert specs["encode-segment"].heartbeat_s and specs["probe-source"].heartbeat_s is None


def test_workers_serve_every_function_of_their_pool_under_unique_names(
    settings: Settings,
) -> None:
    acts = cpu_activities(settings, client=None)  # type: ignore[arg-type]
    names = [activity_name(fn) for fn in acts]
    named = [n for n in names if n is not None]
    assert len(named) == len(set(named)), named
    assert names.count(None) == 1, "the dynamic activity that serves command functions"
    specs = catalog(settings, implementations=True)
    assert {s.name for s in specs.values() if s.pool == "cpu"} | {"run-command"} <= set(named)
    assert set(named) - set(specs) - {"run-command"} | {"assemble"} == TAKEN
    assert all(activity_name(fn) for fn in gpu_activities(settings, CUDA_QUEUE))


# ---------------------------------------------------------------- the decorator


class Numbers(BaseModel):
    job_id: str
    values: list[int]


class Total(BaseModel):
    total: int
    job_id: str


@function("add-up", input=Numbers, output=Total, timeout_s=30)
async def add_up(input: Numbers) -> Total:
    """Add the numbers up."""
    return Total(total=sum(input.values), job_id=input.job_id)


@workflow.defn(sandboxed=False)
class CallByName:
    @workflow.run
    async def run(self, name: str, arg: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await workflow.execute_activity(
            name, arg, task_queue="functions-test", start_to_close_timeout=timedelta(seconds=30)
        )
        return result


async def test_the_decorator_makes_a_temporal_activity_of_that_name(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    spec = spec_of(add_up)
    assert isinstance(spec, FunctionSpec)
    assert (spec.name, spec.input, spec.output, spec.timeout_s) == ("add-up", Numbers, Total, 30)
    assert spec.description == "Add the numbers up." and spec.implementation is add_up
    assert activity_name(add_up) == "add-up"
    assert await ActivityEnvironment().run(add_up, Numbers(job_id="j", values=[1, 2])) == Total(
        total=3, job_id="j"
    )
    # the runtime's contract: the activity by name, a JSON object in and out
    client: Client = time_skipping_env.client
    async with Worker(
        client,
        task_queue="functions-test",
        workflows=[CallByName],
        activities=[add_up],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        result = await client.execute_workflow(
            CallByName.run,
            args=["add-up", {"job_id": "run-1", "values": [2, 3, 4]}],
            id=f"call-{uuid.uuid4().hex[:8]}",
            task_queue="functions-test",
        )
    assert result == {"total": 9, "job_id": "run-1"}


class BadContext(BaseModel):
    job_id: int


@pytest.mark.parametrize(
    ("declare", "words"),
    [
        (lambda: function("Bad_Name", input=Numbers, output=Total), "lowercase words"),
        (lambda: function("ok-name", input=dict, output=Total), "pydantic model"),  # type: ignore[arg-type]
        (lambda: function("ok-name", input=BadContext, output=Total), "filled by the runtime"),
        (lambda: function("ok-name", input=Numbers, output=Total, pool="tpu"), "pool"),  # type: ignore[arg-type]
        (lambda: function("ok-name", input=Numbers, output=Total, timeout_s=0), "positive"),
        (
            lambda: function("ok-name", input=Numbers, output=Total, consumes={"nope": "x"}),
            "unknown input fields",
        ),
    ],
)
def test_the_decorator_refuses_bad_declarations(declare: Any, words: str) -> None:
    async def fn(input: Any) -> Any:
        return input

    with pytest.raises(FunctionError, match=words):
        declare()(fn)


def test_the_decorator_takes_only_async_functions() -> None:
    with pytest.raises(FunctionError, match="async def"):
        function("sync-one", input=Numbers, output=Total)(lambda input: input)  # type: ignore[arg-type, return-value]


# ---------------------------------------------------------------- plugins


def fake_distribution(
    root: Path, name: str, points: dict[str, str], modules: dict[str, str]
) -> Path:
    """An installed distribution as pip leaves one: a dist-info with entry points, modules."""
    info = root / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    lines = "".join(f"{k} = {v}\n" for k, v in points.items())
    (info / "entry_points.txt").write_text(f"[cosmos.functions]\n{lines}")
    for module, text in modules.items():
        (root / f"{module}.py").write_text(text)
    return root


CLASH = """
from pydantic import BaseModel
from app.stratum.catalog import function

class In(BaseModel):
    job_id: str

@function("probe-source", input=In, output=In)
async def mine(input: In) -> In:
    return input

@function("package", input=In, output=In)
async def package(input: In) -> In:
    return input

@function("fine-one", input=In, output=In)
async def fine(input: In) -> In:
    return input
"""


def test_a_broken_plugin_is_skipped_with_one_clear_line(
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    root = fake_distribution(
        tmp_path / "site",
        "broken-functions",
        {
            "explodes": "broken_boom:functions",
            "not-functions": "broken_number:functions",
            "missing": "broken_nowhere:functions",
            "clash": "broken_clash",
        },
        {
            "broken_boom": "raise RuntimeError('boom at import')\n",
            "broken_number": "functions = 42\n",
            "broken_clash": CLASH,
        },
    )
    monkeypatch.syspath_prepend(str(root))
    caplog.set_level(logging.ERROR, logger="cosmos.functions")
    specs = load_plugins()
    assert sorted(s.name for s in specs) == ["fine-one", "package", "probe-source"]
    assert {s.origin for s in specs} == {"broken-functions"}
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 3, skipped
    assert any("explodes" in m and "RuntimeError: boom at import" in m for m in skipped)
    assert any("not-functions" in m and "names a int" in m for m in skipped)
    assert any("missing" in m and "ModuleNotFoundError" in m for m in skipped)
    assert all("\n" not in m for m in skipped)

    caplog.clear()
    found = catalog(settings, implementations=True)
    assert found["probe-source"].origin == "builtin", "built-ins win"
    assert "package" not in found, "today's activity names are taken"
    assert found["fine-one"].origin == "broken-functions"
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert any("probe-source" in m and "taken by builtin" in m for m in refused), refused
    assert any("package" in m and "activity of the encode pipeline" in m for m in refused)
    # and a worker still starts with every function it can serve
    names = [activity_name(fn) for fn in cpu_activities(settings, client=None)]  # type: ignore[arg-type]
    assert "fine-one" in names and names.count("probe-source") == 1


def test_the_catalog_sees_the_installed_plugin(
    settings: Settings, plugin_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "thumbnail-strip" not in catalog(settings, implementations=False)
    monkeypatch.syspath_prepend(str(plugin_dir))
    spec = catalog(settings, implementations=False)["thumbnail-strip"]
    assert spec.origin == "cosmos-thumbnail-strip" and spec.implementation is None
    described = describe(spec)
    frames = described["input_schema"]["properties"]["frames"]
    assert (frames["minimum"], frames["maximum"]) == (2, 16)
    assert described["consumes"] == {"probe": "probe-source"}
    assert {"uri", "width", "height", "frames"} <= set(described["output_schema"]["properties"])


async def test_the_plugin_makes_a_strip_of_the_right_size(
    settings: Settings, plugin_dir: Path, media_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(plugin_dir))
    fields = {
        "job_id": "job-strip",
        "scratch_uri": settings.resolved_scratch_uri,
        "output_uri": settings.resolved_output_uri,
        "source": str(media_dir / "basic.mp4"),
        "frames": 5,
        "width": 100,
    }
    out = await call(settings, "thumbnail-strip", **fields)
    assert out["uri"] == output_file_uri(
        settings.resolved_output_uri, "job-strip", "thumbnail-strip", "strip.jpg"
    )
    # 320x180 at 100 wide: 56 high (even), five of them in a row
    assert (out["width"], out["height"], out["frames"]) == (500, 56, 5)
    assert picture_size(uri_to_path(out["uri"])) == (500, 56, "mjpeg")
    with pytest.raises(Exception, match="less than or equal to 16"):
        await call(settings, "thumbnail-strip", **(fields | {"frames": 17}))
    anamorphic = await call(
        settings, "thumbnail-strip", **(fields | {"source": str(media_dir / "anamorphic.mp4")})
    )
    assert (anamorphic["width"], anamorphic["height"]) == (500, 76)  # 4:3 display, square


# ---------------------------------------------------------------- the built-ins on real media


async def test_the_seed_pipeline_makes_the_encode_package(
    settings: Settings,
    media_dir: Path,
    ffmpeg: str,
    plugin_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """probe-source → encode-segment per profile → mux-final → publish-manifest, each a real
    activity: the HLS + DASH + manifest.json of POST /v1/encode (a profile that would upscale
    dropped and reported), and a plugin's file written before publishing kept."""
    monkeypatch.syspath_prepend(str(plugin_dir))
    source = str(media_dir / "basic.mp4")
    run = {
        "job_id": "job-seed",
        "scratch_uri": settings.resolved_scratch_uri,
        "output_uri": settings.resolved_output_uri,
        "source": source,
    }
    probe = await call(settings, "probe-source", job_id=run["job_id"], source=source)
    assert probe["video"]["width"] == 320
    profiles: list[Any] = [
        {"name": "small", "height": 144, "bitrate_kbps": 200},
        {"name": "medium", "height": 180, "bitrate_kbps": 300},
        "720p",
    ]
    context = {k: run[k] for k in ("job_id", "scratch_uri", "source")}
    videos = [
        await call(settings, "encode-segment", **context, probe=probe, profile=p, segment_seconds=1)
        for p in profiles
    ]
    assert [v["rendition"] and v["rendition"]["height"] for v in videos] == [144, 180, None]
    assert videos[2]["dropped"] == {"name": "720p", "reason": "720p would upscale a 180p source"}
    strip = await call(settings, "thumbnail-strip", **run, probe=probe, frames=3, width=64)
    package = await call(
        settings, "mux-final", **context, probe=probe, videos=videos, segment_seconds=1,
        thumbnails={"interval_s": 1, "width": 64},
    )  # fmt: skip
    assert package["staging_uri"].endswith("/job-seed/package")
    assert [t["name"] for t in package["audio_tracks"]] == ["audio-und"]
    manifests = await call(
        settings, "publish-manifest", job_id=run["job_id"], output_uri=run["output_uri"],
        source=source, probe=probe, videos=videos, package=package,
    )  # fmt: skip
    out = uri_to_path(settings.resolved_output_uri) / "job-seed"
    assert manifests["manifest"] == (out / "manifest.json").as_uri()
    manifest = check_package(out, ffmpeg, probe["duration_s"], probe["video"]["frame_rate"])
    assert [r["name"] for r in manifest["renditions"]] == ["medium", "small"]
    assert manifest["dropped"] == [videos[2]["dropped"]]
    assert manifest["audio"]["name"] == "audio-und" and manifest["thumbnails"]
    assert manifest["source"]["uri"] == (media_dir / "basic.mp4").as_uri()
    assert picture_size(uri_to_path(strip["uri"]))[:2] == (192, 36), "kept by publishing"

    # once more, as retries after a lost completion: nothing encoded or published again
    again = await call(
        settings, "publish-manifest", job_id=run["job_id"], output_uri=run["output_uri"],
        source=source, probe=probe, videos=videos, package=package,
    )  # fmt: skip
    assert again == manifests and not (out / "files" / "files").exists()
    again = await call(settings, "encode-segment", **context, probe=probe, profile=profiles[0],
                       segment_seconds=1)  # fmt: skip
    assert again == videos[0]


async def test_probe_source_refuses_a_source_outside_the_roots(
    settings: Settings, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere.mp4"
    outside.write_bytes(b"x" * 100)
    with pytest.raises(ApplicationError, match="outside the allowed roots") as info:
        await call(settings, "probe-source", job_id="job-out", source=str(outside))
    assert info.value.non_retryable and info.value.type == "InvalidSource"
    with pytest.raises(ApplicationError, match="scheme 'http' is not allowed"):
        await call(settings, "probe-source", job_id="job-out", source="http://example.com/a.mp4")


async def test_notify_oncall_logs_and_calls_the_jobs_webhook(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with Receiver() as receiver:
        await _notify_oncall(settings, caplog, receiver)


async def _notify_oncall(
    settings: Settings, caplog: pytest.LogCaptureFixture, receiver: Receiver
) -> None:
    url = receiver.url
    error = {"type": "FfmpegError", "message": "ffmpeg failed: out of cheese"}
    caplog.set_level(logging.ERROR, logger="cosmos.functions")
    quiet = await call(settings, "notify-oncall", job_id="job-n", error=error, webhook_url=None)
    assert quiet == {"notified": False}
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert lines == ["job job-n failed: FfmpegError: ffmpeg failed: out of cheese"]
    loud = await call(
        settings, "notify-oncall", job_id="job-n", error=error, webhook_url=url,
        step="encode-segment",
    )  # fmt: skip
    assert loud == {"notified": True}
    assert receiver.forged == 0, "signed with the workers' COSMOS_WEBHOOK_SECRET"
    (event,) = receiver.events
    assert (event["type"], event["job_id"]) == ("job.failed", "job-n")
    assert event["data"] == {"status": "FAILED", "step": "encode-segment", "error": error}
    with pytest.raises(ApplicationError, match="private, loopback"):
        await call(
            settings.model_copy(update={"webhook_allowed_hosts": ""}),
            "notify-oncall", job_id="job-n", error=error, webhook_url=url,
        )  # fmt: skip


# ---------------------------------------------------------------- the API


def words(text: str) -> list[str]:
    return text.split()


SCALE: dict[str, Any] = {
    "name": "scale-frame",
    "description": "One frame of the input, scaled, as PNG.",
    "program": "ffmpeg",
    "args": words(
        "-threads 1 -i {source} -frames:v 1 -s {size} -filter_threads 1 -threads 1 {image}"
    ),
    "params": {
        "source": {"type": "input"},
        "size": {"type": "enum", "choices": ["64x36", "160x90"], "default": "64x36"},
        "image": {"type": "output", "file": "frame.png"},
    },
    "memory_mb": 1024,
    "timeout_s": 60,
}


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    keyed = settings.model_copy(update={"api_keys": "user-key", "admin_api_keys": "admin-key"})
    with TestClient(main.create_app(keyed)) as client:
        yield client


def test_get_functions_lists_every_function(api: TestClient) -> None:
    assert api.get("/v1/functions").status_code == 401
    response = api.get("/v1/functions", headers={"X-API-Key": "user-key"})
    assert response.status_code == 200
    listed = {f["name"]: f for f in response.json()["functions"]}
    assert set(SEED) <= set(listed)
    assert listed["probe-source"]["input_schema"]["properties"]["source"]["type"] == "string"
    assert listed["mux-final"]["origin"] == "builtin"
    assert "run-command" not in listed, "only registered templates run as commands"
    assert api.get("/v1/functions", headers={"X-API-Key": "admin-key"}).status_code == 200


@pytest.mark.e2e
def test_the_running_api_lists_what_the_running_worker_serves(stack: Stack) -> None:
    with stack.http() as http:
        response = http.get("/v1/functions")
    assert response.status_code == 200, response.text
    names = {f["name"] for f in response.json()["functions"]}
    assert set(SEED) <= names
    log = (stack.data_dir / "worker.log").read_text()
    assert "cpu functions: probe-source (builtin), inspect (builtin)" in log


def test_only_an_admin_registers_a_command_function(api: TestClient) -> None:
    assert api.post("/v1/functions", json=SCALE).status_code == 401
    user = api.post("/v1/functions", json=SCALE, headers={"X-API-Key": "user-key"})
    assert user.status_code == 403 and "admin" in user.json()["detail"]
    admin = {"Authorization": "Bearer admin-key"}
    created = api.post("/v1/functions", json=SCALE, headers=admin)
    assert created.status_code == 201, created.text
    assert (
        created.json()["origin"] == "command" and created.json()["command"]["program"] == "ffmpeg"
    )
    assert api.post("/v1/functions", json=SCALE, headers=admin).status_code == 200
    changed = api.post("/v1/functions", json=SCALE | {"timeout_s": 5}, headers=admin)
    assert changed.status_code == 409
    taken = api.post("/v1/functions", json=SCALE | {"name": "mux-final"}, headers=admin)
    assert taken.status_code == 409 and "builtin" in taken.json()["detail"]
    listed = {f["name"]: f for f in api.get("/v1/functions", headers=admin).json()["functions"]}
    scale = listed["scale-frame"]
    assert scale["origin"] == "command" and scale["task_queue"] == CPU_QUEUE
    assert scale["shape"]["memory_mib"] == 1024
    properties = scale["input_schema"]["properties"]
    assert set(properties) == {"source", "size", "job_id", "scratch_uri", "output_uri"}
    assert properties["size"]["enum"] == ["64x36", "160x90"]


def test_a_command_function_needs_an_allowed_program(api: TestClient) -> None:
    response = api.post(
        "/v1/functions", json=SCALE | {"program": "sh"}, headers={"X-API-Key": "admin-key"}
    )
    assert response.status_code == 422
    assert "program 'sh' is not allowed" in response.json()["detail"][0]["msg"]


def with_params(**params: Any) -> dict[str, Any]:
    return SCALE | {"params": SCALE["params"] | params}


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (SCALE | {"args": ["-i", "{source}", "-vf", "scale={size}", "{image}"]},
         "a placeholder must be a whole argument"),
        (SCALE | {"args": ["-i", "{source}", "--size={size}", "{image}"]},
         "never part of an option string"),
        (SCALE | {"args": ["-i", "{source}", "-s", "{nope}", "{size}", "{image}"]},
         "no parameter 'nope'"),
        (SCALE | {"args": ["-i", "{source}", "{image}"]}, "size appear in no argument"),
        (with_params(size={"type": "string"}), "Input should be 'enum', 'int'"),
        (with_params(size={"type": "enum"}), "every enum needs them"),
        (with_params(size={"type": "enum", "choices": ["a", "a"]}), "distinct"),
        (with_params(size={"type": "int", "minimum": 1}), "a minimum and a maximum"),
        (with_params(size={"type": "int", "minimum": 9, "maximum": 1}), "above maximum"),
        (with_params(size={"type": "number", "minimum": 0, "maximum": 1, "default": 2}),
         "within the bounds"),
        (with_params(image={"type": "output", "file": "../frame.png"}), "plain file name"),
        (with_params(image={"type": "output"}), "every output needs one"),
        (with_params(source={"type": "input", "default": "/etc/passwd"}), "has no default"),
        (SCALE | {"program": "/usr/bin/ffmpeg"}, "bare program name"),
        (SCALE | {"name": "Scale_Frame"}, "lowercase words"),
        (SCALE | {"memory_mb": 1}, "greater than or equal to 16"),
        (SCALE | {"timeout_s": 0}, "greater than 0"),
        (SCALE | {"shell": True}, "Extra inputs are not permitted"),
        ({**SCALE, "params": {"job_id": {"type": "input"}},
          "args": ["-i", "{job_id}"]}, "reserved"),
    ],
)  # fmt: skip
def test_templates_that_break_the_rules_are_refused(
    api: TestClient, body: dict[str, Any], words: str
) -> None:
    response = api.post("/v1/functions", json=body, headers={"X-API-Key": "admin-key"})
    assert response.status_code == 422, response.text
    messages = " | ".join(e["msg"] for e in response.json()["detail"])
    assert words in messages


# ---------------------------------------------------------------- command functions run


def command_input(settings: Settings, spec: dict[str, Any], **params: Any) -> RunCommandInput:
    return RunCommandInput(
        spec=CommandSpec.model_validate(spec),
        params=params,
        job_id="job-cmd",
        scratch_uri=settings.resolved_scratch_uri,
        output_uri=settings.resolved_output_uri,
    )


def bound_run_command(settings: Settings) -> Any:
    spec = spec_of(run_command)
    assert spec is not None
    return bind(spec, settings).implementation


async def run_it(settings: Settings, request: RunCommandInput) -> dict[str, Any]:
    result = await ActivityEnvironment().run(bound_run_command(settings), request)
    return dict(result.model_dump(mode="json"))


async def test_a_command_function_runs_under_its_limits(
    settings: Settings, media_dir: Path
) -> None:
    source = str(media_dir / "basic.mp4")
    result = await run_it(settings, command_input(settings, SCALE, source=source, size="160x90"))
    assert result["exit_code"] == 0 and result["seconds"] > 0
    uri = result["outputs"]["image"]
    assert uri == output_file_uri(
        settings.resolved_output_uri, "job-cmd", "scale-frame", "frame.png"
    )
    assert picture_size(uri_to_path(uri)) == (160, 90, "png")
    # the default, and nothing left in the work folder
    small = await run_it(settings, command_input(settings, SCALE, source=source))
    assert picture_size(uri_to_path(small["outputs"]["image"])) == (64, 36, "png")
    assert not any((settings.data_path / "work" / "job-cmd").iterdir())


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"size": "1000x1000"}, "size: Input should be '64x36' or '160x90'"),
        ({"size": "-f"}, "size: Input should be"),
        ({"image": "/tmp/x.png"}, "image: Extra inputs are not permitted"),
        ({"source": "http://example.com/x.mp4"}, "scheme 'http' is not allowed"),
        ({"source": "/etc/passwd"}, "outside the allowed roots"),
        ({}, "source: Field required"),
    ],
)
async def test_a_command_function_checks_its_parameters_again(
    settings: Settings, media_dir: Path, params: dict[str, Any], words: str
) -> None:
    given = {"source": str(media_dir / "basic.mp4")} | params if params else {}
    with pytest.raises(ApplicationError, match=words) as info:
        await run_it(settings, command_input(settings, SCALE, **given))
    assert info.value.non_retryable and info.value.type == "CommandRefused"


async def test_the_memory_limit_is_enforced(settings: Settings, media_dir: Path) -> None:
    """200 MiB of address space is less than the static ffmpeg maps to start."""
    request = command_input(
        settings, SCALE | {"memory_mb": 200}, source=str(media_dir / "basic.mp4")
    )
    with pytest.raises(ApplicationError, match="200 MiB of address space") as info:
        await run_it(settings, request)
    assert info.value.type in ("CommandFailed", "CommandRefused")


LONG = {
    "name": "long-source",
    "program": "ffmpeg",
    "args": words("-re -f lavfi -i testsrc=size=64x64:rate=10:duration=60 -f null -"),
    "memory_mb": 1024,
    "timeout_s": 2,
}


async def test_the_wall_clock_limit_kills_a_run_that_goes_on(settings: Settings) -> None:
    env = ActivityEnvironment()
    beats: list[Any] = []
    env.on_heartbeat = lambda *details: beats.append(details)
    started = time.monotonic()
    with pytest.raises(ApplicationError, match="ran past its wall-clock limit of 2s") as info:
        await env.run(bound_run_command(settings), command_input(settings, LONG))
    assert 2 <= time.monotonic() - started < 6
    assert info.value.type == "CommandTimeout" and info.value.non_retryable
    assert beats, "it heartbeats while it runs"
    found = subprocess.run(["pgrep", "-f", "testsrc=size=64x64:rate=10:duration=60"],
                           capture_output=True)  # fmt: skip
    assert found.returncode == 1, "the process group is dead"


async def test_a_registered_command_is_served_under_its_own_name(
    settings: Settings, media_dir: Path
) -> None:
    """What the pipeline runtime calls: activity ``scale-frame``, ``{params..., context}``."""
    CommandStore(settings).save(CommandSpec.model_validate(SCALE))
    spec = catalog(settings, implementations=False)["scale-frame"]
    assert spec.origin == "command" and spec.implementation is None
    serve = command_activity(settings)
    assert activity_name(serve) is None  # dynamic: every name the worker has no activity for
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, activity_type="scale-frame")
    arg = {
        "source": str(media_dir / "basic.mp4"),
        "size": "160x90",
        "job_id": "job-dyn",
        "scratch_uri": settings.resolved_scratch_uri,
        "output_uri": settings.resolved_output_uri,
        "webhook_url": None,
    }
    spec.input.model_validate({k: v for k, v in arg.items() if k != "webhook_url"})
    result = await env.run(serve, [RawValue(env.payload_converter.to_payload(arg))])
    assert picture_size(uri_to_path(result["outputs"]["image"])) == (160, 90, "png")
    env.info = dataclasses.replace(env.info, activity_type="no-such-step")
    with pytest.raises(ApplicationError, match="no function 'no-such-step'") as info:
        await env.run(serve, [RawValue(env.payload_converter.to_payload(arg))])
    assert info.value.non_retryable
