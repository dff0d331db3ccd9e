"""Codec server: lets the Temporal Web UI (or ``temporal --codec-endpoint``) show an operator the
decrypted payloads of an encrypted history, while the Temporal server itself only ever holds
ciphertext.

Temporal's remote codec protocol: ``POST {endpoint}/encode`` and ``/decode`` take and answer the
JSON form of ``temporalio.api.common.v1.Payloads`` (``{"payloads": [{"metadata": {k: base64},
"data": base64}]}``). The UI also sends ``X-Namespace``; one set of keys serves every namespace, so
it is accepted and not needed. Without keys, payloads come back unchanged.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from google.protobuf.json_format import MessageToDict, ParseDict, ParseError
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send
from temporalio.api.common.v1 import Payloads
from temporalio.converter import PayloadCodec

from app.api.errors import documented
from app.core.codec import PayloadKeyError
from app.core.temporal import data_converter

PREFIX = "/codec"

router = APIRouter(prefix=PREFIX, tags=["codec"], responses=documented(400, 401))


@router.post("/encode")
async def encode(request: Request) -> dict[str, Any]:
    """Encrypts payloads with the current key (used by the UI to send signals and the like)."""
    return await _apply(request, encode=True)


@router.post("/decode")
async def decode(request: Request) -> dict[str, Any]:
    """Decrypts payloads with the key each one names; unencrypted ones pass through."""
    return await _apply(request, encode=False)


async def _apply(request: Request, *, encode: bool) -> dict[str, Any]:
    try:
        payloads = ParseDict(json.loads(await request.body()), Payloads())
    except (ValueError, ParseError) as err:  # JSONDecodeError is a ValueError
        raise HTTPException(400, detail=f"expected a Payloads JSON body: {err}") from err
    codec = _codec(request)
    if codec is not None:
        try:
            if encode:
                await codec.encode_wrapper(payloads)
            else:
                await codec.decode_wrapper(payloads)
        except PayloadKeyError as err:
            raise HTTPException(400, detail=str(err)) from err
    return MessageToDict(payloads)


def _codec(request: Request) -> PayloadCodec | None:
    """The same codec the workers use, built once per app from its settings."""
    state = request.app.state
    if not hasattr(state, "payload_codec"):
        state.payload_codec = data_converter(state.settings).payload_codec
    codec: PayloadCodec | None = state.payload_codec
    return codec


class CodecCors:
    """CORS for the codec paths only, so that the Web UI's origin may call them from the
    operator's browser without being allowed to call the rest of the API."""

    def __init__(self, app: ASGIApp, origins: list[str]) -> None:
        self.app = app
        self.cors = CORSMiddleware(
            app,
            allow_origins=origins,
            allow_methods=["POST"],
            allow_headers=["content-type", "x-namespace", "authorization"],
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(PREFIX + "/"):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)
