"""Stratum's function declarations as Plato needs them: schemas to check a definition against,
and how the workflow calls each step (carried in the run's input, so it never changes under a
running or replayed history)."""

from __future__ import annotations

from collections.abc import Iterable

from app.core.settings import Settings
from app.plato.rules.model import Compensate, Definition, Fanout, Run
from app.plato.rules.parse import parse_definition
from app.plato.rules.validate import FunctionSchemas, rule_actions
from app.plato.workflows.pipeline import StepRuntime
from app.stratum.catalog import FunctionSpec, catalog, task_queue


def schemas(specs: Iterable[FunctionSpec]) -> dict[str, FunctionSchemas]:
    return {
        spec.name: FunctionSchemas(
            name=spec.name,
            input_schema=spec.input.model_json_schema(),
            output_schema=spec.output.model_json_schema(),
            consumes=dict(spec.consumes),
        )
        for spec in specs
    }


def runtimes(specs: Iterable[FunctionSpec]) -> dict[str, StepRuntime]:
    runtimes = {}
    for spec in specs:
        fields = spec.input.model_fields
        runtimes[spec.name] = StepRuntime(
            task_queue=task_queue(spec),
            timeout_s=spec.timeout_s,
            heartbeat_s=spec.heartbeat_s,
            idempotent=spec.idempotent,
            fields=list(fields),
            required=[name for name, field in fields.items() if field.is_required()],
            consumes=dict(spec.consumes),
            workflow=spec.workflow,
        )
    return runtimes


def steps_of(definition: Definition) -> list[str]:
    """Every step the rules run or register as a compensation, in order of first mention."""
    seen: dict[str, None] = {}
    for rule in definition.rules:
        for action in rule_actions(rule):
            if isinstance(action, Run | Compensate):
                seen.setdefault(action.step)
            elif isinstance(action, Fanout):
                seen.setdefault(action.run)
    return list(seen)


def parse(text: str, settings: Settings) -> Definition:
    """The definition checked against every function there is; DefinitionError otherwise."""
    specs = catalog(settings, implementations=False).values()
    return parse_definition(
        text,
        schemas(specs),
        max_firings_default=settings.pipeline_max_firings,
        max_firings_ceiling=settings.pipeline_max_firings_ceiling,
    )
