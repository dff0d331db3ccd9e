"""The DASH MPD: ffmpeg's, corrected and completed from what the project measured.

ffmpeg's dash muxer writes the segment timelines well, so its MPD is kept as the base; what it
gets wrong or leaves out is set here: the exact duration (it rounds to 0.1 s, and dash.js ends
playback there), ``bitstreamSwitching`` (never true: every rendition has its own parameter
sets), ``codecs`` for HEVC and AV1, ``Role`` and ``Label`` per audio set, HDR colour
descriptors, and the text adaptation sets for WebVTT subtitles.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from app.media.colour import MATRICES, PRIMARIES, TRANSFERS, code_of

NS = "urn:mpeg:dash:schema:mpd:2011"
ROLE_SCHEME = "urn:mpeg:dash:role:2011"
CICP = "urn:mpeg:mpegB:cicp:"
for prefix, uri in (
    ("", NS),
    ("xsi", "http://www.w3.org/2001/XMLSchema-instance"),
    ("xlink", "http://www.w3.org/1999/xlink"),
):
    ET.register_namespace(prefix, uri)


def _q(tag: str) -> str:
    return f"{{{NS}}}{tag}"


@dataclass(frozen=True)
class VideoColour:
    primaries: str | None
    transfer: str | None
    matrix: str | None


@dataclass(frozen=True)
class AudioSet:
    representation_id: str
    label: str
    language: str
    main: bool


@dataclass(frozen=True)
class TextSet:
    uri: str
    representation_id: str
    language: str
    label: str
    forced: bool
    hearing_impaired: bool
    bandwidth: int


def duration(seconds: float) -> str:
    """ISO 8601 to the millisecond, rounded up so no stream is cut short."""
    millis = -(-round(seconds * 1_000_000) // 1000)
    return f"PT{millis // 1000}.{millis % 1000:03d}S"


def _role(parent: ET.Element, value: str, index: int = 0) -> None:
    role = ET.Element(_q("Role"), {"schemeIdUri": ROLE_SCHEME, "value": value})
    parent.insert(index, role)


def _label(parent: ET.Element, text: str, index: int = 0) -> None:
    label = ET.Element(_q("Label"))
    label.text = text
    parent.insert(index, label)


def _colour(aset: ET.Element, colour: VideoColour) -> None:
    """HDR sets say so: an EssentialProperty for the transfer (a player that does not know PQ
    or HLG must skip the set), SupplementalProperty for primaries and matrix."""
    entries = [
        ("EssentialProperty", "TransferCharacteristics", code_of(colour.transfer, TRANSFERS)),
        ("SupplementalProperty", "ColourPrimaries", code_of(colour.primaries, PRIMARIES)),
        ("SupplementalProperty", "MatrixCoefficients", code_of(colour.matrix, MATRICES)),
    ]
    for i, (tag, name, code) in enumerate(e for e in entries if e[2] is not None):
        aset.insert(i, ET.Element(_q(tag), {"schemeIdUri": CICP + name, "value": str(code)}))


DOLBY_CHANNELS = "tag:dolby.com,2014:dash:audio_channel_configuration:2011"
DOLBY_5_1 = "F801"
"""L, R, C, LFE, Ls, Rs as Dolby's channel mask (DASH-IF IOP 9.2.1.2)."""


def _dolby_channels(rep: ET.Element) -> None:
    """E-AC-3 signals its channels in Dolby's scheme, not MPEG's 23003-3 (ffmpeg's)."""
    for config in rep.findall(_q("AudioChannelConfiguration")):
        config.set("schemeIdUri", DOLBY_CHANNELS)
        config.set("value", DOLBY_5_1)


