from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.deps import ClientDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get(
    "/readyz", response_model=None, responses={503: {"description": "Temporal unreachable"}}
)
async def readyz(client: ClientDep) -> dict[str, str] | JSONResponse:
    """Temporal is reachable."""
    try:
        ok = await client.service_client.check_health(timeout=timedelta(seconds=3))
    except (TimeoutError, RuntimeError, Exception):
        ok = False
    if not ok:
        return JSONResponse(status_code=503, content={"status": "temporal unreachable"})
    return {"status": "ready"}
