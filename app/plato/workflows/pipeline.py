"""PipelineWorkflow: a Plato definition interpreted durably.

Rules fire on events (``workflow.started``, ``<step>.completed``, ``<step>.failed``,
``all <step>.completed``, ``any.failed``); their ``do`` actions run steps, which are Stratum
functions called as activities by name. Everything the run needs is in its input: the parsed
definition (so a changed YAML never changes a running or replayed history) and, per function,
how to call it (queue, timeouts, fields, what it consumes), resolved from the catalog when the
run started. Outputs stay JSON; media stays in storage, only URIs travel.

Binding a step's input, field by field: its ``with:``, the fan-out variable of that name, the
run's context (``job_id``, ``scratch_uri``, ``output_uri``, ``webhook_url``), the run input of
that name, then the output of the step it ``consumes`` (all outputs, as a list, for a step that
was fanned out). A step that consumes one still running in the same ``do`` waits for it: the
seed's ``do: [mux-final, publish-manifest]`` packages, then publishes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, Field
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from app.core.models import CleanupInput, ErrorInfo, Manifests, RetryOptions, WorkflowState
    from app.plato.rules.expressions import ExpressionError, evaluate, holds
    from app.plato.rules.model import (
        Action,
        Argument,
        Compensate,
        Constant,
        Definition,
        Event,
        Fanout,
        Parallel,
        Retry,
        Rule,
        Run,
        Sequence,
    )
    from app.plato.rules.validate import steps_run
    from app.plato.workflows.calls import error_info, heartbeat_timeout
    from app.stratum.catalog import CONTEXT_FIELDS
    from app.stratum.functions.lifecycle import LifecycleActivities
    from app.stratum.queues import CPU_QUEUE, WORKFLOW_QUEUE

RECENT_FIRINGS = 8
BATCH_ITEMS = 200
"""A fan-out of more items runs them in child workflows of this many each, one after another
within the same window, so that no history holds thousands of activities."""


class StepRuntime(BaseModel):
    """How to call one function, as the catalog declared it when the run started."""

    task_queue: str
    timeout_s: float
    heartbeat_s: float | None = None
    idempotent: bool = True
    fields: list[str] = Field(default_factory=list)
    required: list[str] = Field(default_factory=list)
    consumes: dict[str, str] = Field(default_factory=dict)
    workflow: str | None = Field(
        None, description="Runs as this child workflow (a FunctionCall in), not one activity."
    )


class PipelineRun(BaseModel):
    job_id: str
    definition: Definition
    input: dict[str, Any] = Field(default_factory=dict)
    functions: dict[str, StepRuntime]
    scratch_uri: str
    output_uri: str
    webhook_url: str | None = None
    retry: RetryOptions = RetryOptions()
    max_parallel: int = Field(8, ge=1, le=1000, description="Fan-out items in flight, default.")
    cleanup: bool = Field(True, description="Remove the run's scratch (and, failed, outputs).")


class RetrySpec(BaseModel):
    """A RetryPolicy as data, for a child workflow's input."""

    max_attempts: int
    initial_interval_s: float
    backoff: float = 2.0
    non_retryable: list[str] = Field(default_factory=list)

    def policy(self) -> RetryPolicy:
        return RetryPolicy(
            initial_interval=timedelta(seconds=self.initial_interval_s),
            backoff_coefficient=self.backoff,
            maximum_attempts=self.max_attempts,
            non_retryable_error_types=self.non_retryable or None,
        )


class FanoutBatch(BaseModel):
    step: str
    spec: StepRuntime
    args: list[dict[str, Any]] = Field(description="Each item's input, bound by the parent.")
    first: int = Field(description="The fan-out index of the first item.")
    max_parallel: int
    retry: RetrySpec


class PipelineResult(BaseModel):
    job_id: str
    definition: str = Field(description="The definition's id and version that ran.")
    firings: int
    outputs: dict[str, Any] = Field(description="Each step's output (a list for a fan-out).")
    manifests: Manifests | None = None
    stage_seconds: dict[str, float] = Field(default_factory=dict)


class StepFailed(Exception):
    """A step's last attempt failed: the run fails with this cause (after onExhausted)."""

    def __init__(self, step: str, info: ErrorInfo) -> None:
        super().__init__(f"{step}: {info.message}")
        self.step, self.info = step, info


