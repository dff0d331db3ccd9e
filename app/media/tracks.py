"""Which audio and subtitle tracks a job outputs, and which source streams it does not carry.

Pure functions of the request and the probe, like the video ladder (``app/media/ladder.py``): every
stream of the source either becomes a rendition or gets a ``NotCarried`` entry with the reason,
so nothing is ever dropped without a word.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

from app.core.models import (
    AudioInfo,
    AudioRendition,
    EncodeJob,
    NotCarried,
    ProbeResult,
    SubtitleInfo,
    SubtitleRendition,
)
from app.media.ladder import PlanError
from app.media.languages import bcp47
from app.media.subtitles import TEXT_CODECS

STEREO_KBPS = 128
SURROUND_KBPS = 384
SURROUND_CHANNELS = 6
SAMPLE_RATE = 48000
SUBTITLE_FORMATS = {".srt": "subrip", ".vtt": "webvtt"}
"""Sidecar subtitle files by extension, and the format each is parsed as."""


def sidecar_subtitle_format(uri: str) -> str:
    """``subrip`` or ``webvtt`` from the file's extension; anything else is a client error."""
    suffix = PurePosixPath(unquote(urlsplit(uri).path)).suffix.lower()
    if suffix not in SUBTITLE_FORMATS:
        raise PlanError(
            f"subtitle file {uri!r} must be .srt or .vtt (SubRip or WebVTT), not {suffix or '?'}"
        )
    return SUBTITLE_FORMATS[suffix]


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}-{n}", n + 1
    taken.add(candidate)
    return candidate


def _describe(index: int, kind: str, codec: str, language: str | None) -> str:
    return f"#{index} {kind} {codec}" + (f" ({language})" if language else "")


def plan_audio(job: EncodeJob, probe: ProbeResult) -> tuple[list[AudioRendition], list[NotCarried]]:
    """Every source audio track (or those ``audio.languages`` names) as AAC stereo 48 kHz, a
    5.1 E-AC-3 beside it where asked and the track has 5.1, plus sidecar dubs."""
    options = job.audio
    sources: list[AudioInfo] = probe.audio_streams
    if not sources and probe.audio:  # a probe from before every track was listed
        sources = [probe.audio.model_copy(update={"index": -1})]  # -1: the first audio stream
    wanted = {bcp47(lang) for lang in options.languages} if options.languages is not None else None
    if wanted is not None:
        found = {bcp47(a.language) for a in sources} | {bcp47(t.language) for t in options.tracks}
        missing = sorted(wanted - found)
        if missing:
            raise PlanError(
                f"audio.languages asks for {', '.join(missing)}; the source's audio tracks are "
                f"{', '.join(sorted(found)) or 'none'}"
            )
    taken: set[str] = set()
    tracks: list[AudioRendition] = []
    skipped: list[NotCarried] = []
    for info in sources:
        language = bcp47(info.language)
        if wanted is not None and language not in wanted:
            skipped.append(
                NotCarried(
                    stream=_describe(info.index, "audio", info.codec, info.language),
                    kind="audio",
                    reason=f"audio.languages does not include {language}",
                )
            )
            continue
        stereo = AudioRendition(
            name=_unique(f"audio-{language}", taken),
            source_index=info.index,
            language=language,
            title=info.title,
            default=info.default,
            channels=2,
            bitrate_kbps=STEREO_KBPS,
            sample_rate=SAMPLE_RATE,
            loudness_lufs=options.loudness_lufs,
        )
        tracks.append(stereo)
        if options.surround and info.channels >= SURROUND_CHANNELS:
            tracks.append(
                stereo.model_copy(
                    update={
                        "name": _unique(f"audio-{language}-51", taken),
                        "codec": "eac3",
                        "channels": SURROUND_CHANNELS,
                        "bitrate_kbps": SURROUND_KBPS,
                        "default": False,
                    }
                )
            )
    for dub in options.tracks:
        tracks.append(
            AudioRendition(
                name=_unique(f"audio-{bcp47(dub.language)}", taken),
                source_uri=dub.source,
                source_index=-1,  # the file's first audio stream
                language=bcp47(dub.language),
                title=dub.title,
                channels=2,
                bitrate_kbps=STEREO_KBPS,
                sample_rate=SAMPLE_RATE,
                loudness_lufs=options.loudness_lufs,
            )
        )
    return _with_default(tracks, options.default), skipped


