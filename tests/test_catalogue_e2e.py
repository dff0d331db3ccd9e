"""Catalogue media end to end: every audio language and subtitle carried, or reported.

Real stack (dev server, worker process, API over HTTP), real generated sources; every check
reads the packaged outputs back with ffmpeg, PyAV, m3u8 and mpegdash.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
from fractions import Fraction
from itertools import pairwise
from pathlib import Path
from typing import Any

import av
import m3u8
import pytest
from mpegdash.parser import MPEGDASHParser
from temporalio.testing import WorkflowEnvironment

from app.storage.local import uri_to_path
from tests.conformance import violations
from tests.stack import Stack
from tests.test_audio import decode, integrated_lufs
from tests.test_chunked_e2e import flash_and_beep
from tests.test_video_treatments import (
    FLASH_S,
    idet,
    make_hdr,
    make_interlaced,
    make_vfr,
    psnr_per_frame,
    stream_facts,
)

pytestmark = pytest.mark.e2e
PROFILE = [{"name": "180p", "height": 180, "bitrate_kbps": 300}]
SRT = """1
00:00:00,500 --> 00:00:01,500
Hello there

2
00:00:02,000 --> 00:00:04,200
Second <i>line</i>

3
00:00:04,500 --> 00:00:05,600
After the segment boundary
"""
VTT = """WEBVTT

00:00.800 --> 00:02.000
Bonjour

