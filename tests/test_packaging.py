"""The manifest writers: codec strings from real encodes, the master playlist, the MPD duration."""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path

import m3u8
import pytest
from pydantic import ValidationError

from app.core.models import EncodeRequest
from app.media.packaging.bmff import Fragment, Sample, SegmentIndex, TrackDefaults, TrackIndex
from app.media.packaging.codec_strings import CodecStringError, aac, av1, avc, codec_string, hevc
from app.media.packaging.dash import duration, join_video_sets
from app.media.packaging.hls import (
    AudioEntry,
    AudioTrack,
    Bitrate,
    SubtitleEntry,
    VideoVariant,
    audio_groups,
    master_playlist,
    media_playlist,
    quotable,
    subtitle_playlist,
)


def encode(ffmpeg: str, out: Path, *args: str) -> Path:
    subprocess.run(
        [ffmpeg, "-v", "error", "-y", *args, str(out)], check=True, capture_output=True, timeout=60
    )
    return out


# QCIF at 25 fps is level 1.1 (0b) for x264, 2.0 (L60) for x265; baseline is constrained (c0).
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-c:v", "libx264", "-profile:v", "high", "-pix_fmt", "yuv420p"], "avc1.64000b"),
        (["-c:v", "libx264", "-profile:v", "baseline", "-pix_fmt", "yuv420p"], "avc1.42c00b"),
        (["-c:v", "libx265", "-pix_fmt", "yuv420p", "-x265-params", "log-level=error"],
         "hvc1.1.6.L60.90"),
        (["-c:v", "libx265", "-pix_fmt", "yuv420p10le", "-x265-params", "log-level=error"],
         "hvc1.2.4.L60.90"),
        (["-c:v", "libsvtav1", "-pix_fmt", "yuv420p10le"], "av01.0.00M.10"),
        (["-c:v", "libsvtav1", "-pix_fmt", "yuv420p"], "av01.0.00M.08"),
    ],
)  # fmt: skip
def test_video_codec_strings_come_from_the_configuration_record(
    ffmpeg: str, tmp_path: Path, args: list[str], expected: str
) -> None:
    out = encode(ffmpeg, tmp_path / "v.mp4", "-f", "lavfi", "-i",
                 "testsrc2=s=176x144:r=25:d=0.4", "-tag:v", "hvc1" if "libx265" in args else
                 "avc1" if "libx264" in args else "av01", *args)  # fmt: skip
    assert codec_string(out) == expected


def test_audio_codec_strings(ffmpeg: str, tmp_path: Path) -> None:
    tone = ["-f", "lavfi", "-i", "sine=d=0.5"]
    assert codec_string(encode(ffmpeg, tmp_path / "a.mp4", *tone, "-c:a", "aac")) == "mp4a.40.2"
    surround = encode(ffmpeg, tmp_path / "e.mp4", *tone, "-c:a", "eac3", "-ac", "6")
    assert codec_string(surround) == "ec-3"


def test_records_are_read_by_the_book() -> None:
    assert avc(bytes([1, 0x4D, 0x40, 0x1F])) == "avc1.4d401f"
    # HEVC Main 10, high tier, level 5.1 (153), progressive + frame-only constraint bytes
    record = bytes([1, 0x22, 0x20, 0, 0, 0, 0xB0, 0, 0, 0, 0, 0, 153])
    assert hevc(record) == "hvc1.2.4.H153.B0"
    assert av1(bytes([0x81, 0x08, 0x4C])) == "av01.0.08M.10"
    assert aac(bytes([0x29, 0x90])) == "mp4a.40.5"  # HE-AAC (SBR)
    with pytest.raises(CodecStringError):
        hevc(b"\x00")


def test_mpd_duration_is_exact_to_the_millisecond_and_never_short() -> None:
    assert duration(5.312) == "PT5.312S"
    assert duration(5.3121) == "PT5.313S"
    assert duration(6.0) == "PT6.000S"
    assert duration(3725.04) == "PT3725.040S"