def _with_default(tracks: list[AudioRendition], language: str | None) -> list[AudioRendition]:
    """Exactly one default: the first track of ``language`` if asked, else the source's default
    (its first stereo rendition), else the first track."""
    if not tracks:
        if language:
            raise PlanError(f"audio.default is {language}, but the job has no audio")
        return tracks
    if language:
        chosen = next((t for t in tracks if t.language == bcp47(language)), None)
        if chosen is None:
            raise PlanError(f"audio.default is {language}; no audio track has that language")
    else:
        chosen = next((t for t in tracks if t.default and t.codec == "aac"), tracks[0])
    return [t.model_copy(update={"default": t is chosen}) for t in tracks]


def _not_webvtt(info: SubtitleInfo) -> str | None:
    """Why an embedded subtitle track cannot become WebVTT, or None if it can."""
    if not info.text:
        return "image subtitles (PGS, DVB, VobSub) cannot become WebVTT without OCR"
    if info.codec not in TEXT_CODECS:
        return f"no {info.codec} to WebVTT conversion in this ffmpeg"
    return None


def plan_subtitles(
    job: EncodeJob, probe: ProbeResult
) -> tuple[list[SubtitleRendition], list[NotCarried]]:
    """Text subtitles (embedded and sidecar) become WebVTT; image subtitles are reported."""
    taken: set[str] = set()
    tracks: list[SubtitleRendition] = []
    skipped: list[NotCarried] = []

    def name(language: str, forced: bool) -> str:
        return _unique(f"sub-{language}" + ("-forced" if forced else ""), taken)

    for info in probe.subtitles:
        refused = _not_webvtt(info)
        if refused:
            skipped.append(
                NotCarried(
                    stream=_describe(info.index, "subtitle", info.codec, info.language),
                    kind="subtitle",
                    reason=f"{refused}; supply the text as a sidecar file in `subtitles`",
                )
            )
            continue
        language = bcp47(info.language)
        tracks.append(
            SubtitleRendition(
                name=name(language, info.forced),
                source_index=info.index,
                codec=info.codec,
                language=language,
                title=info.title,
                # never a default subtitle track: Matroska marks every track default, and
                # players would turn subtitles on (forced ones are shown by their own flag)
                default=False,
                forced=info.forced,
                hearing_impaired=info.hearing_impaired,
            )
        )
    for sidecar in job.subtitles:
        tracks.append(
            SubtitleRendition(
                name=name(bcp47(sidecar.language), sidecar.forced),
                source_uri=sidecar.source,
                codec=sidecar_subtitle_format(sidecar.source),
                language=bcp47(sidecar.language),
                title=sidecar.title,
                forced=sidecar.forced,
                hearing_impaired=sidecar.hearing_impaired,
            )
        )
    return tracks, skipped


def other_not_carried(probe: ProbeResult) -> list[NotCarried]:
    """Captions, data and attachment streams (Dolby Vision's RPU is the ladder's to report)."""
    video = probe.video
    found: list[NotCarried] = []
    if video.closed_captions:
        found.append(
            NotCarried(
                stream=_describe(video.index, "video", video.codec, None) + " captions",
                kind="captions",
                reason="CEA-608/708 captions are not carried into the outputs; supply them as "
                "a sidecar subtitle file in `subtitles`",
            )
        )
    for other in probe.other_streams:
        found.append(
            NotCarried(
                stream=_describe(other.index, other.type, other.codec, None),
                kind=other.type if other.type in ("data", "attachment") else "data",
                reason="timecode track: the start timecode is recorded in the manifest"
                if other.codec == "tmcd" or other.type == "timecode"
                else f"{other.type} streams are not part of HLS or DASH outputs",
            )
        )
    return found
