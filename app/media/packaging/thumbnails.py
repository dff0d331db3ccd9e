"""The thumbnail track in the package: WebVTT, HLS image playlist, DASH-IF thumbnail set.

One set of JPEG sprite sheets serves every player: a WebVTT file of ``#xywh=`` cues (video.js,
JW Player, Shaka's and hls.js' plugins), an HLS Image Media Playlist (``EXT-X-IMAGES-ONLY`` with
``EXT-X-TILES``, the Roku / Apple form) named from the master by ``EXT-X-IMAGE-STREAM-INF``, and
a DASH-IF thumbnail AdaptationSet (IOP 4.3 section 6.2.6: ``contentType="image"``, an
``EssentialProperty`` ``http://dashif.org/thumbnail_tile`` with the layout) in the MPD.

The master playlist and the MPD are written by :mod:`app.media.packaging.hls` and
:mod:`app.media.packaging.dash`; the thumbnail entries are added to their output here, so neither
writer needs to know about thumbnails.
"""

from __future__ import annotations

import math
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import m3u8

from app.media.packaging.dash import NS
from app.media.thumbnails import TilePlan, webvtt

VTT = "thumbnails.vtt"
PLAYLIST = "thumbnails.m3u8"
POSTER = "poster.jpg"
REPRESENTATION_ID = "thumbnails"
DASH_MEDIA = "sheet-$Number%05d$.jpg"
""":func:`app.media.thumbnails.sheet_name` as a DASH SegmentTemplate (``startNumber`` 1)."""
THUMBNAIL_SCHEME = "http://dashif.org/thumbnail_tile"
TIMESCALE = 1000
"""The plan's times are whole milliseconds."""
PLAYLIST_VERSION = 7


def _q(tag: str) -> str:
    return f"{{{NS}}}{tag}"


def _seconds(ms: int) -> str:
    return f"{ms / 1000:.3f}"


def bandwidth(plan: TilePlan, sheet_bytes: list[int]) -> int:
    """Peak bits per second over the sheets, each taken over a full sheet's time (the last,
    shorter one is as large a picture: over its own few seconds it would read as a peak)."""
    return max(1, math.ceil(max(sheet_bytes, default=0) * 8 / (plan.sheet_ms / 1000)))


def image_playlist(plan: TilePlan) -> str:
    """The Image Media Playlist: one segment per sheet, ``EXTINF`` the time it covers and
    ``EXT-X-TILES`` its grid (the tag applies to the segment after it). Written as text: the
    ``m3u8`` library parses ``EXT-X-TILES`` but does not write it per segment."""
    durations = plan.sheet_durations_ms()
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{PLAYLIST_VERSION}",
        f"#EXT-X-TARGETDURATION:{math.ceil(max(durations) / 1000)}",
        "#EXT-X-MEDIA-SEQUENCE:1",
        "#EXT-X-PLAYLIST-TYPE:VOD",
        "#EXT-X-IMAGES-ONLY",
    ]
    tiles = (
        f"#EXT-X-TILES:RESOLUTION={plan.tile},LAYOUT={plan.layout},"
        f"DURATION={_seconds(plan.interval_ms)}"
    )
    for name, ms in zip(plan.sheet_names, durations, strict=True):
        lines += [f"#EXTINF:{_seconds(ms)},", tiles, name]
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def image_stream_inf(plan: TilePlan, peak: int, uri: str = PLAYLIST) -> str:
    """The master's ``EXT-X-IMAGE-STREAM-INF`` line. ``RESOLUTION`` is one thumbnail's, as in
    the Image Media Playlist specification and its ``EXT-X-TILES`` (players that show it scale
    a tile, not a sheet)."""
    entry = m3u8.ImagePlaylist(
        base_uri=None,
        uri=uri,
        image_stream_info={"bandwidth": peak, "resolution": plan.tile, "codecs": "jpeg"},
    )
    return str(entry)


def add_image_stream(master: str, plan: TilePlan, peak: int, uri: str = PLAYLIST) -> str:
    """The master playlist text with the image stream appended (a master tag may stand
    anywhere after the header; players that do not know it ignore it)."""
    return master.rstrip("\n") + "\n" + image_stream_inf(plan, peak, uri) + "\n"


def thumbnail_set(plan: TilePlan, set_id: int, peak: int) -> ET.Element:
    """The DASH-IF thumbnail AdaptationSet: one Representation the size of a sheet, sheets
    numbered from 1 every ``columns x rows x interval`` (the last may cover less)."""
    aset = ET.Element(
        _q("AdaptationSet"),
        {"id": str(set_id), "contentType": "image", "mimeType": "image/jpeg"},
    )
    ET.SubElement(
        aset,
        _q("SegmentTemplate"),
        {
            "media": DASH_MEDIA,
            "timescale": str(TIMESCALE),
            "duration": str(plan.sheet_ms * TIMESCALE // 1000),
            "startNumber": "1",
        },
    )
    rep = ET.SubElement(
        aset,
        _q("Representation"),
        {
            "id": REPRESENTATION_ID,
            "bandwidth": str(peak),
            "width": str(plan.sheet_width),
            "height": str(plan.sheet_height),
        },
    )
    ET.SubElement(
        rep, _q("EssentialProperty"), {"schemeIdUri": THUMBNAIL_SCHEME, "value": plan.layout}
    )
    return aset


def add_thumbnail_set(mpd_path: Path, plan: TilePlan, peak: int) -> None:
    """Append the thumbnail set to the MPD's Period, with the next free AdaptationSet id."""
    tree = ET.parse(mpd_path)  # noqa: S314 - written by this package step, not user input
    period = tree.getroot().find(_q("Period"))
    assert period is not None, "the MPD has no Period"
    ids = [int(a.get("id", "0")) for a in period.findall(_q("AdaptationSet"))]
    period.append(thumbnail_set(plan, max(ids, default=-1) + 1, peak))
    ET.indent(tree, space="\t")
    tree.write(mpd_path, encoding="utf-8", xml_declaration=True)


@dataclass(frozen=True)
class StagedThumbnails:
    sheets: list[str]
    poster: str
    vtt: str
    playlist: str
    peak: int
    sheet_paths: list[Path]
    poster_path: Path


def stage(staging: Path, plan: TilePlan, sheets: list[Path], poster: Path) -> StagedThumbnails:
    """Copy the sheets and the poster into the package and write the WebVTT and the image
    playlist beside them (every reference is relative: the package is one folder)."""
    if [p.name for p in sheets] != plan.sheet_names:
        raise ValueError(f"sheets {[p.name for p in sheets]} are not the plan's")
    for path in sheets:
        shutil.copyfile(path, staging / path.name)
    shutil.copyfile(poster, staging / POSTER)
    (staging / VTT).write_text(webvtt(plan), encoding="utf-8")
    (staging / PLAYLIST).write_text(image_playlist(plan), encoding="utf-8")
    staged = [staging / p.name for p in sheets]
    return StagedThumbnails(
        sheets=plan.sheet_names,
        poster=POSTER,
        vtt=VTT,
        playlist=PLAYLIST,
        peak=bandwidth(plan, [p.stat().st_size for p in staged]),
        sheet_paths=staged,
        poster_path=staging / POSTER,
    )
