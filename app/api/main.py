"""The FastAPI application: routers per area, settings and the Temporal client on app.state."""

from __future__ import annotations

from fastapi import FastAPI

from app.api import errors
from app.api.routers import encode, health, jobs, workers
from app.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    app = FastAPI(
        title="Cosmos",
        version="0.1.0",
        description="Submit encodes; follow them as Temporal workflows.",
    )
    app.state.settings = settings or get_settings()
    app.state.client = None
    errors.install(app)
    app.include_router(health.router)
    app.include_router(encode.router)
    app.include_router(jobs.router)
    app.include_router(workers.router)
    return app
