"""Conformance of a packaged job to RFC 8216, Apple's HLS authoring rules and DASH-IF IOP.

Every rule is measured here from the files themselves (segment bytes, PyAV's reading of the
bitstream), independently of what the packager computed: the packager's numbers are the thing
under test. ``violations`` returns one line per broken rule, so a test can both assert a clean
package and prove that a broken one is caught.
"""

from __future__ import annotations

import io
import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import m3u8

NS = {"d": "urn:mpeg:dash:schema:mpd:2011"}
CICP_TRANSFER = "urn:mpeg:mpegB:cicp:TransferCharacteristics"
TRANSFERS = {16: "smpte2084", 18: "arib-std-b67"}
"""ITU-T H.273 transfer characteristics of the HDR systems."""
TOLERANCE_S = 0.0015
"""EXTINFs and the MPD are written to the millisecond or better."""


@dataclass(frozen=True)
class Segment:
    uri: str
    size: int
    start: float
    """Presentation time of its first frame (PyAV, from the init segment plus this one)."""
    end: float
    keyframe_first: bool


@dataclass(frozen=True)
class Stream:
    kind: str
    codec: str
    width: int
    height: int
    sar: Fraction | None
    frame_rate: Fraction | None
    transfer: str | None
    extradata: bytes
    segments: list[Segment]

    @property
    def duration(self) -> float:
        return self.segments[-1].end - self.segments[0].start if self.segments else 0.0


def read_stream(out: Path, init: str, uris: list[str]) -> Stream:
    """A representation read back segment by segment, each decoded after its init segment."""
    init_bytes = (out / init).read_bytes()
    segments = []
    facts: dict[str, object] = {}
    for uri in uris:
        data = (out / uri).read_bytes()
        with av.open(io.BytesIO(init_bytes + data), format="mp4") as container:
            stream = container.streams[0]
            ctx = stream.codec_context
            if not facts:
                video = stream.type == "video"
                sar = ctx.sample_aspect_ratio if video else None
                rate = stream.average_rate if video else None
                facts = {
                    "kind": stream.type,
                    "codec": ctx.name,
                    "width": getattr(ctx, "width", 0),
                    "height": getattr(ctx, "height", 0),
                    "sar": Fraction(sar) if sar else None,
                    "frame_rate": Fraction(rate) if rate else None,
                    "transfer": TRANSFERS.get(int(ctx.color_trc)) if video else None,
                    "extradata": bytes(ctx.extradata or b""),
                }
            base = stream.time_base
            packets = [p for p in container.demux(stream) if p.pts is not None]
        first = min(packets, key=lambda p: p.pts)
        last = max(packets, key=lambda p: p.pts)
        segments.append(
            Segment(
                uri=uri,
                size=len(data),
                start=max(0.0, float(first.pts * base)),  # AAC priming is not presented
                end=float((last.pts + (last.duration or 0)) * base),
                keyframe_first=bool(packets[0].is_keyframe),
            )
        )
    return Stream(segments=segments, **facts)  # type: ignore[arg-type]


def _attr(text: str, name: str) -> str | None:
    match = re.search(rf'(?:^|[:,]){name}=("[^"]*"|[^,\s]*)', text)
    return match.group(1).strip('"') if match else None


def expected_codecs(stream: Stream) -> str | None:
    """The RFC 6381 string, from the configuration record as the test reads it."""
    record = stream.extradata
    if stream.codec == "h264" and len(record) >= 4:
        return f"avc1.{record[1:4].hex()}"
    if stream.codec == "hevc" and len(record) >= 13:
        profile = record[1] & 0x1F
        tier = "H" if record[1] & 0x20 else "L"
        return f"hvc1.{profile}.*.{tier}{record[12]}"
    if stream.codec in ("av1", "libdav1d") and len(record) >= 3:
        depth = 12 if record[2] & 0x20 else 10 if record[2] & 0x40 else 8
        tier = "H" if record[2] & 0x80 else "M"
        return f"av01.{record[1] >> 5}.{record[1] & 0x1F:02d}{tier}.{depth:02d}"
    if stream.codec == "aac":
        return "mp4a.40.2"
    if stream.codec == "eac3":
        return "ec-3"
    return None


def _codec_matches(declared: str, expected: str | None) -> bool:
    if expected is None:
        return True
    if "*" in expected:
        head, tail = expected.split(".*.")
        return (
            declared.startswith(head + ".") and re.search(rf"\.{tail}(\.|$)", declared) is not None
        )
    return declared.lower() == expected.lower()


