"""The one registry of functions: what a Plato rule may name as a step, and how it runs.

A function is a Temporal activity with a declaration (:class:`FunctionSpec`): its step name,
typed input and output (pydantic models, whose JSON Schemas registration checks ``with:`` and
expressions against), the pool it needs, its resource shape, timeouts, heartbeat and whether a
retry may repeat it. Three kinds, one catalog (:func:`catalog`):

- **built-ins** (``app.stratum.builtins``): ``probe-source``, ``encode-segment``,
  ``mux-final``, ``publish-manifest``, ``notify-oncall`` and the encode pipeline's own steps
  under their names (``inspect``, ``split``, ``assemble``);
- **plugins**: installed packages that expose functions through the ``cosmos.functions``
  entry-point group (:func:`load_plugins`), each declared with :func:`function`;
- **command functions** (``app.stratum.commands``): a fixed argument template of an installed
  program, registered by an admin through ``POST /v1/functions``.

Names are unique: built-ins win over plugins, plugins over command functions, and a name that
today's activities already use (``package``, ``notify``, ...) is refused, with the reason
logged. Workers serve the functions that fit their pool (``app.stratum.registry``); the API
reads the same declarations without implementations (``GET /v1/functions``).

Calling one (the pipeline runtime): activity type ``spec.name``, one argument, the input
model's JSON (``model_dump(mode="json")``, or a dict of the same shape), on
:func:`task_queue` of its pool, ``start_to_close_timeout=timeout_s``, a heartbeat timeout of
``heartbeat_s`` where it is set (None: the function does not heartbeat). The result is the
output model's JSON. A command function is called the same way, by its own name: the CPU
worker's dynamic activity finds its registered template (``app.stratum.commands``).

**Context fields.** Input fields named ``job_id``, ``scratch_uri``, ``output_uri`` and
``webhook_url`` (:data:`CONTEXT_FIELDS`) are filled by the pipeline runtime from the run
itself, for any function that declares them: the run's ID, where its intermediate files go
(``<scratch_uri>/<job_id>/...``), where its outputs are published (``<output_uri>/<job_id>/``)
and the run's webhook. A function that writes files of its own for people to fetch puts them
under :func:`output_file_uri` (``<output_uri>/<job_id>/files/<function>/<name>``), which
``publish-manifest`` carries over when it publishes the package.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import logging
import re
import types
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel
from temporalio import activity

from app.core.settings import Settings, get_settings
from app.storage.object_store import join
from app.stratum.queues import CPU_QUEUE, CUDA_QUEUE
from app.stratum.resources import ResourceShape

log = logging.getLogger("cosmos.functions")

Pool = Literal["cpu", "gpu"]
ENTRY_POINT_GROUP = "cosmos.functions"
CONTEXT_FIELDS = ("job_id", "scratch_uri", "output_uri", "webhook_url")
"""Input fields the pipeline runtime fills from the run itself (see the module docstring)."""
POOL_QUEUES: dict[str, str] = {"cpu": CPU_QUEUE, "gpu": CUDA_QUEUE}
"""The task queue each pool's workers poll for functions: GPU functions go to the GPUs with
NVDEC (``cosmos-gpu-cuda``: every H100/H200/L4 here)."""
NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
"""A step name: lowercase words joined by dashes (``encode-segment``), at most 63 characters."""
DEFAULT_SHAPE = ResourceShape(cpu_threads=1, memory_mib=1024)
TAKEN = frozenset(
    {"assemble", "cleanup", "encode_audio", "encode_chunk", "encode_renditions",
     "encode_video", "generate_thumbnails", "ladder_choose", "ladder_cleanup",
     "ladder_measure", "ladder_next", "ladder_prepare", "ladder_scope", "notify", "package",
     "plan_renditions", "prepare_subtitles", "plan_segment", "probe_source", "publish_manifest",
     "quality_assemble", "quality_chunk", "quality_prepare", "route_encodes", "split_source"}
)  # fmt: skip
"""Activity names the encode pipeline's workers already serve: no new function may take one
(``assemble`` is declared as a function, served by that same activity)."""

In = TypeVar("In", bound=BaseModel)
Out = TypeVar("Out", bound=BaseModel)
F = TypeVar("F", bound=Callable[..., Any])

_settings: ContextVar[Settings | None] = ContextVar("cosmos_function_settings", default=None)


class FunctionError(ValueError):
    """A declaration that breaks the rules (raised by :func:`function`)."""


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    """The step name a rule uses (``probe-source``); also the activity's name."""
    input: type[BaseModel]
    output: type[BaseModel]
    description: str = ""
    pool: Pool = "cpu"
    shape: ResourceShape = DEFAULT_SHAPE
    """What one call occupies on its worker: CPU threads, memory, GPU sessions."""
    timeout_s: float = 3600.0
    """Start-to-close timeout of one attempt."""
    heartbeat_s: float | None = None
    """Heartbeat timeout; None: the function does not heartbeat."""
    idempotent: bool = True
    """Whether running it twice (a retry after a lost completion) is harmless."""
    consumes: dict[str, str] = field(default_factory=dict)
    """Input field → the step whose output fills it when ``with:`` does not (the list of all
    its outputs where that step was fanned out)."""
    implementation: Callable[..., Any] | None = None
    """The activity to register (None where only the declaration is loaded, as in the API)."""
    origin: str = "builtin"
    """``builtin``, the distribution that provides it, or ``command``."""
    run: Callable[[Any], Awaitable[Any]] | None = field(default=None, repr=False, compare=False)
    """The declared coroutine function, unbound (what :func:`bind` wraps)."""
    command: BaseModel | None = field(default=None, compare=False)
    """A command function's template (``app.stratum.commands.CommandSpec``)."""
    workflow: str | None = None
    """A workflow type (Plato's) that runs a call of this function by fanning its work out
    over the pools, as a child of the pipeline run; None: one activity call. The activity
    stays registered: the workflow may call it (``encode-segment`` does, for short titles)."""


