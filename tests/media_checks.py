"""Checks of packaged outputs with real tools: ffmpeg decodes, mpegdash parses."""

from __future__ import annotations

import io
import json
import math
import re
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from mpegdash.parser import MPEGDASHParser

from tests.conformance import violations


def decode(ffmpeg: str, playlist: Path, stream: str) -> tuple[int, float, str]:
    """Decode one stream of an HLS playlist; return (frames, seconds decoded, errors)."""
    proc = subprocess.run(
        [ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-allowed_extensions", "ALL",
         "-protocol_whitelist", "file", "-i", str(playlist), "-map", f"0:{stream}:0",
         "-f", "null", "-", "-progress", "pipe:1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    frames = [int(m) for m in re.findall(r"^frame=(\d+)", proc.stdout, re.M)]
    times = [int(m) for m in re.findall(r"^out_time_us=(\d+)", proc.stdout, re.M)]
    errors = (
        proc.stderr.strip() if proc.returncode == 0 else f"exit {proc.returncode}: {proc.stderr}"
    )
    return (frames[-1] if frames else 0), (times[-1] / 1e6 if times else 0.0), errors


def keyframe_times(out_dir: Path, rep_id: int) -> list[float]:
    """Presentation times of the keyframes of one representation (init + its segments)."""
    data = b"".join(
        p.read_bytes()
        for p in [out_dir / f"init-{rep_id}.m4s", *sorted(out_dir.glob(f"chunk-{rep_id}-*.m4s"))]
    )
    with av.open(io.BytesIO(data), format="mp4") as container:
        stream = container.streams.video[0]
        return sorted(
            round(float(packet.pts * stream.time_base), 3)
            for packet in container.demux(stream)
            if packet.is_keyframe and packet.pts is not None
        )


def check_package(
    out_dir: Path, ffmpeg: str, source_duration: float, frame_rate: str
) -> dict[str, Any]:
    """Assert that the HLS and DASH outputs are whole and agree; return manifest.json."""
    manifest = json.loads((out_dir / "manifest.json").read_text())
    renditions = manifest["renditions"]
    fps = Fraction(frame_rate)
    frame = float(1 / fps)

    master = (out_dir / "master.m3u8").read_text()
    resolutions = re.findall(r"#EXT-X-STREAM-INF:.*RESOLUTION=(\d+)x(\d+)", master)
    assert sorted(resolutions) == sorted((str(r["width"]), str(r["height"])) for r in renditions)

    for r in renditions:
        playlist = out_dir / r["hls_playlist"]
        assert f"\n{r['hls_playlist']}" in master
        frames, _, errors = decode(ffmpeg, playlist, "v")
        assert errors == "", f"{playlist.name}: {errors}"
        assert abs(frames / float(fps) - source_duration) <= frame + 1e-6, (frames, source_duration)
        assert frames == r["frame_count"]
        assert abs(r["duration_s"] - source_duration) <= frame + 1e-6
        assert r["checksum"].startswith("sha256:")

    if manifest["audio"]:
        frames, seconds, errors = decode(ffmpeg, out_dir / manifest["audio"]["hls_playlist"], "a")
        assert errors == ""
        assert abs(seconds - source_duration) < 0.05
        assert "TYPE=AUDIO" in master

    # One set of CMAF segments serves both HLS and DASH: nothing but init and chunk files.
    media_files = {p.name for p in out_dir.iterdir()} - {
        "manifest.json",
        "manifest.mpd",
        "master.m3u8",
    }
    media_files -= check_thumbnails(out_dir, manifest)
    media_files -= {"files"}  # what pipeline functions wrote beside the package (catalog.py)
    if manifest.get("quality"):  # the job asked for quality: its summary and per-frame values
        media_files -= {"quality.json", "frames"}
    assert all(
        re.fullmatch(r"(init-\d+|chunk-\d+-\d{5})\.m4s|(media|iframe)_\d+\.m3u8", n)
        for n in media_files
    ), media_files
    # Keyframes at the same instants in every rendition, so players can switch at any segment.
    starts = [keyframe_times(out_dir, i) for i in range(len(renditions))]
    assert all(s == starts[0] for s in starts), starts
    gop = renditions[0]["settings"]["gop_frames"]
    assert len(starts[0]) == math.ceil(renditions[0]["frame_count"] / gop), starts[0]

    mpd = MPEGDASHParser.parse(str(out_dir / "manifest.mpd"))
    sets = mpd.periods[0].adaptation_sets
    video_reps = [rep for s in sets if s.content_type == "video" for rep in s.representations]
    assert sorted((rep.width, rep.height) for rep in video_reps) == sorted(
        (r["width"], r["height"]) for r in renditions
    )
    audio_sets = [s for s in sets if s.content_type == "audio"]
    assert len(audio_sets) == (1 if manifest["audio"] else 0)
    problems = violations(out_dir)
    assert not problems, "\n".join(problems)
    return dict(manifest)


def picture_size(path: Path) -> tuple[int, int, str]:
    """Width, height and codec of a still image, decoded with PyAV."""
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        return frame.width, frame.height, container.streams.video[0].codec_context.name


def check_thumbnails(out_dir: Path, manifest: dict[str, Any]) -> set[str]:
    """Assert that the thumbnail track (when the job has one) is whole and that the HLS master,
    the MPD and the WebVTT all point at the same sheets; return its file names."""
    thumbs = manifest.get("thumbnails")
    if not thumbs:
        assert not manifest.get("poster")
        return set()
    files = {thumbs["vtt"], thumbs["hls_playlist"], manifest["poster"], *thumbs["sheets"]}
    assert all((out_dir / name).is_file() for name in files), files
    tile_w, tile_h = (int(v) for v in thumbs["tile"].split("x"))
    cols, rows = (int(v) for v in thumbs["layout"].split("x"))
    for sheet in thumbs["sheets"]:
        assert picture_size(out_dir / sheet) == (cols * tile_w, rows * tile_h, "mjpeg"), sheet
    poster_w, poster_h = (int(v) for v in thumbs["poster_size"].split("x"))
    assert picture_size(out_dir / manifest["poster"]) == (poster_w, poster_h, "mjpeg")

    master = (out_dir / "master.m3u8").read_text()
    image = re.findall(r"^#EXT-X-IMAGE-STREAM-INF:(.*)$", master, re.M)
    assert len(image) == 1, master
    assert f'URI="{thumbs["hls_playlist"]}"' in image[0] and 'CODECS="jpeg"' in image[0]
    assert f"RESOLUTION={thumbs['tile']}" in image[0]
    playlist = (out_dir / thumbs["hls_playlist"]).read_text()
    assert "#EXT-X-IMAGES-ONLY" in playlist and playlist.rstrip().endswith("#EXT-X-ENDLIST")
    assert re.findall(r"^(sheet-\d{5}\.jpg)$", playlist, re.M) == thumbs["sheets"]

    vtt = (out_dir / thumbs["vtt"]).read_text()
    cues = re.findall(r"^(\S+) --> (\S+)\n(sheet-\d{5}\.jpg)#xywh=(\d+),(\d+),(\d+),(\d+)$", vtt,
                      re.M)  # fmt: skip
    assert len(cues) == thumbs["count"]
    assert all(s in thumbs["sheets"] and int(x) + int(w) <= cols * tile_w
               and int(y) + int(h) <= rows * tile_h for _, _, s, x, y, w, h in cues)  # fmt: skip

    mpd = MPEGDASHParser.parse(str(out_dir / "manifest.mpd"))
    images = [s for s in mpd.periods[0].adaptation_sets if s.content_type == "image"]
    assert len(images) == 1
    template = images[0].segment_templates[0]
    assert template.media == "sheet-$Number%05d$.jpg" and template.start_number == 1
    rep = images[0].representations[0]
    assert (rep.width, rep.height) == (cols * tile_w, rows * tile_h)
    tile = rep.essential_properties[0]
    assert (tile.scheme_id_uri, tile.value) == (
        "http://dashif.org/thumbnail_tile",
        thumbs["layout"],
    )
    return files
