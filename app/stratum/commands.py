"""Command functions: a fixed argument template of an installed program, run under limits.

The seed's ``StratumJob`` (image, cpu, memory, args, timeout) as this platform can keep it
safe: an admin registers (``POST /v1/functions``, an admin API key) a :class:`CommandSpec`,

- ``program``: one of ``COSMOS_COMMAND_PROGRAMS`` (``ffmpeg``, the platform's own binary, by
  default; another name is looked up on the worker's PATH);
- ``args``: literal strings, fixed at registration, and ``{param}`` placeholders, each a whole
  argument (never part of an option string: ``-vf scale={w}:-2`` is refused);
- ``params``, each typed: ``enum`` (choices the admin lists), ``int`` / ``number`` (bounded),
  ``input`` (a storage URI, checked as a job's source is, or an object of the job's own
  scratch or outputs, fetched to the worker and passed as a local path) or ``output`` (a file
  name the program writes, uploaded after under ``<output>/<job>/files/<name>/``). No
  parameter is a free string: nothing a user writes ever becomes an option;
- ``cpu_threads`` (its shape), ``memory_mb`` (``RLIMIT_AS``: its address space) and
  ``timeout_s`` (a wall-clock limit: its process group is killed; and ``RLIMIT_CPU``
  of ``timeout_s`` x ``cpu_threads`` CPU-seconds).

It is stored as ``<data dir>/functions/<name>.json`` and listed by ``GET /v1/functions`` with
origin ``command``. One generic activity, ``run-command`` on the CPU pool, runs any of them
from ``{spec, params, job_id, scratch_uri, output_uri}``; the CPU worker also serves each
registered command under its own name (a dynamic activity), so the pipeline runtime calls a
command step like any function: ``{<params>, job_id, scratch_uri, output_uri}``. Either way
the worker checks the template and the parameters again, against its own settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import resource
import shutil
import signal
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    create_model,
    model_validator,
)
from temporalio import activity
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError

from app.core.processes import die_with_parent
from app.core.settings import Settings
from app.storage.local import path_to_uri, uri_to_path
from app.storage.object_store import LocalStore, join, store_for
from app.storage.sources import SourceError, resolve_source
from app.stratum.catalog import (
    CONTEXT_FIELDS,
    NAME,
    FunctionSpec,
    current_settings,
    function,
    output_file_uri,
)
from app.stratum.functions.ffmpeg import ffmpeg_binary
from app.stratum.resources import ResourceShape

log = logging.getLogger("cosmos.functions")

ParamType = Literal["enum", "int", "number", "input", "output"]
PARAM_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
PLACEHOLDER = re.compile(r"^\{([a-z][a-z0-9_]{0,31})\}$")
PROGRAM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}(\.[A-Za-z0-9]{1,8})+$")
SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,8}$")
TRANSFER_S = 600.0
"""A command's activity timeout beyond its own: fetching its inputs, uploading its outputs."""
HEARTBEAT_S = 30.0
BEAT_S = 5.0
COMMAND_TIMEOUT = "CommandTimeout"
COMMAND_FAILED = "CommandFailed"
COMMAND_REFUSED = "CommandRefused"
MAX_SPEC_BYTES = 64 * 1024


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Choice = Annotated[StrictStr, Field(max_length=256)] | StrictInt | StrictFloat
"""An enum choice or a default: strictly a string or a number (a JSON true is neither)."""