# ---------------------------------------------------------------- declaring


def current_settings() -> Settings:
    """The settings of the worker running this function (bound by :func:`catalog` or
    :func:`bind`); the environment's (``COSMOS_*``) outside a bound call."""
    return _settings.get() or get_settings()


def output_file_uri(output_uri: str, job_id: str, function: str, name: str) -> str:
    """Where a function puts a file of its own for people to fetch: beside the job's package,
    ``<output_uri>/<job_id>/files/<function>/<name>`` (kept when the package is published,
    removed with the job's outputs when it fails)."""
    return join(output_uri, job_id, "files", function, name)


def _check_model(kind: str, model: object, name: str) -> type[BaseModel]:
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise FunctionError(f"function {name!r}: {kind} must be a pydantic model class")
    return model


def _check_context_fields(name: str, model: type[BaseModel]) -> None:
    """The runtime fills these with strings (``webhook_url``: or null)."""
    for key in CONTEXT_FIELDS:
        info = model.model_fields.get(key)
        if info is None:
            continue
        annotation = info.annotation
        accepted = annotation is str or (
            get_origin(annotation) in (Union, types.UnionType)
            and set(get_args(annotation)) <= {str, type(None)}
            and str in get_args(annotation)
        )
        if not accepted:
            raise FunctionError(
                f"function {name!r}: input field {key!r} is filled by the runtime with a "
                f"string; declare it as str (or str | None), not {annotation!r}"
            )


def declare(
    name: str,
    *,
    input: type[BaseModel],
    output: type[BaseModel],
    pool: Pool = "cpu",
    shape: ResourceShape = DEFAULT_SHAPE,
    timeout_s: float = 3600.0,
    heartbeat_s: float | None = None,
    idempotent: bool = True,
    consumes: dict[str, str] | None = None,
    description: str = "",
    run: Callable[[Any], Awaitable[Any]] | None = None,
    implementation: Callable[..., Any] | None = None,
    workflow: str | None = None,
) -> FunctionSpec:
    """A checked :class:`FunctionSpec` (what :func:`function` builds; built-ins that are served
    by an existing activity use it directly)."""
    if not isinstance(name, str) or len(name) > 63 or not NAME.match(name):
        raise FunctionError(
            f"function name {name!r} must be lowercase words joined by dashes "
            "(e.g. thumbnail-strip), at most 63 characters"
        )
    _check_model("input", input, name)
    _check_model("output", output, name)
    _check_context_fields(name, input)
    if pool not in POOL_QUEUES:
        raise FunctionError(f"function {name!r}: pool must be one of {sorted(POOL_QUEUES)}")
    if not isinstance(shape, ResourceShape):
        raise FunctionError(f"function {name!r}: shape must be a ResourceShape")
    if pool == "gpu" and shape.gpu_sessions < 1:
        shape = replace(shape, gpu_sessions=1)
    if not timeout_s > 0 or (heartbeat_s is not None and not heartbeat_s > 0):
        raise FunctionError(f"function {name!r}: timeouts must be positive seconds")
    consumes = dict(consumes or {})
    unknown = sorted(set(consumes) - set(input.model_fields))
    if unknown:
        raise FunctionError(f"function {name!r} consumes into unknown input fields {unknown}")
    return FunctionSpec(
        name=name,
        input=input,
        output=output,
        description=description,
        pool=pool,
        shape=shape,
        timeout_s=float(timeout_s),
        heartbeat_s=None if heartbeat_s is None else float(heartbeat_s),
        idempotent=idempotent,
        consumes=consumes,
        implementation=implementation,
        run=run,
        workflow=workflow,
    )


