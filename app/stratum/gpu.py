"""What GPUs a machine has, read through NVML, never assumed.

One small interface (:class:`GpuProbe`) so routing can be tested with recorded cards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class NoGpu(RuntimeError):
    """No NVIDIA GPU or driver; the message says which."""


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    memory_mib: int
    driver: str
    nvenc_codecs: tuple[str, ...]
    """Codecs with hardware encoders; empty on H100/H200/A100 (NVDEC only)."""
    nvdec: bool

    def describe(self) -> str:
        enc = ",".join(self.nvenc_codecs) or "none"
        return (
            f"GPU {self.index}: {self.name}, {self.memory_mib} MiB, driver {self.driver}, "
            f"NVENC {enc}, NVDEC {'yes' if self.nvdec else 'no'}"
        )


class GpuProbe(Protocol):
    def gpus(self) -> list[GpuInfo]: ...


class NvmlProbe:
    """The real probe: pynvml (nvidia-ml-py)."""

    def gpus(self) -> list[GpuInfo]:
        try:
            import pynvml
        except ImportError as err:  # pragma: no cover - a hard dependency
            raise NoGpu(f"nvidia-ml-py is not installed: {err}") from None
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as err:
            raise NoGpu(f"no NVIDIA driver or GPU found (NVML: {err})") from None
        try:
            driver = pynvml.nvmlSystemGetDriverVersion()
            found = []
            for index in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                codecs = []
                for codec, query in (
                    ("h264", pynvml.NVML_ENCODER_QUERY_H264),
                    ("hevc", pynvml.NVML_ENCODER_QUERY_HEVC),
                    ("av1", getattr(pynvml, "NVML_ENCODER_QUERY_AV1", 4)),
                ):
                    try:
                        if pynvml.nvmlDeviceGetEncoderCapacity(handle, query) > 0:
                            codecs.append(codec)
                    except pynvml.NVMLError:
                        pass
                try:
                    pynvml.nvmlDeviceGetDecoderUtilization(handle)
                    nvdec = True
                except pynvml.NVMLError:
                    nvdec = False
                found.append(
                    GpuInfo(
                        index=index,
                        name=str(pynvml.nvmlDeviceGetName(handle)),
                        memory_mib=int(pynvml.nvmlDeviceGetMemoryInfo(handle).total) >> 20,
                        driver=str(driver),
                        nvenc_codecs=tuple(codecs),
                        nvdec=nvdec,
                    )
                )
        finally:
            pynvml.nvmlShutdown()
        if not found:
            raise NoGpu("NVML found no NVIDIA GPU")
        return found


class RecordedProbe:
    """Hardware as recorded from a real machine, for tests and routing drills."""

    def __init__(self, gpus: list[GpuInfo]) -> None:
        self._gpus = gpus

    def gpus(self) -> list[GpuInfo]:
        if not self._gpus:
            raise NoGpu("no NVIDIA driver or GPU found (recorded: none)")
        return list(self._gpus)


# What NVML reports on cards we route for (names and capabilities as the driver gives them).
H100 = GpuInfo(0, "NVIDIA H100 80GB HBM3", 81559, "550.90.07", (), True)
L4 = GpuInfo(0, "NVIDIA L4", 23034, "550.90.07", ("h264", "hevc", "av1"), True)
T4 = GpuInfo(0, "Tesla T4", 15360, "535.183.01", ("h264", "hevc"), True)


def queues_for(gpus: list[GpuInfo]) -> list[str]:
    """The queues a GPU worker polls: NVENC per codec its cards encode, CUDA where NVDEC is."""
    from app.stratum.queues import CUDA_QUEUE, nvenc_queue

    codecs = sorted({codec for gpu in gpus for codec in gpu.nvenc_codecs})
    queues = [nvenc_queue(codec) for codec in codecs]  # type: ignore[arg-type]
    if any(gpu.nvdec for gpu in gpus):
        queues.append(CUDA_QUEUE)
    return queues


def has_gpu(probe: GpuProbe | None = None) -> bool:
    try:
        return bool((probe or NvmlProbe()).gpus())
    except NoGpu:
        return False
