"""The conformance rules catch what they are there to catch.

A clean package (real activities on a real source) has no violations; each fault the issue
measured in ffmpeg's own packaging, put back into a copy, is reported. The rules run on every
e2e job's outputs through ``tests.media_checks.check_package`` and the catalogue tests.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import m3u8
import pytest

from app.core.settings import Settings
from app.media.packaging.bmff import index_track
from app.media.packaging.hls import iframes
from tests.conformance import violations
from tests.test_activities import job_for, run_pipeline


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory, media_dir: Path) -> Path:
    """A two-rung ladder with audio, packaged by the real activities."""
    import asyncio

    tmp = tmp_path_factory.mktemp("conformance")
    settings = Settings(data_dir=tmp / "data", source_roots=str(media_dir), heartbeat_timeout_s=20)
    job = job_for(settings, media_dir / "basic.mp4", job_id="job-conformance")
    return asyncio.run(run_pipeline(settings, job))


def _broken(package: Path, tmp_path: Path, edit: Callable[[Path], None]) -> list[str]:
    copy = tmp_path / "copy"
    shutil.copytree(package, copy)
    edit(copy)
    return violations(copy)


def _sub(path: Path, pattern: str, replacement: str, count: int = 0) -> None:
    text = path.read_text()
    new = re.sub(pattern, replacement, text, count=count, flags=re.M)
    assert new != text, f"{pattern!r} not in {path.name}"
    path.write_text(new)


def test_a_clean_package_has_no_violations(package: Path) -> None:
    assert violations(package) == []


def test_every_segment_is_indexed_with_exact_bounds(package: Path) -> None:
    """The index the playlists are written from agrees with the MPD ffmpeg wrote."""
    track = index_track(package / "init-0.m4s", sorted(package.glob("chunk-0-*.m4s")))
    timeline = re.search(
        r'<S t="0" d="(\d+)"(?: r="(\d+)")?', (package / "manifest.mpd").read_text()
    )
    assert timeline is not None
    assert track.segments[0].duration == int(timeline.group(1))
    assert all(s.first_sync for s in track.segments)
    frames = iframes(track)
    assert [f.uri for f in frames] == [s.uri for s in track.segments]
    assert sum(f.duration for f in frames) == pytest.approx(track.seconds(track.segments[-1].end))


FAULTS: dict[str, tuple[Callable[[Path], None], str]] = {
    "bandwidth below the peak": (
        lambda d: _sub(d / "master.m3u8", r"(?<=[:,])BANDWIDTH=(\d+)", "BANDWIDTH=1000", 1),
        "BANDWIDTH 1000, measured peak",
    ),
    "no average bandwidth": (
        lambda d: _sub(d / "master.m3u8", r",AVERAGE-BANDWIDTH=\d+", ""),
        "no AVERAGE-BANDWIDTH",
    ),
    "program date time on a VOD title": (
        lambda d: _sub(
            d / "media_0.m3u8", r"^(#EXTINF)", "#EXT-X-PROGRAM-DATE-TIME:2026-01-01T00:00:00Z\n\\1"
        ),
        "PROGRAM-DATE-TIME",
    ),
    "no playlist type": (
        lambda d: _sub(d / "media_1.m3u8", r"^#EXT-X-PLAYLIST-TYPE:VOD\n", ""),
        "not a VOD playlist",
    ),
    "an EXTINF that is not the segment's length": (
        lambda d: _sub(d / "media_0.m3u8", r"^#EXTINF:1,", "#EXTINF:1.1,", 1),
        "EXTINF 1.1 but lasts",
    ),
    "no independent segments": (
        lambda d: _sub(d / "master.m3u8", r"^#EXT-X-INDEPENDENT-SEGMENTS\n", ""),
        "no EXT-X-INDEPENDENT-SEGMENTS",
    ),
    "ffmpeg's rounded MPD duration": (
        lambda d: _sub(
            d / "manifest.mpd",
            r'mediaPresentationDuration="[^"]+"',
            'mediaPresentationDuration="PT1.9S"',
        ),
        "mediaPresentationDuration 1.9",
    ),
    "bitstream switching claimed": (
        lambda d: _sub(
            d / "manifest.mpd",
            r'contentType="video"',
            'contentType="video" bitstreamSwitching="true"',
        ),
        "bitstreamSwitching=true",
    ),
    "a deleted segment": (
        lambda d: (d / "chunk-1-00002.m4s").unlink(),
        "segments missing",
    ),
    "an I-frame range that misses its keyframe": (
        lambda d: _sub(d / "iframe_0.m3u8", r"BYTERANGE:(\d+)@76", "BYTERANGE:400@76", 1),
        "iframe_0.m3u8: chunk-0-00001.m4s@76",
    ),
    "CODECS not from the bitstream": (
        lambda d: _sub(
            d / "master.m3u8", r'CODECS="avc1\.[0-9a-fA-F]{6}', 'CODECS="avc1.42E01E', 1
        ),
        "bitstream avc1.",
    ),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_each_fault_is_reported(package: Path, tmp_path: Path, fault: str) -> None:
    edit, expected = FAULTS[fault]
    problems = _broken(package, tmp_path, edit)
    assert any(expected in p for p in problems), problems


def test_master_parses_with_every_attribute(package: Path) -> None:
    """A spot check of the values against the library's own reading of the master."""
    master = m3u8.load(str(package / "master.m3u8"))
    assert master.is_independent_segments
    for variant in master.playlists:
        info = variant.stream_info
        assert info.average_bandwidth and info.bandwidth >= info.average_bandwidth
        assert info.frame_rate == 30.0 and info.video_range == "SDR"
    assert {p.uri for p in master.iframe_playlists} == {"iframe_0.m3u8", "iframe_1.m3u8"}
