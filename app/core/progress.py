"""A job's overall progress from its stage and renditions: one rule for the API's status and
the workflow's progress events, so they never disagree."""

from __future__ import annotations

from app.core.models import RenditionState

# Share of the overall progress bar each stage stands for; encoding is nearly all the work.
# Stages a job does not run (split and assemble are for chunked encodes) are passed over.
# EncodeWorkflow's job.progress webhook events read these: a change changes its commands, so
# it needs a workflow.patched guard (recorded histories would no longer replay).
STAGE_WEIGHTS = {
    "probe": 0.03,
    "ladder": 0.0,
    "plan": 0.02,
    "route": 0.0,
    "split": 0.02,
    "encode": 0.8,
    "assemble": 0.04,
    "package": 0.06,
    "quality": 0.0,
    "publish": 0.03,
}


def overall_progress(
    stage: str,
    renditions: list[RenditionState],
    weights: dict[str, float] = STAGE_WEIGHTS,
    busy: str = "encode",
) -> float:
    """The stages before ``stage`` done, and ``busy`` (the long stage) by its renditions'
    progress; other kinds of job give their own ``weights`` and long stage."""
    done = 0.0
    for name, weight in weights.items():
        if name == stage:
            if name == busy and renditions:
                done += weight * sum(r.progress for r in renditions) / len(renditions)
            return round(min(done, 1.0), 4)
        done += weight
    return 1.0 if stage in ("cleanup", "done") else 0.0
