"""The JSON Schema (draft 2020-12) of Plato's YAML, for ``GET /v1/pipelines/schema`` and editors.

Written by hand because it describes the YAML a person types (``onExhausted`` beside or inside
``retry``, a step as a bare string), not the parsed model. It checks shape only: names of steps
when they are given, never whether rules can fire; registration does the rest.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

_STEP_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_-]*"


def definition_schema(
    steps: Iterable[str] | None = None, *, max_firings_ceiling: int = 100_000
) -> dict[str, Any]:
    """The schema; with ``steps``, step names are limited to those (an editor completes them)."""
    names = sorted({s for s in steps or () if re.fullmatch(_STEP_PATTERN, s)})
    step_alternatives = "|".join(names) if steps is not None else _STEP_PATTERN
    group = f"(?:{step_alternatives})" if names or steps is None else "(?!)"
    step: dict[str, Any] = (
        {"type": "string", "enum": names}
        if steps is not None
        else {"type": "string", "pattern": f"^{_STEP_PATTERN}$"}
    )
    step["description"] = "A step (a registered function), e.g. `probe-source`."
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "urn:cosmos:plato:definition",
        "title": "Plato pipeline definition",
        "description": "Rules of `when` (an event) → `do` (actions). See docs/plato.md.",
        "type": "object",
        "required": ["workflow"],
        "additionalProperties": False,
        "properties": {"workflow": {"$ref": "#/$defs/workflow"}},
        "$defs": {
            "workflow": {
                "type": "object",
                "required": ["id", "rules"],
                "additionalProperties": False,
                "properties": {
                    "id": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"},
                    "rules": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/rule"}},
                    "max_firings": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": max_firings_ceiling,
                        "description": "Rule firings a run may make before it fails (a guard).",
                    },
                    "inputs": {
                        "type": "array",
                        "uniqueItems": True,
                        "items": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"},
                        "description": "The run input's fields: only these fill step inputs.",
                    },
                },
            },
            "rule": {
                "type": "object",
                "required": ["when"],
                "anyOf": [{"required": ["do"]}, {"required": ["retry"]}],
                "additionalProperties": False,
                "properties": {
                    "when": {"$ref": "#/$defs/event"},
                    "if": {"$ref": "#/$defs/expression"},
                    "do": {"$ref": "#/$defs/actions"},
                    "retry": {"$ref": "#/$defs/retry"},
                    "onExhausted": {"$ref": "#/$defs/actions"},
                },
            },
            "event": {
                "type": "string",
                "pattern": (
                    rf"^(?:workflow\.started|any\.failed|all {group}\.completed"
                    rf"|{group}\.(?:completed|failed))$"
                ),
                "description": "workflow.started, <step>.completed, <step>.failed, "
                "all <step>.completed or any.failed.",
            },
            "step": step,
            "expression": {
                "type": "string",
                "minLength": 1,
                "description": "Over input.*, steps.<step>.output.* and fan-out variables.",
            },
            "with": {
                "type": "object",
                "description": "Step inputs: a string is an expression, anything else a constant.",
                "additionalProperties": True,
            },
            "actions": {
                "anyOf": [
                    {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/action"}},
                    {"$ref": "#/$defs/action"},
                ]
            },
            "action": {
                "oneOf": [
                    {"$ref": "#/$defs/step"},
                    {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/action"}},
                    {"$ref": "#/$defs/fanout"},
                    {"$ref": "#/$defs/sequence"},
                    {"$ref": "#/$defs/parallel"},
                    {"$ref": "#/$defs/compensate"},
                    {"$ref": "#/$defs/run"},
                ]
            },
            "fanout": {
                "type": "object",
                "required": ["fanout"],
                "additionalProperties": False,
                "properties": {
                    "fanout": {
                        "type": "object",
                        "required": ["for", "run"],
                        "additionalProperties": False,
                        "properties": {
                            "for": {
                                "type": "string",
                                "pattern": r"^\s*each\s+[A-Za-z_][A-Za-z0-9_]*\s+in\s+\S",
                                "description": "each <name> in <expression>",
                            },
                            "run": {"$ref": "#/$defs/step"},
                            "with": {"$ref": "#/$defs/with"},
                            "max_parallel": {"type": "integer", "minimum": 1},
                        },
                    }
                },
            },
            "sequence": {
                "type": "object",
                "required": ["sequence"],
                "additionalProperties": False,
                "properties": {
                    "sequence": {
                        "type": "array",
                        "minItems": 1,
                        "items": {"$ref": "#/$defs/action"},
                    }
                },
            },
            "parallel": {
                "type": "object",
                "required": ["parallel"],
                "additionalProperties": False,
                "properties": {
                    "parallel": {
                        "type": "array",
                        "minItems": 1,
                        "items": {"$ref": "#/$defs/action"},
                    }
                },
            },
            "compensate": {
                "type": "object",
                "required": ["compensate"],
                "additionalProperties": False,
                "properties": {
                    "compensate": {
                        "oneOf": [
                            {"$ref": "#/$defs/step"},
                            {
                                "type": "object",
                                "required": ["step"],
                                "additionalProperties": False,
                                "properties": {
                                    "step": {"$ref": "#/$defs/step"},
                                    "with": {"$ref": "#/$defs/with"},
                                },
                            },
                        ]
                    },
                    "with": {"$ref": "#/$defs/with"},
                },
            },
            "run": {
                "type": "object",
                "required": ["run"],
                "additionalProperties": False,
                "properties": {
                    "run": {"$ref": "#/$defs/step"},
                    "with": {"$ref": "#/$defs/with"},
                },
            },
            "retry": {
                "type": ["object", "null"],
                "additionalProperties": False,
                "properties": {
                    "max": {"type": "integer", "minimum": 1, "maximum": 100},
                    "backoff": {"enum": ["fixed", "exponential"]},
                    "initial_interval": {
                        "oneOf": [
                            {"type": "number", "exclusiveMinimum": 0, "maximum": 3600},
                            {"type": "string", "pattern": r"^\d+(?:\.\d+)?\s*(?:ms|s|m|h)$"},
                        ]
                    },
                    "onExhausted": {"$ref": "#/$defs/actions"},
                },
            },
        },
    }
