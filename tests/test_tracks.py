"""Which audio and subtitle tracks a job outputs, and what it reports as not carried."""

from __future__ import annotations

from typing import Any

import pytest

from app.core.models import (
    AudioInfo,
    AudioOptions,
    EncodeJob,
    OtherStream,
    ProbeResult,
    SidecarAudio,
    SidecarSubtitle,
    SubtitleInfo,
    VideoInfo,
)
from app.media.ladder import PlanError
from app.media.tracks import other_not_carried, plan_audio, plan_subtitles, sidecar_subtitle_format


def probe(**fields: Any) -> ProbeResult:
    video = VideoInfo(
        codec="h264", width=1920, height=1080, sample_aspect_ratio="1:1",
        display_aspect_ratio="16:9", rotation=0, frame_rate="25/1", display_width=1920,
        display_height=1080, **fields.pop("video", {}),
    )  # fmt: skip
    audio = fields.get("audio_streams", [])
    return ProbeResult(
        container="matroska",
        duration_s=10.0,
        size_bytes=1,
        video=video,
        audio=audio[0] if audio else None,
        streams=[],
        **fields,
    )


def job(**fields: Any) -> EncodeJob:
    return EncodeJob(
        job_id="j", source_uri="file:///s.mkv", profiles=["720p"], codec="h264",
        segment_seconds=4, output_uri="file:///o", scratch_uri="file:///s", **fields,
    )  # fmt: skip


def track(index: int, language: str | None, channels: int = 2, **fields: Any) -> AudioInfo:
    return AudioInfo(
        codec="ac3", channels=channels, channel_layout="", sample_rate=48000, index=index,
        language=language, **fields,
    )  # fmt: skip


SOURCE = probe(
    audio_streams=[
        track(1, "eng", 6, default=True, title="English 5.1"),
        track(2, "fra"),
        track(3, None),
    ]
)


def test_every_track_becomes_aac_stereo_and_the_source_default_stays_default() -> None:
    tracks, skipped = plan_audio(job(), SOURCE)
    assert skipped == []
    assert [(t.name, t.source_index, t.language, t.codec, t.channels) for t in tracks] == [
        ("audio-en", 1, "en", "aac", 2),
        ("audio-fr", 2, "fr", "aac", 2),
        ("audio-und", 3, "und", "aac", 2),
    ]
    assert [t.default for t in tracks] == [True, False, False]
    assert tracks[0].title == "English 5.1" and tracks[0].sample_rate == 48000


def test_languages_pick_tracks_and_the_rest_is_reported() -> None:
    tracks, skipped = plan_audio(job(audio=AudioOptions(languages=["fra"])), SOURCE)
    assert [t.name for t in tracks] == ["audio-fr"]
    assert tracks[0].default  # the only track is the default one
    assert [(s.stream, s.kind) for s in skipped] == [
        ("#1 audio ac3 (eng)", "audio"),
        ("#3 audio ac3", "audio"),
    ]
    assert all("audio.languages" in s.reason for s in skipped)
    with pytest.raises(PlanError, match=r"asks for de; the source's audio tracks are en, fr, und"):
        plan_audio(job(audio=AudioOptions(languages=["deu"])), SOURCE)


def test_surround_rides_beside_stereo_only_where_the_source_has_it() -> None:
    tracks, _ = plan_audio(job(audio=AudioOptions(surround=True, default="fra")), SOURCE)
    assert [(t.name, t.codec, t.channels, t.default) for t in tracks] == [
        ("audio-en", "aac", 2, False),
        ("audio-en-51", "eac3", 6, False),
        ("audio-fr", "aac", 2, True),
        ("audio-und", "aac", 2, False),
    ]
    with pytest.raises(PlanError, match=r"audio\.default is ita"):
        plan_audio(job(audio=AudioOptions(default="ita")), SOURCE)


def test_dubs_and_loudness() -> None:
    options = AudioOptions(
        loudness_lufs=-23,
        tracks=[SidecarAudio(source="file:///m/dub.wav", language="spa", title="Castellano")],
    )
    tracks, _ = plan_audio(job(audio=options), probe(audio_streams=[track(1, "spa")]))
    assert [(t.name, t.source_uri, t.source_index) for t in tracks] == [
        ("audio-es", None, 1),
        ("audio-es-2", "file:///m/dub.wav", -1),
    ]
    assert {t.loudness_lufs for t in tracks} == {-23}


def test_languages_match_however_they_are_spelled() -> None:
    """A request's ``en`` picks a source's ``eng`` (and ``fre`` is ``fr``); manifests say the
    BCP 47 form; a tag that is no language is ``und`` (it names files)."""
    source = probe(audio_streams=[track(1, "eng"), track(2, "fre"), track(3, "en/../x")])
    tracks, _ = plan_audio(job(audio=AudioOptions(languages=["en", "fra", "und"])), source)
    assert [(t.name, t.language) for t in tracks] == [
        ("audio-en", "en"),
        ("audio-fr", "fr"),
        ("audio-und", "und"),
    ]


def test_a_probe_from_before_every_track_was_listed_maps_the_first_audio_stream() -> None:
    old = probe(audio_streams=[]).model_copy(update={"audio": track(0, None)})
    (only,), _ = plan_audio(job(), old)
    assert only.source_index == -1


def test_no_audio_means_no_audio_tracks() -> None:
    assert plan_audio(job(), probe()) == ([], [])


def test_text_subtitles_become_webvtt_and_image_ones_are_reported() -> None:
    subtitles = [
        SubtitleInfo(index=4, codec="subrip", text=True, language="eng", forced=True),
        SubtitleInfo(index=5, codec="hdmv_pgs_subtitle", text=False, language="fra"),
        SubtitleInfo(index=6, codec="ass", text=True, language="eng", hearing_impaired=True),
        SubtitleInfo(index=7, codec="ttml", text=True, language="deu"),
    ]
    sidecar = SidecarSubtitle(source="file:///m/extra.vtt", language="ita")
    tracks, skipped = plan_subtitles(job(subtitles=[sidecar]), probe(subtitles=subtitles))
    assert [(t.name, t.source_index, t.codec, t.forced) for t in tracks] == [
        ("sub-en-forced", 4, "subrip", True),
        ("sub-en", 6, "ass", False),
        ("sub-it", None, "webvtt", False),
    ]
    assert tracks[1].hearing_impaired and tracks[2].source_uri == "file:///m/extra.vtt"
    assert [(s.stream, s.kind) for s in skipped] == [
        ("#5 subtitle hdmv_pgs_subtitle (fra)", "subtitle"),
        ("#7 subtitle ttml (deu)", "subtitle"),
    ]
    assert "OCR" in skipped[0].reason and "sidecar" in skipped[0].reason


def test_captions_and_data_streams_are_reported() -> None:
    source = probe(
        video={"closed_captions": True},
        other_streams=[
            OtherStream(index=3, type="data", codec="tmcd"),
            OtherStream(index=4, type="attachment", codec="ttf"),
        ],
    )
    found = other_not_carried(source)
    assert [n.kind for n in found] == ["captions", "data", "attachment"]
    assert "CEA-608/708" in found[0].reason and "timecode" in found[1].reason


def test_sidecar_subtitles_must_be_srt_or_vtt() -> None:
    assert sidecar_subtitle_format("file:///m/a.SRT") == "subrip"
    assert sidecar_subtitle_format("s3://b/a.vtt") == "webvtt"
    with pytest.raises(PlanError, match=r"must be \.srt or \.vtt"):
        sidecar_subtitle_format("file:///m/a.ass")
