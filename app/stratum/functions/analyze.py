"""probe-source and plan: what the source is, and which renditions to make of it."""

from __future__ import annotations

import asyncio
import shutil

from temporalio import activity
from temporalio.exceptions import ApplicationError

from app.core.models import Plan, PlanInput, ProbeInput, ProbeResult
from app.media.ladder import PlanError, plan_renditions
from app.media.tracks import other_not_carried, plan_audio, plan_subtitles
from app.stratum.functions.common import INVALID_SOURCE, ActivityBase
from app.stratum.functions.idet import IDET_TIMEOUT_S
from app.stratum.functions.probe import InvalidSource, probe_file


class AnalyzeActivities(ActivityBase):
    @activity.defn(name="probe_source")
    async def probe_source(self, input: ProbeInput) -> ProbeResult:
        try:
            path = await self.local_source(input.source_uri, input.job_id)
            # idet reads a few seconds: one that makes no progress for the heartbeat timeout
            # (a hung ffmpeg) is given up, as every other ffmpeg run is
            idet_timeout = min(IDET_TIMEOUT_S, self.settings.heartbeat_timeout_s)
            return await asyncio.to_thread(
                probe_file, path, self.settings.ffmpeg_path, idet_timeout
            )
        except InvalidSource as err:
            raise ApplicationError(str(err), type=INVALID_SOURCE, non_retryable=True) from None
        finally:
            if not input.keep_copy:  # an inspection: no job follows to use (or clean) the copy
                shutil.rmtree(self.work_dir(input.job_id), ignore_errors=True)

    @activity.defn(name="plan_renditions")
    async def plan(self, input: PlanInput) -> Plan:
        """An activity, not workflow code, so a ladder change never breaks running histories."""
        try:
            plan = plan_renditions(input.job, input.probe)
            audio, audio_skipped = plan_audio(input.job, input.probe)
            subtitles, subtitles_skipped = plan_subtitles(input.job, input.probe)
        except PlanError as err:
            raise ApplicationError(str(err), type="PlanError", non_retryable=True) from None
        not_carried = [
            *plan.not_carried,
            *audio_skipped,
            *subtitles_skipped,
            *other_not_carried(input.probe),
        ]
        return plan.model_copy(
            update={"audio": audio, "subtitles": subtitles, "not_carried": not_carried}
        )
