"""encode_audio: one audio rendition (a source track or a sidecar dub), optionally normalised.

Every audio track of a title becomes its own rendition: AAC stereo (or E-AC-3 / AAC 5.1), its
language written into the MP4, and with ``loudness_lufs`` set an EBU R128 two-pass loudnorm
(measure, then a linear gain with the measured figures), reported in ``EncodedMedia.loudness``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import av.error
from temporalio import activity
from temporalio.exceptions import ApplicationError

from app.core.models import AudioRendition, EncodeAudioInput, EncodedMedia, Loudness, LoudnessReport
from app.media.formats import ALLOWED_CONTAINERS, OPEN_OPTIONS
from app.media.languages import iso639_2
from app.stratum.functions.common import INVALID_SOURCE, ActivityBase, input_args

# The rendition of histories from before audio tracks: AAC stereo, 128 kb/s, 48 kHz.
AUDIO_BITRATE_KBPS = 128
AUDIO_SAMPLE_RATE = 48000

TRUE_PEAK_DBTP = -1.5
LOUDNESS_RANGE_LU = 11.0
MAX_DUB_DRIFT_S = 1.0
"""A sidecar dub this much longer or shorter than the video is the wrong file, not a dub."""

LOUDNESS_FAILED = "LoudnessError"

# Sidecar dubs come as audio-only files too; these demuxers read one self-contained file, like
# the video containers that probe allows (never playlists or sequences naming other files).
AUDIO_ONLY_CONTAINERS = frozenset({"wav", "w64", "aiff", "flac", "mp3", "aac", "ac3", "eac3"})
SIDECAR_OPEN_OPTIONS = {
    **OPEN_OPTIONS,
    "format_whitelist": ",".join(sorted(ALLOWED_CONTAINERS | AUDIO_ONLY_CONTAINERS)),
}

_LOUDNORM_JSON = re.compile(r"\{[^{}]*\"input_i\"[^{}]*\}")


def loudnorm_filter(target_lufs: float, measured: dict[str, float] | None = None) -> str:
    """loudnorm for the measuring pass, or (``measured``: pass 1's JSON) the normalising one:
    linear gain to the target where the true-peak limit allows (dynamic otherwise)."""
    f = f"loudnorm=I={target_lufs:g}:TP={TRUE_PEAK_DBTP:g}:LRA={LOUDNESS_RANGE_LU:g}"
    if measured is not None:
        f += (
            f":measured_I={measured['input_i']:.2f}:measured_TP={measured['input_tp']:.2f}"
            f":measured_LRA={measured['input_lra']:.2f}"
            f":measured_thresh={measured['input_thresh']:.2f}"
            f":offset={measured['target_offset']:.2f}:linear=true"
        )
    return f + ":print_format=json"


def layout_filter(track: AudioRendition) -> str:
    """The rendition's channel layout, with FFmpeg's standard downmix (the one ``-ac`` uses)."""
    return f"aformat=channel_layouts={'stereo' if track.channels == 2 else '5.1'}"


def audio_output_args(
    out: Path, track: AudioRendition | None = None, audio_filter: str | None = None
) -> list[str]:
    """The encoder arguments of one rendition. ``track`` None: the histories' rendition (first
    audio track, AAC stereo; ``-ac 2`` downmixes 5.1 with FFmpeg's standard matrix)."""
    if track is None:
        return [
            "-map", "0:a:0", "-vn", "-sn", "-dn", "-map_metadata", "-1",
            "-c:a", "aac", "-b:a", f"{AUDIO_BITRATE_KBPS}k", "-ac", "2",
            "-ar", str(AUDIO_SAMPLE_RATE), "-f", "mp4", str(out),
        ]  # fmt: skip
    args = ["-map", f"0:{track.source_index}", "-vn", "-sn", "-dn", "-map_metadata", "-1"]
    if audio_filter:
        # measured and normalised as the rendition's layout (a downmix changes the loudness);
        # loudnorm runs at 192 kHz: -ar below brings it back
        args += ["-af", f"{layout_filter(track)},{audio_filter}"]
    args += [
        "-c:a", track.codec, "-b:a", f"{track.bitrate_kbps}k", "-ac", str(track.channels),
        "-ar", str(track.sample_rate),
        "-metadata:s:a:0", f"language={iso639_2(track.language)}", "-f", "mp4", str(out),
    ]  # fmt: skip
    return args


@dataclass(frozen=True)
class TrackFacts:
    format: str
    duration_s: float | None
    index: int
    """The stream index (a sidecar's ``-1`` resolved to its first audio stream)."""


def _invalid(message: str) -> ApplicationError:
    return ApplicationError(message, type=INVALID_SOURCE, non_retryable=True)


def _duration(container: Any, stream: Any) -> float | None:
    """The container's duration, else the stream's, else the end of its last packet."""
    if container.duration:
        return float(container.duration) / 1_000_000
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    end = None
    for packet in container.demux(stream):
        if packet.pts is not None and packet.time_base:
            t = float((packet.pts + (packet.duration or 0)) * packet.time_base)
            end = t if end is None else max(end, t)
    return end


def inspect_track(path: Path, index: int, *, sidecar: bool) -> TrackFacts:
    """Check that stream ``index`` of the file is audio (the encode would otherwise fail, or
    map a video stream) and read the file's demuxer and duration, in-process with PyAV.
    ``index`` -1 is the file's first audio stream (a sidecar's plan does not know its layout)."""
    what = "sidecar" if sidecar else "source"
    try:
        container = av.open(str(path), options=SIDECAR_OPEN_OPTIONS if sidecar else OPEN_OPTIONS)
    except (av.error.FFmpegError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or err.__class__.__name__
        raise _invalid(f"audio {what} is not a readable media file ({reason})") from None
    with container:
        audio = [s.index for s in container.streams if s.type == "audio"]
        if not audio:
            raise _invalid(f"audio {what} has no audio stream")
        if index < 0:
            index = audio[0]
        if index not in audio:
            listed = ", ".join(f"#{i}" for i in audio)
            raise _invalid(
                f"stream #{index} of the audio {what} is not an audio stream "
                f"(its audio streams: {listed})"
            )
        stream = container.streams[index]
        return TrackFacts(
            format=container.format.name.split(",")[0],
            duration_s=_duration(container, stream) if sidecar else None,
            index=index,
        )


def parse_loudnorm(lines: list[str]) -> dict[str, float]:
    """The figures of the last JSON block loudnorm printed (``print_format=json``)."""
    found = _LOUDNORM_JSON.findall("\n".join(lines))
    if not found:
        raise ApplicationError("loudnorm printed no measurement", type=LOUDNESS_FAILED)
    figures: dict[str, float] = {}
    for key, value in json.loads(found[-1]).items():
        try:
            figures[key] = float(value)
        except (TypeError, ValueError):
            continue  # normalization_type
    return figures


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def loudness_of(figures: dict[str, float], prefix: str) -> Loudness | None:
    """``input_*`` or ``output_*`` figures as a Loudness; None for silence (-inf LUFS)."""
    integrated = _finite(figures.get(f"{prefix}_i"))
    peak = _finite(figures.get(f"{prefix}_tp"))
    lra = _finite(figures.get(f"{prefix}_lra"))
    if integrated is None or peak is None or lra is None:
        return None
    return Loudness(
        integrated_lufs=integrated,
        true_peak_dbtp=peak,
        lra_lu=lra,
        threshold_lufs=_finite(figures.get(f"{prefix}_thresh")),
    )


class AudioActivities(ActivityBase):
    """Audio renditions: on the CPU queue (audio encoders are software and cheap)."""

    @activity.defn(name="encode_audio")
    async def encode_audio(self, input: EncodeAudioInput) -> EncodedMedia:
        """One audio rendition into ``<scratch>/<job>/audio/<name>.m4a``; the name recorded
        histories call, and without ``track`` exactly what they got (``audio/audio.m4a``)."""
        if input.track is None:
            src = await self.local_source(input.source_uri, input.job_id)
            return await self.encode_to(input.job_id, input.scratch_uri, "audio/audio.m4a",
                                        input_args(src, input.container), audio_output_args,
                                        "audio", input.duration_s)  # fmt: skip
        track = input.track  # its name is a plain file name: the model's pattern
        src, container, index = await self._track_source(input, track)
        track = track.model_copy(update={"source_index": index})
        in_args = input_args(src, container)

        measured: dict[str, float] | None = None
        if track.loudness_lufs is not None:
            measured = await self._measure(in_args, track, input.duration_s)
            if loudness_of(measured, "input") is None:
                activity.logger.warning("audio %s is silent: not normalised", track.name)
                measured = None
        audio_filter = None
        if measured is not None and track.loudness_lufs is not None:
            audio_filter = loudnorm_filter(track.loudness_lufs, measured)

        lines: list[str] = []

        def out_args(part: Path) -> list[str]:
            return audio_output_args(part, track, audio_filter)

        # loudnorm prints its JSON at the info level, above the runner's default (error).
        level = ["-loglevel", "info"] if audio_filter else []
        media = await self.encode_to(
            input.job_id,
            input.scratch_uri,
            f"audio/{track.name}.m4a",
            [*level, *in_args],
            out_args,
            track.name,
            input.duration_s,
            on_stderr=lines.append if audio_filter else None,
        )
        if measured is None or track.loudness_lufs is None:
            return media
        report = await self._report(input, track, media, measured, lines)
        return media.model_copy(update={"loudness": report})

    async def _track_source(
        self, input: EncodeAudioInput, track: AudioRendition
    ) -> tuple[Path, str | None, int]:
        """The file holding the track, its demuxer and the track's stream index; a sidecar
        dub must last as long as the video."""
        if track.source_uri is None:
            src = await self.local_source(input.source_uri, input.job_id)
            own = await asyncio.to_thread(inspect_track, src, track.source_index, sidecar=False)
            return src, input.container, own.index
        digest = hashlib.sha256(track.source_uri.encode()).hexdigest()[:16]
        src = await self.local_source(track.source_uri, input.job_id, name=f"sidecar-{digest}")
        facts: TrackFacts = await asyncio.to_thread(
            inspect_track, src, track.source_index, sidecar=True
        )
        if facts.duration_s is None:
            raise _invalid(f"audio sidecar of {track.name} has no known duration")
        if abs(facts.duration_s - input.duration_s) > MAX_DUB_DRIFT_S:
            raise _invalid(
                f"audio sidecar of {track.name} lasts {facts.duration_s:.2f} s but the video "
                f"{input.duration_s:.2f} s: a dub must be within {MAX_DUB_DRIFT_S:g} s of it"
            )
        return src, facts.format, facts.index

    async def _measure(
        self, in_args: list[str], track: AudioRendition, duration_s: float
    ) -> dict[str, float]:
        """Pass 1: loudnorm's measurement of the mapped track in the rendition's layout
        (decodes only, no output)."""
        assert track.loudness_lufs is not None
        name, lines = track.name, list[str]()
        await self.ffmpeg(
            ["-loglevel", "info", *in_args, "-map", f"0:{track.source_index}", "-vn", "-sn",
             "-dn", "-af", f"{layout_filter(track)},{loudnorm_filter(track.loudness_lufs)}",
             "-f", "null", "-"],
            total_s=duration_s, label=f"{name}-loudness", metric="loudness", encodes=False,
            on_stderr=lines.append,
        )  # fmt: skip
        return parse_loudnorm(lines)

    async def _report(
        self,
        input: EncodeAudioInput,
        track: AudioRendition,
        media: EncodedMedia,
        measured: dict[str, float],
        lines: list[str],
    ) -> LoudnessReport:
        """Both passes' figures. When the output was already there (a retry after it was
        placed, so pass 2 did not run), the placed file is measured instead."""
        assert track.loudness_lufs is not None
        if lines:
            output = loudness_of(parse_loudnorm(lines), "output")
        else:
            out = await self.fetch(media.uri, input.job_id)
            try:
                placed = track.model_copy(update={"source_index": 0})  # the output's one stream
                figures = await self._measure(input_args(out, "mov"), placed, media.duration_s)
            finally:
                self.drop_copy(media.uri, input.job_id)
            output = loudness_of(figures, "input")
        before = loudness_of(measured, "input")
        if output is None or before is None:
            raise ApplicationError(
                f"loudnorm reported no loudness for {track.name}", type=LOUDNESS_FAILED
            )
        return LoudnessReport(target_lufs=track.loudness_lufs, measured=before, output=output)