class CommandParam(_Frozen):
    """One typed parameter of a template."""

    type: ParamType
    description: str = Field("", max_length=500)
    choices: list[Choice] | None = Field(None, max_length=64, description="enum: the values.")
    minimum: float | None = Field(None, description="int / number: the least value.")
    maximum: float | None = Field(None, description="int / number: the greatest value.")
    default: Choice | None = Field(None, description="enum / int / number: when not given.")
    file: str | None = Field(
        None, description="output: the file name the program writes, e.g. frame.png."
    )

    @model_validator(mode="after")
    def _fits_its_type(self) -> CommandParam:
        kind = self.type
        if (self.choices is not None) != (kind == "enum"):
            raise ValueError("choices belong to enum parameters, and every enum needs them")
        if (self.file is not None) != (kind == "output"):
            raise ValueError("file belongs to output parameters, and every output needs one")
        bounded = kind in ("int", "number")
        if bounded != (self.minimum is not None and self.maximum is not None) or (
            not bounded and (self.minimum is not None or self.maximum is not None)
        ):
            raise ValueError("int and number parameters need a minimum and a maximum, no other")
        if kind in ("input", "output") and self.default is not None:
            raise ValueError(f"an {kind} parameter has no default")
        if kind == "enum":
            self._check_choices()
        if bounded:
            self._check_bounds()
        if kind == "output" and (
            self.file is None or not FILE_NAME.match(self.file) or ".." in self.file
        ):
            raise ValueError(
                f"output file {self.file!r} must be a plain file name with an extension "
                "(letters, digits, _ and -; e.g. frame.png)"
            )
        return self

    def _check_choices(self) -> None:
        choices = self.choices or []
        if not choices:
            raise ValueError("an enum needs at least one choice")
        if any(isinstance(c, bool) for c in choices):
            raise ValueError("enum choices are strings or numbers, not booleans")
        if any(isinstance(c, str) and (not c or re.search(r"[\x00-\x1f\x7f]", c)) for c in choices):
            raise ValueError("enum choices must be non-empty, without control characters")
        if any(isinstance(c, float) and not math.isfinite(c) for c in choices):
            raise ValueError("enum choices must be finite numbers")
        if len({(isinstance(c, str), c) for c in choices}) != len(choices):
            raise ValueError("enum choices must be distinct")
        if self.default is not None and self.default not in choices:
            raise ValueError(f"default {self.default!r} is not one of the choices")

    def _check_bounds(self) -> None:
        assert self.minimum is not None and self.maximum is not None
        if not (math.isfinite(self.minimum) and math.isfinite(self.maximum)):
            raise ValueError("bounds must be finite")
        if self.minimum > self.maximum:
            raise ValueError(f"minimum {self.minimum:g} is above maximum {self.maximum:g}")
        if self.type == "int" and not (self.minimum.is_integer() and self.maximum.is_integer()):
            raise ValueError("an int parameter's bounds are whole numbers")
        default = self.default
        if default is not None:
            if isinstance(default, str | bool) or not self.minimum <= default <= self.maximum:
                raise ValueError(f"default {default!r} is not a number within the bounds")
            if self.type == "int" and not float(default).is_integer():
                raise ValueError(f"default {default!r} of an int parameter is not whole")


class CommandSpec(_Frozen):
    """Body of ``POST /v1/functions``: a command function's template."""

    name: str = Field(max_length=63, description="The step name, lowercase words joined by dashes.")
    description: str = Field("", max_length=1000)
    program: str = Field(description="A program COSMOS_COMMAND_PROGRAMS allows, e.g. ffmpeg.")
    args: list[Annotated[str, Field(max_length=1024)]] = Field(
        min_length=1,
        max_length=256,
        description="Literal arguments and {param} placeholders, each a whole argument.",
    )
    params: dict[str, CommandParam] = Field(default_factory=dict, max_length=32)
    cpu_threads: int = Field(1, ge=1, le=64, description="Its shape: cores one run occupies.")
    memory_mb: int = Field(
        1024, ge=16, le=262_144, description="Address-space limit (RLIMIT_AS), MiB."
    )
    timeout_s: float = Field(600, gt=0, le=86_400, description="Wall-clock limit of one run.")
    ok_exit_codes: list[Annotated[int, Field(ge=0, le=255)]] = Field(
        default_factory=lambda: [0], min_length=1, max_length=16
    )

    @model_validator(mode="after")
    def _template_keeps_the_rules(self) -> CommandSpec:
        if not NAME.match(self.name):
            raise ValueError(
                f"name {self.name!r} must be lowercase words joined by dashes (e.g. scale-frame)"
            )
        if not PROGRAM.match(self.program):
            raise ValueError(f"program {self.program!r} must be a bare program name, no path")
        for key in self.params:
            if not PARAM_NAME.match(key):
                raise ValueError(f"parameter name {key!r}: lowercase letters, digits and _")
            if key in CONTEXT_FIELDS or key in ("spec", "params"):
                raise ValueError(f"parameter name {key!r} is reserved")
        used: set[str] = set()
        for i, arg in enumerate(self.args):
            if "\x00" in arg or "\n" in arg:
                raise ValueError(f"argument {i} contains a NUL or a newline")
            if "{" not in arg and "}" not in arg:
                continue
            found = PLACEHOLDER.match(arg)
            if found is None:
                raise ValueError(
                    f"argument {i} {arg!r}: a placeholder must be a whole argument ({{param}} "
                    "alone), never part of an option string; braces appear only in placeholders"
                )
            if found.group(1) not in self.params:
                raise ValueError(f"argument {i} {arg!r}: no parameter {found.group(1)!r}")
            used.add(found.group(1))
        unused = sorted(set(self.params) - used)
        if unused:
            raise ValueError(f"parameters {', '.join(unused)} appear in no argument")
        files = [p.file for p in self.params.values() if p.type == "output"]
        if len(set(files)) != len(files):
            raise ValueError("two outputs write the same file")
        return self


