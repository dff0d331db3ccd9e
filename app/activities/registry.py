"""Which activities a worker pool serves, built once from its settings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.activities.analyze import AnalyzeActivities
from app.activities.encode import EncodeActivities
from app.activities.lifecycle import LifecycleActivities
from app.activities.package import PackageActivities
from app.settings import Settings


def cpu_activities(settings: Settings) -> list[Callable[..., Any]]:
    analyze = AnalyzeActivities(settings)
    encode = EncodeActivities(settings)
    package = PackageActivities(settings)
    lifecycle = LifecycleActivities(settings)
    return [
        analyze.probe_source,
        analyze.plan,
        encode.encode_video,
        encode.encode_audio,
        package.package,
        package.publish_manifest,
        lifecycle.cleanup,
        lifecycle.notify,
    ]


def gpu_activities(settings: Settings) -> list[Callable[..., Any]]:
    encode = EncodeActivities(settings)
    return [encode.encode_video]