@workflow.defn
class PipelineWorkflow:
    def __init__(self) -> None:
        self._run: PipelineRun
        self._outputs: dict[str, Any] = {}
        self._fanned: dict[str, list[Any]] = {}
        self._done: set[str] = set()
        self._failed: dict[str, ErrorInfo] = {}
        self._running: dict[str, int] = {}
        self._started_at: dict[str, float] = {}
        self._seconds: dict[str, float] = {}
        self._compensations: list[Compensate] = []
        self._firings = 0
        self._recent: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._fatal: BaseException | None = None
        self._compensating = False
        self._active = 0
        """Steps being bound or run."""
        self._waiting = 0
        """Of those, the ones waiting for a step they consume."""
        self._handling = 0
        """Failure rules (onExhausted) still running: the run fails after them."""
        self._calls = 0
        """Step calls made, for the IDs of the ones that run as child workflows."""
        self._items: dict[str, tuple[int, int]] = {}
        """Fanned-out step -> items finished, items in all (for progress)."""

    @workflow.query(name="state")
    def state(self) -> WorkflowState:
        running = sorted(s for s, n in self._running.items() if n)
        return WorkflowState(
            stage=", ".join(running) if running else ("done" if self._fatal is None else "failed"),
            stage_seconds=dict(self._seconds),
            manifests=self._manifests(),
            progress=self._progress(),
        )

    def _progress(self) -> float:
        """The share of the steps the success path runs that are done (a fanned-out step by
        its items). Steps only failure rules run are not counted: a run that needs none of
        them still reaches 1."""
        if not hasattr(self, "_run"):
            return 0.0
        planned = set()
        for rule in self._run.definition.rules:
            if rule.when.kind not in ("failed", "any_failed"):
                planned |= steps_run(rule.do)
        if not planned:
            return 0.0
        done = 0.0
        for step in planned:
            if step in self._done:
                done += 1
            elif self._items.get(step):
                finished, total = self._items[step]
                done += finished / total
        return round(min(done / len(planned), 1.0), 4)

    @workflow.run
    async def run(self, run: PipelineRun) -> PipelineResult:
        self._run = run
        try:
            await self._emit(Event(kind="started"))
            await workflow.wait_condition(
                lambda: not self._handling and (not self._tasks or self._fatal is not None)
            )
            if self._fatal is not None:
                raise self._fatal
        except (StepFailed, ApplicationError) as err:
            await self._cancel_all()
            await self._compensate()
            await self._cleanup(remove_outputs=True)
            if isinstance(err, StepFailed):
                raise ApplicationError(
                    f"{err.step} failed: {err.info.message}", type=err.info.type,
                    non_retryable=True,
                ) from None  # fmt: skip
            raise
        await self._cleanup(remove_outputs=False)
        outputs = {**self._outputs, **self._fanned}
        return PipelineResult(
            job_id=run.job_id,
            definition=f"{run.definition.id}@{run.definition.version}",
            firings=self._firings,
            outputs=outputs,
            manifests=self._manifests(),
            stage_seconds=dict(self._seconds),
        )

    # ------------------------------------------------------------------ events and rules

    def _matches(self, rule: Rule, event: Event) -> bool:
        when = rule.when
        if when.kind == "any_failed":
            return event.kind == "failed"
        return when.kind == event.kind and when.step == event.step

    async def _emit(self, event: Event) -> None:
        """Fire every rule the event matches; their actions run as tasks of the run. Nothing
        fires while compensating: the run is already failing."""
        if self._compensating:
            return
        for rule in self._run.definition.rules:
            if self._matches(rule, event) and self._holds(rule):
                self._count(1, f"{_event_text(rule.when)} (line {rule.line})")
                self._spawn(self._actions(rule.do, {}))

    def _holds(self, rule: Rule, env: dict[str, Any] | None = None) -> bool:
        """A rule's ``if:``, over what is known when its event happens."""
        if rule.if_ is None:
            return True
        try:
            return holds(rule.if_.text, self._scope(env or {}))
        except ExpressionError as err:
            raise ApplicationError(
                f"line {rule.if_.line}: `{rule.if_.text}`: {err}",
                type="PipelineError",
                non_retryable=True,
            ) from None

    def _count(self, firings: int, what: str) -> None:
        """The runaway guard: a run that would pass ``max_firings`` fails, with work cancelled."""
        limit = self._run.definition.max_firings
        if self._firings + firings > limit:
            raise ApplicationError(
                f"the run reached its limit of {limit} rule firings ({what} would take "
                f"{self._firings + firings}); the definition loops or fans out too far",
                type="RunawayGuard",
                non_retryable=True,
            )
        self._firings += firings
        self._recent = [*self._recent, what][-RECENT_FIRINGS:]
        workflow.set_current_details(
            f"{self._firings} firings; last: " + "; ".join(reversed(self._recent))
        )

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        async def guarded() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except BaseException as err:  # the first cause ends the run
                if self._fatal is None:
                    self._fatal = err
            finally:
                self._tasks.discard(task)

        task = asyncio.create_task(guarded())
        self._tasks.add(task)

    async def _cancel_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------------ actions

    async def _actions(self, actions: list[Action], env: dict[str, Any]) -> None:
        """A ``do`` list: its actions at once (a step that consumes another waits for it)."""
        await asyncio.gather(*(self._action(a, env) for a in actions))

    async def _action(self, action: Action, env: dict[str, Any]) -> None:
        if isinstance(action, Run):
            await self._step(action.step, action.with_, env)
        elif isinstance(action, Fanout):
            await self._fanout(action, env)
        elif isinstance(action, Parallel):
            await self._actions(action.actions, env)
        elif isinstance(action, Sequence):
            for inner in action.actions:
                await self._action(inner, env)
        elif isinstance(action, Compensate):
            # bound now, run only if the run fails; in reverse order of registration
            self._compensations.append(
                action.model_copy(update={"with_": self._frozen(action.with_, env)})
            )

    async def _fanout(self, fanout: Fanout, env: dict[str, Any]) -> None:
        """Every item of the list, at most ``max_parallel`` at once; the budget is checked
        for all of them before the first starts."""
        items = self._evaluate(fanout.items.text, env, fanout)
        if not isinstance(items, list):
            raise ApplicationError(
                f"line {fanout.line}: `{fanout.items.text}` is {type(items).__name__}, "
                "not a list to fan out over",
                type="PipelineError",
                non_retryable=True,
            )
        self._count(len(items), f"fanout {fanout.run} x{len(items)} (line {fanout.line})")
        if len(items) > BATCH_ITEMS:
            await self._fanout_batches(fanout, env, items)
            return
        window = asyncio.Semaphore(fanout.max_parallel or self._run.max_parallel)
        results: list[Any] = [None] * len(items)
        self._items[fanout.run] = (0, len(items))

        async def one(index: int, item: Any) -> None:
            async with window:
                results[index] = await self._step(
                    fanout.run, fanout.with_, {**env, fanout.var: item}, item=index,
                    fanned=True,
                )  # fmt: skip
            finished, total = self._items[fanout.run]
            self._items[fanout.run] = (finished + 1, total)

        await asyncio.gather(*(one(i, item) for i, item in enumerate(items)))
        self._fanned[fanout.run] = results
        self._done.add(fanout.run)
        await self._emit(Event(kind="all_completed", step=fanout.run))

    async def _fanout_batches(self, fanout: Fanout, env: dict[str, Any], items: list[Any]) -> None:
        """Every item bound here, then run ``BATCH_ITEMS`` at a time by a child workflow; the
        completions are told as each child returns."""
        step, spec = fanout.run, self._run.functions[fanout.run]
        self._active += 1
        try:
            args = [
                await self._bind(step, spec, fanout.with_, {**env, fanout.var: item})
                for item in items
            ]
        finally:
            self._active -= 1
        results: list[Any] = []
        for first in range(0, len(args), BATCH_ITEMS):
            batch = args[first : first + BATCH_ITEMS]
            self._running[step] = self._running.get(step, 0) + len(batch)
            self._started_at.setdefault(step, workflow.time())
            try:
                outputs: list[Any] = await workflow.execute_child_workflow(
                    FanoutBatchWorkflow.run,
                    FanoutBatch(
                        step=step,
                        spec=spec,
                        args=batch,
                        first=first,
                        max_parallel=fanout.max_parallel or self._run.max_parallel,
                        retry=self._retry(step, spec),
                    ),
                    id=f"{workflow.info().workflow_id}-{step}-{first // BATCH_ITEMS + 1}",
                    static_summary=f"{step} [{first}..{first + len(batch) - 1}]",
                )
            except ChildWorkflowError as err:
                raise await self._failure(step, error_info(err)) from None
            finally:
                self._running[step] -= len(batch)
                self._seconds[step] = round(workflow.time() - self._started_at[step], 3)
            results += outputs
            self._items[step] = (len(results), len(args))
            for _ in outputs:
                await self._emit(Event(kind="completed", step=step))
        self._fanned[step] = results
        self._done.add(step)
        await self._emit(Event(kind="all_completed", step=step))

    async def _step(
        self,
        step: str,
        arguments: dict[str, Argument],
        env: dict[str, Any],
        *,
        item: int | None = None,
        fanned: bool = False,
    ) -> Any:
        spec = self._run.functions[step]
        self._active += 1
        try:
            return await self._call(step, spec, arguments, env, item, fanned)
        finally:
            self._active -= 1

    async def _call(
        self,
        step: str,
        spec: StepRuntime,
        arguments: dict[str, Argument],
        env: dict[str, Any],
        item: int | None,
        fanned: bool,
    ) -> Any:
        arg = await self._bind(step, spec, arguments, env)
        self._running[step] = self._running.get(step, 0) + 1
        self._started_at.setdefault(step, workflow.time())
        label = step if item is None else f"{step} [{item}]"
        self._calls += 1
        call_id = f"{workflow.info().workflow_id}-{step}-{self._calls}"
        try:
            output = await run_step(step, arg, spec, self._retry(step, spec), label, call_id)
        except (ActivityError, ChildWorkflowError) as err:
            raise await self._failure(step, error_info(err)) from None
        finally:
            self._running[step] -= 1
            if not self._running[step]:
                self._seconds[step] = round(workflow.time() - self._started_at[step], 3)
        if not fanned:
            self._outputs[step] = output
            self._done.add(step)
        await self._emit(Event(kind="completed", step=step))
        return output

    async def _failure(self, step: str, info: ErrorInfo) -> StepFailed:
        """A step failed its last attempt: ``<step>.failed`` and ``any.failed`` fire, the
        covering rules' ``onExhausted`` run, and the run is to fail with this cause (the
        error to raise)."""
        self._failed[step] = info
        self._handling += 1
        try:
            await self._failure_rules(step, info)
        finally:
            self._handling -= 1
        return StepFailed(step, info)

    async def _failure_rules(self, step: str, info: ErrorInfo) -> None:
        for rule in self._run.definition.rules:
            env = {"error": info.model_dump(), "failed_step": step}
            if not self._matches(rule, Event(kind="failed", step=step)) or not self._holds(
                rule, env
            ):
                continue
            self._count(1, f"{_event_text(rule.when)} for {step} (line {rule.line})")
            if rule.retry is not None and rule.retry.on_exhausted:
                await self._actions(rule.retry.on_exhausted, env)
            if rule.do:
                await self._actions(rule.do, env)

    async def _cleanup(self, *, remove_outputs: bool) -> None:
        """The run's scratch space, and on failure whatever it published: nothing partial is
        left looking whole (as EncodeWorkflow's saga does)."""
        if not self._run.cleanup:
            return
        await workflow.execute_activity_method(
            LifecycleActivities.cleanup,
            CleanupInput(
                job_id=self._run.job_id,
                output_uri=self._run.output_uri,
                scratch_uri=self._run.scratch_uri,
                remove_outputs=remove_outputs,
            ),
            task_queue=CPU_QUEUE,
            start_to_close_timeout=timedelta(minutes=10),
            summary="cleanup",
        )

    async def _compensate(self) -> None:
        self._compensating = True
        for action in reversed(self._compensations):
            try:
                await self._step(action.step, action.with_, {})
            except StepFailed:
                workflow.logger.warning("compensation %s failed", action.step)

    # ------------------------------------------------------------------ binding

    def _retry(self, step: str, spec: StepRuntime) -> RetrySpec:
        """The rule's ``retry`` for this step (``<step>.failed`` before ``any.failed``), else
        the run's default; a function that is not idempotent is not repeated by default."""
        covering: Retry | None = None
        for rule in self._run.definition.rules:
            if rule.retry is None:
                continue
            if rule.when.kind == "failed" and rule.when.step == step:
                covering = rule.retry
                break
            if rule.when.kind == "any_failed" and covering is None:
                covering = rule.retry
        if covering is None:
            return RetrySpec(
                max_attempts=self._run.retry.max_attempts if spec.idempotent else 1,
                initial_interval_s=self._run.retry.initial_interval_s,
            )
        return RetrySpec(
            max_attempts=covering.max,
            initial_interval_s=covering.initial_interval_s,
            backoff=2.0 if covering.backoff == "exponential" else 1.0,
            non_retryable=["InvalidSource", "PlanError", "PipelineError"],
        )

    def _context(self) -> dict[str, Any]:
        run = self._run
        return {
            "job_id": run.job_id,
            "scratch_uri": run.scratch_uri,
            "output_uri": run.output_uri,
            "webhook_url": run.webhook_url,
        }

    def _scope(self, env: dict[str, Any]) -> dict[str, Any]:
        steps = {name: {"output": out} for name, out in {**self._outputs, **self._fanned}.items()}
        return {"input": self._run.input, "steps": steps, **env}

    def _evaluate(self, text: str, env: dict[str, Any], node: Any) -> Any:
        try:
            return evaluate(text, self._scope(env))
        except ExpressionError as err:
            raise ApplicationError(
                f"line {node.line}: `{text}`: {err}", type="PipelineError", non_retryable=True
            ) from None

    def _frozen(self, arguments: dict[str, Argument], env: dict[str, Any]) -> dict[str, Argument]:
        return {
            k: v if isinstance(v, Constant) else Constant(value=self._evaluate(v.text, env, v))
            for k, v in arguments.items()
        }

    async def _bind(
        self, step: str, spec: StepRuntime, arguments: dict[str, Argument], env: dict[str, Any]
    ) -> dict[str, Any]:
        values: dict[str, Any] = {}
        context = self._context()
        for name in spec.fields:
            if name in arguments:
                given = arguments[name]
                values[name] = (
                    given.value
                    if isinstance(given, Constant)
                    else self._evaluate(given.text, env, given)
                )
            elif name in env:
                values[name] = env[name]
            elif name in CONTEXT_FIELDS:
                values[name] = context[name]
            elif name in self._run.input:
                values[name] = self._run.input[name]
            elif name in spec.consumes:
                source = spec.consumes[name]
                await self._wait_for(source, step, name)
                if source in self._failed:  # the run fails with that cause, not this one
                    raise StepFailed(source, self._failed[source])
                if source in self._done:
                    values[name] = self._fanned.get(source, self._outputs.get(source))
        missing = [name for name in spec.required if values.get(name) is None]
        if missing:
            raise ApplicationError(
                f"{step} has no value for {', '.join(missing)}: give it in `with:` or the run "
                "input, or run the step it takes it from first",
                type="PipelineError",
                non_retryable=True,
            )
        return values

    async def _wait_for(self, source: str, step: str, field: str) -> None:
        """Until the step it consumes is done, failed, or plainly not coming (every step that
        is active waits for another: nothing could run it)."""

        def settled() -> bool:
            return source in self._done or source in self._failed or self._active == self._waiting

        if settled():
            return
        self._waiting += 1
        try:
            await workflow.wait_condition(settled)
        finally:
            self._waiting -= 1

    def _manifests(self) -> Manifests | None:
        for output in self._outputs.values():
            if isinstance(output, dict) and {"hls", "dash", "manifest"} <= output.keys():
                return Manifests.model_validate(output)
        return None


