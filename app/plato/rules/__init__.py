"""Plato's rule language: a definition's YAML parsed, checked and evaluated (docs/plato.md).

Pure (stdlib, PyYAML, pydantic): registration, the API's schema and the workflow all use it,
and the workflow needs the same answers on every replay.
"""

from app.plato.rules.expressions import (
    ExpressionError,
    evaluate,
    holds,
    parse_expression,
    paths,
    roots,
)
from app.plato.rules.model import (
    Compensate,
    Constant,
    Definition,
    Event,
    Expression,
    Fanout,
    Parallel,
    Retry,
    Rule,
    Run,
    Sequence,
)
from app.plato.rules.parse import content_version, parse_definition
from app.plato.rules.schema import definition_schema
from app.plato.rules.validate import (
    DefinitionError,
    DefinitionIssue,
    FunctionSchemas,
    validate_definition,
)

__all__ = [
    "Compensate",
    "Constant",
    "Definition",
    "DefinitionError",
    "DefinitionIssue",
    "Event",
    "Expression",
    "ExpressionError",
    "Fanout",
    "FunctionSchemas",
    "Parallel",
    "Retry",
    "Rule",
    "Run",
    "Sequence",
    "content_version",
    "definition_schema",
    "evaluate",
    "holds",
    "parse_definition",
    "parse_expression",
    "paths",
    "roots",
    "validate_definition",
]
