"""Audio renditions against real ffmpeg on generated media: tracks, surround, loudness, dubs."""

from __future__ import annotations

import re
import subprocess
from array import array
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import av
import pytest
from pydantic import ValidationError
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from app.core.models import AudioRendition, EncodeAudioInput, EncodedMedia
from app.core.settings import Settings
from app.media.languages import iso639_2
from app.storage.local import path_to_uri, uri_to_path
from app.stratum.functions.audio import AudioActivities, parse_loudnorm

SECONDS = 2.0

# The source's streams: #0 video, then one audio track per entry (lavfi source, language).
TRACKS = [
    ("sine=frequency=440:sample_rate=48000", "eng"),
    ("sine=frequency=880:sample_rate=48000", "fra"),
    ("sine=frequency=440:sample_rate=48000,aformat=channel_layouts=5.1", "eng"),
    ("sine=frequency=440:sample_rate=48000,volume=-30dB", "deu"),
]
ENG, FRA, SURROUND, QUIET = 1, 2, 3, 4


def _ffmpeg(ffmpeg: str, *args: str) -> None:
    subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args],
                   check=True)  # fmt: skip


@pytest.fixture(scope="module")
def audio_media(tmp_path_factory: pytest.TempPathFactory, ffmpeg: str) -> Path:
    """One tiny multi-track source and the sidecar files, made once for the module."""
    root = tmp_path_factory.mktemp("audio-media")
    args = ["-f", "lavfi", "-i", f"testsrc2=size=64x64:rate=10:duration={SECONDS}"]
    maps = ["-map", "0:v"]
    for i, (graph, language) in enumerate(TRACKS):
        args += ["-f", "lavfi", "-i", f"{graph},atrim=duration={SECONDS}"]
        maps += ["-map", f"{i + 1}:a", f"-metadata:s:a:{i}", f"language={language}"]
    _ffmpeg(ffmpeg, *args, *maps, "-c:v", "libx264", "-preset", "ultrafast",
            "-c:a", "aac", "-b:a", "96k", "-f", "mp4", str(root / "tracks.mp4"))  # fmt: skip
    for name, seconds in (("dub.wav", SECONDS), ("long-dub.wav", SECONDS + 3)):
        tone = f"sine=frequency=660:sample_rate=48000:duration={seconds}"
        _ffmpeg(ffmpeg, "-f", "lavfi", "-i", tone, "-c:a", "pcm_s16le", str(root / name))
    _ffmpeg(ffmpeg, "-f", "lavfi", "-i", f"testsrc2=size=64x64:rate=10:duration={SECONDS}",
            "-c:v", "libx264", "-preset", "ultrafast", str(root / "silent-video.mp4"))  # fmt: skip
    return root


@pytest.fixture
def settings(tmp_path: Path, audio_media: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data", source_roots=str(audio_media), heartbeat_timeout_s=20
    )


def _input(settings: Settings, media: Path, track: AudioRendition | None) -> EncodeAudioInput:
    return EncodeAudioInput(
        job_id="job-audio",
        source_uri=path_to_uri(media / "tracks.mp4"),
        container="mov",
        scratch_uri=settings.resolved_scratch_uri,
        duration_s=SECONDS,
        track=track,
    )


async def encode(settings: Settings, media: Path, track: AudioRendition | None) -> EncodedMedia:
    result: EncodedMedia = await ActivityEnvironment().run(
        AudioActivities(settings).encode_audio, _input(settings, media, track)
    )
    return result


@dataclass
class Decoded:
    codec: str
    sample_rate: int
    channels: int
    language: str | None
    duration_s: float
    frequency_hz: float