class RunCommandInput(_Frozen):
    """``run-command``'s argument: the template, the values, and the run's context."""

    spec: CommandSpec
    params: dict[str, Any] = Field(default_factory=dict)
    job_id: str
    scratch_uri: str
    output_uri: str


class RunCommandOutput(_Frozen):
    outputs: dict[str, str] = Field(description="Output parameter → the uploaded file's URI.")
    exit_code: int
    seconds: float = Field(description="Wall-clock seconds the program ran.")


class CommandError(ValueError):
    """A template this deployment does not run; the message is safe to show to the client."""


# ---------------------------------------------------------------- checks


def program_problem(spec: CommandSpec, settings: Settings) -> str | None:
    allowed = settings.command_program_set
    if spec.program not in allowed:
        return (
            f"program {spec.program!r} is not allowed; COSMOS_COMMAND_PROGRAMS allows "
            f"{', '.join(sorted(allowed)) or 'none'}"
        )
    return None


def program_path(spec: CommandSpec, settings: Settings) -> str:
    """The binary this worker runs for ``spec.program`` (CommandError where none)."""
    problem = program_problem(spec, settings)
    if problem:
        raise CommandError(problem)
    if spec.program == "ffmpeg":
        return ffmpeg_binary(settings.ffmpeg_path)
    found = shutil.which(spec.program)
    if found is None:
        raise CommandError(f"program {spec.program!r} is not installed on this worker")
    return found


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("-"))


def params_model(spec: CommandSpec, *, context: bool = False) -> type[BaseModel]:
    """The parameters a run gives (outputs are fixed: none), as a pydantic model; with
    ``context``, the run's fields too (what a command step's input is)."""
    fields: dict[str, Any] = {}
    for key, param in spec.params.items():
        info: dict[str, Any] = {"description": param.description or None}
        if param.default is not None:
            info["default"] = param.default
        if param.type == "enum":
            annotation: Any = Literal[tuple(param.choices or ())]
        elif param.type == "int":
            annotation = int
            info |= {"ge": int(param.minimum or 0), "le": int(param.maximum or 0), "strict": True}
        elif param.type == "number":
            annotation = float
            info |= {"ge": param.minimum, "le": param.maximum, "allow_inf_nan": False,
                     "strict": True}  # fmt: skip
        elif param.type == "input":
            annotation = str
            info |= {"min_length": 1, "max_length": 4096}
            info["description"] = param.description or "A storage URI: path, file:// or s3://."
        else:
            continue
        fields[key] = (annotation, Field(**info))
    if context:
        fields |= {key: (str, ...) for key in ("job_id", "scratch_uri", "output_uri")}
    model: type[BaseModel] = create_model(  # type: ignore[call-overload]
        f"{_camel(spec.name)}{'Input' if context else 'Params'}",
        __config__=ConfigDict(extra="forbid", frozen=True),
        **fields,
    )
    return model


def command_function(spec: CommandSpec) -> FunctionSpec:
    """A command function's declaration, as the catalog lists it."""
    return FunctionSpec(
        name=spec.name,
        input=params_model(spec, context=True),
        output=RunCommandOutput,
        description=spec.description or f"{spec.program} {' '.join(spec.args)}"[:300],
        pool="cpu",
        shape=ResourceShape(cpu_threads=spec.cpu_threads, memory_mib=spec.memory_mb),
        timeout_s=spec.timeout_s + TRANSFER_S,
        heartbeat_s=HEARTBEAT_S,
        idempotent=True,
        origin="command",
        command=spec,
    )


