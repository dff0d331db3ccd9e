"""The CLI's side of the HTTP API: one place that knows the base URL and the API key."""

from __future__ import annotations

import httpx

from app.core.settings import get_settings


def api_client(api_url: str | None = None, timeout: float = 30) -> httpx.Client:
    settings = get_settings()
    key = settings.api_key or next(iter(settings.api_key_list), None)
    headers = {"X-API-Key": key} if key else {}
    return httpx.Client(base_url=api_url or settings.api_url, timeout=timeout, headers=headers)


def refusal(response: httpx.Response) -> str:
    """The API's reason in words: a field error's message, or the plain detail."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return response.text
    if isinstance(detail, list):
        return "; ".join(
            f"{'.'.join(str(p) for p in d.get('loc', [])[1:]) or 'request'}: {d.get('msg')}"
            for d in detail
            if isinstance(d, dict)
        )
    return str(detail or response.text)