00:03.000 --> 00:05.000 line:90%
Au revoir
"""


def run(ffmpeg: str, *args: str) -> str:
    proc = subprocess.run(
        [ffmpeg, "-hide_banner", "-nostdin", "-v", "error", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def make_multilingual(folder: Path, ffmpeg: str) -> Path:
    """6 s, 25 fps; audio eng (440 Hz, default) and fra (880 Hz); a mov_text English track."""
    (folder / "eng.srt").write_text(SRT)
    path = folder / "multilingual.mp4"
    run(ffmpeg, "-y", "-f", "lavfi", "-i", "testsrc2=s=320x180:r=25:d=6",
        "-f", "lavfi", "-i", "sine=f=440:d=6:sample_rate=48000",
        "-f", "lavfi", "-i", "sine=f=880:d=6:sample_rate=48000",
        "-i", str(folder / "eng.srt"),
        "-map", "0", "-map", "1", "-map", "2", "-map", "3",
        "-c:v", "libx264", "-preset", "veryfast", "-g", "25", "-c:a", "aac", "-c:s", "mov_text",
        "-metadata:s:a:0", "language=eng", "-metadata:s:a:1", "language=fra",
        "-metadata:s:s:0", "language=eng",
        "-disposition:a:0", "default", "-disposition:a:1", "0", str(path))  # fmt: skip
    return path


def media_bytes(out_dir: Path, rep_id: str) -> bytes:
    files = [out_dir / f"init-{rep_id}.m4s", *sorted(out_dir.glob(f"chunk-{rep_id}-*.m4s"))]
    return b"".join(p.read_bytes() for p in files)


def cue_times(ffmpeg: str, vtt: Path) -> list[tuple[float, float, str]]:
    """Cues as ffmpeg reads them (its own WebVTT demuxer), converted to SubRip."""
    text = run(ffmpeg, "-i", str(vtt), "-f", "srt", "-")
    cues = []
    for block in text.strip().split("\n\n"):
        lines = block.splitlines()
        m = re.match(r"(\d+):(\d+):(\d+),(\d+) --> (\d+):(\d+):(\d+),(\d+)", lines[1])
        assert m, block
        v = [int(g) for g in m.groups()]
        start = v[0] * 3600 + v[1] * 60 + v[2] + v[3] / 1000
        end = v[4] * 3600 + v[5] * 60 + v[6] + v[7] / 1000
        cues.append((start, end, re.sub(r"<[^>]+>", "", " ".join(lines[2:]))))
    return cues


async def test_every_language_and_subtitle_is_carried(
    stack: Stack, media_dir: Path, ffmpeg: str, tmp_path: Path, dev_server: WorkflowEnvironment
) -> None:
    source = make_multilingual(media_dir, ffmpeg)
    (media_dir / "fra.vtt").write_text(VTT)
    dub = media_dir / "spa-dub.wav"
    run(ffmpeg, "-y", "-f", "lavfi", "-i", "sine=f=660:d=6:sample_rate=44100", str(dub))
    job_id = stack.submit(
        source=str(source),
        profiles=PROFILE,
        audio={"loudness_lufs": -16, "tracks": [{"source": str(dub), "language": "spa"}]},
        subtitles=[{"source": str(media_dir / "fra.vtt"), "language": "fra"}],
    )["job_id"]
    view = stack.wait(job_id, timeout=180)
    assert view["status"] == "SUCCEEDED", view
    assert view["not_carried"] == []
    probed = view["source"]
    assert [(a["language"], a["default"]) for a in probed["audio_streams"]] == [
        ("eng", True),
        ("fra", False),
    ]
    assert [(s["codec"], s["language"], s["text"]) for s in probed["subtitles"]] == [
        ("mov_text", "eng", True)
    ]
    out = uri_to_path(view["manifests"]["manifest"]).parent

    # HLS: one audio rendition per language, the source's default first; subtitles as a group.
    master = m3u8.load(str(out / "master.m3u8"))
    assert master.is_independent_segments
    audio = [m for m in master.media if m.type == "AUDIO"]
    assert [(m.language, m.default, m.autoselect, m.channels) for m in audio] == [
        ("en", "YES", "YES", "2"),
        ("fr", "NO", "YES", "2"),
        ("es", "NO", "YES", "2"),
    ]
    subs = [m for m in master.media if m.type == "SUBTITLES"]
    assert sorted((m.language, m.forced) for m in subs) == [("en", "NO"), ("fr", "NO")]
    (variant,) = master.playlists
    info = variant.stream_info
    assert re.fullmatch(r"avc1\.64[0-9a-f]{4},mp4a\.40\.2", info.codecs), info.codecs
    assert info.audio == audio[0].group_id and info.subtitles == subs[0].group_id
    assert info.closed_captions == "NONE" and info.frame_rate == 25.0
    assert info.average_bandwidth < info.bandwidth
    text = (out / "master.m3u8").read_text()
    assert "VIDEO-RANGE=SDR" in text

    # BANDWIDTH is the peak segment bit rate of the video plus the largest audio of its group.
    def peak(playlist: str) -> float:
        parsed = m3u8.load(str(out / playlist))
        return max((out / s.uri).stat().st_size * 8 / s.duration for s in parsed.segments)

    expected = peak(variant.uri) + max(peak(m.uri) for m in audio)
    assert expected <= info.bandwidth <= expected + 2

    # Each audio rendition is its own source track (or the dub): the right tone, AAC stereo
    # 48 kHz, normalised to -16 LUFS as measured afresh by ffmpeg's ebur128 (within 1 LU).
    manifest_tracks = {t["language"]: t for t in _manifest(out)["audio_tracks"]}
    for language, hz in (("en", 440), ("fr", 880), ("es", 660)):
        rep = manifest_tracks[language]["dash_representation_id"]
        packaged = tmp_path / f"{language}.mp4"
        packaged.write_bytes(media_bytes(out, str(rep)))
        found = decode(packaged)
        assert abs(found.frequency_hz - hz) < hz * 0.03, (language, found)
        assert (found.codec, found.sample_rate, found.channels) == ("aac", 48000, 2)
        assert abs(integrated_lufs(ffmpeg, packaged) + 16) <= 1.0
        loudness = manifest_tracks[language]["loudness"]
        assert (
            loudness["target_lufs"] == -16 and abs(loudness["output"]["integrated_lufs"] + 16) <= 1
        )
        assert loudness["measured"]["integrated_lufs"] < -17  # a sine at -20 dBFS is quieter

    # DASH: one audio set per language with lang and Role, text sets for the subtitles, the
    # exact duration, and no false bitstreamSwitching.
    mpd_text = (out / "manifest.mpd").read_text()
    assert "bitstreamSwitching" not in mpd_text
    mpd = MPEGDASHParser.parse(str(out / "manifest.mpd"))
    assert mpd.media_presentation_duration == "PT6.000S" or mpd.media_presentation_duration in {
        f"PT6.{ms:03d}S" for ms in range(0, 60)
    }, mpd.media_presentation_duration
    sets = mpd.periods[0].adaptation_sets
    audio_sets = [s for s in sets if s.content_type == "audio"]
    assert [(s.lang, s.roles[0].value) for s in audio_sets] == [
        ("en", "main"),
        ("fr", "alternate"),
        ("es", "alternate"),
    ]
    text_sets = [s for s in sets if s.content_type == "text"]
    assert sorted((s.lang, s.mime_type) for s in text_sets) == [
        ("en", "text/vtt"),
        ("fr", "text/vtt"),
    ]

    # Subtitles read back by ffmpeg: the source's text and times, within a frame.
    frame = 1 / 25
    eng = cue_times(ffmpeg, out / "sub-en.vtt")
    assert [c[2] for c in eng] == ["Hello there", "Second line", "After the segment boundary"]
    for (start, end, _), (want_start, want_end) in zip(
        eng, [(0.5, 1.5), (2.0, 4.2), (4.5, 5.6)], strict=True
    ):
        assert abs(start - want_start) <= frame and abs(end - want_end) <= frame
    fra = cue_times(ffmpeg, out / "sub-fr.vtt")
    assert [(round(s, 2), round(e, 2), t) for s, e, t in fra] == [
        (0.8, 2.0, "Bonjour"),
        (3.0, 5.0, "Au revoir"),
    ]
    # The HLS subtitle playlist: segments on the video's 4 s grid, each with a timestamp map;
    # the cue across the 4 s boundary (2.0-4.2 s) is in both segments.
    playlist = m3u8.load(str(out / "sub-en.m3u8"))
    assert playlist.playlist_type == "vod" and playlist.is_endlist
    assert [round(s.duration, 3) for s in playlist.segments] == [4.0, 2.0]
    for segment in playlist.segments:
        body = (out / segment.uri).read_text()
        assert body.startswith("WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000")
    first, second = ((out / s.uri).read_text() for s in playlist.segments)
    assert "Second <i>line</i>" in first and "Second <i>line</i>" in second
    assert "After the segment boundary" in second and "After" not in first

    if os.environ.get("COSMOS_RECORD_HISTORY"):  # replayed by tests/test_replay.py
        history = await dev_server.client.get_workflow_handle(job_id).fetch_history()
        path = Path(__file__).parent / "histories" / "encode_catalogue.json"
        path.write_text(json.dumps(history.to_json_dict(), indent=1))


def test_surround_gets_its_own_audio_group(stack: Stack, media_dir: Path, ffmpeg: str) -> None:
    """E-AC-3 5.1 beside AAC stereo: each codec its own HLS group, every variant listed once
    per group with that group's codec, so a player picks what it can decode."""
    source = str(media_dir / "surround.mp4")
    view = stack.wait(
        stack.submit(source=source, profiles=PROFILE, audio={"surround": True})["job_id"]
    )
    assert view["status"] == "SUCCEEDED", view
    out = uri_to_path(view["manifests"]["manifest"]).parent
    master = m3u8.load(str(out / "master.m3u8"))
    groups = {(m.group_id, m.channels, m.default) for m in master.media if m.type == "AUDIO"}
    assert groups == {("audio-stereo", "2", "YES"), ("audio-surround", "6", "YES")}
    listed = sorted(
        (p.stream_info.audio, p.stream_info.codecs.split(",")[1]) for p in master.playlists
    )
    assert listed == [("audio-stereo", "mp4a.40.2"), ("audio-surround", "ec-3")]
    tracks = {t["codec"]: t for t in _manifest(out)["audio_tracks"]}
    packaged = out / "surround.mp4"
    packaged.write_bytes(media_bytes(out, str(tracks["eac3"]["dash_representation_id"])))
    found = decode(packaged)
    assert (found.codec, found.channels, found.sample_rate) == ("eac3", 6, 48000)
    mpd = (out / "manifest.mpd").read_text()
    assert (
        'schemeIdUri="tag:dolby.com,2014:dash:audio_channel_configuration:2011" value="F801"' in mpd
    )