# ---------------------------------------------------------------- the store


class CommandStore:
    """Registered templates, ``<data dir>/functions/<name>.json``, through the object store."""

    def __init__(self, settings: Settings) -> None:
        self.prefix = path_to_uri(settings.data_path / "functions")
        self.store = store_for(self.prefix, settings)

    def _uri(self, name: str) -> str:
        if not NAME.match(name):
            raise CommandError(f"no command function can be named {name!r}")
        return join(self.prefix, f"{name}.json")

    def get(self, name: str) -> CommandSpec | None:
        try:
            uri = self._uri(name)
        except CommandError:
            return None
        if not self.store.exists(uri):
            return None
        return CommandSpec.model_validate_json(self.store.read_bytes(uri, MAX_SPEC_BYTES))

    def save(self, spec: CommandSpec) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{spec.name}.json"
            path.write_text(spec.model_dump_json(indent=2) + "\n", encoding="utf-8")
            self.store.upload(path, self._uri(spec.name))

    def all(self) -> list[CommandSpec]:
        """Every registered template; one that no longer reads is logged and left out."""
        specs = []
        for name in self.store.names(self.prefix):
            if "/" in name or not name.endswith(".json"):
                continue
            try:
                spec = self.get(name.removesuffix(".json"))
            except (ValueError, OSError) as err:
                log.error("command function %s skipped: %s", name, err)
                continue
            if spec is not None:
                specs.append(spec)
        return specs


def command_functions(settings: Settings) -> list[FunctionSpec]:
    return [command_function(spec) for spec in CommandStore(settings).all()]


# ---------------------------------------------------------------- running one


def _refused(message: str) -> ApplicationError:
    return ApplicationError(message, type=COMMAND_REFUSED, non_retryable=True)


def _limits(memory_bytes: int, cpu_s: int) -> Callable[[], None]:
    """Between fork and exec: the address space and CPU time capped, no core dumps, and the
    child killed if the worker dies."""
    as_hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)[1]

    def capped(value: int, hard: int) -> int:
        return value if hard == resource.RLIM_INFINITY else min(value, hard)

    memory = capped(memory_bytes, as_hard)
    cpu = capped(cpu_s, cpu_hard)
    cpu_kill = capped(cpu_s + 5, cpu_hard)

    def apply() -> None:  # pragma: no cover - runs in the child
        die_with_parent()
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu_kill))  # soft: SIGXCPU; hard: SIGKILL
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


