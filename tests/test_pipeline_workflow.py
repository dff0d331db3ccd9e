"""PipelineWorkflow's semantics in the time-skipping environment, over stand-in functions.

The functions here record their calls and answer JSON as the real ones do (their contracts are
tested in tests/test_functions.py; the seed on real media in tests/test_pipelines_e2e.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from app.plato.rules.parse import parse_definition
from app.plato.rules.validate import FunctionSchemas
from app.plato.workflows.pipeline import (
    BATCH_ITEMS,
    FanoutBatchWorkflow,
    PipelineResult,
    PipelineRun,
    PipelineWorkflow,
    StepRuntime,
)

SEED = Path(__file__).resolve().parents[2] / "shared" / "seed" / "encode-workflow-v3.yaml"
QUEUE = "pipeline-test"


def _schema(required: list[str], optional: list[str] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    return {"required": required, "properties": {n: {} for n in [*required, *optional]}}


# step -> (required, optional, consumes, output properties)
STEPS: dict[str, tuple[list[str], list[str], dict[str, str], list[str]]] = {
    "probe-source": (["source"], ["job_id"], {}, ["duration_s"]),
    "encode-segment": (["profile", "probe"], ["source"], {"probe": "probe-source"}, ["name"]),
    "mux-final": (
        ["videos", "probe"],
        [],
        {"videos": "encode-segment", "probe": "probe-source"},
        ["package"],
    ),
    "publish-manifest": (
        ["package"],
        ["job_id"],
        {"package": "mux-final"},
        ["hls", "dash", "manifest"],
    ),
    "notify-oncall": ([], ["error", "job_id"], {}, ["notified"]),
    "cleanup-a": ([], ["what"], {}, []),
    "cleanup-b": ([], ["what"], {}, []),
    "tick": ([], ["n"], {}, ["n"]),
}


def schemas() -> dict[str, FunctionSchemas]:
    return {
        name: FunctionSchemas(
            name=name,
            input_schema=_schema(required, optional),
            output_schema={"properties": {p: {} for p in outputs}},
            consumes=consumes,
        )
        for name, (required, optional, consumes, outputs) in STEPS.items()
    }


def runtimes() -> dict[str, StepRuntime]:
    return {
        name: StepRuntime(
            task_queue=QUEUE,
            timeout_s=60,
            fields=[*required, *optional, *(["error"] if name == "notify-oncall" else [])],
            required=required,
            consumes=consumes,
        )
        for name, (required, optional, consumes, _) in STEPS.items()
    }


class Calls:
    """The stand-in functions, recording (step, input) in the order they ran."""

    def __init__(self, fail: Mapping[str, int] | None = None) -> None:
        self.log: list[tuple[str, dict[str, Any]]] = []
        self.fail = dict(fail or {})

    def _record(self, step: str, arg: dict[str, Any]) -> None:
        self.log.append((step, arg))
        if self.fail.get(step, 0) > 0:
            self.fail[step] -= 1
            raise ApplicationError(f"{step} broke on purpose", type="Broken")

    def steps(self) -> list[str]:
        return [step for step, _ in self.log]

    def activities(self) -> list[Callable[..., Any]]:
        def make(step: str, answer: Callable[[dict[str, Any]], dict[str, Any]]) -> Any:
            @activity.defn(name=step)
            async def run(arg: dict[str, Any]) -> dict[str, Any]:
                self._record(step, arg)
                return answer(arg)

            return run

        return [
            make("probe-source", lambda a: {"duration_s": 10.0, "source": a["source"]}),
            make("encode-segment", lambda a: {"name": str(a["profile"])}),
            make("mux-final", lambda a: {"package": [v["name"] for v in a["videos"]]}),
            make("publish-manifest", lambda a: {"hls": "h", "dash": "d", "manifest": "m"}),
            make("notify-oncall", lambda a: {"notified": True}),
            make("cleanup-a", lambda a: {}),
            make("cleanup-b", lambda a: {}),
            make("tick", lambda a: {"n": a.get("n")}),
        ]


async def run(
    client: Client, text: str, calls: Calls, input: dict[str, Any], **overrides: Any
) -> PipelineResult:
    definition = parse_definition(text, schemas(), max_firings_ceiling=10_000)
    request = PipelineRun(
        job_id=f"pipe-{uuid.uuid4().hex[:8]}",
        definition=definition,
        input=input,
        functions=runtimes(),
        scratch_uri="file:///tmp/scratch",
        output_uri="file:///tmp/out",
        cleanup=False,  # the stand-ins publish nothing
        **overrides,
    )
    async with Worker(
        client,
        task_queue=QUEUE,
        workflows=[PipelineWorkflow, FanoutBatchWorkflow],
        activities=calls.activities(),
    ):
        result: PipelineResult = await client.execute_workflow(
            PipelineWorkflow.run, request, id=request.job_id, task_queue=QUEUE,
            result_type=PipelineResult,
        )  # fmt: skip
        return result


@pytest.fixture
def client(time_skipping_env: WorkflowEnvironment) -> Client:
    return time_skipping_env.client


async def test_the_seed_runs_as_written(client: Client) -> None:
    calls = Calls()
    result = await run(
        client, SEED.read_text(), calls, {"source": "a.mp4", "profiles": ["720p", "480p"]}
    )
    steps = calls.steps()
    assert steps[0] == "probe-source" and sorted(steps[1:3]) == ["encode-segment"] * 2
    # the parallel `do: [mux-final, publish-manifest]`: publishing waits for what it consumes
    assert steps[3:] == ["mux-final", "publish-manifest"]
    mux = dict(calls.log)["mux-final"]
    assert [v["name"] for v in mux["videos"]] == ["720p", "480p"]  # every instance, in order
    assert mux["probe"]["duration_s"] == 10.0
    assert dict(calls.log)["probe-source"]["job_id"].startswith("pipe-")  # the run's context
    assert result.manifests is not None and result.manifests.hls == "h"
    assert result.firings == 1 + 1 + 2 + 1  # started, probe done, two items, all done


async def test_retry_then_on_exhausted_then_the_run_fails_with_the_cause(client: Client) -> None:
    calls = Calls(fail={"mux-final": 99})
    with pytest.raises(WorkflowFailureError) as info:
        await run(client, SEED.read_text(), calls, {"source": "a.mp4", "profiles": ["720p"]})
    assert calls.steps().count("mux-final") == 3  # `retry: max: 3` for any.failed
    assert calls.steps()[-1] == "notify-oncall"
    notified = dict(calls.log)["notify-oncall"]
    assert notified["error"]["type"] == "Broken"
    assert "mux-final failed: mux-final broke on purpose" in str(info.value.cause)
    assert "publish-manifest" not in calls.steps()


async def test_a_step_that_recovers_within_its_attempts(client: Client) -> None:
    calls = Calls(fail={"encode-segment": 2})
    result = await run(client, SEED.read_text(), calls, {"source": "a.mp4", "profiles": ["720p"]})
    assert calls.steps().count("encode-segment") == 3
    assert "notify-oncall" not in calls.steps() and result.manifests is not None


COMPENSATED = """
workflow:
  id: saga
  rules:
    - when: workflow.started
      do:
        - sequence:
            - tick
            - compensate: {step: cleanup-a, with: {what: "'first'"}}
            - tick
            - compensate: {step: cleanup-b, with: {what: "steps.tick.output.n"}}
            - probe-source
    - when: probe-source.completed
      do:
        - publish-manifest
