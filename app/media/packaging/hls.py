"""Every HLS playlist, written from measured values with the ``m3u8`` library.

ffmpeg's dash muxer stays the segmenter (one set of CMAF segments for HLS and DASH); its
playlists have no languages, no ``CODECS`` for HEVC, a ``BANDWIDTH`` below the peak, no
``PLAYLIST-TYPE`` and a ``PROGRAM-DATE-TIME`` on every segment of a VOD title, so the project
writes them all (RFC 8216, Apple's HLS authoring rules) from the segments' own index.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction

import m3u8

from app.media.packaging.bmff import TrackIndex

VERSION = 7
"""Of the master: its media playlists use fMP4 (EXT-X-MAP, version 6) and byte ranges of
I-frames (5); 7 is what Apple's authoring rules give for fMP4 masters."""
MEDIA_VERSION = 6
"""EXT-X-MAP in a playlist that is not I-frames only."""
IFRAME_VERSION = 5
"""EXT-X-MAP in an I-frames-only playlist, EXT-X-BYTERANGE (4)."""


@dataclass(frozen=True)
class Bitrate:
    peak: int
    average: int


def bitrate(sizes: list[int], durations: list[float]) -> Bitrate:
    """Peak and average bits per second over media segments (RFC 8216 4.3.4.2: BANDWIDTH is
    the peak segment bit rate, AVERAGE-BANDWIDTH the average); the init segment is fetched
    once, not per segment, so it is not counted."""
    rates = [size * 8 / d for size, d in zip(sizes, durations, strict=True) if d > 0]
    total_s = sum(durations)
    return Bitrate(
        peak=math.ceil(max(rates, default=0.0)),
        average=math.ceil(sum(sizes) * 8 / total_s) if total_s else 0,
    )


def target_duration(durations: list[float]) -> int:
    """RFC 8216 4.3.3.1: every EXTINF, rounded to the nearest integer, is at most this."""
    return max(1, *(math.floor(d + 0.5) for d in durations))


def track_bitrate(track: TrackIndex) -> Bitrate:
    return bitrate(
        [s.size for s in track.segments], [track.seconds(s.duration) for s in track.segments]
    )


def media_playlist(
    track: TrackIndex, init_uri: str, program_date_time: datetime | None = None
) -> str:
    """A VOD playlist of a representation's fMP4 segments with their exact durations; the
    wall-clock time of the first frame only where the job gives one (RFC 8216 4.3.2.6)."""
    playlist = _vod(MEDIA_VERSION, [track.seconds(s.duration) for s in track.segments])
    for n, segment in enumerate(track.segments):
        playlist.add_segment(
            m3u8.Segment(
                uri=segment.uri,
                duration=track.seconds(segment.duration),
                init_section={"uri": init_uri},
                program_date_time=program_date_time if n == 0 else None,
            )
        )
    return str(playlist.dumps())


@dataclass(frozen=True)
class IFrame:
    uri: str
    offset: int
    length: int
    duration: float


def iframes(track: TrackIndex) -> list[IFrame]:
    """Each keyframe that starts a fragment, as the byte range from its ``moof`` to the end of
    its sample (decodable alone after the init segment), lasting until the next one. Every
    segment starts with one; a keyframe inside a fragment cannot be fetched without the
    samples before it, so it is not listed."""
    shift = track.defaults.shift
    found: list[tuple[str, int, int, int]] = []
    for segment in track.segments:
        for fragment in segment.fragments:
            first = fragment.samples[0] if fragment.samples else None
            if first is None or not first.sync:
                continue
            time = max(0, first.decode_time + first.composition_offset - shift)
            if not found:
                time = 0
            end = first.offset + first.size
            found.append((segment.uri, fragment.moof, end - fragment.moof, time))
    stream_end = track.segments[-1].end if track.segments else 0
    times = [f[3] for f in found[1:]] + [stream_end]
    return [
        IFrame(uri, offset, length, track.seconds(next_time - time))
        for (uri, offset, length, time), next_time in zip(found, times, strict=True)
    ]


def iframe_playlist(frames: list[IFrame], init_uri: str) -> str:
    """An I-frames-only VOD playlist for trick play and scrubbing (RFC 8216 4.3.3.6)."""
    playlist = _vod(IFRAME_VERSION, [f.duration for f in frames])
    playlist.is_i_frames_only = True
    for frame in frames:
        playlist.add_segment(
            m3u8.Segment(
                uri=frame.uri,
                duration=frame.duration,
                byterange=f"{frame.length}@{frame.offset}",
                init_section={"uri": init_uri},
            )
        )
    return str(playlist.dumps())


def iframe_bitrate(frames: list[IFrame]) -> Bitrate:
    return bitrate([f.length for f in frames], [f.duration for f in frames])


def _vod(version: int, durations: list[float]) -> m3u8.M3U8:
    playlist = m3u8.M3U8()
    playlist.version = version
    playlist.playlist_type = "vod"
    playlist.target_duration = target_duration(durations)
    playlist.is_endlist = True
    return playlist


@dataclass(frozen=True)
class VideoVariant:
    uri: str
    bitrate: Bitrate
    codecs: str
    width: int
    height: int
    frame_rate: Fraction
    video_range: str
    iframe_uri: str | None = None
    iframe_bitrate: Bitrate | None = None


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
    for video in videos:
        if video.iframe_uri is None or video.iframe_bitrate is None:
            continue
        playlist.add_iframe_playlist(
            m3u8.IFramePlaylist(
                None,
                video.iframe_uri,
                {
                    "bandwidth": video.iframe_bitrate.peak,
                    "average_bandwidth": video.iframe_bitrate.average,
                    "codecs": video.codecs,
                    "resolution": f"{video.width}x{video.height}",
                    "video_range": video.video_range,
                },
            )
        )
    return str(playlist.dumps())


def subtitle_playlist(segments: list[tuple[str, float]]) -> str:
    """A VOD media playlist over WebVTT segments (``uri``, seconds)."""
    playlist = _vod(3, [d for _, d in segments])
    for uri, duration in segments:
        playlist.add_segment(m3u8.Segment(uri=uri, duration=round(duration, 6)))
    return str(playlist.dumps())