class FunctionCall(BaseModel):
    """The input of a function that runs as a workflow (``StepRuntime.workflow``)."""

    id: str = Field(description="The call's workflow ID: its own children's IDs start so.")
    step: str
    input: dict[str, Any]
    spec: StepRuntime
    retry: RetrySpec


async def run_step(
    step: str,
    arg: dict[str, Any],
    spec: StepRuntime,
    retry: RetrySpec,
    summary: str,
    call_id: str,
) -> Any:
    """One call of a function: its activity by name, as the catalog declared it, or its
    workflow as a child (ID ``call_id``); the Web UI shows ``summary`` (the step and its
    fan-out item)."""
    if spec.workflow is not None:
        return await workflow.execute_child_workflow(
            spec.workflow,
            FunctionCall(id=call_id, step=step, input=arg, spec=spec, retry=retry),
            id=call_id,
            task_queue=WORKFLOW_QUEUE,
            static_summary=summary,
        )
    return await workflow.execute_activity(
        step,
        arg,
        task_queue=spec.task_queue,
        start_to_close_timeout=timedelta(seconds=spec.timeout_s),
        heartbeat_timeout=heartbeat_timeout(spec.heartbeat_s) if spec.heartbeat_s else None,
        retry_policy=retry.policy(),
        summary=summary,
    )


@workflow.defn
class FanoutBatchWorkflow:
    """Items of a large fan-out, run in a window like the parent's; fails with the first item
    that fails its last attempt."""

    @workflow.run
    async def run(self, batch: FanoutBatch) -> list[Any]:
        window = asyncio.Semaphore(batch.max_parallel)
        spec = batch.spec

        async def one(index: int, arg: dict[str, Any]) -> Any:
            async with window:
                label = f"{batch.step} [{batch.first + index}]"
                call_id = f"{workflow.info().workflow_id}-{batch.first + index}"
                return await run_step(batch.step, arg, spec, batch.retry, label, call_id)

        return list(await asyncio.gather(*(one(i, a) for i, a in enumerate(batch.args))))


def _event_text(event: Event) -> str:
    return {
        "started": "workflow.started",
        "completed": f"{event.step}.completed",
        "failed": f"{event.step}.failed",
        "all_completed": f"all {event.step}.completed",
        "any_failed": "any.failed",
    }[event.kind]
