"""GET /v1/functions: every function a rule may name; POST: an admin registers a command one.

The list is read from the same declarations the workers serve, without their implementations
(``app.stratum.catalog``): built-ins, installed plugins, registered command functions.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Response
from pydantic import BaseModel, Field

from app.api.deps import SettingsDep
from app.api.errors import ErrorBody, documented, field_error
from app.api.security import require_admin_key
from app.core.settings import Settings
from app.stratum.catalog import TAKEN, catalog, describe
from app.stratum.commands import CommandSpec, CommandStore, command_function, program_problem

router = APIRouter(prefix="/v1/functions", tags=["functions"], responses=documented(401))


class FunctionList(BaseModel):
    functions: list[dict[str, Any]] = Field(
        description="name, description, origin (builtin, a distribution, or command), pool, "
        "task_queue, shape, timeout_s, heartbeat_s, idempotent, consumes, context, "
        "input_schema and output_schema (JSON Schema), and a command function's template."
    )


@router.get("", response_model=FunctionList)
async def list_functions(settings: SettingsDep) -> FunctionList:
    specs = await asyncio.to_thread(catalog, settings, implementations=False)
    return FunctionList(functions=[describe(specs[name]) for name in sorted(specs)])


def _register(spec: CommandSpec, settings: Settings) -> bool:
    """Store ``spec`` (blocking); False where the same template is registered already."""
    problem = program_problem(spec, settings)
    if problem:
        raise field_error("program", problem)
    taken = catalog(settings, implementations=False, commands=False)
    if spec.name in taken or spec.name in TAKEN:
        origin = taken[spec.name].origin if spec.name in taken else "an activity"
        raise HTTPException(409, detail=f"the name {spec.name!r} is taken ({origin})")
    store = CommandStore(settings)
    existing = store.get(spec.name)
    if existing == spec:
        return False
    if existing is not None:
        raise HTTPException(
            409,
            detail=f"a different command function {spec.name!r} is registered; "
            "runs may use it, so a name is never given a new template",
        )
    store.save(spec)
    return True


@router.post(
    "",
    status_code=201,
    dependencies=[Depends(require_admin_key)],
    responses={
        200: {"description": "The same template was registered already"},
        403: {"model": ErrorBody, "description": "Not an admin API key"},
        409: {"model": ErrorBody, "description": "The name is taken"},
    },
)
async def register_command(
    spec: CommandSpec, settings: SettingsDep, response: Response
) -> dict[str, Any]:
    """Register a command function (admin API keys only): a fixed argument template of an
    allowed program, typed parameters, its shape and limits. A template that breaks the
    rules is a 422 saying which."""
    if not await asyncio.to_thread(_register, spec, settings):
        response.status_code = 200
    return describe(command_function(spec))