class CommandRun:
    """One run of a template in its own folder under the worker's work dir."""

    def __init__(self, settings: Settings, request: RunCommandInput) -> None:
        self.settings = settings
        self.request = request
        self.spec = request.spec
        self.folder = (
            settings.data_path / "work" / request.job_id
            / f"command-{self.spec.name}-{uuid.uuid4().hex[:8]}"
        )  # fmt: skip

    async def __call__(self) -> RunCommandOutput:
        spec = self.spec
        try:
            binary = program_path(spec, self.settings)
        except CommandError as err:
            raise _refused(str(err)) from None
        try:
            values = params_model(spec).model_validate(self.request.params).model_dump()
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'params'}: {e['msg']}" for e in err.errors()
            )
            raise _refused(f"{spec.name}: {problems}") from None
        try:
            (self.folder / "in").mkdir(parents=True)
            (self.folder / "out").mkdir()
            paths = {
                key: await self._fetch(key, values[key])
                for key, param in spec.params.items()
                if param.type == "input"
            }
            args = self._render(values, paths)
            code, seconds = await self._run([binary, *args])
            outputs = await self._upload()
        finally:
            await asyncio.to_thread(shutil.rmtree, self.folder, True)
        return RunCommandOutput(outputs=outputs, exit_code=code, seconds=round(seconds, 3))

    # ------------------------------------------------------------ inputs and arguments

    def _own(self, uri: str) -> tuple[bool, Path | None]:
        """Whether a URI is under this job's scratch or outputs (the files of its earlier
        steps), and that folder where it is local."""
        request = self.request
        for root in (join(request.scratch_uri, request.job_id),
                     join(request.output_uri, request.job_id)):  # fmt: skip
            if uri.startswith(root + "/"):
                if ".." in PurePosixPath(urlparse(uri).path).parts:
                    raise _refused(f"input {uri!r} must not contain '..'")
                return True, uri_to_path(root).resolve() if uri.startswith("file:") else None
        return False, None

    async def _fetch(self, key: str, uri: str) -> Path:
        """The input as a file in the run's folder: a checked local file linked, an object
        downloaded. Its name is the parameter's, never the user's."""
        if "\x00" in uri:
            raise _refused(f"input {key}: contains a NUL byte")
        own, root = self._own(uri)
        checked = uri
        if not own:
            try:
                checked = resolve_source(
                    uri, self.settings.allowed_source_roots, self.settings.source_bucket_set
                )
            except SourceError as err:
                raise _refused(f"input {key}: {err}") from None
        suffix = PurePosixPath(urlparse(checked).path).suffix
        dest = self.folder / "in" / (key + (suffix if SUFFIX.match(suffix) else ""))
        store = store_for(checked, self.settings)
        if isinstance(store, LocalStore):
            try:
                real = uri_to_path(checked).resolve(strict=True)
            except (FileNotFoundError, NotADirectoryError):
                raise _refused(f"input {key}: {uri} does not exist") from None
            if root is not None and not real.is_relative_to(root):
                raise _refused(f"input {key}: {uri} resolves outside the job's files")
            if not real.is_file():
                raise _refused(f"input {key}: {uri} is not a regular file")
            dest.symlink_to(real)
            return dest
        try:
            size = await asyncio.to_thread(store.size, checked)
        except FileNotFoundError:
            raise _refused(f"input {key}: {uri} does not exist") from None
        if size > self.settings.max_source_bytes:
            raise _refused(f"input {key}: {size} bytes is over COSMOS_MAX_SOURCE_BYTES")
        await asyncio.to_thread(store.download, checked, dest)
        return dest

    def _render(self, values: dict[str, Any], inputs: dict[str, Path]) -> list[str]:
        """The template with each placeholder replaced by one argument. For ffmpeg, inputs are
        ``file:`` paths opened with ``-protocol_whitelist file`` (as the platform's own ffmpeg
        runs open them: a playlist inside cannot reach the network)."""
        spec = self.spec
        ffmpeg = spec.program == "ffmpeg"
        rendered: list[str] = ["-hide_banner", "-nostdin"] if ffmpeg else []
        for i, arg in enumerate(spec.args):
            found = PLACEHOLDER.match(arg)
            if found is None:
                nxt = PLACEHOLDER.match(spec.args[i + 1]) if i + 1 < len(spec.args) else None
                opens_input = nxt is not None and spec.params[nxt.group(1)].type == "input"
                if ffmpeg and arg == "-i" and opens_input:
                    rendered += ["-protocol_whitelist", "file"]
                rendered.append(arg)
                continue
            key = found.group(1)
            param = spec.params[key]
            if param.type == "input":
                path = str(inputs[key])
                rendered.append(f"file:{path}" if ffmpeg else path)
            elif param.type == "output":
                assert param.file is not None
                rendered.append(str(self.folder / "out" / param.file))
            else:
                value = values[key]
                rendered.append(repr(value) if isinstance(value, float) else str(value))
        return rendered

    # ------------------------------------------------------------ the process

    async def _run(self, cmd: list[str]) -> tuple[int, float]:
        spec = self.spec
        cpu_s = math.ceil(spec.timeout_s * spec.cpu_threads) + 1
        env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(self.folder),
               "TMPDIR": str(self.folder), "LC_ALL": "C"}  # fmt: skip
        limits = f"{spec.memory_mb} MiB of address space, {spec.timeout_s:g} s"
        started = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                cwd=self.folder,
                env=env,
                start_new_session=True,
                preexec_fn=_limits(spec.memory_mb << 20, cpu_s),
            )
        except OSError as err:
            raise _refused(
                f"{spec.name}: {spec.program} could not start within its limits ({limits}): "
                f"{err.strerror or err}"
            ) from None
        tail: deque[str] = deque(maxlen=12)

        async def read_stderr() -> None:
            assert proc.stderr is not None
            async for raw in proc.stderr:
                if line := raw.decode(errors="replace").rstrip():
                    tail.append(line[:500])

        reader = asyncio.create_task(read_stderr())
        waiter = asyncio.create_task(proc.wait())
        deadline = started + spec.timeout_s
        try:
            while not waiter.done():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    _kill(proc)
                    await waiter
                    raise ApplicationError(
                        f"{spec.name}: {spec.program} ran past its wall-clock limit of "
                        f"{spec.timeout_s:g}s and was killed",
                        type=COMMAND_TIMEOUT,
                        non_retryable=True,
                    )
                await asyncio.wait({waiter}, timeout=min(BEAT_S, remaining))
                activity.heartbeat({"label": spec.name, "done_s": time.monotonic() - started})
        except BaseException:
            _kill(proc)
            with contextlib.suppress(Exception):
                await asyncio.shield(waiter)
            raise
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reader, timeout=5)
        code = waiter.result()
        seconds = time.monotonic() - started
        if code == -signal.SIGXCPU:
            raise ApplicationError(
                f"{spec.name}: {spec.program} used up its CPU time ({cpu_s} CPU-seconds: "
                f"timeout_s x cpu_threads) and was killed",
                type=COMMAND_TIMEOUT,
                non_retryable=True,
            )
        if code not in spec.ok_exit_codes:
            how = f"was killed by signal {-code}" if code < 0 else f"exited with {code}"
            detail = "; ".join(tail) or "no output on stderr"
            raise ApplicationError(
                f"{spec.name}: {spec.program} {how} (limits: {limits}): {detail}",
                type=COMMAND_FAILED,
            )
        return code, seconds

    async def _upload(self) -> dict[str, str]:
        request, spec = self.request, self.spec
        outputs = {}
        for key, param in spec.params.items():
            if param.type != "output":
                continue
            assert param.file is not None
            path = self.folder / "out" / param.file
            if path.is_symlink() or not path.is_file():
                raise ApplicationError(
                    f"{spec.name}: {spec.program} wrote no file {param.file} (output {key})",
                    type=COMMAND_FAILED,
                )
            uri = output_file_uri(request.output_uri, request.job_id, spec.name, param.file)
            await asyncio.to_thread(store_for(uri, self.settings).upload, path, uri)
            outputs[key] = uri
        return outputs


