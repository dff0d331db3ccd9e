"""Traces and structured logs, set up once per process (API, CPU worker, GPU worker).

Traces: one trace per job, from the HTTP request (FastAPI instrumentation) through
``StartWorkflow``, ``RunWorkflow`` and every ``RunActivity`` (Temporal's ``TracingInterceptor``,
installed on the client in ``app/core/temporal.py``) down to each ffmpeg run (``ffmpeg_span``).
Spans leave the process over OTLP/HTTP only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set; without it they still carry the trace ID into the
logs and across Temporal, at the cost of creating and dropping them.

Logs: one JSON object per line, with the job, workflow, run and activity IDs that Temporal's
``activity.logger`` / ``workflow.logger`` attach (and, for plain loggers called inside an
activity, the current activity's), so a job's lines can be found with one filter.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, Status, StatusCode
from temporalio import activity, workflow

_lock = threading.Lock()
_provider: TracerProvider | None = None

OTLP_ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def setup_tracing(service_name: str) -> TracerProvider:
    """Install the process's tracer provider, or return the one already installed.

    Idempotent because the API's tests build many apps in one process, and OpenTelemetry
    ignores (with a warning) a second global provider. An SDK provider installed before us (a
    test's, an agent's) is adopted as is.
    """
    global _provider
    with _lock:
        if _provider is not None:
            return _provider
        current = trace.get_tracer_provider()
        if isinstance(current, TracerProvider):
            _provider = current
            return current
        # OTEL_SERVICE_NAME, where set, names the process (Resource.create reads it).
        named = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service_name}
        provider = TracerProvider(resource=Resource.create(named))
        if any(os.environ.get(var) for var in OTLP_ENDPOINT_VARS):
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            # The exporter reads the endpoint, headers and timeout from the OTEL_* variables.
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
        _provider = provider
        return provider


def _after(args: Sequence[str], flag: str, start: int = 0) -> str | None:
    """The value following the last ``flag`` at or after ``start``."""
    found = None
    for i in range(start, len(args) - 1):
        if args[i] == flag:
            found = args[i + 1]
    return found


def ffmpeg_attributes(args: Sequence[str], label: str) -> dict[str, str | int]:
    """What an ffmpeg run is, by its shape: counts, codec and format names, never paths (they
    name customers' files) nor filter graphs or option values that could carry them."""
    last_input = max((i for i, a in enumerate(args) if a == "-i"), default=-1)
    attrs: dict[str, str | int] = {
        "ffmpeg.label": label,
        "ffmpeg.args": len(args),
        "ffmpeg.inputs": sum(1 for a in args if a == "-i"),
    }
    optional = {
        "ffmpeg.video_encoder": _after(args, "-c:v", last_input + 1) or _after(args, "-vcodec"),
        "ffmpeg.audio_encoder": _after(args, "-c:a", last_input + 1) or _after(args, "-acodec"),
        "ffmpeg.format": _after(args, "-f", last_input + 1),
        "ffmpeg.input_format": _after(args[: max(last_input, 0)], "-f"),
        "ffmpeg.hwaccel": _after(args, "-hwaccel"),
    }
    attrs |= {key: value for key, value in optional.items() if value}
    return attrs


@contextmanager
def ffmpeg_span(args: Sequence[str], label: str) -> Iterator[Span]:
    """A span around one ffmpeg run, a child of the current (``RunActivity``) span. A failure
    sets the status to error with the exception's type only: ffmpeg's stderr names paths."""
    tracer = trace.get_tracer("cosmos.ffmpeg")
    with tracer.start_as_current_span(
        "ffmpeg",
        attributes=ffmpeg_attributes(args, label),
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except BaseException as err:
            span.set_status(Status(StatusCode.ERROR, type(err).__name__))
            raise


# ---------------------------------------------------------------------------------- logging

_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the Temporal IDs flattened
    (``job_id`` is the workflow ID, which is the job's ID), the trace ID, and any other
    ``extra`` that is JSON-friendly."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line |= temporal_ids(record)
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            line["trace_id"] = format(span.trace_id, "032x")
            line["span_id"] = format(span.span_id, "016x")
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith(("temporal_", "_")) and key not in line:
                line[key] = value if isinstance(value, str | int | float | bool) else str(value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def temporal_ids(record: logging.LogRecord) -> dict[str, Any]:
    """The IDs from Temporal's logger adapters' ``extra``, or from the current activity for
    lines logged through plain loggers while one runs (ffmpeg's runner, the storage code)."""
    details: dict[str, Any] | None = getattr(record, "temporal_activity", None)
    if details is None and activity.in_activity():
        info = activity.info()
        details = {
            "workflow_id": info.workflow_id,
            "workflow_run_id": info.workflow_run_id,
            "workflow_type": info.workflow_type,
            "activity_id": info.activity_id,
            "activity_type": info.activity_type,
            "attempt": info.attempt,
        }
    if details is not None:
        ids = {
            "job_id": details.get("workflow_id"),
            "workflow_id": details.get("workflow_id"),
            "run_id": details.get("workflow_run_id"),
            "workflow_type": details.get("workflow_type"),
            "activity_id": details.get("activity_id"),
            "activity_type": details.get("activity_type"),
            "attempt": details.get("attempt"),
        }
        return {k: v for k, v in ids.items() if v is not None}
    details = getattr(record, "temporal_workflow", None)
    if details is not None:
        ids = {
            "job_id": details.get("workflow_id"),
            "workflow_id": details.get("workflow_id"),
            "run_id": details.get("run_id"),
            "workflow_type": details.get("workflow_type"),
        }
        return {k: v for k, v in ids.items() if v is not None}
    return {}


def setup_logging(level: int = logging.INFO) -> None:
    """JSON lines on stderr for the root logger. Idempotent. Handlers already there are kept
    (pytest's capture, a caller's file), but plain stream handlers, like the one
    ``logging.basicConfig`` adds, are switched to JSON so a process has one log format. The
    IDs are in their own fields, so Temporal's loggers stop repeating them in the message."""
    root = logging.getLogger()
    streams = [h for h in root.handlers if type(h) is logging.StreamHandler]
    if not streams:
        handler = logging.StreamHandler(sys.stderr)
        root.addHandler(handler)
        streams = [handler]
        root.setLevel(level)
    for handler in streams:
        handler.setFormatter(JsonFormatter())
    activity.logger.activity_info_on_message = False
    workflow.logger.workflow_info_on_message = False
