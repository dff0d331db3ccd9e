"""GPU verification in one short run: what NVML reports, then every GPU path the cards support,
run by ffmpeg on a few seconds of generated video, with the outputs checked.

Standard library plus nvidia-ml-py only, so it runs on a bare GPU machine:
    FFMPEG=/path/to/ffmpeg python3 scripts/gpu_check.py
The ffmpeg flags are the ones app/stratum/functions/encode.py uses for the nvenc and cuda modes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from app.stratum.gpu import NoGpu, NvmlProbe

NVENC = {"h264": "h264_nvenc", "hevc": "hevc_nvenc", "av1": "av1_nvenc"}


def run(ffmpeg: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ffmpeg, "-hide_banner", "-nostdin", "-y", "-v", "error", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def facts(ffmpeg: str, path: Path) -> tuple[str, str, int]:
    """(codec, WxH, decoded frames) of the first video stream, read by ffmpeg itself."""
    info = subprocess.run([ffmpeg, "-hide_banner", "-i", str(path)], capture_output=True, text=True)
    match = re.search(r"Video: (\w+).*?, (\d+x\d+)", info.stderr)
    counted = run(
        ffmpeg, "-i", str(path), "-map", "0:v:0", "-f", "null", "-", "-progress", "pipe:1"
    )
    frames = re.findall(r"^frame=(\d+)", counted.stdout, re.M)
    return (match.group(1), match.group(2), int(frames[-1])) if match and frames else ("?", "?", 0)


def main() -> int:
    ffmpeg = os.environ.get("FFMPEG", "ffmpeg")
    try:
        gpus = NvmlProbe().gpus()
    except NoGpu as err:
        print(f"gpu_check: {err}")
        return 1
    for gpu in gpus:
        print(gpu.describe())
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    src = work / "src.mp4"
    pattern = "testsrc2=size=1280x720:rate=30:duration=4"
    made = run(ffmpeg, "-f", "lavfi", "-i", pattern, "-c:v", "libx264", "-preset", "ultrafast",
               "-pix_fmt", "yuv420p", str(src))  # fmt: skip
    if made.returncode:
        print(f"cannot generate the test video: {made.stderr}")
        return 1
    hw_in = ["-hwaccel", "cuda", "-hwaccel_output_format", "cuda", "-i", str(src)]
    checks: list[tuple[str, list[str], Path, str]] = []
    if any(g.nvdec for g in gpus):
        out = work / "cuda.mp4"
        checks.append((
            "NVDEC decode + scale_cuda + libx264",
            [*hw_in, "-vf", "scale_cuda=640:360:format=nv12,hwdownload,format=nv12",
             "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(out)],
            out, "h264",
        ))  # fmt: skip
    for codec in sorted({c for g in gpus for c in g.nvenc_codecs}):
        out = work / f"nvenc-{codec}.mp4"
        checks.append((
            f"NVDEC + scale_cuda + {NVENC[codec]}",
            [*hw_in, "-vf", "scale_cuda=640:360:format=nv12", "-c:v", NVENC[codec],
             "-preset", "p5", "-tune", "hq", "-rc", "vbr", "-b:v", "1500k", "-maxrate", "2250k",
             "-bufsize", "3000k", "-g", "120", "-forced-idr", "1", "-strict_gop", "1",
             "-no-scenecut", "1", str(out)],
            out, "hevc" if codec == "hevc" else codec,
        ))  # fmt: skip
    failures = 0
    for name, args, out, codec in checks:
        result = run(ffmpeg, *args)
        got = facts(ffmpeg, out) if result.returncode == 0 else ("-", "-", 0)
        ok = result.returncode == 0 and got == (codec, "640x360", 120)
        failures += not ok
        detail = "" if ok else f"  ({result.stderr.strip()[-300:]})"
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {got[0]} {got[1]} {got[2]} frames{detail}")
    if not checks:
        print("FAIL  the GPUs have neither NVDEC nor NVENC")
        return 1
    print(f"{len(checks) - failures}/{len(checks)} GPU paths passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