"""


async def test_compensations_run_in_reverse_order_when_the_run_fails(client: Client) -> None:
    calls = Calls(fail={"probe-source": 99})
    with pytest.raises(WorkflowFailureError):
        await run(client, COMPENSATED, calls, {"source": "a.mp4"}, retry={"max_attempts": 1})
    assert calls.steps() == ["tick", "tick", "probe-source", "cleanup-b", "cleanup-a"]
    assert dict(calls.log)["cleanup-a"]["what"] == "first"


FANOUT = """
workflow:
  id: many
  max_firings: {limit}
  rules:
    - when: workflow.started
      do:
        - fanout:
            for: each n in input.items
            run: tick
            max_parallel: 50
"""


async def test_a_fanout_of_a_thousand_stays_within_history_bounds(client: Client) -> None:
    """Past BATCH_ITEMS the items run in child workflows: the parent's history holds a few
    events per child, each child's a few per item, all far under Temporal's bounds."""
    calls = Calls()
    result = await run(client, FANOUT.format(limit=2000), calls, {"items": list(range(1000))})
    assert sorted(a["n"] for s, a in calls.log if s == "tick") == list(range(1000))
    assert [o["n"] for o in result.outputs["tick"]] == list(range(1000))
    history = await client.get_workflow_handle(result.job_id).fetch_history()
    children = [
        e
        for e in history.events
        if e.HasField("start_child_workflow_execution_initiated_event_attributes")
    ]
    assert len(children) == 1000 // BATCH_ITEMS
    assert len(history.events) < 200, len(history.events)
    for n in range(1, len(children) + 1):
        child = await client.get_workflow_handle(f"{result.job_id}-tick-{n}").fetch_history()
        assert len(child.events) < 10_000, len(child.events)


async def test_a_failing_item_in_a_child_fails_the_run_with_its_cause(client: Client) -> None:
    calls = Calls(fail={"tick": 99})
    with pytest.raises(WorkflowFailureError) as info:
        await run(client, FANOUT.format(limit=2000), calls, {"items": list(range(300))},
                  retry={"max_attempts": 1})  # fmt: skip
    assert "tick failed: tick broke on purpose" in str(info.value.cause)


async def test_the_runaway_guard_fails_a_fanout_before_it_starts(client: Client) -> None:
    calls = Calls()
    with pytest.raises(WorkflowFailureError) as info:
        await run(client, FANOUT.format(limit=100), calls, {"items": list(range(500))})
    assert calls.log == []  # not one item started
    cause = info.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "RunawayGuard"
    assert "limit of 100 rule firings" in cause.message


CONDITIONAL = """
workflow:
  id: conditional
  rules:
    - when: workflow.started
      do:
        - probe-source
    - when: probe-source.completed
      if: steps.probe-source.output.duration_s > 60
      do:
        - run: tick
          with: {n: "'long'"}
    - when: probe-source.completed
      if: steps.probe-source.output.duration_s <= 60 and input.source == 'a.mp4'
      do:
        - run: tick
          with: {n: "'short'"}
"""


async def test_a_rule_fires_only_where_its_condition_holds(client: Client) -> None:
    calls = Calls()
    result = await run(client, CONDITIONAL, calls, {"source": "a.mp4"})
    assert calls.steps() == ["probe-source", "tick"]
    assert result.outputs["tick"] == {"n": "short"} and result.firings == 2  # the other held not
