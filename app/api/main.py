"""The FastAPI application: routers per area, settings and the Temporal client on app.state."""

from __future__ import annotations

import logging

from fastapi import Depends, FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

from app.api import errors
from app.api.routers import (
    codec,
    encode,
    functions,
    health,
    inspect,
    jobs,
    pages,
    pipelines,
    quality,
    workers,
)
from app.api.security import BodyLimit, require_api_key
from app.core.settings import Settings, get_settings
from app.observability.metrics import SubmissionMetrics, setup_metrics
from app.observability.telemetry import setup_logging, setup_tracing

MAX_BODY_BYTES = 1 << 20
"""An encode request is a few hundred bytes; a megabyte is generous and bounds memory."""


def create_app(settings: Settings | None = None) -> FastAPI:
    app = FastAPI(
        title="Cosmos",
        version="0.1.0",
        description="Submit encodes; follow them as Temporal workflows.",
    )
    app.state.settings = settings or get_settings()
    app.state.client = None
    # Once per process, however many apps (tests build many); logging only where the server
    # (uvicorn configures its own loggers, not the root) or a caller has not configured it.
    setup_tracing("cosmos-api")
    setup_metrics(app.state.settings.metrics_port)
    if not logging.getLogger().handlers:
        setup_logging()
    errors.install(app)
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    app.add_middleware(codec.CodecCors, origins=app.state.settings.codec_origins)
    app.add_middleware(SubmissionMetrics)
    app.include_router(health.router)
    protected = [Depends(require_api_key)]
    app.include_router(encode.router, dependencies=protected)
    app.include_router(jobs.router, dependencies=protected)
    app.include_router(inspect.router, dependencies=protected)
    app.include_router(workers.router, dependencies=protected)
    app.include_router(functions.router, dependencies=protected)
    app.include_router(pipelines.router, dependencies=protected)
    app.include_router(quality.router, dependencies=protected)
    app.include_router(codec.router, dependencies=protected)
    # The job pages: public shells and static files; the outputs behind the key (pages.py).
    app.include_router(pages.router)
    app.include_router(pages.files_router)
    # A server span per request, the parent of the StartWorkflow span of a submitted job.
    FastAPIInstrumentor.instrument_app(app, excluded_urls="/healthz,/readyz")
    return app