def _peak_average(segments: list[Segment], durations: list[float]) -> tuple[float, float]:
    rates = [s.size * 8 / d for s, d in zip(segments, durations, strict=True) if d > 0]
    return max(rates), sum(s.size for s in segments) * 8 / sum(durations)


def _media(out: Path, uri: str, problems: list[str]) -> tuple[m3u8.M3U8, Stream | None]:
    text = (out / uri).read_text()
    playlist = m3u8.loads(text)
    if playlist.playlist_type != "vod" or not playlist.is_endlist:
        problems.append(f"{uri}: not a VOD playlist with EXT-X-ENDLIST")
    if "PROGRAM-DATE-TIME" in text:
        problems.append(f"{uri}: PROGRAM-DATE-TIME in a VOD playlist")
    durations = [s.duration for s in playlist.segments]
    if playlist.target_duration != max(math.floor(d + 0.5) for d in durations):
        problems.append(f"{uri}: TARGETDURATION {playlist.target_duration} for {max(durations)}")
    missing = [s.uri for s in playlist.segments if not (out / s.uri).is_file()]
    if missing:
        problems.append(f"{uri}: segments missing: {missing}")
        return playlist, None
    inits = {s.init_section.uri for s in playlist.segments if s.init_section}
    if len(inits) != 1:
        problems.append(f"{uri}: EXT-X-MAP {inits}")
        return playlist, None
    stream = read_stream(out, inits.pop(), [s.uri for s in playlist.segments])
    bounds = [s.start for s in stream.segments[1:]] + [stream.segments[-1].end]
    start = 0.0
    for seg, declared, end in zip(stream.segments, durations, bounds, strict=True):
        if abs(declared - (end - start)) > TOLERANCE_S:
            problems.append(f"{uri}: {seg.uri} EXTINF {declared} but lasts {end - start:.6f}")
        start = end
        if stream.kind == "video" and not seg.keyframe_first:
            problems.append(f"{uri}: {seg.uri} does not start with a keyframe")
    return playlist, stream


