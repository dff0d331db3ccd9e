"""Fuzz the HTTP API from its own OpenAPI document (schemathesis), bounded for CI: no 500s,
no response that breaks the schema."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks

from tests.stack import Stack

pytestmark = pytest.mark.e2e
EXAMPLES = 25


def test_api_never_errors_and_keeps_its_schema(stack: Stack) -> None:
    schema = schemathesis.openapi.from_url(f"{stack.api_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/encode", "/v1/jobs/{job_id}", "/v1/workers"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: schemathesis.Case) -> None:
            # A schema cannot say which files exist: a well-formed but absent source is
            # rightly refused, so "schema-valid data must be accepted" does not apply; and
            # API keys are off in this stack (tests/test_e2e.py covers them on).
            case.call_and_validate(
                excluded_checks=[checks.positive_data_acceptance, checks.ignored_auth]
            )

        fuzz()
