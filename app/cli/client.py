"""The CLI's side of the HTTP API: one place that knows the base URL and the API key."""

from __future__ import annotations

import httpx

from app.core.settings import get_settings


def api_client(api_url: str | None = None, timeout: float = 30) -> httpx.Client:
    settings = get_settings()
    key = settings.api_key or next(iter(settings.api_key_list), None)
    headers = {"X-API-Key": key} if key else {}
    return httpx.Client(base_url=api_url or settings.api_url, timeout=timeout, headers=headers)