MPD_OF_FFMPEG = """<?xml version="1.0" encoding="utf-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static"><Period id="0" start="PT0.0S">
<AdaptationSet id="0" contentType="video" frameRate="25/1" maxWidth="1280" maxHeight="720"
 par="16:9"><Representation id="0" width="1280" height="720" sar="1:1"/></AdaptationSet>
<AdaptationSet id="1" contentType="video" frameRate="25/1" maxWidth="852" maxHeight="480"
 par="71:40"><Representation id="1" width="852" height="480" sar="1:1"/></AdaptationSet>
<AdaptationSet id="2" contentType="video" frameRate="25/1" maxWidth="640" maxHeight="360"
 par="16:9"><Representation id="2" width="640" height="360" sar="1:1"/></AdaptationSet>
<AdaptationSet id="3" contentType="audio" lang="en"><Representation id="3"/></AdaptationSet>
</Period></MPD>"""


def test_video_sets_of_a_family_are_joined_whatever_their_aspect_ratio(tmp_path: Path) -> None:
    """ffmpeg writes one set per video (square pixels: 852x480 is not 16:9); the family
    (here H.264 720p and 480p; an HEVC 360p apart) becomes one set, numbered in order."""
    mpd = tmp_path / "manifest.mpd"
    mpd.write_text(MPD_OF_FFMPEG)
    join_video_sets(mpd, [["0", "1"], ["2"]])
    ns = {"d": "urn:mpeg:dash:schema:mpd:2011"}
    sets = ET.parse(mpd).getroot().findall("d:Period/d:AdaptationSet", ns)
    assert [(a.get("id"), a.get("contentType")) for a in sets] == [
        ("0", "video"), ("1", "video"), ("2", "audio")
    ]  # fmt: skip
    reps = [[r.get("id") for r in a.findall("d:Representation", ns)] for a in sets]
    assert reps == [["0", "1"], ["2"], ["3"]]
    first = sets[0].attrib
    assert (first["maxWidth"], first["maxHeight"], first["par"], first["frameRate"]) == (
        "1280", "720", "16:9", "25/1"
    )  # fmt: skip


VIDEO = VideoVariant("media_0.m3u8", Bitrate(2_000_000, 1_500_000), "avc1.64001f", 1280, 720,
                     Fraction(30000, 1001), "SDR")  # fmt: skip


def audio(uri: str, group: str, language: str, default: bool, peak: int) -> AudioEntry:
    codecs = "ec-3" if group.endswith("eac3") else "mp4a.40.2"
    channels = 6 if codecs == "ec-3" else 2
    return AudioEntry(uri, group, language, language, default, channels, codecs,
                      Bitrate(peak, peak - 1000))  # fmt: skip


def test_master_lists_each_variant_per_audio_group_with_that_groups_peak() -> None:
    tracks = [
        audio("a1.m3u8", "audio-aac", "eng", True, 130_000),
        audio("a2.m3u8", "audio-aac", "fra", False, 140_000),
        audio("a3.m3u8", "audio-eac3", "eng", False, 400_000),
    ]
    subs = [SubtitleEntry("s.m3u8", "Deutsch SDH", "deu", False, False, True)]
    parsed = m3u8.loads(master_playlist([VIDEO], tracks, subs))
    assert parsed.is_independent_segments and parsed.version == 7
    listed = [
        (p.stream_info.audio, p.stream_info.bandwidth, p.stream_info.average_bandwidth,
         p.stream_info.codecs)
        for p in parsed.playlists
    ]  # fmt: skip
    assert listed == [
        ("audio-aac", 2_140_000, 1_639_000, "avc1.64001f,mp4a.40.2"),
        ("audio-eac3", 2_400_000, 1_899_000, "avc1.64001f,ec-3"),
    ]
    first = parsed.playlists[0].stream_info
    assert (first.frame_rate, first.video_range, first.closed_captions) == (29.97, "SDR", "NONE")
    assert first.subtitles == "subs" and first.resolution == (1280, 720)
    (sub,) = [m for m in parsed.media if m.type == "SUBTITLES"]
    assert sub.characteristics and "transcribes-spoken-dialog" in sub.characteristics


