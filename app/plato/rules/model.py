"""A Plato definition once parsed: rules of ``when`` (an event) → ``do`` (actions).

The parsed form is what a run carries in its input (with the YAML text it came from), so its
history replays the same after the definition changes. Everything here is plain data:
expressions stay source text and are evaluated by ``app.plato.rules.expressions`` when a rule
fires, inside the workflow (deterministically).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Node(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    line: int = Field(0, description="1-based line of the node in the YAML text.")
    column: int = Field(0, description="1-based column.")


class Expression(Node):
    """``input.source``, ``steps.probe-source.output.duration_s``, a fan-out variable..."""

    kind: Literal["expression"] = "expression"
    text: str


class Constant(Node):
    """A ``with:`` value the YAML gives as a number, boolean, null, list or mapping."""

    kind: Literal["constant"] = "constant"
    value: Any


Argument = Annotated[Expression | Constant, Field(discriminator="kind")]
"""A ``with:`` value: an expression where the YAML has a string, else a constant."""


class Run(Node):
    kind: Literal["run"] = "run"
    step: str
    with_: dict[str, Argument] = Field(default_factory=dict, alias="with")


class Fanout(Node):
    kind: Literal["fanout"] = "fanout"
    var: str
    items: Expression
    run: str
    with_: dict[str, Argument] = Field(default_factory=dict, alias="with")
    max_parallel: int | None = None


class Parallel(Node):
    kind: Literal["parallel"] = "parallel"
    actions: list[Action]


class Sequence(Node):
    kind: Literal["sequence"] = "sequence"
    actions: list[Action]


class Compensate(Node):
    """Registered when its rule fires; run (with the others, in reverse order of
    registration) only if the run fails."""

    kind: Literal["compensate"] = "compensate"
    step: str
    with_: dict[str, Argument] = Field(default_factory=dict, alias="with")


Action = Annotated[Run | Fanout | Parallel | Sequence | Compensate, Field(discriminator="kind")]

EventKind = Literal["started", "completed", "failed", "all_completed", "any_failed"]


class Event(Node):
    """``workflow.started``, ``<step>.completed``, ``<step>.failed``, ``all <step>.completed``,
    ``any.failed``."""

    kind: EventKind
    step: str | None = None


class Retry(Node):
    max: int = Field(3, ge=1, le=100, description="Attempts in all, the first included.")
    backoff: Literal["fixed", "exponential"] = "exponential"
    initial_interval_s: float = Field(1.0, gt=0, le=3600)
    on_exhausted: list[Action] = Field(default_factory=list)


class Rule(Node):
    when: Event
    if_: Expression | None = Field(
        None,
        alias="if",
        description="A condition on the run's data: the rule fires only where it holds; the "
        "way out of a loop of rules.",
    )
    do: list[Action] = Field(default_factory=list, description="Run in parallel.")
    retry: Retry | None = None


class Definition(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    version: str = Field(description="sha256 of the YAML text: the content names the version.")
    rules: list[Rule]
    max_firings: int
    inputs: list[str] | None = Field(
        None,
        description="The run input's fields, where the definition declares them: only these "
        "fill a step's inputs by name.",
    )
    text: str = Field(description="The YAML it was parsed from.")


Parallel.model_rebuild()
Sequence.model_rebuild()
Retry.model_rebuild()
Rule.model_rebuild()
