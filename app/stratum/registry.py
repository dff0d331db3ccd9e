"""Which activities each pool serves, built once from its settings and hardware."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from temporalio.client import Client

from app.core.settings import Settings
from app.stratum.builtins import plan_segment
from app.stratum.catalog import TAKEN, bind, catalog, spec_of
from app.stratum.commands import command_activity, run_command
from app.stratum.functions.analyze import AnalyzeActivities
from app.stratum.functions.audio import AudioActivities
from app.stratum.functions.chunks import ChunkActivities
from app.stratum.functions.encode import EncodeActivities
from app.stratum.functions.ladder import LadderActivities
from app.stratum.functions.lifecycle import LifecycleActivities
from app.stratum.functions.package import PackageActivities
from app.stratum.functions.quality import QualityActivities
from app.stratum.functions.routing import RoutingActivities
from app.stratum.functions.subtitles import SubtitleActivities
from app.stratum.functions.thumbnails import ThumbnailActivities
from app.stratum.queues import CUDA_QUEUE, mode_of
from app.stratum.resources import encode_slots, machine_share, threads_per_job

log = logging.getLogger("cosmos.functions")


def cpu_activities(settings: Settings, client: Client) -> list[Callable[..., Any]]:
    analyze = AnalyzeActivities(settings)
    slots = encode_slots(settings.worker_max_activities, settings.worker_cores)
    threads = threads_per_job(slots, machine_share(settings.worker_cores)[0])
    encode = EncodeActivities(settings, "cpu", threads)
    chunks = ChunkActivities(settings, "cpu", threads)
    package = PackageActivities(settings)
    lifecycle = LifecycleActivities(settings)
    routing = RoutingActivities(settings, client)
    quality = QualityActivities(settings, threads)
    return [
        analyze.probe_source,
        analyze.plan,
        routing.route,
        encode.encode_video,
        encode.encode_renditions,
        AudioActivities(settings).encode_audio,
        chunks.split,
        chunks.encode_chunk,
        chunks.assemble,
        SubtitleActivities(settings).prepare,
        ThumbnailActivities(settings).generate,
        package.package,
        package.publish_manifest,
        quality.prepare,
        quality.measure_chunk,
        quality.assemble,
        *LadderActivities(settings, threads).activities(),
        lifecycle.cleanup,
        lifecycle.notify,
        plan_segment,
        *pool_functions(settings, "cpu"),
        *command_activities(settings),
    ]


def notify_activities(settings: Settings) -> list[Callable[..., Any]]:
    return [LifecycleActivities(settings).deliver_webhook]


def pool_functions(settings: Settings, pool: str) -> list[Callable[..., Any]]:
    """The catalog's functions of ``pool`` (built-ins and installed plugins), bound to these
    settings; one named like an activity above (``assemble``) is that activity, already there."""
    specs = [spec for spec in catalog(settings, implementations=True).values() if spec.pool == pool]
    log.info("%s functions: %s", pool, ", ".join(f"{s.name} ({s.origin})" for s in specs))
    return [
        spec.implementation
        for spec in specs
        if spec.implementation is not None and spec.name not in TAKEN
    ]


def command_activities(settings: Settings) -> list[Callable[..., Any]]:
    """``run-command`` and the dynamic activity that serves command functions by name."""
    spec = spec_of(run_command)
    assert spec is not None
    implementation = bind(spec, settings).implementation
    assert implementation is not None
    return [implementation, command_activity(settings)]


def gpu_activities(settings: Settings, queue: str) -> list[Callable[..., Any]]:
    """The encoder that the queue promises: NVENC, or NVDEC + scale_cuda + software."""
    mode = mode_of(queue)
    functions = pool_functions(settings, "gpu") if queue == CUDA_QUEUE else []
    encode = EncodeActivities(settings, mode)
    return [
        encode.encode_video,
        encode.encode_renditions,
        ChunkActivities(settings, mode).encode_chunk,
        *functions,
    ]
