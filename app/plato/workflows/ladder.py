"""LadderWorkflow: a per-title ladder (``ladder: auto``), a child of the encode job.

prepare (the fixed ladder's plan, the resolutions, scene scores, samples cut losslessly into
scratch) → next (what to measure: the top resolution at one quality point first) → measure it
(every sample in parallel on the CPU pool, each encoding its quality points and measuring their
VMAF) → next again, until it says the points suffice: a one-rung title stops after that first
encode, any other gets the top's other points, then the lower resolutions down to the floor
→ choose (pool, hull, rungs) → cleanup (the samples). Histories from before
``ADAPTIVE_PATCH`` measured every point of the top resolution, then ``scope``'s lower ones;
from before ``TOP_FIRST_PATCH``, every resolution at once.
Workflow code: deterministic; every decision is an activity's (``app.media.hull``'s rules),
so a change of them never changes a running history.

The encode job calls :func:`per_title_ladder` after the probe and plans the chosen profiles:
``analysis = await per_title_ladder(job, probe)``, then
``job = job.model_copy(update={"profiles": analysis.profiles})``.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from app.core.models import (
        EncodeJob,
        LadderAnalysis,
        LadderChooseInput,
        LadderInput,
        LadderMeasured,
        LadderMeasureInput,
        LadderNext,
        LadderPrepared,
        LadderSample,
        LadderScope,
        ProbeResult,
        Rendition,
    )
    from app.plato.workflows.calls import LONG, all_or_none, call
    from app.stratum.functions.ladder import LADDER_ERROR, LadderActivities
    from app.stratum.queues import WORKFLOW_QUEUE

LADDER_SUFFIX = "-ladder"
TOP_FIRST_PATCH = "ladder-top-first"
ADAPTIVE_PATCH = "ladder-adaptive"
MAX_STEPS = 8
"""``next`` ends within four steps (the probe, the top's rest, the lower sizes, done): a bound
on a loop that should never meet it."""


def ladder_workflow_id(job_id: str) -> str:
    """The child's ID: one analysis per job (a rerun of the job runs it again)."""
    return f"{job_id}{LADDER_SUFFIX}"


async def per_title_ladder(job: EncodeJob, probe: ProbeResult) -> LadderAnalysis:
    """Run the analysis as a child workflow and return it (call from workflow code).

    ``analysis.profiles`` are the rungs (``CustomProfile``, the auto ladder's codec) for the
    plan; the analysis itself goes into ``manifest.json`` as ``ladder_analysis``."""
    analysis: LadderAnalysis = await workflow.execute_child_workflow(
        LadderWorkflow.run,
        LadderInput(job=job, probe=probe),
        id=ladder_workflow_id(job.job_id),
        task_queue=WORKFLOW_QUEUE,
    )
    return analysis


@workflow.defn
class LadderWorkflow:
    @workflow.run
    async def run(self, input: LadderInput) -> LadderAnalysis:
        job = input.job
        try:
            prepared: LadderPrepared = await call(
                job, LadderActivities.prepare, input, timeout=LONG, heartbeat=True
            )
            if workflow.patched(ADAPTIVE_PATCH):
                chosen = await self._adaptive(input, prepared)
            elif workflow.patched(TOP_FIRST_PATCH):
                chosen = await self._top_first(input, prepared)
            else:
                chosen = LadderChooseInput(
                    prepared=prepared,
                    measured=await self._measure_all(input, prepared, prepared.candidates),
                )
            analysis: LadderAnalysis = await call(job, LadderActivities.choose, chosen)
        except BaseException:  # failed or cancelled: the samples go all the same
            await self._cleanup(input)
            raise
        await self._cleanup(input)
        return analysis

    async def _adaptive(self, input: LadderInput, prepared: LadderPrepared) -> LadderChooseInput:
        """Measure what ``next`` asks for, every sample in parallel, until it asks for nothing."""
        chosen = LadderChooseInput(prepared=prepared, measured=[])
        for _ in range(MAX_STEPS):
            step: LadderNext = await call(input.job, LadderActivities.next, chosen)
            measured = await all_or_none(
                [
                    self._measure(input, prepared, sample, task.rendition, task.crfs)
                    for task in step.tasks
                    for sample in prepared.samples
                ]
            )
            chosen = chosen.model_copy(
                update={"measured": chosen.measured + measured, "notes": chosen.notes + step.notes}
            )
            if not step.tasks:
                return chosen
        raise ApplicationError(
            f"the analysis asked for more than {MAX_STEPS} steps", type=LADDER_ERROR,
            non_retryable=True,
        )  # fmt: skip

    async def _top_first(self, input: LadderInput, prepared: LadderPrepared) -> LadderChooseInput:
        """The top resolution of every sample, then the lower ones that ``scope`` keeps."""
        top = await self._measure_all(input, prepared, prepared.candidates[:1])
        scope: LadderScope = await call(
            input.job, LadderActivities.scope, LadderChooseInput(prepared=prepared, measured=top)
        )
        lower = await self._measure_all(input, prepared, scope.renditions)
        return LadderChooseInput(prepared=prepared, measured=top + lower, notes=scope.notes)

    async def _measure_all(
        self, input: LadderInput, prepared: LadderPrepared, renditions: list[Rendition]
    ) -> list[LadderMeasured]:
        """Every sample at each of ``renditions``, in parallel."""
        return await all_or_none(
            [
                self._measure(input, prepared, sample, rendition)
                for sample in prepared.samples
                for rendition in renditions
            ]
        )

    async def _measure(
        self, input: LadderInput, prepared: LadderPrepared, sample: LadderSample,
        rendition: Rendition, crfs: list[int] | None = None,
    ) -> LadderMeasured:  # fmt: skip
        request = LadderMeasureInput(
            job_id=input.job.job_id,
            scratch_uri=input.job.scratch_uri,
            sample=sample,
            rendition=rendition,
            crfs=crfs or prepared.crfs,
            display_width=prepared.display_width,
            display_height=prepared.display_height,
        )
        result: LadderMeasured = await call(
            input.job, LadderActivities.measure, request, timeout=LONG, heartbeat=True
        )
        return result

    async def _cleanup(self, input: LadderInput) -> None:
        """The samples go; a cleanup that fails never hides the outcome (the job's own
        cleanup removes its whole scratch space anyway)."""
        try:
            await call(input.job, LadderActivities.cleanup, input, attempts=5)
        except ActivityError as err:
            workflow.logger.error("ladder cleanup of %s failed: %s", input.job.job_id, err)