def hls_violations(out: Path, master_name: str = "master.m3u8") -> list[str]:
    problems: list[str] = []
    text = (out / master_name).read_text()
    master = m3u8.loads(text)
    if "#EXT-X-INDEPENDENT-SEGMENTS" not in text:
        problems.append("master: no EXT-X-INDEPENDENT-SEGMENTS")
    audio_uris = {m.uri for m in master.media if m.uri and m.type == "AUDIO"}
    media = {
        uri: _media(out, uri, problems) for uri in {p.uri for p in master.playlists} | audio_uris
    }
    groups: dict[str, list[m3u8.Media]] = {}
    for entry in master.media:
        groups.setdefault(entry.group_id, []).append(entry)
        for name in ("NAME", "DEFAULT", "AUTOSELECT"):
            if getattr(entry, name.lower()) is None:
                problems.append(f"EXT-X-MEDIA {entry.uri}: no {name}")
        if entry.type == "AUDIO" and entry.channels is None:
            problems.append(f"EXT-X-MEDIA {entry.uri}: no CHANNELS")
    for group, entries in groups.items():
        defaults = sum(e.default == "YES" for e in entries)
        # RFC 8216 4.3.4.1.1: at most one per group; an audio group must have one to play.
        if defaults > 1 or (defaults == 0 and entries[0].type == "AUDIO"):
            problems.append(f"group {group}: {defaults} defaults")
    video_bounds: list[list[float]] = []
    lines = text.splitlines()
    tags = [tag for tag in lines if tag.startswith("#EXT-X-STREAM-INF:")]
    for variant, line in zip(master.playlists, tags, strict=True):
        info = variant.stream_info
        for name in ("BANDWIDTH", "AVERAGE-BANDWIDTH", "CODECS", "RESOLUTION", "FRAME-RATE",
                     "VIDEO-RANGE", "CLOSED-CAPTIONS"):  # fmt: skip
            if _attr(line, name) is None:
                problems.append(f"{variant.uri}: no {name}")
        if _attr(line, "CLOSED-CAPTIONS") not in ("NONE", None):
            problems.append(f"{variant.uri}: CLOSED-CAPTIONS {_attr(line, 'CLOSED-CAPTIONS')}")
        playlist, stream = media[variant.uri]
        if stream is None:
            continue
        durations = [s.duration for s in playlist.segments]
        video_bounds.append(durations)
        peak, average = _peak_average(stream.segments, durations)
        audio = [e for e in groups.get(info.audio or "", []) if e.type == "AUDIO"]
        audio_rates = []
        for entry in audio:
            a_playlist, a_stream = media[entry.uri]
            if a_stream is not None:
                audio_rates.append(
                    _peak_average(a_stream.segments, [s.duration for s in a_playlist.segments])
                )
        peak += max((r[0] for r in audio_rates), default=0)
        average += max((r[1] for r in audio_rates), default=0)
        if not peak - 8 <= (info.bandwidth or 0) <= peak + 8:
            problems.append(f"{variant.uri}: BANDWIDTH {info.bandwidth}, measured peak {peak:.0f}")
        if not average - 8 <= (info.average_bandwidth or 0) <= average + 8:
            problems.append(
                f"{variant.uri}: AVERAGE-BANDWIDTH {info.average_bandwidth}, measured {average:.0f}"
            )
        codecs = (info.codecs or "").split(",")
        if not _codec_matches(codecs[0], expected_codecs(stream)):
            problems.append(
                f"{variant.uri}: CODECS {codecs[0]}, bitstream {expected_codecs(stream)}"
            )
        if info.resolution != (stream.width, stream.height):
            problems.append(f"{variant.uri}: RESOLUTION {info.resolution}, bitstream "
                            f"{stream.width}x{stream.height}")  # fmt: skip
        if stream.frame_rate and abs((info.frame_rate or 0) - float(stream.frame_rate)) > 0.001:
            problems.append(f"{variant.uri}: FRAME-RATE {info.frame_rate} for {stream.frame_rate}")
        want_range = {"smpte2084": "PQ", "arib-std-b67": "HLG"}.get(stream.transfer or "", "SDR")
        if _attr(line, "VIDEO-RANGE") != want_range:
            problems.append(f"{variant.uri}: VIDEO-RANGE {_attr(line, 'VIDEO-RANGE')}")
        if stream.sar not in (None, Fraction(1)):
            problems.append(f"{variant.uri}: SAR {stream.sar}, not square pixels")
        for entry in audio:
            a_stream = media[entry.uri][1]
            expected = expected_codecs(a_stream) if a_stream else None
            if expected and expected not in codecs:
                problems.append(f"{variant.uri}: CODECS {codecs} lacks its audio's {expected}")
    for durations in video_bounds[1:]:
        if len(durations) != len(video_bounds[0]) or any(
            abs(a - b) > TOLERANCE_S for a, b in zip(durations, video_bounds[0], strict=False)
        ):
            problems.append("video renditions' segment boundaries differ")
    problems += _iframe_violations(out, master, text)
    return problems


def _iframe_violations(out: Path, master: m3u8.M3U8, text: str) -> list[str]:
    """One I-frame playlist per video variant; each byte range decodes alone to a keyframe."""
    problems = []
    variants = {p.uri for p in master.playlists}
    if len(master.iframe_playlists) != len(variants):
        problems.append(f"{len(master.iframe_playlists)} I-frame playlists for {len(variants)}")
    for iframe in master.iframe_playlists:
        playlist = m3u8.loads((out / iframe.uri).read_text())
        if not playlist.is_i_frames_only:
            problems.append(f"{iframe.uri}: no EXT-X-I-FRAMES-ONLY")
        if iframe.iframe_stream_info.bandwidth is None or iframe.iframe_stream_info.codecs is None:
            problems.append(f"{iframe.uri}: no BANDWIDTH or CODECS")
        init = (out / playlist.segments[0].init_section.uri).read_bytes()
        for segment in playlist.segments:
            length, offset = (int(x) for x in segment.byterange.split("@"))
            if not (out / segment.uri).is_file():
                problems.append(f"{iframe.uri}: {segment.uri} missing")
                continue
            with (out / segment.uri).open("rb") as f:
                f.seek(offset)
                data = f.read(length)
            try:
                with av.open(io.BytesIO(init + data), format="mp4") as container:
                    frames = list(container.decode(video=0))
            except av.FFmpegError as err:
                problems.append(f"{iframe.uri}: {segment.uri}@{offset} does not decode: {err}")
                continue
            if not frames or not frames[0].key_frame:
                problems.append(f"{iframe.uri}: {segment.uri}@{offset} is not a keyframe")
    return problems


