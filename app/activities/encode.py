"""encode: one rendition (or the audio) from the source into scratch storage."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ffmpeg as ffmpeg_lib
from temporalio import activity

from app.activities.common import (
    ActivityBase,
    discarded_on_error,
    input_args,
    part_path,
    sha256_files,
)
from app.activities.probe import count_frames
from app.models import EncodeAudioInput, EncodedMedia, EncodeVideoInput, Rendition
from app.object_store import join, store_for
from app.queues import EncodeMode
from app.settings import Settings

AUDIO_BITRATE_KBPS = 128
AUDIO_SAMPLE_RATE = 48000


NVENC_ENCODERS = {"h264": "h264_nvenc", "hevc": "hevc_nvenc", "av1": "av1_nvenc"}


def encoder_name(rendition: Rendition, mode: EncodeMode) -> str:
    return NVENC_ENCODERS[rendition.codec] if mode == "nvenc" else rendition.settings.encoder


def hwaccel_args(mode: EncodeMode, rotation: int) -> list[str]:
    """Decode on the GPU (NVDEC) for the GPU modes; frames stay in GPU memory unless the
    picture must be rotated, which ffmpeg does in software."""
    if mode == "cpu":
        return []
    args = ["-hwaccel", "cuda"]
    if rotation == 0:
        args += ["-hwaccel_output_format", "cuda"]
    return args


def _scaled(video: Any, rendition: Rendition, on_gpu: bool, mode: EncodeMode) -> Any:
    if on_gpu:
        video = video.filter("scale_cuda", rendition.width, rendition.height, format="nv12")
        if mode == "cuda":  # software encoder: bring the scaled frames back to system memory
            video = video.filter("hwdownload").filter("format", "nv12")
    else:
        video = video.filter("scale", rendition.width, rendition.height, flags="lanczos")
    sar = rendition.sample_aspect_ratio.replace(":", "/")
    return video.filter("setsar", sar=sar, max=65535)


def _encoder_options(
    rendition: Rendition, mode: EncodeMode, on_gpu: bool, threads: int
) -> dict[str, object]:
    s = rendition.settings
    encoder = encoder_name(rendition, mode)
    opts: dict[str, object] = {
        "c:v": encoder,
        "b:v": f"{s.bitrate_kbps}k",
        "g": s.gop_frames,
        "keyint_min": s.gop_frames,
        "r": s.frame_rate,
        "fps_mode": "cfr",
        "an": None,
        "sn": None,
        "dn": None,
        "map_metadata": -1,
        "f": "mp4",
    }
    if not (mode == "nvenc" and on_gpu):
        opts["pix_fmt"] = s.pix_fmt
    if s.maxrate_kbps and s.bufsize_kbps:
        opts |= {"maxrate": f"{s.maxrate_kbps}k", "bufsize": f"{s.bufsize_kbps}k"}
    if threads and mode != "nvenc":
        opts["threads"] = threads
    if mode == "nvenc":
        # NVENC's VBR with the same target/maxrate/buffer; IDR at every GOP start, no extra
        # keyframes at scene cuts, so segments align with the software renditions.
        opts |= {"preset": "p5", "tune": "hq", "rc": "vbr", "forced-idr": 1,
                 "strict_gop": 1, "no-scenecut": 1}  # fmt: skip
    elif s.encoder == "libx264":
        opts |= {"preset": s.preset, "sc_threshold": 0, "profile:v": "high",
                 "x264-params": "open-gop=0"}  # fmt: skip
    elif s.encoder == "libx265":
        opts |= {
            "preset": s.preset,
            "tag:v": "hvc1",
            "x265-params": f"keyint={s.gop_frames}:min-keyint={s.gop_frames}:scenecut=0:"
            "open-gop=0:log-level=error",
        }
    elif s.encoder == "libsvtav1":
        opts |= {"preset": s.preset, "svtav1-params": "scd=0:enable-overlays=0"}
    if mode == "nvenc" and rendition.codec == "hevc":
        opts["tag:v"] = "hvc1"
    return opts


def video_output_args(
    renditions: list[tuple[Rendition, Path]],
    *,
    mode: EncodeMode = "cpu",
    rotation: int = 0,
    threads: int = 0,
    keyframes_s: list[float] | None = None,
) -> list[str]:
    """Encoder arguments with a fixed, closed GOP: every rendition has keyframes at the same
    instants (one per segment), so the packaged streams switch cleanly.

    Several renditions share one decode (``split``, then a scale per rung). The bitrate, VBV
    and GOP come from the plan whatever the mode, so a rendition is the same stream whether
    it ran on a CPU, an NVENC or a CUDA worker; only the encoder differs. ``keyframes_s``
    forces keyframes at those instants too (a chunk's start and the title's segment grid).
    """
    on_gpu = mode != "cpu" and rotation == 0
    video = ffmpeg_lib.input("-").video
    branches = video.filter_multi_output("split", len(renditions)) if len(renditions) > 1 else None
    outputs = []
    for i, (rendition, out) in enumerate(renditions):
        opts = _encoder_options(rendition, mode, on_gpu, threads)
        if keyframes_s:
            opts["force_key_frames"] = ",".join(f"{t:g}" for t in keyframes_s)
        source = branches[i] if branches is not None else video
        outputs.append(
            ffmpeg_lib.output(_scaled(source, rendition, on_gpu, mode), str(out), **opts)
        )
    args: list[str] = ffmpeg_lib.merge_outputs(*outputs).get_args()
    # ffmpeg-python names the input "-"; the caller supplies the real, locked-down input.
    i = args.index("-i")
    return args[i + 2 :]


def audio_output_args(out: Path) -> list[str]:
    """AAC stereo, once per job; ``-ac 2`` downmixes 5.1 with FFmpeg's standard matrix."""
    return [
        "-map", "0:a:0", "-vn", "-sn", "-dn", "-map_metadata", "-1",
        "-c:a", "aac", "-b:a", f"{AUDIO_BITRATE_KBPS}k", "-ac", "2",
        "-ar", str(AUDIO_SAMPLE_RATE), "-f", "mp4", str(out),
    ]  # fmt: skip