def test_master_without_audio_or_subtitles() -> None:
    parsed = m3u8.loads(master_playlist([VIDEO], [], []))
    (variant,) = parsed.playlists
    assert variant.stream_info.audio is None and variant.stream_info.subtitles is None
    assert (
        variant.stream_info.bandwidth == 2_000_000 and variant.stream_info.codecs == "avc1.64001f"
    )


def test_subtitle_playlist_is_vod_with_a_target_duration_per_rfc8216() -> None:
    parsed = m3u8.loads(subtitle_playlist([("s-1.vtt", 4.0), ("s-2.vtt", 4.0), ("s-3.vtt", 1.3)]))
    assert parsed.playlist_type == "vod" and parsed.is_endlist
    assert parsed.target_duration == 4
    assert [s.duration for s in parsed.segments] == [4.0, 4.0, 1.3]


def test_surround_group_holds_every_track_once_under_the_same_names() -> None:
    def track(uri: str, source: int, label: str, channels: int, default: bool) -> AudioTrack:
        codecs = "ec-3" if channels == 6 else "mp4a.40.2"
        return AudioTrack(uri, (None, source), label, label, default, channels, codecs,
                          Bitrate(1, 1))  # fmt: skip

    entries = audio_groups(
        [
            track("en.m3u8", 1, "en", 2, True),
            track("en51.m3u8", 1, "en", 6, False),
            track("fr.m3u8", 2, "fr", 2, False),
        ]
    )
    assert [(e.group, e.uri, e.name, e.default) for e in entries] == [
        ("audio-stereo", "en.m3u8", "en", True),
        ("audio-stereo", "fr.m3u8", "fr", False),
        ("audio-surround", "en51.m3u8", "en", True),
        ("audio-surround", "fr.m3u8", "fr", False),
    ]
    assert {e.group for e in audio_groups([track("en.m3u8", 1, "en", 2, True)])} == {"audio-stereo"}


def test_text_from_files_or_requests_cannot_break_out_of_an_attribute() -> None:
    hostile = 'Eng"\nhttp://evil/x.m3u8\n#EXT-X-FOO'
    assert "\n" not in quotable(hostile) and '"' not in quotable(hostile)
    entry = AudioEntry("a.m3u8", "audio-stereo", hostile, "en", True, 2, "mp4a.40.2",
                       Bitrate(1, 1))  # fmt: skip
    text = master_playlist([VIDEO], [entry], [])
    assert not any(line.startswith("http://evil") for line in text.splitlines())
    assert [p.uri for p in m3u8.loads(text).playlists] == ["media_0.m3u8"]


def test_program_date_time_only_when_asked() -> None:
    """A VOD title's playlists carry no wall-clock time; an archived event's first segment
    does (RFC 8216 4.3.2.6), and a time without a zone is refused at the API."""
    sample = Sample(decode_time=0, duration=1000, offset=0, size=10, sync=True)
    track = TrackIndex(
        TrackDefaults(timescale=1000),
        [SegmentIndex(f"s{n}.m4s", 10, n * 1000, n * 1000 + 1000, [Fragment(0, [sample])])
         for n in range(3)],
    )  # fmt: skip
    assert "PROGRAM-DATE-TIME" not in media_playlist(track, "init.m4s")
    start = datetime(2026, 12, 1, 20, 0, tzinfo=UTC)
    text = media_playlist(track, "init.m4s", start)
    assert text.count("#EXT-X-PROGRAM-DATE-TIME:2026-12-01T20:00:00") == 1
    assert m3u8.loads(text).segments[0].current_program_date_time == start
    with pytest.raises(ValidationError, match="timezone"):
        EncodeRequest.model_validate(
            {"source": "a.mp4", "program_date_time": "2026-12-01T20:00:00"}
        )