def dash_violations(out: Path, mpd_name: str = "manifest.mpd") -> list[str]:
    problems: list[str] = []
    root = ET.parse(out / mpd_name).getroot()
    period = root.find("d:Period", NS)
    assert period is not None
    longest = 0.0
    languages: dict[tuple[str, str], int] = {}
    for aset in period.findall("d:AdaptationSet", NS):
        kind = aset.get("contentType", "")
        if aset.get("bitstreamSwitching") == "true":
            problems.append(f"AdaptationSet {aset.get('id')}: bitstreamSwitching=true")
        reps = aset.findall("d:Representation", NS)
        if kind in ("video", "audio"):
            for rep in reps:
                stream = _dash_stream(out, rep, aset, problems)
                if stream is None:
                    continue
                longest = max(longest, stream.duration)
                peak = max(
                    s.size * 8 / (s.end - s.start) for s in stream.segments if s.end > s.start
                )
                if int(rep.get("bandwidth", "0")) < peak - 8:
                    problems.append(f"Representation {rep.get('id')}: bandwidth below {peak:.0f}")
                if not _codec_matches(rep.get("codecs", ""), expected_codecs(stream)):
                    problems.append(f"Representation {rep.get('id')}: codecs {rep.get('codecs')}")
                if kind == "video" and stream.sar not in (None, Fraction(1)):
                    problems.append(f"Representation {rep.get('id')}: SAR {stream.sar}")
                if kind == "video" and (rep.get("sar") or aset.get("sar")) != "1:1":
                    problems.append(f"Representation {rep.get('id')}: no sar=1:1")
                hdr = stream.transfer in ("smpte2084", "arib-std-b67")
                transfer = [
                    e.get("value")
                    for e in aset.findall("d:EssentialProperty", NS)
                    if e.get("schemeIdUri") == CICP_TRANSFER
                ]
                if kind == "video" and hdr and not transfer:
                    problems.append(f"AdaptationSet {aset.get('id')}: HDR without its transfer")
        if kind == "video":
            if not (aset.get("frameRate") or all(r.get("frameRate") for r in reps)):
                problems.append(f"AdaptationSet {aset.get('id')}: no frameRate")
            codecs = {r.get("codecs", "").split(".")[0] for r in reps}
            if len(codecs) != 1:
                problems.append(f"AdaptationSet {aset.get('id')}: codecs {codecs} in one set")
        if kind in ("audio", "text"):
            if aset.find("d:Role", NS) is None or aset.find("d:Label", NS) is None:
                problems.append(f"AdaptationSet {aset.get('id')}: no Role or Label")
            role = aset.find("d:Role", NS)
            key = (kind, f"{aset.get('lang')}/{role.get('value') if role is not None else ''}")
            languages[key] = languages.get(key, 0) + 1
    declared = _iso_seconds(root.get("mediaPresentationDuration", ""))
    if not longest <= declared <= longest + TOLERANCE_S:
        problems.append(f"mediaPresentationDuration {declared} for {longest:.6f} s of media")
    return problems


def _dash_stream(
    out: Path, rep: ET.Element, aset: ET.Element, problems: list[str]
) -> Stream | None:
    template = rep.find("d:SegmentTemplate", NS) or aset.find("d:SegmentTemplate", NS)
    assert template is not None, "every representation has a SegmentTemplate"
    rep_id = rep.get("id", "")
    init = template.get("initialization", "").replace("$RepresentationID$", rep_id)
    media = template.get("media", "").replace("$RepresentationID$", rep_id)
    timeline = template.find("d:SegmentTimeline", NS)
    count = sum(1 + int(s.get("r", "0")) for s in timeline) if timeline is not None else 0
    number = int(template.get("startNumber", "1"))
    uris = [re.sub(r"\$Number%05d\$", f"{n:05d}", media) for n in range(number, number + count)]
    missing = [uri for uri in [init, *uris] if not (out / uri).is_file()]
    if missing:
        problems.append(f"Representation {rep_id}: segments missing: {missing}")
        return None
    return read_stream(out, init, uris)


def _iso_seconds(value: str) -> float:
    match = re.fullmatch(r"PT(?:(\d+)H)?(?:(\d+)M)?(?:([\d.]+)S)?", value)
    if not match:
        return -1.0
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def violations(out: Path) -> list[str]:
    """Every rule this module knows, over one published job folder."""
    return hls_violations(out) + dash_violations(out)