def rewrite(
    mpd_path: Path,
    *,
    duration_s: float,
    codecs: dict[str, str],
    bandwidth: dict[str, int],
    hdr: dict[str, VideoColour],
    audio: list[AudioSet],
    text: list[TextSet],
) -> None:
    """Correct ffmpeg's MPD in place. ``codecs``, ``bandwidth`` (the measured peak, where
    ffmpeg writes the encoder's nominal rate) and ``hdr`` are by Representation id."""
    tree = ET.parse(mpd_path)  # noqa: S314 - written by our own ffmpeg run, not user input
    root = tree.getroot()
    root.set("mediaPresentationDuration", duration(duration_s))
    period = root.find(_q("Period"))
    assert period is not None, "ffmpeg wrote an MPD without a Period"
    roles = {a.representation_id: a for a in audio}
    next_id = 0
    for aset in period.findall(_q("AdaptationSet")):
        next_id = max(next_id, int(aset.get("id", "0")) + 1)
        aset.attrib.pop("bitstreamSwitching", None)
        reps = aset.findall(_q("Representation"))
        for rep in reps:
            rep_id = rep.get("id", "")
            if rep_id in codecs:
                rep.set("codecs", codecs[rep_id])
            if rep_id in bandwidth:
                rep.set("bandwidth", str(bandwidth[rep_id]))
        if aset.get("contentType") == "video":
            aset.attrib.pop("lang", None)  # a picture has no language ("und" is noise)
            colour = next((hdr[r.get("id", "")] for r in reps if r.get("id") in hdr), None)
            if colour is not None:
                _colour(aset, colour)
        elif aset.get("contentType") == "audio" and reps:
            entry = roles.get(reps[0].get("id", ""))
            if entry is not None:
                if entry.language == "und":  # ffmpeg writes the MP4's 3-letter code
                    aset.attrib.pop("lang", None)
                else:
                    aset.set("lang", entry.language)
                _role(aset, "main" if entry.main else "alternate")
                _label(aset, entry.label)
                for rep in reps:
                    if rep.get("codecs") == "ec-3":
                        _dolby_channels(rep)
    for sub in text:
        aset = ET.SubElement(
            period,
            _q("AdaptationSet"),
            {
                "id": str(next_id),
                "contentType": "text",
                "mimeType": "text/vtt",
                **({"lang": sub.language} if sub.language != "und" else {}),
            },
        )
        next_id += 1
        role = (
            "forced-subtitle" if sub.forced else "caption" if sub.hearing_impaired else "subtitle"
        )
        _role(aset, role)
        _label(aset, sub.label)
        rep = ET.SubElement(
            aset,
            _q("Representation"),
            {"id": sub.representation_id, "bandwidth": str(sub.bandwidth)},
        )
        base = ET.SubElement(rep, _q("BaseURL"))
        base.text = sub.uri
    ET.indent(tree, space="\t")
    tree.write(mpd_path, encoding="utf-8", xml_declaration=True)


def join_video_sets(mpd_path: Path, families: list[list[str]]) -> None:
    """One AdaptationSet per family of video Representations (ids), since players switch
    within a set. ffmpeg's dash muxer is given one set per video: it refuses a set whose
    pictures differ in aspect ratio, as square pixels do (1280x720 is 16:9, 852x480 71:40).
    The joined set keeps its first set's attributes (``par`` is the first, largest
    rendition's), ``maxWidth``/``maxHeight`` over all of them; sets are numbered anew."""
    tree = ET.parse(mpd_path)  # noqa: S314 - written by our own ffmpeg run, not user input
    period = tree.getroot().find(_q("Period"))
    assert period is not None, "ffmpeg wrote an MPD without a Period"
    owner = {
        rep.get("id", ""): (aset, rep)
        for aset in period.findall(_q("AdaptationSet"))
        for rep in aset.findall(_q("Representation"))
    }
    for family in families:
        members = [owner[rep_id] for rep_id in family if rep_id in owner]
        if not members:
            continue
        target = members[0][0]
        rates = {aset.get("frameRate") for aset, _ in members}
        for aset, rep in members[1:]:
            if aset is not target:
                if len(rates) > 1 and aset.get("frameRate"):  # the rate moves to each rendition
                    rep.set("frameRate", aset.get("frameRate", ""))
                aset.remove(rep)
                target.append(rep)
                if aset.find(_q("Representation")) is None:
                    period.remove(aset)
        if len(rates) > 1 and target.get("frameRate"):
            members[0][1].set("frameRate", target.attrib.pop("frameRate"))
        for side in ("Width", "Height"):
            sizes = [int(rep.get(side.lower(), "0")) for _, rep in members]
            target.set(f"max{side}", str(max(sizes)))
    for n, aset in enumerate(period.findall(_q("AdaptationSet"))):
        aset.set("id", str(n))
    tree.write(mpd_path, encoding="utf-8", xml_declaration=True)
