"""The HLS master playlist and the subtitle media playlists, written from measured values.

ffmpeg's dash muxer stays the segmenter (one set of CMAF segments for HLS and DASH); its master
playlist has no languages, no ``CODECS`` for HEVC and a ``BANDWIDTH`` below the peak, so the
project writes its own with the ``m3u8`` library (RFC 8216, Apple's HLS authoring rules).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import m3u8

VERSION = 7
"""fMP4 segments (EXT-X-MAP in a master's media playlists) need version 7."""


@dataclass(frozen=True)
class Bitrate:
    peak: int
    average: int


def measure(playlist: Path) -> Bitrate:
    """Peak and average bits per second over the media segments of a playlist (RFC 8216
    4.3.4.2: BANDWIDTH is the peak segment bit rate, AVERAGE-BANDWIDTH the average one), from
    the segment files' sizes; the init segment is fetched once, not per segment."""
    parsed = m3u8.load(str(playlist))
    rates, total_bits, total_s = [], 0, 0.0
    for segment in parsed.segments:
        size = (playlist.parent / segment.uri).stat().st_size
        rates.append(size * 8 / segment.duration if segment.duration else 0.0)
        total_bits += size * 8
        total_s += segment.duration or 0.0
    return Bitrate(
        peak=math.ceil(max(rates, default=0.0)),
        average=math.ceil(total_bits / total_s) if total_s else 0,
    )


@dataclass(frozen=True)
class VideoVariant:
    uri: str
    bitrate: Bitrate
    codecs: str
    width: int
    height: int
    frame_rate: Fraction
    video_range: str


@dataclass(frozen=True)
class AudioEntry:
    uri: str
    group: str
    """One group per codec: a variant's CODECS names its group's codec."""
    name: str
    language: str
    default: bool
    channels: int
    codecs: str
    bitrate: Bitrate


@dataclass(frozen=True)
class SubtitleEntry:
    uri: str
    name: str
    language: str
    default: bool
    forced: bool
    hearing_impaired: bool


@dataclass(frozen=True)
class AudioTrack:
    """One encoded audio rendition as the master playlist needs it."""

    uri: str
    source: tuple[str | None, int]
    """The source track it renders (file, stream): a stereo and a 5.1 rendition share it."""
    label: str
    language: str
    default: bool
    channels: int
    codecs: str
    bitrate: Bitrate


STEREO_GROUP = "audio-stereo"
SURROUND_GROUP = "audio-surround"


def audio_groups(tracks: list[AudioTrack]) -> list[AudioEntry]:
    """A stereo group of every stereo rendition and, where any track has 5.1, a surround
    group holding each source track once: its 5.1 rendition, else its stereo one. Every
    language is in both groups under the same NAME, so a player that changes variant (and
    so group) stays on the same track; each group has one default."""
    stereo = [t for t in tracks if t.channels <= 2]
    surround_of = {t.source: t for t in tracks if t.channels > 2}
    entries = [_entry(t, STEREO_GROUP) for t in stereo]
    if surround_of:
        entries += [_entry(surround_of.get(t.source, t), SURROUND_GROUP, t.default) for t in stereo]
    return entries


def _entry(track: AudioTrack, group: str, default: bool | None = None) -> AudioEntry:
    return AudioEntry(
        uri=track.uri,
        group=group,
        name=track.label,
        language=track.language,
        default=track.default if default is None else default,
        channels=track.channels,
        codecs=track.codecs,
        bitrate=track.bitrate,
    )


_UNQUOTABLE = re.compile(r'[\x00-\x1f\x7f"]')


def quotable(text: str, limit: int = 64) -> str:
    """A quoted-string attribute value (RFC 8216 4.2: no double quote, CR or LF): text from a
    request or a file's metadata can never add a line or a tag to a playlist."""
    return _UNQUOTABLE.sub("", text).strip()[:limit] or "?"


SUBTITLE_GROUP = "subs"
HEARING_IMPAIRED = (
    "public.accessibility.transcribes-spoken-dialog,public.accessibility.describes-music-and-sound"
)


def _yes(value: bool) -> str:
    return "YES" if value else "NO"


def master_playlist(
    videos: list[VideoVariant], audio: list[AudioEntry], subtitles: list[SubtitleEntry]
) -> str:
    """Every video variant once per audio group (none: once), with the peak and average of
    the video plus the largest audio of its group, and every rendition as ``EXT-X-MEDIA``."""
    playlist = m3u8.M3U8()
    playlist.version = VERSION
    playlist.is_independent_segments = True
    media: list[m3u8.Media] = []
    for track in audio:
        media.append(
            m3u8.Media(
                uri=track.uri,
                type="AUDIO",
                group_id=track.group,
                language=None if track.language == "und" else quotable(track.language),
                name=quotable(track.name),
                default=_yes(track.default),
                autoselect="YES",
                channels=str(track.channels),
            )
        )
    for sub in subtitles:
        media.append(
            m3u8.Media(
                uri=sub.uri,
                type="SUBTITLES",
                group_id=SUBTITLE_GROUP,
                language=None if sub.language == "und" else quotable(sub.language),
                name=quotable(sub.name),
                default=_yes(sub.default),
                autoselect="YES",
                forced=_yes(sub.forced),
                characteristics=HEARING_IMPAIRED if sub.hearing_impaired else None,
            )
        )
    for item in media:
        playlist.add_media(item)

    groups: dict[str, list[AudioEntry]] = {}
    for track in audio:
        groups.setdefault(track.group, []).append(track)
    for video in videos:
        for group, tracks in groups.items() or [("", [])]:
            peak = max((t.bitrate.peak for t in tracks), default=0)
            average = max((t.bitrate.average for t in tracks), default=0)
            codecs = [video.codecs, *dict.fromkeys(t.codecs for t in tracks)]
            info: dict[str, object] = {
                "bandwidth": video.bitrate.peak + peak,
                "average_bandwidth": video.bitrate.average + average,
                "codecs": ",".join(codecs),
                "resolution": f"{video.width}x{video.height}",
                "frame_rate": float(video.frame_rate),
                "video_range": video.video_range,
                "closed_captions": "NONE",
            }
            if group:
                info["audio"] = group
            if subtitles:
                info["subtitles"] = SUBTITLE_GROUP
            playlist.add_playlist(m3u8.Playlist(video.uri, info, media, base_uri=None))
    return str(playlist.dumps())


def subtitle_playlist(segments: list[tuple[str, float]]) -> str:
    """A VOD media playlist over WebVTT segments (``uri``, seconds)."""
    playlist = m3u8.M3U8()
    playlist.version = 3
    playlist.playlist_type = "vod"
    playlist.target_duration = max(1, math.ceil(max((d for _, d in segments), default=1.0)))
    playlist.is_endlist = True
    for uri, duration in segments:
        playlist.add_segment(m3u8.Segment(uri=uri, duration=round(duration, 6)))
    return str(playlist.dumps())