def test_a_stream_that_cannot_be_carried_is_reported(
    stack: Stack, media_dir: Path, ffmpeg: str
) -> None:
    """An attachment (a font, as in anime releases) cannot go into HLS or DASH: the job
    succeeds and says so under ``not_carried``."""
    font = media_dir / "font.ttf"
    font.write_bytes(b"\x00\x01\x00\x00" + b"\x00" * 256)
    source = media_dir / "with-attachment.mkv"
    run(ffmpeg, "-y", "-f", "lavfi", "-i", "testsrc2=s=320x180:r=25:d=2",
        "-c:v", "libx264", "-preset", "veryfast", "-attach", str(font),
        "-metadata:s:t", "mimetype=application/x-truetype-font", str(source))  # fmt: skip
    view = stack.wait(stack.submit(source=str(source), profiles=PROFILE)["job_id"])
    assert view["status"] == "SUCCEEDED", view
    (entry,) = view["not_carried"]
    assert entry["kind"] == "attachment" and entry["reason"]
    out = uri_to_path(view["manifests"]["manifest"]).parent
    assert _manifest(out)["not_carried"] == [entry]


def test_bad_sidecars_are_refused_at_the_api(stack: Stack, media_dir: Path) -> None:
    source = str(media_dir / "basic.mp4")
    with stack.http() as http:
        outside = http.post(
            "/v1/encode",
            json={"source": source, "subtitles": [{"source": "/etc/passwd.srt", "language": "en"}]},
        )
        wrong_kind = http.post(
            "/v1/encode",
            json={"source": source, "subtitles": [{"source": source, "language": "en"}]},
        )
        bad_language = http.post(
            "/v1/encode",
            json={"source": source, "audio": {"tracks": [{"source": source, "language": "E"}]}},
        )
        loud = http.post("/v1/encode", json={"source": source, "audio": {"loudness_lufs": 3}})
        sub = {"source": str(media_dir / "fra.vtt"), "language": "fr", "title": 'Fr"\n#EXT'}
        quoted = http.post("/v1/encode", json={"source": source, "subtitles": [sub]})
    for response in (outside, wrong_kind, bad_language, loud, quoted):
        assert response.status_code == 422, response.text
        assert "Traceback" not in response.text
    assert "subtitles.0.source" in outside.text
    assert ".srt or .vtt" in wrong_kind.text


