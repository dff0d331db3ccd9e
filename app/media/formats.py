"""How every part of the platform opens a media file: one locked-down set of demuxers.

A leaf module (no platform imports), so the probe, the activities and the manifest writers
read files the same way without importing each other.
"""

from __future__ import annotations

from pathlib import Path

import av

# Demuxers that read one self-contained file. Playlists (hls, dash, concat) and image sequences
# would make FFmpeg open other files or URLs named inside the source, so they are refused.
ALLOWED_CONTAINERS = frozenset(
    {"mov", "matroska", "mpegts", "avi", "flv", "mxf", "mpeg", "ogg", "nut", "asf", "ivf",
     "yuv4mpegpipe", "h264", "hevc", "m4v", "dv", "gxf", "webm"}
)  # fmt: skip
# libavformat refuses every other demuxer and protocol before reading a byte of the file.
OPEN_OPTIONS = {
    "protocol_whitelist": "file",
    "format_whitelist": ",".join(sorted(ALLOWED_CONTAINERS)),
}


def count_frames(path: Path) -> tuple[int, float]:
    """Frames and duration of an encoded stream, by demuxing (no decode): cheap and exact."""
    with av.open(str(path), options=OPEN_OPTIONS) as container:
        stream = container.streams[0]
        frames = sum(1 for packet in container.demux(stream) if packet.size)
        duration = container.duration / 1_000_000 if container.duration else 0.0
    return frames, duration
