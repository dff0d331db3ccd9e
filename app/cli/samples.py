"""Generated media: the sample job of ``cosmos dev`` and the fixtures of the test suite."""

from __future__ import annotations

import subprocess
from pathlib import Path

from app.stratum.functions.ffmpeg import ffmpeg_binary

LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1"}


def make_video(
    path: Path,
    *,
    seconds: float = 5.0,
    width: int = 1280,
    height: int = 720,
    rate: str = "30",
    audio_channels: int | None = 2,
    sar: str | None = None,
    rotation: int | None = None,
    gop: int | None = None,
    ffmpeg: str | None = None,
) -> Path:
    """A test pattern with a tone: lavfi ``testsrc2`` + ``sine``, H.264/AAC in MP4.

    ``gop`` fixes the keyframe interval in frames (mezzanine-like; chunks cut on keyframes)."""
    binary = ffmpeg or ffmpeg_binary()
    path.parent.mkdir(parents=True, exist_ok=True)
    odd = width % 2 or height % 2  # testsrc2 and 4:2:0 both need even sizes
    pattern = "testsrc" if odd else "testsrc2"
    video = f"{pattern}=size={width}x{height}:rate={rate}:duration={seconds}"
    if sar:
        video += f",setsar={sar.replace(':', '/')}"
    cmd = [binary, "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
    cmd += ["-f", "lavfi", "-i", video]
    if audio_channels:
        layout = LAYOUTS[audio_channels]
        cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}:sample_rate=48000"]
        cmd += ["-filter_complex", f"[1:a]aformat=channel_layouts={layout}[a]"]
        cmd += ["-map", "0:v", "-map", "[a]", "-c:a", "aac", "-b:a", "96k"]
    pix_fmt = "yuv444p" if odd else "yuv420p"
    cmd += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", pix_fmt]
    if gop:
        cmd += ["-g", str(gop)]
    tmp = path.with_name(path.name + ".tmp.mp4")
    cmd += ["-f", "mp4", str(tmp)]
    subprocess.run(cmd, check=True)
    if rotation is not None:
        # Display-matrix rotation, as phones write it: the pixels stay landscape.
        rotated = path.with_name(path.name + ".rot.mp4")
        subprocess.run(
            [binary, "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
             "-display_rotation", str(rotation), "-i", str(tmp), "-c", "copy", str(rotated)],
            check=True,
        )  # fmt: skip
        tmp.unlink()
        tmp = rotated
    tmp.replace(path)
    return path
