"""The FastAPI application: routers per area, settings and the Temporal client on app.state."""

from __future__ import annotations

from fastapi import Depends, FastAPI

from app.api import errors
from app.api.routers import codec, encode, health, jobs, workers
from app.api.security import BodyLimit, require_api_key
from app.settings import Settings, get_settings

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
    errors.install(app)
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    app.add_middleware(codec.CodecCors, origins=app.state.settings.codec_origins)
    app.include_router(health.router)
    protected = [Depends(require_api_key)]
    app.include_router(encode.router, dependencies=protected)
    app.include_router(jobs.router, dependencies=protected)
    app.include_router(workers.router, dependencies=protected)
    app.include_router(codec.router, dependencies=protected)
    return app