def decode(path: Path) -> Decoded:
    """The output read back with PyAV; the tone's frequency from the zero crossings of its
    loudest channel (a mono tone made 5.1 is in the centre; numpy is not installed, and a pure
    tone needs no FFT)."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        planes: list[array[float]] = [array("f") for _ in range(stream.codec_context.channels)]
        for frame in container.decode(stream):
            assert frame.format.name == "fltp"  # the AAC / E-AC-3 decoders' planar float
            for plane, samples in zip(frame.planes, planes, strict=True):
                samples.frombytes(bytes(plane)[: frame.samples * 4])
        samples = max(planes, key=lambda p: sum(x * x for x in p))
        assert container.duration is not None
        info = Decoded(
            codec=stream.codec_context.name,
            sample_rate=stream.codec_context.sample_rate,
            channels=stream.codec_context.channels,
            language=stream.metadata.get("language"),
            duration_s=container.duration / 1_000_000,
            frequency_hz=0.0,
        )
    body = samples[len(samples) // 10 : -len(samples) // 10]  # away from priming and the end
    crossings = sum(1 for a, b in pairwise(body) if (a < 0) != (b < 0))
    info.frequency_hz = crossings / 2 / (len(body) / info.sample_rate)
    return info


def integrated_lufs(ffmpeg: str, path: Path) -> float:
    """An independent measurement of the output: ffmpeg's ebur128 filter's summary."""
    run = subprocess.run(
        [ffmpeg, "-hide_banner", "-nostdin", "-nostats", "-i", str(path),
         "-af", "ebur128", "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    summary = run.stderr.rsplit("Summary:", 1)[1]
    match = re.search(r"I:\s+(-?[\d.]+) LUFS", summary)
    assert match, summary
    return float(match.group(1))


def out_path(media: EncodedMedia) -> Path:
    return uri_to_path(media.uri)


def track(name: str, index: int, **fields: Any) -> AudioRendition:
    return AudioRendition(name=name, source_index=index, **fields)


# ---------------------------------------------------------------- tracks


@pytest.mark.parametrize(
    ("index", "language", "given", "hz"),
    [(ENG, "eng", "en", 440), (FRA, "fra", "fr", 880)],
)
async def test_each_track_is_a_rendition(
    settings: Settings, audio_media: Path, index: int, language: str, given: str, hz: int
) -> None:
    media = await encode(settings, audio_media, track(f"audio-{language}", index, language=given))
    assert out_path(media).name == f"audio-{language}.m4a"
    assert out_path(media).parent.name == "audio"
    assert media.name == f"audio-{language}" and media.loudness is None
    assert media.frames > 0 and media.checksum.startswith("sha256:")
    out = decode(out_path(media))
    assert (out.codec, out.sample_rate, out.channels) == ("aac", 48000, 2)
    assert out.language == language
    assert abs(out.duration_s - SECONDS) < 0.1
    assert abs(out.frequency_hz - hz) < hz * 0.03, out.frequency_hz


async def test_surround_to_eac3_and_downmix(settings: Settings, audio_media: Path) -> None:
    surround = await encode(
        settings,
        audio_media,
        track("audio-eng-51", SURROUND, language="eng", codec="eac3", channels=6,
              bitrate_kbps=384),
    )  # fmt: skip
    out = decode(out_path(surround))
    assert (out.codec, out.channels, out.sample_rate) == ("eac3", 6, 48000)
    assert abs(out.duration_s - SECONDS) < 0.1
    assert abs(out.frequency_hz - 440) < 440 * 0.03

    stereo = decode(out_path(await encode(settings, audio_media, track("audio-st", SURROUND))))
    assert (stereo.codec, stereo.channels) == ("aac", 2)
    assert abs(stereo.frequency_hz - 440) < 440 * 0.03
    assert stereo.language == "und"


async def test_old_input_is_the_first_track_stereo(settings: Settings, audio_media: Path) -> None:
    media = await encode(settings, audio_media, None)
    assert media.name == "audio" and out_path(media).name == "audio.m4a"
    out = decode(out_path(media))
    assert (out.codec, out.sample_rate, out.channels) == ("aac", 48000, 2)
    assert out.language in (None, "und")  # metadata dropped, as before
    assert abs(out.frequency_hz - 440) < 440 * 0.03


async def test_a_video_stream_index_is_refused(settings: Settings, audio_media: Path) -> None:
    with pytest.raises(ApplicationError) as err:
        await encode(settings, audio_media, track("audio-v", 0))
    assert err.value.non_retryable and err.value.type == "InvalidSource"
    assert "#0" in err.value.message and "#1" in err.value.message


# ---------------------------------------------------------------- loudness


@pytest.mark.parametrize("target", [-23.0, -16.0])
async def test_loudness_normalised(
    settings: Settings, audio_media: Path, ffmpeg: str, target: float
) -> None:
    media = await encode(
        settings, audio_media, track(f"audio-deu{target:g}", QUIET, loudness_lufs=target)
    )
    report = media.loudness
    assert report is not None and report.target_lufs == target
    # A 440 Hz sine at -18 dBFS (lavfi's default), 30 dB down: about -51 LUFS, 0 LU range.
    assert -55 < report.measured.integrated_lufs < -47
    assert report.measured.true_peak_dbtp < -40
    assert report.measured.lra_lu < 1
    assert report.measured.threshold_lufs is not None
    assert abs(report.output.integrated_lufs - target) < 1
    assert report.output.true_peak_dbtp <= -1.5 + 0.5
    out = decode(out_path(media))
    assert (out.codec, out.sample_rate, out.channels) == ("aac", 48000, 2)
    assert abs(out.duration_s - SECONDS) < 0.1
    assert abs(out.frequency_hz - 440) < 440 * 0.03
    assert abs(integrated_lufs(ffmpeg, out_path(media)) - target) < 1


async def test_a_surround_track_is_normalised_as_its_stereo_downmix(
    settings: Settings, audio_media: Path, ffmpeg: str
) -> None:
    """The downmix changes the loudness: it is measured and normalised after it, so the
    stereo file a player gets is at the target (it was 3 LU off when 5.1 was measured)."""
    media = await encode(settings, audio_media, track("audio-51-st", SURROUND, loudness_lufs=-23))
    assert decode(out_path(media)).channels == 2
    assert abs(integrated_lufs(ffmpeg, out_path(media)) + 23) < 1
    assert media.loudness is not None and abs(media.loudness.output.integrated_lufs + 23) < 1


async def test_loudness_report_after_a_retry(
    settings: Settings, audio_media: Path, ffmpeg: str
) -> None:
    """A retry that finds the output placed does not encode again, and measures that file."""
    rendition = track("audio-deu", QUIET, loudness_lufs=-23.0)
    first = await encode(settings, audio_media, rendition)
    again = await encode(settings, audio_media, rendition)
    assert again.checksum == first.checksum
    assert first.loudness is not None and again.loudness is not None
    assert again.loudness.measured == first.loudness.measured
    assert abs(again.loudness.output.integrated_lufs - -23.0) < 1


# ---------------------------------------------------------------- sidecars


async def test_sidecar_dub(settings: Settings, audio_media: Path) -> None:
    dub = track("audio-spa", 0, language="es", source_uri=path_to_uri(audio_media / "dub.wav"))
    out = decode(out_path(await encode(settings, audio_media, dub)))
    assert (out.codec, out.channels, out.language) == ("aac", 2, "spa")
    assert abs(out.frequency_hz - 660) < 660 * 0.03


async def test_sidecar_of_the_wrong_length(settings: Settings, audio_media: Path) -> None:
    dub = track("audio-spa", 0, source_uri=path_to_uri(audio_media / "long-dub.wav"))
    with pytest.raises(ApplicationError) as err:
        await encode(settings, audio_media, dub)
    assert err.value.non_retryable and err.value.type == "InvalidSource"
    assert "5.00 s" in err.value.message and "2.00 s" in err.value.message


async def test_sidecar_without_audio(settings: Settings, audio_media: Path) -> None:
    dub = track("audio-spa", 0, source_uri=path_to_uri(audio_media / "silent-video.mp4"))
    with pytest.raises(ApplicationError) as err:
        await encode(settings, audio_media, dub)
    assert err.value.non_retryable and "no audio stream" in err.value.message


async def test_sidecar_outside_the_roots(
    settings: Settings, audio_media: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "dub.wav"
    outside.write_bytes((audio_media / "dub.wav").read_bytes())
    dub = track("audio-spa", 0, source_uri=path_to_uri(outside))
    with pytest.raises(ApplicationError) as err:
        await encode(settings, audio_media, dub)
    assert err.value.non_retryable and err.value.type == "InvalidSource"


def test_a_path_like_name_is_refused() -> None:
    """The name becomes a file name: the model (validated on every activity's input) refuses."""
    with pytest.raises(ValidationError, match="pattern"):
        track("../audio", ENG)


# ---------------------------------------------------------------- pure helpers


def test_languages() -> None:
    assert [iso639_2(c) for c in ("en", "fr", "pt-BR", "fre", "ger", "jpn", "", "x!")] == [
        "eng", "fra", "por", "fra", "deu", "jpn", "und", "und",
    ]  # fmt: skip


def test_parse_loudnorm_takes_the_json_block() -> None:
    lines = [
        "Stream mapping:",
        "[Parsed_loudnorm_0 @ 0x1]",
        "{",
        '\t"input_i" : "-27.61",',
        '\t"input_tp" : "-inf",',
        '\t"normalization_type" : "linear",',
        '\t"target_offset" : "0.05"',
        "}",
        "[out#0/null @ 0x2] video:0KiB audio:750KiB",
    ]
    figures = parse_loudnorm(lines)
    assert figures["input_i"] == -27.61 and figures["target_offset"] == 0.05
    assert figures["input_tp"] == float("-inf") and "normalization_type" not in figures
    with pytest.raises(ApplicationError):
        parse_loudnorm(["nothing here"])
