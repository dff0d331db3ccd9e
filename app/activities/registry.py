"""Which activities each pool serves, built once from its settings and hardware."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio.client import Client

from app.activities.analyze import AnalyzeActivities
from app.activities.audio import AudioActivities
from app.activities.chunks import ChunkActivities
from app.activities.encode import EncodeActivities
from app.activities.lifecycle import LifecycleActivities
from app.activities.package import PackageActivities
from app.activities.routing import RoutingActivities
from app.activities.subtitles import SubtitleActivities
from app.activities.thumbnails import ThumbnailActivities
from app.queues import mode_of
from app.resources import threads_per_job
from app.settings import Settings


def cpu_activities(settings: Settings, client: Client) -> list[Callable[..., Any]]:
    analyze = AnalyzeActivities(settings)
    threads = threads_per_job(settings.encode_slots())
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