def function(
    name: str,
    *,
    input: type[In],
    output: type[Out],
    pool: Pool = "cpu",
    shape: ResourceShape = DEFAULT_SHAPE,
    timeout_s: float = 3600.0,
    heartbeat_s: float | None = None,
    idempotent: bool = True,
    consumes: dict[str, str] | None = None,
    description: str | None = None,
    workflow: str | None = None,
) -> Callable[[Callable[[In], Awaitable[Out]]], Callable[[In], Awaitable[Out]]]:
    """Declare ``async def f(input: In) -> Out`` as the function ``name``.

    The decorated callable is a Temporal activity named ``name`` (it reads its settings with
    :func:`current_settings`: the environment's, unless a worker bound its own) and carries
    its :class:`FunctionSpec` (:func:`spec_of`). ``description`` defaults to the docstring's
    first paragraph. Raises :class:`FunctionError` for a declaration that breaks the rules.
    """

    def decorate(fn: Callable[[In], Awaitable[Out]]) -> Callable[[In], Awaitable[Out]]:
        if not inspect.iscoroutinefunction(fn):
            raise FunctionError(f"function {name!r}: {fn!r} must be an async def")
        text = description
        if text is None:
            text = inspect.cleandoc(fn.__doc__ or "").split("\n\n", 1)[0].replace("\n", " ")
        spec = declare(
            name,
            input=input,
            output=output,
            pool=pool,
            shape=shape,
            timeout_s=timeout_s,
            heartbeat_s=heartbeat_s,
            idempotent=idempotent,
            consumes=consumes,
            description=text,
            run=fn,
            workflow=workflow,
        )
        spec = replace(spec, implementation=_activity(spec, None))
        spec.implementation.__cosmos_function__ = spec  # type: ignore[union-attr]
        return spec.implementation  # type: ignore[return-value]

    return decorate


def _activity(spec: FunctionSpec, settings: Settings | None) -> Callable[..., Any]:
    """A fresh activity named ``spec.name`` that runs ``spec.run`` with ``settings`` bound."""
    fn = spec.run
    assert fn is not None

    async def call(input: Any) -> Any:
        token = _settings.set(settings) if settings is not None else None
        try:
            return await fn(input)
        finally:
            if token is not None:
                _settings.reset(token)

    call.__name__ = call.__qualname__ = spec.name.replace("-", "_")
    call.__doc__ = spec.description
    call.__module__ = getattr(fn, "__module__", __name__)
    # Temporal decodes the argument into, and encodes the result from, these types.
    call.__annotations__ = {"input": spec.input, "return": spec.output}
    return activity.defn(name=spec.name)(call)


def spec_of(fn: object) -> FunctionSpec | None:
    """The declaration a :func:`function`-decorated callable carries, else None."""
    spec = getattr(fn, "__cosmos_function__", None)
    return spec if isinstance(spec, FunctionSpec) else None


def bind(spec: FunctionSpec, settings: Settings) -> FunctionSpec:
    """The spec with an implementation that runs under ``settings`` (what a worker registers).
    A spec declared around an existing activity (no ``run``) is returned as it is."""
    if spec.run is None:
        return spec
    return replace(spec, implementation=_activity(spec, settings))


def task_queue(spec: FunctionSpec) -> str:
    return POOL_QUEUES[spec.pool]


# ---------------------------------------------------------------- finding them


def builtin_functions(settings: Settings) -> list[FunctionSpec]:
    """The built-in functions, their implementations bound to ``settings``."""
    from app.stratum.builtins import builtins

    return [bind(spec, settings) for spec in builtins(settings)]


class PluginError(ValueError):
    pass