@function(
    "run-command",
    input=RunCommandInput,
    output=RunCommandOutput,
    timeout_s=86_400 + TRANSFER_S,
    heartbeat_s=HEARTBEAT_S,
)
async def run_command(input: RunCommandInput) -> RunCommandOutput:
    """Run a command function's template with these parameters, under its limits: inputs
    fetched to the worker, outputs uploaded under ``<output>/<job>/files/<name>/``."""
    return await CommandRun(current_settings(), input)()


def command_activity(settings: Settings) -> Callable[..., Any]:
    """The CPU worker's dynamic activity: a registered command function served under its own
    name, its input ``{<params>, job_id, scratch_uri, output_uri}``."""

    @activity.defn(dynamic=True)
    async def serve_command(args: Sequence[RawValue]) -> dict[str, Any]:
        name = activity.info().activity_type
        try:
            spec = await asyncio.to_thread(CommandStore(settings).get, name)
        except (ValueError, OSError) as err:
            raise _refused(f"command function {name!r} cannot be read: {err}") from None
        if spec is None:
            raise ApplicationError(
                f"no function {name!r} is served on {activity.info().task_queue}",
                type="UnknownFunction",
                non_retryable=True,
            )
        if len(args) != 1:
            raise _refused(f"{name}: one argument (an object) expected, got {len(args)}")
        given = activity.payload_converter().from_payload(args[0].payload, dict)
        context = {key: given.pop(key, None) for key in ("job_id", "scratch_uri", "output_uri")}
        given.pop("webhook_url", None)
        try:
            request = RunCommandInput(spec=spec, params=given, **context)
        except ValidationError as err:
            raise _refused(f"{name}: {err.errors()[0]['msg']} ({err.errors()[0]['loc']})") from None
        result = await CommandRun(settings, request)()
        return result.model_dump(mode="json")

    return serve_command
