"""Resource shapes: what one unit of work needs, declared once, and how many fit on a machine."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class ResourceShape:
    cpu_threads: int
    memory_mib: int
    gpu_sessions: int = 0


ENCODE_CPU = ResourceShape(cpu_threads=2, memory_mib=1024)
"""A software encode of one rendition: x264/x265/SVT-AV1 scale well to about two threads per
process here, and more processes beat more threads per process."""

ENCODE_GPU = ResourceShape(cpu_threads=1, memory_mib=512, gpu_sessions=1)
"""A hardware encode: one NVENC (or NVDEC) session, a thread to feed it."""


def machine_memory_mib() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) >> 20
    except (ValueError, OSError):
        return 4096


def cpu_slots(shape: ResourceShape, cores: int | None = None, memory_mib: int | None = None) -> int:
    """How many units of ``shape`` a machine runs at once: a 2-core machine runs one encode at
    a time, a 64-core one thirty-two."""
    cores = cores or os.cpu_count() or 1
    memory_mib = memory_mib or machine_memory_mib()
    return max(1, min(cores // shape.cpu_threads, memory_mib // shape.memory_mib))


def gpu_slots(gpus: int, sessions_per_gpu: int, shape: ResourceShape = ENCODE_GPU) -> int:
    return max(1, gpus * sessions_per_gpu // max(1, shape.gpu_sessions))


def machine_share(cores: int | None = None) -> tuple[int, int]:
    """The cores and memory (MiB) one worker sizes itself for: the whole machine, or ``cores``
    of it (``COSMOS_WORKER_CORES``, when several workers share the machine) and the same share
    of its memory."""
    total = os.cpu_count() or 1
    memory_mib = machine_memory_mib()
    if cores is None or cores >= total:
        return total, memory_mib
    return cores, max(1, memory_mib * cores // total)


def threads_per_job(slots: int, cores: int | None = None) -> int:
    """Encoder threads per process so that ``slots`` processes share the cores."""
    return max(1, (cores or os.cpu_count() or 1) // slots)


def encode_slots(worker_max_activities: int | None = None, cores: int | None = None) -> int:
    """Encodes sized to run at once: the operator's figure (``COSMOS_WORKER_MAX_ACTIVITIES``),
    else what this worker's share of the cores and memory (``cores``: all of them when unset)
    fits by the encode's resource shape. Encoder threads are cut to fit these."""
    return worker_max_activities or cpu_slots(ENCODE_CPU, *machine_share(cores))


def worker_concurrency(worker_max_activities: int | None = None, cores: int | None = None) -> int:
    """The encode slots plus one, so that probes and bookkeeping are not stuck behind
    encodes (and do not halve every encoder's threads)."""
    return worker_max_activities or encode_slots(cores=cores) + 1