def collect(obj: object) -> list[FunctionSpec]:
    """The functions an entry point names: a FunctionSpec, a decorated function, a list or
    tuple of those, or a module (every decorated function or FunctionSpec at its top level)."""
    if isinstance(obj, FunctionSpec):
        return [obj]
    if (spec := spec_of(obj)) is not None:
        return [spec]
    if isinstance(obj, types.ModuleType):
        items: Iterable[object] = [
            v for v in vars(obj).values() if isinstance(v, FunctionSpec) or spec_of(v)
        ]
    elif isinstance(obj, list | tuple):
        items = obj
    else:
        raise PluginError(
            f"names a {type(obj).__name__}, not a function, a list of functions or a module"
        )
    found: dict[str, FunctionSpec] = {}
    for item in items:
        spec = item if isinstance(item, FunctionSpec) else spec_of(item)
        if spec is None:
            raise PluginError(f"lists {item!r}, which is not a declared function")
        if spec.name in found and found[spec.name] is not spec:
            raise PluginError(f"declares {spec.name!r} twice")
        found[spec.name] = spec
    return list(found.values())


def load_plugins() -> list[FunctionSpec]:
    """Every function the installed ``cosmos.functions`` entry points declare, ``origin`` the
    distribution's name. A plugin that fails to load is logged with one line and skipped."""
    specs: list[FunctionSpec] = []
    try:
        points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    except Exception as err:  # a broken dist-info elsewhere on the path
        log.error("function plugins not loaded: %s: %s", type(err).__name__, err)
        return []
    seen: set[tuple[str, str]] = set()
    for point in sorted(points, key=lambda p: (p.name, p.value)):
        dist = point.dist.name if point.dist is not None else point.module
        if (dist, point.value) in seen:  # the same distribution found twice on the path
            continue
        seen.add((dist, point.value))
        try:
            found = collect(point.load())
            if not found:
                raise PluginError("declares no functions")
        except (Exception, SystemExit) as err:
            log.error(
                "function plugin %s (%s = %s) skipped: %s: %s",
                dist, point.name, point.value, type(err).__name__, err,
            )  # fmt: skip
            continue
        specs += [replace(spec, origin=dist) for spec in found]
    return specs


def catalog(
    settings: Settings, *, implementations: bool, commands: bool | None = None
) -> dict[str, FunctionSpec]:
    """Every function by name: built-ins, then plugins, then (``commands``; default: when
    ``implementations`` is false) the registered command functions.

    ``implementations``: bound to ``settings``, for a worker to register; otherwise
    declarations only (the API). A name already taken is refused with a logged reason."""
    found: dict[str, FunctionSpec] = {}
    for spec in builtin_functions(settings):
        found[spec.name] = spec
    for spec in load_plugins():
        if spec.name in found:
            log.error(
                "function %s from %s refused: the name is taken by %s",
                spec.name, spec.origin, found[spec.name].origin,
            )  # fmt: skip
        elif spec.name in TAKEN:
            log.error(
                "function %s from %s refused: an activity of the encode pipeline has that name",
                spec.name, spec.origin,
            )  # fmt: skip
        else:
            found[spec.name] = bind(spec, settings)
    if commands if commands is not None else not implementations:
        from app.stratum.commands import command_functions

        for spec in command_functions(settings):
            if spec.name in found or spec.name in TAKEN:
                log.error(
                    "command function %s not listed: the name is taken by %s",
                    spec.name, found[spec.name].origin if spec.name in found else "an activity",
                )  # fmt: skip
            else:
                found[spec.name] = spec
    if not implementations:
        found = {name: replace(spec, implementation=None) for name, spec in found.items()}
    return found


def describe(spec: FunctionSpec) -> dict[str, Any]:
    """What ``GET /v1/functions`` says of a function."""
    described: dict[str, Any] = {
        "name": spec.name,
        "description": spec.description,
        "origin": spec.origin,
        "pool": spec.pool,
        "task_queue": task_queue(spec),
        "shape": asdict(spec.shape),
        "timeout_s": spec.timeout_s,
        "heartbeat_s": spec.heartbeat_s,
        "idempotent": spec.idempotent,
        "consumes": dict(spec.consumes),
        "workflow": spec.workflow,
        "context": [f for f in CONTEXT_FIELDS if f in spec.input.model_fields],
        "input_schema": spec.input.model_json_schema(),
        "output_schema": spec.output.model_json_schema(mode="serialization"),
    }
    if spec.command is not None:
        described["command"] = spec.command.model_dump(mode="json")
    return described
