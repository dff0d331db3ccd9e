"""The one registry of functions: what a Plato rule may name as a step, and how it runs.

A function is a Temporal activity with a declaration: its step name, typed input and output
(pydantic models, whose JSON Schemas registration checks ``with:`` and expressions against),
the pool it needs, its resource shape, timeouts, heartbeat and whether a retry may repeat it.
Built-ins are declared in ``app.stratum.builtins``; teams add theirs from installed packages
through the ``cosmos.functions`` entry-point group (``load_plugins``). Workers serve the
functions that fit their pool; the API reads the same declarations, metadata only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

Pool = Literal["cpu", "gpu"]
ENTRY_POINT_GROUP = "cosmos.functions"


@dataclass(frozen=True)
class Shape:
    """What one call occupies on its worker: CPU cores, GPUs and memory."""

    cpu: float = 1.0
    gpu: int = 0
    memory_mb: int = 1024


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    """The step name a rule uses (``probe-source``); also the activity's name."""
    input: type[BaseModel]
    output: type[BaseModel]
    description: str = ""
    pool: Pool = "cpu"
    shape: Shape = field(default_factory=Shape)
    timeout_s: float = 3600.0
    heartbeat_s: float | None = None
    """Heartbeat timeout; None: the function does not heartbeat."""
    idempotent: bool = True
    consumes: dict[str, str] = field(default_factory=dict)
    """Input field → the step whose output fills it when ``with:`` does not."""
    implementation: Callable[..., Any] | None = None
    """The activity callable (None where only the declaration is loaded, as in the API)."""
    origin: str = "builtin"
    """``builtin`` or the distribution that provides it."""
