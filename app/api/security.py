"""Optional API keys and a cap on request bodies."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.settings import Settings
from app.observability.search import ANONYMOUS, key_id

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)
bearer = HTTPBearer(auto_error=False)


def require_api_key(
    request: Request,
    key: Annotated[str | None, Depends(api_key_header)],
    token: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """When ``COSMOS_API_KEYS`` is set, every endpoint but health needs one of the keys, given
    as ``X-API-Key`` or ``Authorization: Bearer``. Compared in constant time; never logged."""
    settings: Settings = request.app.state.settings
    keys = settings.api_key_list
    if not keys:
        return
    given = key or (token.credentials if token else None)
    if not _matches(given, [*keys, *settings.admin_api_key_list]):  # an admin key is a key too
        raise HTTPException(
            status_code=401,
            detail="missing or invalid API key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if given is not None:  # who asked, for visibility: an id, never the key
        request.state.api_key_id = key_id(given)


def _matches(given: str | None, keys: list[str]) -> bool:
    """Compared against every key, always, so timing says nothing about which one nearly
    matched."""
    matched = False
    for candidate in keys:
        matched |= given is not None and hmac.compare_digest(given.encode(), candidate.encode())
    return matched


def require_admin_key(
    request: Request,
    key: Annotated[str | None, Depends(api_key_header)],
    token: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """One of ``COSMOS_ADMIN_API_KEYS`` (registering command functions): 401 without a key,
    403 with one that is not an admin's (or where no admin key is configured)."""
    settings: Settings = request.app.state.settings
    given = key or (token.credentials if token else None)
    if given is None:
        raise HTTPException(
            status_code=401,
            detail="an admin API key is required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not _matches(given, settings.admin_api_key_list):
        raise HTTPException(
            status_code=403,
            detail="this needs an admin API key (COSMOS_ADMIN_API_KEYS)",
        )
    request.state.api_key_id = key_id(given)


def requester(request: Request) -> str:
    """The id of the API key that authenticated the request, or ``anonymous``."""
    return str(getattr(request.state, "api_key_id", None) or ANONYMOUS)


class BodyLimit:
    """Refuse bodies over ``limit`` bytes with 413 before they are read into memory."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = b'{"detail":"request body too large (limit %d bytes)"}' % self.limit
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())],
            }
        )  # fmt: skip
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass
