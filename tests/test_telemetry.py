"""Observability: one trace per job, Prometheus metrics, JSON logs with Temporal's IDs.

Spans are captured in memory from the process's tracer provider, with the real workflow, the real
CPU activities and real ffmpeg on a tiny source, in the time-skipping server (time not skipped:
the client here lacks the environment's skipping interceptor, so ffmpeg runs in real time).
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import socket
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import REGISTRY
from temporalio import activity
from temporalio.client import Client
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Worker

from app.api.main import create_app
from app.api.routers.encode import job_id_for
from app.cli.samples import make_video
from app.core.models import CustomProfile, EncodeJob, EncodeRequest, RetryOptions
from app.core.settings import Settings
from app.core.temporal import connect, data_converter, interceptors
from app.observability.metrics import observe_encode, sample_gpus, setup_metrics
from app.observability.telemetry import JsonFormatter, ffmpeg_attributes, setup_tracing
from app.plato.workflows.encode import EncodeWorkflow
from app.storage.sources import resolve_source
from app.stratum.functions.ffmpeg import FfmpegError, ffmpeg_binary, run_ffmpeg
from app.stratum.queues import CPU_QUEUE, WORKFLOW_QUEUE
from app.stratum.registry import cpu_activities


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    """The process's provider (``setup_tracing`` is idempotent: the one the API and workers
    use), with an in-memory exporter added for this module."""
    provider = setup_tracing("cosmos-test")
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _job(settings: Settings, source: Path) -> EncodeJob:
    """As ``POST /v1/encode`` builds it (app/api/routers/encode.py)."""
    request = EncodeRequest(
        source=str(source),
        profiles=[CustomProfile(name="s", height=144, bitrate_kbps=100, preset="ultrafast")],
        accelerator="cpu",
    )
    source_uri = resolve_source(
        request.source, settings.allowed_source_roots, settings.source_bucket_set
    )
    return EncodeJob(
        job_id=job_id_for(request, source_uri, None),
        source_uri=source_uri,
        profiles=request.profiles,
        codec=request.codec,
        segment_seconds=request.segment_seconds,
        output_uri=settings.resolved_output_uri,
        scratch_uri=settings.resolved_scratch_uri,
        retry=RetryOptions(max_attempts=1),
        heartbeat_timeout_s=settings.heartbeat_timeout_s,
        accelerator=request.accelerator,
        gpu_schedule_to_start_s=settings.gpu_schedule_to_start_s,
    )


async def test_one_trace_per_job_down_to_ffmpeg(
    time_skipping_env: WorkflowEnvironment, tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    settings = Settings(data_dir=tmp_path / "data", source_roots=str(tmp_path))
    source = make_video(tmp_path / "in.mp4", width=256, height=144, seconds=1)
    config = time_skipping_env.client.config()
    client = Client(
        config["service_client"],
        namespace=config["namespace"],
        data_converter=data_converter(settings),
        interceptors=interceptors(),  # what app/core/temporal.py's connect() installs
    )
    job = _job(settings, source)
    waits_before = _sample(
        "cosmos_activity_queue_wait_seconds_count",
        activity_type="probe_source",
        task_queue=CPU_QUEUE,
    )
    async with (
        Worker(client, task_queue=WORKFLOW_QUEUE, workflows=[EncodeWorkflow]),
        Worker(client, task_queue=CPU_QUEUE, activities=cpu_activities(settings, client)),
    ):
        handle = await client.start_workflow(
            EncodeWorkflow.run, job, id=job.job_id, task_queue=WORKFLOW_QUEUE
        )
        result = await handle.result()
    assert result.job_id == job.job_id

    spans = exporter.get_finished_spans()
    (start,) = [
        s
        for s in spans
        if s.name == "StartWorkflow:EncodeWorkflow"
        and (s.attributes or {}).get("temporalWorkflowID") == job.job_id
    ]
    assert start.context is not None
    trace_id = start.context.trace_id
    ours = [s for s in spans if s.context is not None and s.context.trace_id == trace_id]
    by_id = {s.context.span_id: s for s in ours if s.context is not None}
    names = [s.name for s in ours]
    assert "RunWorkflow:EncodeWorkflow" in names
    runs = [s for s in ours if s.name.startswith("RunActivity:")]
    types_run = {s.name.split(":", 1)[1] for s in runs}
    assert {
        "probe_source",
        "plan_renditions",
        "route_encodes",
        "encode_video",
        "encode_audio",
        "package",
        "publish_manifest",
    } <= types_run, types_run
    # Every activity of the job is in the job's trace, not in a trace of its own.
    job_runs = [
        s
        for s in spans
        if s.name.startswith("RunActivity:")
        and (s.attributes or {}).get("temporalWorkflowID") == job.job_id
    ]
    assert {s.context.trace_id for s in job_runs if s.context} == {trace_id}

    ffmpegs = [s for s in ours if s.name == "ffmpeg"]
    assert len(ffmpegs) == 4  # the rendition, its decode check, the audio, the packaging
    for span in ffmpegs:
        assert span.parent is not None
        assert by_id[span.parent.span_id].name.startswith("RunActivity:")
        assert span.status.status_code != StatusCode.ERROR
    attrs = {_attr(s, "ffmpeg.label"): s.attributes or {} for s in ffmpegs}
    assert set(attrs) == {"s", "check s", "audio-und", "package"}
    video = attrs["s"]
    assert video["ffmpeg.video_encoder"] == "libx264"
    assert video["ffmpeg.format"] == "tee"  # the MP4, and its packets to the decode check
    assert video["ffmpeg.input_format"] == "mov"
    assert attrs["check s"]["ffmpeg.input_format"] == "h264"
    assert video["ffmpeg.inputs"] == 1
    assert isinstance(video["ffmpeg.args"], int) and video["ffmpeg.args"] > 10
    assert attrs["audio-und"]["ffmpeg.audio_encoder"] == "aac"
    assert attrs["package"]["ffmpeg.format"] == "dash"
    for span_attrs in attrs.values():  # shapes, never the customer's paths
        assert not any(str(tmp_path) in str(v) for v in span_attrs.values())

    # The activities' metrics came through the same run.
    assert (
        _sample(
            "cosmos_activity_queue_wait_seconds_count",
            activity_type="probe_source",
            task_queue=CPU_QUEUE,
        )
        == waits_before + 1
    )
    assert _sample("cosmos_encode_seconds_count", rendition="s", activity="encode_video") >= 1


def _attr(span: ReadableSpan, key: str) -> Any:
    return (span.attributes or {}).get(key)


async def test_failed_ffmpeg_span_is_an_error_without_paths(
    tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    missing = tmp_path / "secret-customer-file.mp4"
    with pytest.raises(FfmpegError):
        await run_ffmpeg(
            ["-i", f"file:{missing}", "-c:v", "libx264", "-f", "mp4", str(tmp_path / "o.mp4")],
            binary=ffmpeg_binary(),
            total_s=1.0,
            stall_timeout_s=10,
            label="broken",
        )
    (span,) = [s for s in exporter.get_finished_spans() if _attr(s, "ffmpeg.label") == "broken"]
    assert span.status.status_code == StatusCode.ERROR
    assert span.status.description == "FfmpegError"
    assert not span.events  # no exception event: ffmpeg's message names the path
    assert "secret-customer-file" not in json.dumps(dict(span.attributes or {}))


def test_ffmpeg_attributes_describe_shape() -> None:
    args = [
        "-y",
        "-hwaccel",
        "cuda",
        "-f",
        "mov",
        "-i",
        "file:/x/in.mov",
        "-c:v",
        "h264_nvenc",
        "-b:v",
        "1000k",
        "-f",
        "mp4",
        "/x/out.mp4",
    ]
    assert ffmpeg_attributes(args, "720p") == {
        "ffmpeg.label": "720p",
        "ffmpeg.args": len(args),
        "ffmpeg.inputs": 1,
        "ffmpeg.video_encoder": "h264_nvenc",
        "ffmpeg.format": "mp4",
        "ffmpeg.input_format": "mov",
        "ffmpeg.hwaccel": "cuda",
    }


async def test_api_request_gets_a_server_span_and_submissions_are_counted(
    tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    app = create_app(Settings(data_dir=tmp_path))
    rejected = _sample("cosmos_jobs_submitted_total", outcome="rejected", status_code="422")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        assert (await http.get("/openapi.json")).status_code == 200
        assert (await http.post("/v1/encode", json={"profiles": []})).status_code == 422
    servers = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert any(s.name == "GET /openapi.json" for s in servers), [s.name for s in servers]
    assert any(s.name == "POST /v1/encode" for s in servers)
    after = _sample("cosmos_jobs_submitted_total", outcome="rejected", status_code="422")
    assert after == rejected + 1


def _free_port_pair() -> int:
    """A port P with P + 1 free too: the project's metrics and Temporal's."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port >= 65535:
            continue
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("0.0.0.0", port))
                b.bind(("0.0.0.0", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair")


async def test_metrics_endpoints_serve_project_and_sdk_metrics(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    port = _free_port_pair()
    target = time_skipping_env.client.service_client.config.target_host
    settings = Settings(metrics_port=port, temporal_address=target)
    setup_metrics(settings.metrics_port)
    setup_metrics(settings.metrics_port)  # idempotent: a second app in the process
    observe_encode("t-1080p", "encode_video", 12.5, 3.0)  # what ActivityBase.ffmpeg records
    await connect(settings)  # the client's runtime serves the SDK's metrics on port + 1
    async with httpx.AsyncClient() as http:
        ours = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
        sdk = await http.get(f"http://127.0.0.1:{port + 1}/metrics")
    assert 'cosmos_encode_seconds_count{activity="encode_video",rendition="t-1080p"} 1.0' in ours
    assert 'cosmos_encode_seconds_sum{activity="encode_video",rendition="t-1080p"} 12.5' in ours
    assert (
        'cosmos_encode_speed_ratio_bucket{activity="encode_video",le="4.0",rendition="t-1080p"} 1.0'
        in ours
    )
    for name in (
        "cosmos_jobs_submitted_total",
        "cosmos_activity_queue_wait_seconds",
        "cosmos_gpu_utilization_ratio",
    ):
        assert f"# HELP {name.removesuffix('_total')}" in ours
    assert sdk.status_code == 200
    assert 'temporal_request{operation="GetSystemInfo"' in sdk.text


def test_gpu_utilisation_from_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sampling code path with NVML's answers recorded (the GPU worker runs it for real)."""

    class NVMLError(Exception):
        pass

    def unsupported(handle: object) -> tuple[int, int]:
        raise NVMLError("Not Supported")

    fake = types.SimpleNamespace(
        NVMLError=NVMLError,
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=73, memory=10),
        nvmlDeviceGetEncoderUtilization=lambda h: (40, 167000),
        nvmlDeviceGetDecoderUtilization=unsupported,
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    sample_gpus([(7, object())])
    assert _sample("cosmos_gpu_utilization_ratio", gpu="7", engine="sm") == pytest.approx(0.73)
    assert _sample("cosmos_gpu_utilization_ratio", gpu="7", engine="encoder") == pytest.approx(0.4)
    assert (
        REGISTRY.get_sample_value("cosmos_gpu_utilization_ratio", {"gpu": "7", "engine": "decoder"})
        is None
    )


async def test_json_logs_carry_temporal_ids() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    plain = logging.getLogger("cosmos.test.plain")
    loggers = [activity.logger.base_logger, plain]
    for logger in loggers:
        logger.addHandler(handler)
    old_level = activity.logger.base_logger.level
    activity.logger.base_logger.setLevel(logging.INFO)
    plain.setLevel(logging.INFO)

    @activity.defn(name="encode_video")
    async def encode_video(rendition: str) -> None:
        activity.logger.info("encoding %s", rendition, extra={"rendition": rendition})
        plain.warning("a line from a plain logger")

    env = ActivityEnvironment()
    env.info = dataclasses.replace(
        env.info,
        activity_id="7",
        activity_type="encode_video",
        workflow_id="enc-abc",
        workflow_run_id="run-1",
        workflow_type="EncodeWorkflow",
    )
    try:
        await env.run(encode_video, "720p")
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
        activity.logger.base_logger.setLevel(old_level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 2
    for line in lines:
        assert line["job_id"] == line["workflow_id"] == "enc-abc"
        assert line["run_id"] == "run-1"
        assert line["activity_id"] == "7"
        assert line["activity_type"] == "encode_video"
        assert line["workflow_type"] == "EncodeWorkflow"
        assert "temporal_activity" not in line
    assert lines[0]["message"].startswith("encoding 720p")
    assert lines[0]["rendition"] == "720p" and lines[0]["level"] == "INFO"
    assert lines[1]["logger"] == "cosmos.test.plain" and lines[1]["level"] == "WARNING"

    workflow_line = logging.makeLogRecord(
        {
            "name": "temporalio.workflow",
            "levelno": logging.INFO,
            "levelname": "INFO",
            "msg": "falling back",
            "temporal_workflow": {
                "workflow_id": "enc-abc",
                "run_id": "r",
                "workflow_type": "EncodeWorkflow",
            },
        }
    )
    parsed = json.loads(JsonFormatter().format(workflow_line))
    assert parsed["job_id"] == "enc-abc" and parsed["run_id"] == "r"
    assert "activity_id" not in parsed
