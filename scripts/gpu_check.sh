#!/usr/bin/env bash
# One short GPU check: NVML's report, then NVDEC/scale_cuda (and NVENC where present) on
# generated video. ffmpeg: $FFMPEG, else ./ffmpeg.xz (a carried, xz-compressed static build),
# else imageio-ffmpeg's, else the one on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${FFMPEG:-}" ]; then
  if [ -f ffmpeg.xz ]; then
    FFMPEG="$(mktemp -d)/ffmpeg"; xz -dc ffmpeg.xz > "$FFMPEG"; chmod +x "$FFMPEG"
  elif FFMPEG=$(python3 -c 'import imageio_ffmpeg as i; print(i.get_ffmpeg_exe())' 2>/dev/null); then
    :
  else
    FFMPEG=ffmpeg
  fi
fi
export FFMPEG
exec python3 scripts/gpu_check.py