class EncoderBase(ActivityBase):
    """Encodes on this worker's hardware: ``mode`` is what the queue it serves promises,
    ``threads`` the encoder threads per process that the worker's concurrency leaves."""

    def __init__(self, settings: Settings, mode: EncodeMode = "cpu", threads: int = 0) -> None:
        super().__init__(settings)
        self.mode = mode
        self.threads = threads


class EncodeActivities(EncoderBase):
    """A rendition in one piece (short titles, chunking off), and the audio."""

    @activity.defn(name="encode_video")
    async def encode_video(self, input: EncodeVideoInput) -> EncodedMedia:
        src = await self.local_source(input.source_uri, input.job_id)
        in_args = [*hwaccel_args(self.mode, input.rotation), *input_args(src, input.container)]

        def out_args(part: Path) -> list[str]:
            return video_output_args(
                [(input.rendition, part)], mode=self.mode, rotation=input.rotation,
                threads=self.threads,
            )  # fmt: skip

        name = input.rendition.name
        media = await self._encode(input.job_id, input.scratch_uri, f"video/{name}.mp4",
                                   in_args, out_args, name, input.duration_s)  # fmt: skip
        encoder = encoder_name(input.rendition, self.mode)
        return media.model_copy(update={"encoder": encoder, "queue": activity.info().task_queue})

    @activity.defn(name="encode_audio")
    async def encode_audio(self, input: EncodeAudioInput) -> EncodedMedia:
        src = await self.local_source(input.source_uri, input.job_id)
        return await self._encode(input.job_id, input.scratch_uri, "audio/audio.m4a",
                                  input_args(src, input.container), audio_output_args,
                                  "audio", input.duration_s)  # fmt: skip

    async def _encode(
        self,
        job_id: str,
        scratch_uri: str,
        relative: str,
        in_args: list[str],
        out_args: Callable[[Path], list[str]],
        name: str,
        duration_s: float,
    ) -> EncodedMedia:
        """Encode to a partial file, then place it: an object at the target is always whole,
        so a retry after a crash between the upload and the completion report does not encode
        again."""
        target = join(scratch_uri, job_id, relative)
        if await asyncio.to_thread(store_for(target, self.settings).exists, target):
            out = await self.fetch(target, job_id)
        else:
            part = part_path(self.scratch_path(target, job_id))
            part.parent.mkdir(parents=True, exist_ok=True)
            with discarded_on_error(part):
                await self.ffmpeg(["-y", *in_args, *out_args(part)], total_s=duration_s, label=name)
            out = await self.place(part, target, job_id)
        frames, duration = await asyncio.to_thread(count_frames, out)
        media = EncodedMedia(
            name=name,
            uri=target,
            size_bytes=out.stat().st_size,
            duration_s=duration,
            frames=frames,
            checksum=await sha256_files([out]),
        )
        self.drop_copy(target, job_id)
        return media
