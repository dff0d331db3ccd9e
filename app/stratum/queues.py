"""Task queues: the one place they are spelled, and what each one promises its work.

A queue is a capability: a worker polls only the queues its hardware can serve, so routing a
task to a queue is routing it to hardware that can run it.
"""

from __future__ import annotations

from typing import Literal

from app.core.models import Codec

WORKFLOW_QUEUE = "cosmos-workflows"
"""Plato: workflow tasks (cheap, deterministic code)."""

CPU_QUEUE = "cosmos-cpu"
"""Stratum CPU pool: probing, software encoding, packaging, publishing."""

NOTIFY_QUEUE = "cosmos-notify"
"""Webhook deliveries: network waits only, on slots of their own, never behind an encode."""

CUDA_QUEUE = "cosmos-gpu-cuda"
"""GPUs with NVDEC: decode and scale on the GPU (scale_cuda), encode in software. H100/H200."""

EncodeMode = Literal["cpu", "nvenc", "cuda"]
CODECS: tuple[Codec, ...] = ("h264", "hevc", "av1")


def nvenc_queue(codec: Codec) -> str:
    """GPUs whose NVENC encodes ``codec`` (L4, L40, T4 for h264/hevc, consumer cards)."""
    return f"cosmos-gpu-nvenc-{codec}"


NVENC_QUEUES: dict[str, Codec] = {nvenc_queue(c): c for c in CODECS}


def mode_of(queue: str) -> EncodeMode:
    if queue in NVENC_QUEUES:
        return "nvenc"
    return "cuda" if queue == CUDA_QUEUE else "cpu"


def all_activity_queues() -> list[str]:
    return [CPU_QUEUE, *NVENC_QUEUES, CUDA_QUEUE]
