"""Plato pipelines: register a YAML definition, list and read them, run one.

Definitions live in the object store (``app.plato.definitions``); a run is a
``PipelineWorkflow`` carrying the definition and, per step, how to call it, so the API keeps
nothing. A run reports at ``GET /v1/jobs/{job_id}`` like an encode job.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, HTTPException, Path, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from app.api.deps import ClientDep, SettingsDep
from app.api.errors import documented, field_error
from app.api.source_checks import checked_source
from app.api.starts import start_job
from app.core.models import RetryOptions, SubmitResponse
from app.plato.definitions import VERSION_PATTERN, DefinitionStore, StoredDefinition
from app.plato.functions import parse, runtimes, steps_of
from app.plato.rules.schema import definition_schema
from app.plato.rules.validate import DefinitionError
from app.plato.workflows.pipeline import PipelineRun, PipelineWorkflow
from app.stratum.catalog import catalog

router = APIRouter(prefix="/v1/pipelines", tags=["pipelines"], responses=documented(401, 502, 503))

PipelineId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")]
MAX_DEFINITION_BYTES = 256 * 1024
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain")


class Registered(BaseModel):
    id: str
    version: str
    steps: list[str]
    created_at: datetime


class Issue(BaseModel):
    line: int
    column: int
    message: str


class Refused(BaseModel):
    errors: list[Issue]


class PipelineSummary(BaseModel):
    id: str
    latest: Registered
    versions: int


class PipelineVersions(BaseModel):
    id: str
    versions: list[Registered]


class RunRequest(BaseModel):
    input: dict[str, Any] = Field(default_factory=dict, description="The run input (`input.*`).")
    version: str | None = Field(
        None, pattern=VERSION_PATTERN, description="A registered version; default the latest."
    )


def _registered(stored: StoredDefinition) -> Registered:
    return Registered(
        id=stored.id, version=stored.version, steps=stored.steps, created_at=stored.created_at
    )


async def _text(request: Request) -> str:
    raw = await request.body()
    if len(raw) > MAX_DEFINITION_BYTES:
        raise HTTPException(413, f"a definition is at most {MAX_DEFINITION_BYTES} bytes")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if kind == "application/json":
            body = json.loads(raw)
            if not isinstance(body, dict) or not isinstance(body.get("definition"), str):
                raise field_error("definition", 'send {"definition": "<yaml text>"}')
            return str(body["definition"])
        if kind in YAML_TYPES:
            return raw.decode("utf-8")
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise HTTPException(400, f"the body is not UTF-8 text or JSON: {err}") from None
    raise HTTPException(415, 'send the YAML as application/yaml, or JSON {"definition": ...}')


@router.post(
    "",
    status_code=201,
    response_model=Registered,
    responses={200: {"model": Registered, "description": "Registered before: the same version."},
               422: {"model": Refused, "description": "Refused, with the line and column."}},
    openapi_extra={"requestBody": {"content": {
        "application/yaml": {"schema": {"type": "string"}},
        "application/json": {"schema": {"type": "object", "properties": {
            "definition": {"type": "string"}}, "required": ["definition"]}},
    }, "required": True}},
)  # fmt: skip
async def register(request: Request, response: Response, settings: SettingsDep) -> Any:
    text = await _text(request)
    try:
        definition = await asyncio.to_thread(parse, text, settings)
    except DefinitionError as err:
        issues = [Issue(line=e.line, column=e.column, message=e.message) for e in err.errors]
        return JSONResponse(status_code=422, content=Refused(errors=issues).model_dump())
    store = DefinitionStore(settings)
    stored, new = await asyncio.to_thread(store.put, definition, steps_of(definition))
    if not new:
        response.status_code = 200
    response.headers["Location"] = str(request.url_for("get_pipeline", pipeline_id=stored.id))
    return _registered(stored)


@router.get("/schema", response_model=dict[str, Any])
async def schema() -> dict[str, Any]:
    """The JSON Schema of the YAML grammar (docs/plato.md), for editors and linters."""
    return definition_schema()


@router.get("", response_model=list[PipelineSummary])
async def list_pipelines(settings: SettingsDep) -> list[PipelineSummary]:
    store = DefinitionStore(settings)

    def read() -> list[PipelineSummary]:
        found = []
        for pipeline_id in store.ids():
            versions = store.versions(pipeline_id)
            if versions:
                found.append(
                    PipelineSummary(
                        id=pipeline_id, latest=_registered(versions[-1]), versions=len(versions)
                    )
                )
        return found

    return await asyncio.to_thread(read)


@router.get(
    "/{pipeline_id}", response_model=PipelineVersions, name="get_pipeline",
    responses=documented(404),
)  # fmt: skip
async def get_pipeline(pipeline_id: PipelineId, settings: SettingsDep) -> PipelineVersions:
    versions = await asyncio.to_thread(DefinitionStore(settings).versions, pipeline_id)
    if not versions:
        raise HTTPException(404, f"no pipeline {pipeline_id!r}")
    return PipelineVersions(id=pipeline_id, versions=[_registered(v) for v in versions])


def run_id_for(stored: StoredDefinition, input: dict[str, Any], key: str | None) -> str:
    """The same definition version and input give the same job (or the Idempotency-Key)."""
    if key is not None:
        return "pipe-k-" + hashlib.sha256(key.encode()).hexdigest()[:32]
    canonical = json.dumps(
        {"pipeline": stored.id, "version": stored.version, "input": input},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return "pipe-" + hashlib.sha256(canonical.encode()).hexdigest()[:32]


@router.post(
    "/{pipeline_id}/runs", status_code=202, response_model=SubmitResponse,
    responses=documented(404),
)  # fmt: skip
async def run(
    pipeline_id: PipelineId,
    request: Request,
    response: Response,
    client: ClientDep,
    settings: SettingsDep,
    body: Annotated[RunRequest, Body()],
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=255)] = None,
) -> SubmitResponse:
    stored = await asyncio.to_thread(DefinitionStore(settings).get, pipeline_id, body.version)
    if stored is None:
        what = f"version {body.version} of " if body.version else ""
        raise HTTPException(404, f"no {what}pipeline {pipeline_id!r}")
    input = dict(body.input)
    if isinstance(input.get("source"), str):  # a source goes through the usual checks
        input["source"] = await asyncio.to_thread(
            checked_source, input["source"], settings, "input.source"
        )
    job_id = run_id_for(stored, input, idempotency_key)
    specs = catalog(settings, implementations=False).values()
    pipeline_run = PipelineRun(
        job_id=job_id,
        definition=stored.definition,
        input=input,
        functions={k: v for k, v in runtimes(specs).items() if k in set(stored.steps)},
        scratch_uri=settings.resolved_scratch_uri,
        output_uri=settings.resolved_output_uri,
        retry=RetryOptions(max_attempts=settings.activity_max_attempts),
        max_parallel=settings.pipeline_max_parallel,
    )
    missing = sorted(set(stored.steps) - set(pipeline_run.functions))
    if missing:
        raise field_error("version", f"no function {', '.join(missing)} is installed now")
    return await start_job(
        client, settings, request, response, PipelineWorkflow.run, pipeline_run, job_id,
        static_summary=f"pipeline {stored.id} ({', '.join(stored.steps)})"[:400],
    )  # fmt: skip
