"""Errors as clients see them: FastAPI's 422 shape for bad fields, 503 while Temporal is away."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from temporalio.service import RPCError, RPCStatusCode

log = logging.getLogger("cosmos.api")

UNAVAILABLE = {RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED}


class ErrorBody(BaseModel):
    detail: str


DESCRIPTIONS = {
    400: "Not a Payloads JSON body, or a payload no configured key opens",
    401: "Missing or invalid API key",
    404: "No such job",
    409: "The job has already ended",
    413: "Request body too large",
    502: "Temporal refused the request",
    503: "Temporal is unreachable; retry shortly",
}


def documented(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error answers a route can give, so clients (and the fuzzer)
    know them."""
    return {code: {"model": ErrorBody, "description": DESCRIPTIONS[code]} for code in codes}


def field_error(field: str, message: str, status_code: int = 422) -> HTTPException:
    """Same body shape as pydantic's validation errors, so clients parse one format."""
    return HTTPException(
        status_code=status_code,
        detail=[{"loc": ["body", field], "msg": message, "type": "value_error"}],
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(RPCError)
    async def rpc_error(request: Request, err: RPCError) -> JSONResponse:
        if err.status in UNAVAILABLE:
            return JSONResponse(
                status_code=503,
                content={"detail": "Temporal is unreachable; retry shortly"},
                headers={"Retry-After": "5"},
            )
        log.error("Temporal error on %s %s: %s", request.method, request.url.path, err)
        return JSONResponse(status_code=502, content={"detail": "Temporal refused the request"})

    @app.exception_handler(RuntimeError)
    async def runtime_error(request: Request, err: RuntimeError) -> JSONResponse:
        # The SDK raises RuntimeError("Failed client connect: ...") when Temporal is away.
        if "connect" in str(err).lower():
            return JSONResponse(
                status_code=503,
                content={"detail": "Temporal is unreachable; retry shortly"},
                headers={"Retry-After": "5"},
            )
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(status_code=500, content={"detail": "internal error"})
