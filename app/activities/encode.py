"""encode: one rendition (or the audio) from the source into scratch storage."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import ffmpeg as ffmpeg_lib
from temporalio import activity

from app.activities.common import ActivityBase, input_args, sha256_files
from app.activities.probe import count_frames
from app.models import EncodeAudioInput, EncodedMedia, EncodeVideoInput, Rendition
from app.storage import job_dir, path_to_uri

AUDIO_BITRATE_KBPS = 128
AUDIO_SAMPLE_RATE = 48000


def video_output_args(rendition: Rendition, out: Path) -> list[str]:
    """Encoder arguments with a fixed, closed GOP: every rendition has keyframes at the same
    instants (one per segment), so the packaged streams switch cleanly."""
    s = rendition.settings
    sar = rendition.sample_aspect_ratio.replace(":", "/")
    video = (
        ffmpeg_lib.input("-")
        .video.filter("scale", rendition.width, rendition.height, flags="lanczos")
        .filter("setsar", sar=sar, max=65535)
    )
    opts: dict[str, object] = {
        "c:v": s.encoder,
        "preset": s.preset,
        "b:v": f"{s.bitrate_kbps}k",
        "g": s.gop_frames,
        "keyint_min": s.gop_frames,
        "pix_fmt": s.pix_fmt,
        "r": s.frame_rate,
        "fps_mode": "cfr",
        "an": None,
        "sn": None,
        "dn": None,
        "map_metadata": -1,
        "f": "mp4",
    }
    if s.maxrate_kbps and s.bufsize_kbps:
        opts |= {"maxrate": f"{s.maxrate_kbps}k", "bufsize": f"{s.bufsize_kbps}k"}
    if s.encoder == "libx264":
        opts |= {"sc_threshold": 0, "profile:v": "high", "x264-params": "open-gop=0"}
    elif s.encoder == "libx265":
        opts |= {
            "tag:v": "hvc1",
            "x265-params": f"keyint={s.gop_frames}:min-keyint={s.gop_frames}:scenecut=0:"
            "open-gop=0:log-level=error",
        }
    elif s.encoder == "libsvtav1":
        opts |= {"svtav1-params": "scd=0:enable-overlays=0"}
    args: list[str] = ffmpeg_lib.output(video, str(out), **opts).get_args()
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


class EncodeActivities(ActivityBase):
    @activity.defn(name="encode_video")
    async def encode_video(self, input: EncodeVideoInput) -> EncodedMedia:
        src = self.source(input.source_uri)
        out = job_dir(input.scratch_uri, input.job_id) / "video" / f"{input.rendition.name}.mp4"
        args = video_output_args(input.rendition, out.with_suffix(".part"))
        return await self._encode(
            input_args(src, input.container), args, out, input.rendition.name, input.duration_s
        )

    @activity.defn(name="encode_audio")
    async def encode_audio(self, input: EncodeAudioInput) -> EncodedMedia:
        src = self.source(input.source_uri)
        out = job_dir(input.scratch_uri, input.job_id) / "audio" / "audio.m4a"
        args = audio_output_args(out.with_suffix(".part"))
        return await self._encode(
            input_args(src, input.container), args, out, "audio", input.duration_s
        )

    async def _encode(
        self, in_args: list[str], out_args: list[str], out: Path, name: str, duration_s: float
    ) -> EncodedMedia:
        """Encode to ``<out>.part`` and rename: a file at ``out`` is always whole, so a retry
        after a crash between the rename and the completion report does not encode again."""
        if not out.exists():
            part = out.with_suffix(".part")
            part.parent.mkdir(parents=True, exist_ok=True)
            await self.ffmpeg(["-y", *in_args, *out_args], total_s=duration_s, label=name)
            os.replace(part, out)
        frames, duration = await asyncio.to_thread(count_frames, out)
        return EncodedMedia(
            name=name,
            uri=path_to_uri(out),
            size_bytes=out.stat().st_size,
            duration_s=duration,
            frames=frames,
            checksum=await sha256_files([out]),
        )
