"""Task-queue names: the one place they are spelled."""

WORKFLOW_QUEUE = "cosmos-workflows"
"""Plato: workflow tasks (cheap, deterministic code)."""

CPU_QUEUE = "cosmos-cpu"
"""Stratum CPU pool: probing, software encoding, packaging, publishing."""

GPU_QUEUE = "cosmos-gpu"
"""Stratum GPU pool: served only by workers where NVML finds a GPU."""