def _manifest(out: Path) -> dict[str, Any]:
    """The job's manifest.json, once its package is shown to conform (tests/conformance.py)."""
    problems = violations(out)
    assert not problems, "\n".join(problems)
    return dict(json.loads((out / "manifest.json").read_text()))


# ---------------------------------------------------------------- video treatments, end to end


def showinfo(ffmpeg: str, data: bytes, tmp: Path) -> str:
    """showinfo's report of the first frame of an fMP4 representation (tags, side data)."""
    media = tmp / "rep.mp4"
    media.write_bytes(data)
    proc = subprocess.run(
        [ffmpeg, "-hide_banner", "-nostdin", "-i", str(media), "-vf", "showinfo",
         "-frames:v", "1", "-f", "null", "-"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


def test_hdr10_source_gives_hdr_hevc_and_sdr_h264_side_by_side(
    stack: Stack, media_dir: Path, ffmpeg: str, tmp_path: Path
) -> None:
    source = make_hdr(ffmpeg, media_dir / "hdr10-e2e.mp4", "smpte2084", seconds=10)
    profiles = [
        {"name": "hdr", "height": 360, "bitrate_kbps": 600, "codec": "hevc", "preset": "ultrafast"},
        {"name": "sdr", "height": 360, "bitrate_kbps": 600, "codec": "h264", "preset": "veryfast"},
    ]
    view = stack.wait(
        stack.submit(source=str(source), profiles=profiles, chunk_seconds=6)["job_id"], timeout=240
    )
    assert view["status"] == "SUCCEEDED", view
    assert view["source"]["video"]["dynamic_range"] == "HDR10"
    assert {r["chunks_total"] for r in view["renditions"]} == {2}  # chunked, 10 s at 6 s
    out = uri_to_path(view["manifests"]["manifest"]).parent
    by_name = {r["name"]: r for r in _manifest(out)["renditions"]}

    master = m3u8.load(str(out / "master.m3u8"))
    variants = {p.uri: p.stream_info for p in master.playlists}
    hdr = variants[by_name["hdr"]["hls_playlist"]]
    sdr = variants[by_name["sdr"]["hls_playlist"]]
    assert hdr.video_range == "PQ" and sdr.video_range == "SDR"
    assert re.fullmatch(r"hvc1\.2\.4\.L\d+\.[0-9A-F]+", hdr.codecs), hdr.codecs  # no audio
    assert sdr.codecs.startswith("avc1.64")

    # Read back from the packaged segments: HEVC Main 10, PQ, the source's ST 2086 and CLL;
    # H.264 8-bit BT.709 without HDR side data.
    hdr_info = showinfo(
        ffmpeg, media_bytes(out, by_name["hdr"]["dash_representation_id"]), tmp_path
    )
    assert "color_space:bt2020nc color_primaries:bt2020 color_trc:smpte2084" in hdr_info
    assert "yuv420p10le" in hdr_info
    assert "Mastering display metadata" in hdr_info and "MaxCLL=1000, MaxFALL=400" in hdr_info
    sdr_info = showinfo(
        ffmpeg, media_bytes(out, by_name["sdr"]["dash_representation_id"]), tmp_path
    )
    assert "color_space:bt709 color_primaries:bt709 color_trc:bt709" in sdr_info
    assert " yuv420p " in sdr_info or "fmt:yuv420p " in sdr_info
    assert "Mastering display" not in sdr_info
    assert by_name["sdr"]["settings"]["tonemap"] is True
    assert by_name["hdr"]["settings"]["pix_fmt"] == "yuv420p10le"

    # DASH: the two codec families in their own sets; the HDR one says PQ.
    mpd = MPEGDASHParser.parse(str(out / "manifest.mpd"))
    video_sets = [s for s in mpd.periods[0].adaptation_sets if s.content_type == "video"]
    assert len(video_sets) == 2
    (pq,) = [s for s in video_sets if s.essential_properties]
    assert [(e.scheme_id_uri, e.value) for e in pq.essential_properties] == [
        ("urn:mpeg:mpegB:cicp:TransferCharacteristics", "16")
    ]
    assert pq.representations[0].codecs.startswith("hvc1.2.4")


def test_interlaced_source_chunked_and_whole_come_out_the_same(
    stack: Stack, media_dir: Path, ffmpeg: str, tmp_path: Path
) -> None:
    source = make_interlaced(ffmpeg, media_dir / "pal-25i.mp4", seconds=8)
    full = [{"name": "sd", "height": 576, "bitrate_kbps": 4000, "preset": "veryfast"}]
    chunked = stack.submit(source=str(source), profiles=full, chunk_seconds=2)["job_id"]
    whole = stack.submit(source=str(source), profiles=full, chunk_seconds=0)["job_id"]
    outputs = {}
    for name, job_id in (("chunked", chunked), ("whole", whole)):
        view = stack.wait(job_id, timeout=300)
        assert view["status"] == "SUCCEEDED", view
        out = uri_to_path(view["manifests"]["manifest"]).parent
        path = tmp_path / f"{name}.mp4"
        path.write_bytes(media_bytes(out, "0"))
        outputs[name] = path
    assert view["source"]["video"]["interlaced"] and view["source"]["video"]["field_order"] == "tff"
    before = idet(ffmpeg, source)
    assert before["tff"] >= 0.9 * 200, before
    for name, path in outputs.items():
        after = idet(ffmpeg, path)
        assert after["tff"] + after["bff"] <= 0.05 * 200, (name, after)
        assert stream_facts(path)[3] == 200, name
    psnr = psnr_per_frame(ffmpeg, outputs["chunked"], outputs["whole"], tmp_path / "psnr.log")
    assert len(psnr) == 200 and min(psnr) >= 35, min(psnr)


def test_vfr_source_comes_out_cfr_and_in_sync_after_a_minute(
    stack: Stack, media_dir: Path, ffmpeg: str
) -> None:
    source = make_vfr(ffmpeg, media_dir / "vfr-60s.mp4", drops=True)
    view = stack.wait(stack.submit(source=str(source), profiles=PROFILE)["job_id"], timeout=300)
    assert view["status"] == "SUCCEEDED", view
    assert view["source"]["video"]["variable_frame_rate"] is True
    assert view["source"]["video"]["frame_rate"] == "30/1"  # 27 on average: the drops are filled
    assert view["renditions"][0]["chunks_total"] is None  # one CFR grid: never chunked
    out = uri_to_path(view["manifests"]["manifest"]).parent
    times = packet_times_of(media_bytes(out, "0"))
    assert {b - a for a, b in pairwise(times)} == {Fraction(1, 30)}
    assert abs(len(times) - 30 * 60) <= 1
    flash, beep = flash_and_beep(out / "master.m3u8")
    assert flash is not None and beep is not None
    assert abs(flash - FLASH_S) <= 1 / 30 + 1e-6, flash
    assert abs(flash - beep) <= 1 / 30, (flash, beep)


def packet_times_of(data: bytes) -> list[Fraction]:
    with av.open(io.BytesIO(data), format="mp4") as container:
        stream = container.streams.video[0]
        tb = Fraction(stream.time_base or 1)
        return sorted(Fraction(p.pts) * tb for p in container.demux(stream) if p.pts is not None)
