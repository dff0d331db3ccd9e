"""GET /v1/workers: the pools, who polls them, and what they can do (from Temporal)."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import ClientDep
from app.api.errors import documented
from app.core.models import PoolList
from app.stratum.pools import describe_pools

router = APIRouter(prefix="/v1/workers", tags=["workers"], responses=documented(401, 502, 503))


@router.get("", response_model=PoolList)
async def list_pools(client: ClientDep) -> PoolList:
    return PoolList(pools=await describe_pools(client))
