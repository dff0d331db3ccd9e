"""Which activities each pool serves, built once from its settings and hardware."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio.client import Client

from app.core.settings import Settings
from app.stratum.functions.analyze import AnalyzeActivities
from app.stratum.functions.audio import AudioActivities
from app.stratum.functions.chunks import ChunkActivities
from app.stratum.functions.encode import EncodeActivities
from app.stratum.functions.lifecycle import LifecycleActivities
from app.stratum.functions.package import PackageActivities
from app.stratum.functions.routing import RoutingActivities
from app.stratum.functions.subtitles import SubtitleActivities
from app.stratum.functions.thumbnails import ThumbnailActivities
from app.stratum.queues import mode_of
from app.stratum.resources import encode_slots, threads_per_job


def cpu_activities(settings: Settings, client: Client) -> list[Callable[..., Any]]:
    analyze = AnalyzeActivities(settings)
    threads = threads_per_job(encode_slots(settings.worker_max_activities))
    encode = EncodeActivities(settings, "cpu", threads)
    chunks = ChunkActivities(settings, "cpu", threads)
    package = PackageActivities(settings)
    lifecycle = LifecycleActivities(settings)
    routing = RoutingActivities(settings, client)
    return [
        analyze.probe_source,
        analyze.plan,
        routing.route,
        encode.encode_video,
        AudioActivities(settings).encode_audio,
        chunks.split,
        chunks.encode_chunk,
        chunks.assemble,
        SubtitleActivities(settings).prepare,
        ThumbnailActivities(settings).generate,
        package.package,
        package.publish_manifest,
        lifecycle.cleanup,
        lifecycle.notify,
    ]


def gpu_activities(settings: Settings, queue: str) -> list[Callable[..., Any]]:
    """The encoder that the queue promises: NVENC, or NVDEC + scale_cuda + software."""
    mode = mode_of(queue)
    return [
        EncodeActivities(settings, mode).encode_video,
        ChunkActivities(settings, mode).encode_chunk,
    ]
