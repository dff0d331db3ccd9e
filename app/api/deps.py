"""FastAPI dependencies: settings and the Temporal client, both shared per process."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from temporalio.client import Client

from app.core.settings import Settings
from app.core.temporal import connect


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_client(request: Request) -> Client:
    """Created lazily so the API starts (and answers 503) while Temporal is away."""
    client: Client | None = getattr(request.app.state, "client", None)
    if client is None:
        client = await connect(request.app.state.settings, lazy=True)
        request.app.state.client = client
    return client


SettingsDep = Annotated[Settings, Depends(get_settings)]
ClientDep = Annotated[Client, Depends(get_client)]
