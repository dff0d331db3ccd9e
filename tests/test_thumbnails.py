"""Thumbnails and the poster: the tiling plan and its WebVTT / HLS / DASH forms (pure), the
activity on real generated media (decoded back with PyAV), the package, and the workflow."""

from __future__ import annotations

import re
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import av
import m3u8
import pytest
from temporalio import activity
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from app.api.routers.encode import job_id_for
from app.core.models import (
    CustomProfile,
    EncodeAudioInput,
    EncodeJob,
    EncodeRequest,
    EncodeVideoInput,
    PackageInput,
    Plan,
    PlanInput,
    ProbeInput,
    ProbeResult,
    PublishInput,
    Rendition,
    ThumbnailInput,
    ThumbnailMedia,
    ThumbnailOptions,
)
from app.core.settings import Settings
from app.media.ladder import plan_renditions
from app.media.packaging.dash import NS
from app.media.packaging.thumbnails import (
    THUMBNAIL_SCHEME,
    add_image_stream,
    add_thumbnail_set,
    bandwidth,
    image_playlist,
    thumbnail_set,
)
from app.media.subtitles import parse_vtt
from app.media.thumbnails import plan_tiles, poster_size, poster_time, tile_size, webvtt
from app.storage.local import path_to_uri, uri_to_path
from app.stratum.functions.analyze import AnalyzeActivities
from app.stratum.functions.audio import AudioActivities
from app.stratum.functions.encode import EncodeActivities
from app.stratum.functions.package import PackageActivities
from app.stratum.functions.thumbnails import ThumbnailActivities, thumbnail_filters, tile_plan
from tests.media_checks import check_package, picture_size
from tests.test_video_treatments import INTERLACED, make_hdr, source
from tests.test_workflow import Stand, client, job, run_workers  # noqa: F401
from tests.test_workflow import start as start_job

D = f"{{{NS}}}"

# ---------------------------------------------------------------- the plan (no media)


@pytest.mark.parametrize(
    ("duration", "interval", "count", "sheets"),
    [(9.0, 2, 5, 1), (8.0, 2, 4, 1), (8.001, 2, 5, 1), (50.0, 2, 25, 1), (50.5, 2, 26, 2),
     (7200.0, 2, 3600, 144), (0.4, 2, 1, 1), (61.0, 60, 2, 1), (10.0, 1.5, 7, 1)],
)  # fmt: skip
def test_one_thumbnail_per_interval_begun(
    duration: float, interval: float, count: int, sheets: int
) -> None:
    plan = plan_tiles(duration, 1920, 1080, interval)
    assert (plan.count, plan.sheets, len(plan.sheet_names)) == (count, sheets, sheets)
    assert plan.sheet_names[0] == "sheet-00001.jpg"
    assert sum(plan.sheet_durations_ms()) == plan.duration_ms


@pytest.mark.parametrize(
    ("display", "width", "tile"),
    [((1920, 1080), 160, (160, 90)), ((384, 288), 160, (160, 120)),
     ((1080, 1920), 160, (160, 284)), ((2048, 858), 160, (160, 68)),
     ((100, 56), 160, (100, 56)), ((321, 241), 161, (160, 120))],
)  # fmt: skip
def test_tiles_keep_the_display_aspect_with_square_even_pixels(
    display: tuple[int, int], width: int, tile: tuple[int, int]
) -> None:
    assert tile_size(*display, width) == tile
    assert all(v % 2 == 0 for v in tile)


def test_poster_is_the_display_size_at_most_1280_wide() -> None:
    assert poster_size(640, 360) == (640, 360)
    assert poster_size(1920, 1080) == (1280, 720)
    assert poster_size(3840, 1604) == (1280, 534)
    assert poster_size(720, 1280) == (720, 1280)
    assert poster_time(9.0) == 0.9 and poster_time(7200.0) == 720.0


def _ms(stamp: str) -> int:
    h, m, s = stamp.split(":")
    return round((int(h) * 3600 + int(m) * 60 + float(s)) * 1000)


@pytest.mark.parametrize("duration", [9.0, 50.0, 61.234, 3725.5])
def test_webvtt_cues_cover_the_title_tile_by_tile(duration: float) -> None:
    plan = plan_tiles(duration, 1920, 1080, 2.0)
    text = webvtt(plan)
    cues = parse_vtt(text)  # the project's WebVTT parser accepts it
    assert len(cues) == plan.count == -(-round(duration * 1000) // 2000)
    found = re.findall(r"^(\S+) --> (\S+)\n(\S+)#xywh=(\d+),(\d+),(\d+),(\d+)$", text, re.M)
    assert len(found) == plan.count
    assert all(re.fullmatch(r"\d{2}:\d{2}:\d{2}\.\d{3}", t) for c in found for t in c[:2])
    ends = 0
    seen: set[tuple[str, int, int]] = set()
    for begins, end, sheet, x, y, w, h in found:
        assert _ms(begins) == ends, "contiguous"
        ends = _ms(end)
        assert sheet in plan.sheet_names
        x_, y_, w_, h_ = int(x), int(y), int(w), int(h)
        assert (w_, h_) == (160, 90)
        assert x_ >= 0 and y_ >= 0
        assert x_ + w_ <= plan.sheet_width and y_ + h_ <= plan.sheet_height
        seen.add((sheet, x_, y_))
    assert ends == round(duration * 1000), "the last cue ends at the duration"
    assert len(seen) == plan.count, "every thumbnail has its own tile"
    assert found[0][2:5] == ("sheet-00001.jpg", "0", "0")
    if plan.count > 25:
        assert found[25][2:5] == ("sheet-00002.jpg", "0", "0")
        assert found[6][3:5] == ("160", "90")


def test_image_playlist_parses_with_one_segment_per_sheet() -> None:
    plan = plan_tiles(61.0, 1920, 1080, 2.0)  # 31 thumbnails: a full sheet and 6 on the last
    text = image_playlist(plan)
    parsed = m3u8.loads(text)
    assert parsed.is_images_only and parsed.is_endlist and parsed.playlist_type == "vod"
    assert [s.uri for s in parsed.segments] == ["sheet-00001.jpg", "sheet-00002.jpg"]
    assert [s.duration for s in parsed.segments] == [50.0, 11.0]
    assert parsed.target_duration == 50
    assert parsed.data["tiles"] == [
        {"resolution": "160x90", "layout": "5x5", "duration": 2.0},
        {"resolution": "160x90", "layout": "5x5", "duration": 2.0},
    ]
    assert "#EXT-X-TILES:RESOLUTION=160x90,LAYOUT=5x5,DURATION=2.000" in text


def test_master_gets_one_image_stream() -> None:
    plan = plan_tiles(9.0, 1920, 1080)
    master = m3u8.M3U8()
    master.add_playlist(m3u8.Playlist("media_0.m3u8", {"bandwidth": 1000}, [], base_uri=None))
    text = add_image_stream(str(master.dumps()), plan, 3456)
    line = next(x for x in text.splitlines() if x.startswith("#EXT-X-IMAGE-STREAM-INF"))
    assert line == (
        '#EXT-X-IMAGE-STREAM-INF:BANDWIDTH=3456,RESOLUTION=160x90,CODECS="jpeg",'
        'URI="thumbnails.m3u8"'
    )
    parsed = m3u8.loads(text)
    assert [p.uri for p in parsed.playlists] == ["media_0.m3u8"]
    (image,) = parsed.image_playlists
    assert image.uri == "thumbnails.m3u8" and image.image_stream_info.resolution == (160, 90)
    assert image.image_stream_info.codecs == "jpeg" and image.image_stream_info.bandwidth == 3456


def test_bandwidth_is_the_largest_sheet_over_a_full_sheets_time() -> None:
    plan = plan_tiles(61.0, 1920, 1080, 2.0)
    assert bandwidth(plan, [50_000, 49_000]) == 8000  # 50 kB over 50 s, not the 11 s last one


def test_dash_thumbnail_set_follows_dash_if_iop() -> None:
    plan = plan_tiles(61.0, 1280, 720, 2.0)
    aset = thumbnail_set(plan, 7, 8000)
    assert aset.tag == f"{D}AdaptationSet"
    assert (aset.get("id"), aset.get("contentType"), aset.get("mimeType")) == (
        "7", "image", "image/jpeg"
    )  # fmt: skip
    template = aset.find(f"{D}SegmentTemplate")
    assert template is not None
    assert template.attrib == {
        "media": "sheet-$Number%05d$.jpg", "timescale": "1000", "duration": "50000",
        "startNumber": "1",
    }  # fmt: skip
    rep = aset.find(f"{D}Representation")
    assert rep is not None
    assert rep.attrib == {"id": "thumbnails", "bandwidth": "8000", "width": "800", "height": "450"}
    prop = rep.find(f"{D}EssentialProperty")
    assert prop is not None
    assert prop.attrib == {"schemeIdUri": THUMBNAIL_SCHEME, "value": "5x5"}
    assert THUMBNAIL_SCHEME == "http://dashif.org/thumbnail_tile"


def test_thumbnail_set_is_appended_with_the_next_free_id(tmp_path: Path) -> None:
    mpd = tmp_path / "manifest.mpd"
    mpd.write_text(
        f'<?xml version="1.0"?><MPD xmlns="{NS}"><Period>'
        '<AdaptationSet id="0" contentType="video"/><AdaptationSet id="3" contentType="text"/>'
        "</Period></MPD>"
    )
    add_thumbnail_set(mpd, plan_tiles(9.0, 320, 180), 100)
    sets = ET.parse(mpd).getroot().findall(f"{D}Period/{D}AdaptationSet")
    assert [(s.get("id"), s.get("contentType")) for s in sets] == [
        ("0", "video"), ("3", "text"), ("4", "image")
    ]  # fmt: skip
    assert 'xmlns="urn:mpeg:dash:schema:mpd:2011"' in mpd.read_text(), "default namespace kept"


def test_options_bounds_and_switch() -> None:
    assert EncodeRequest(source="a.mp4").thumbnails == ThumbnailOptions(interval_s=2, width=160)
    assert EncodeRequest(source="a.mp4", thumbnails=False).thumbnails is False
    custom = EncodeRequest.model_validate({"source": "a.mp4", "thumbnails": {"interval_s": 5}})
    assert custom.thumbnails == ThumbnailOptions(interval_s=5, width=160)
    for bad in ({"interval_s": 0.5}, {"interval_s": 61}, {"width": 63}, {"width": 161},
                {"width": 642}, {"other": 1}, True):  # fmt: skip
        with pytest.raises(ValueError, match="thumbnails"):
            EncodeRequest.model_validate({"source": "a.mp4", "thumbnails": bad})


def test_only_a_non_default_thumbnail_option_changes_the_job_id() -> None:
    uri = "file:///data/in.mp4"

    def job_id(**fields: Any) -> str:
        return job_id_for(EncodeRequest(source="/data/in.mp4", **fields), uri, None)

    plain = job_id()
    assert job_id(thumbnails=ThumbnailOptions()) == plain, "IDs from before thumbnails stay"
    assert job_id(thumbnails={"interval_s": 2.0, "width": 160}) == plain
    others = {job_id(thumbnails=False), job_id(thumbnails={"interval_s": 4}), plain}
    assert len(others) == 3


def _rung(codec: str = "h264", **video: Any) -> Rendition:
    encode_job = EncodeJob(
        job_id="j", source_uri="file:///s.mp4", profiles=["720p"], codec=codec,
        segment_seconds=2, output_uri="file:///o", scratch_uri="file:///s",
    )  # fmt: skip
    return plan_renditions(encode_job, source(**video)).renditions[0]


def test_filters_deinterlace_and_tonemap_as_the_plan_says() -> None:
    plan = plan_tiles(10.0, 1920, 1080)
    sdr = thumbnail_filters(plan, (1280, 720), 1.0, _rung())
    assert "bwdif" not in sdr and "tonemap" not in sdr and "zscale" not in sdr
    assert "fps=fps=1/2:round=near" in sdr and "trim=end_frame=5" in sdr and "tile=5x5" in sdr
    assert "scale=160:90:" in sdr and "scale=1280:720:" in sdr and "trim=start=1," in sdr

    interlaced = thumbnail_filters(plan, (1280, 720), 1.0, _rung(**INTERLACED))
    assert interlaced.startswith("[0:v:0]bwdif=mode=send_frame:parity=bff:deint=all[deint];")

    pq = {"color_primaries": "bt2020", "color_transfer": "smpte2084",
          "color_matrix": "bt2020nc", "dynamic_range": "HDR10"}  # fmt: skip
    tonemapped = _rung(**pq)
    assert tonemapped.settings.tonemap, "H.264: the rung itself is tone-mapped"
    graph = thumbnail_filters(plan, (1280, 720), 1.0, tonemapped)
    assert graph.count("zscale=tin=smpte2084") == 2, "sheets and poster both tone-mapped"
    hlg = _rung("hevc", color_primaries="bt2020", color_transfer="arib-std-b67")
    assert hlg.video_range == "HLG" and not hlg.settings.tonemap, "HEVC keeps HDR"
    graph = thumbnail_filters(plan, (1280, 720), 1.0, hlg)
    assert graph.count("zscale=tin=arib-std-b67") == 2, "a JPEG is SDR"


# ---------------------------------------------------------------- the activity (real media)


def make_ramp(ffmpeg: str, path: Path, seconds: float) -> Path:
    """320x180 at 5 fps whose grey level rises by 1.5 with every frame: a tile's brightness
    says which frame it shows."""
    subprocess.run(
        [ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-f", "lavfi", "-i",
         f"nullsrc=s=320x180:r=5:d={seconds},format=gray,geq=lum=16+1.5*N,format=yuv420p",
         "-c:v", "libx264", "-preset", "ultrafast", "-crf", "10", str(path)],
        check=True,
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory, ffmpeg: str) -> Path:
    root = tmp_path_factory.mktemp("thumb-media")
    make_ramp(ffmpeg, root / "ramp.mp4", 27)
    make_hdr(ffmpeg, root / "hdr10.mp4", "smpte2084")
    return root


@pytest.fixture
def settings(tmp_path: Path, clips: Path, media_dir: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data", source_roots=f"{clips}:{media_dir}", heartbeat_timeout_s=20
    )


def job_for(settings: Settings, path: Path, **fields: Any) -> EncodeJob:
    values: dict[str, Any] = {
        "job_id": "job-thumbs",
        "source_uri": path_to_uri(path),
        "profiles": [CustomProfile(name="small", height=180, bitrate_kbps=200,
                                   preset="ultrafast")],
        "codec": "h264",
        "segment_seconds": 1,
        "output_uri": settings.resolved_output_uri,
        "scratch_uri": settings.resolved_scratch_uri,
        "thumbnails": ThumbnailOptions(),
    }  # fmt: skip
    return EncodeJob(**(values | fields))


async def thumbnails_of(
    settings: Settings, job: EncodeJob, env: ActivityEnvironment | None = None
) -> tuple[ThumbnailMedia, ProbeResult, Plan]:
    env = env or ActivityEnvironment()
    analyze = AnalyzeActivities(settings)
    probe = await env.run(analyze.probe_source, ProbeInput(source_uri=job.source_uri))
    plan = await env.run(analyze.plan, PlanInput(job=job, probe=probe))
    assert job.thumbnails is not None
    media = await env.run(
        ThumbnailActivities(settings).generate,
        ThumbnailInput(
            job_id=job.job_id, source_uri=job.source_uri, container=probe.container,
            scratch_uri=job.scratch_uri, duration_s=probe.duration_s, video=probe.video,
            rendition=plan.renditions[0], options=job.thumbnails,
        ),
    )  # fmt: skip
    return media, probe, plan


def grey_levels(path: Path, tile: tuple[int, int], count: int, columns: int = 5) -> list[float]:
    """The mean luma of the middle of each of the first ``count`` tiles of a sheet (PyAV's
    decode; numpy-free: the plane's bytes, row by row)."""
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
    plane = frame.planes[0]
    data, stride = bytes(plane), plane.line_size
    w, h = tile
    levels = []
    for i in range(count):
        x0, y0 = (i % columns) * w, (i // columns) * h
        rows = range(y0 + h // 4, y0 + 3 * h // 4)
        values = [data[r * stride + c] for r in rows for c in range(x0 + w // 4, x0 + 3 * w // 4)]
        levels.append(sum(values) / len(values))
    return levels


def grey_of(frame: int) -> float:
    """The grey level of a frame of :func:`make_ramp` (it comes back through the JPEG to
    within a level)."""
    return 16 + 1.5 * frame


async def test_sheets_sample_the_middle_of_each_interval(settings: Settings, clips: Path) -> None:
    media, probe, _ = await thumbnails_of(settings, job_for(settings, clips / "ramp.mp4"))
    assert abs(probe.duration_s - 27.0) < 0.01
    assert (media.count, media.sheets, media.poster) == (14, ["sheet-00001.jpg"], "poster.jpg")
    assert (media.tile_width, media.tile_height, media.columns, media.rows) == (160, 90, 5, 5)
    assert (media.poster_width, media.poster_height, media.poster_at_s) == (320, 180, 2.7)
    folder = uri_to_path(media.uri)
    assert sorted(p.name for p in folder.iterdir()) == ["poster.jpg", "sheet-00001.jpg"]
    assert picture_size(folder / "sheet-00001.jpg") == (800, 450, "mjpeg")
    assert picture_size(folder / "poster.jpg") == (320, 180, "mjpeg")

    levels = grey_levels(folder / "sheet-00001.jpg", (160, 90), 25)
    shown, blank = levels[:14], levels[14:]
    assert all(level < 3 for level in blank), "tiles past the last thumbnail are black"
    assert all(b - a > 10 for a, b in pairwise(shown)), shown
    # Tile i shows the last frame before (i + 0.5) * 2 s: frame 10 i + 4 (5 fps); the last
    # interval, [26, 27), shows the last frame (134). A level is 2/3 of a frame.
    expected = [grey_of(10 * i + 4) for i in range(13)] + [grey_of(134)]
    assert all(abs(a - b) <= 1.5 for a, b in zip(shown, expected, strict=True)), (shown, expected)
    # The poster: the first frame from 2.7 s (frame 14, at 2.8 s).
    (poster,) = grey_levels(folder / "poster.jpg", (320, 180), 1, columns=1)
    assert abs(poster - grey_of(14)) <= 1.5, poster

    # A retry after the poster was placed finds everything there and runs nothing.
    stamp = (folder / "sheet-00001.jpg").stat().st_mtime_ns
    again, _, _ = await thumbnails_of(settings, job_for(settings, clips / "ramp.mp4"))
    assert again == media and (folder / "sheet-00001.jpg").stat().st_mtime_ns == stamp
    assert not list(folder.parent.glob("*.part")), "no partial folder left behind"


async def test_more_thumbnails_than_a_sheet_fill_the_next(settings: Settings, clips: Path) -> None:
    options = ThumbnailOptions(interval_s=1, width=64)
    encode_job = job_for(settings, clips / "ramp.mp4", job_id="job-dense", thumbnails=options)
    media, _, _ = await thumbnails_of(settings, encode_job)
    assert (media.count, media.tile_width, media.tile_height) == (27, 64, 36)
    assert media.sheets == ["sheet-00001.jpg", "sheet-00002.jpg"]
    folder = uri_to_path(media.uri)
    assert picture_size(folder / "sheet-00002.jpg") == (320, 180, "mjpeg")
    one = grey_levels(folder / "sheet-00001.jpg", (64, 36), 25)
    two = grey_levels(folder / "sheet-00002.jpg", (64, 36), 3)
    shown = [*one, *two[:2]]
    assert all(b - a > 5 for a, b in pairwise(shown)), shown
    # 1 s intervals: tile i is the last frame before i + 0.5 s, frame 5 i + 2 (5 fps)
    expected = [grey_of(5 * i + 2) for i in range(27)]
    assert all(abs(a - b) <= 1.5 for a, b in zip(shown, expected, strict=True)), shown
    assert two[2] < 3, "the second sheet's third tile is past the last thumbnail"
    assert tile_plan(media).sheet_names == media.sheets


async def test_an_hdr_source_gives_sdr_jpegs(settings: Settings, clips: Path) -> None:
    encode_job = job_for(
        settings, clips / "hdr10.mp4", codec="hevc",
        profiles=[CustomProfile(name="hdr", height=360, bitrate_kbps=300, preset="ultrafast")],
    )  # fmt: skip
    media, _, plan = await thumbnails_of(settings, encode_job)
    assert plan.renditions[0].video_range == "PQ", "the rung keeps HDR; the JPEGs cannot"
    folder = uri_to_path(media.uri)
    assert picture_size(folder / "poster.jpg") == (640, 360, "mjpeg")
    with av.open(str(folder / "sheet-00001.jpg")) as container:
        frame = next(container.decode(video=0))
    assert frame.format.name in ("yuvj420p", "yuv420p") and (frame.width, frame.height) == (
        800, 450
    )  # fmt: skip


async def test_packaged_thumbnails_are_in_every_manifest(
    settings: Settings, media_dir: Path, ffmpeg: str
) -> None:
    """The pipeline's steps with the thumbnails beside them: HLS master, MPD, manifest.json."""
    encode_job = job_for(settings, media_dir / "basic.mp4", job_id="job-packaged")
    env = ActivityEnvironment()
    media, probe, plan = await thumbnails_of(settings, encode_job, env)
    videos = [
        await env.run(
            EncodeActivities(settings).encode_video,
            EncodeVideoInput(
                job_id=encode_job.job_id, source_uri=encode_job.source_uri,
                container=probe.container, scratch_uri=encode_job.scratch_uri, rendition=r,
                duration_s=probe.duration_s,
            ),
        )
        for r in plan.renditions
    ]  # fmt: skip
    audio = await env.run(
        AudioActivities(settings).encode_audio,
        EncodeAudioInput(
            job_id=encode_job.job_id, source_uri=encode_job.source_uri,
            container=probe.container, scratch_uri=encode_job.scratch_uri,
            duration_s=probe.duration_s,
        ),
    )  # fmt: skip
    package = PackageActivities(settings)
    packaged = await env.run(
        package.package,
        PackageInput(
            job_id=encode_job.job_id, scratch_uri=encode_job.scratch_uri, videos=videos,
            audio=audio, segment_seconds=plan.segment_seconds, thumbnails=media,
        ),
    )  # fmt: skip
    assert packaged.thumbnails is not None and packaged.thumbnails.tile == "160x90"
    assert packaged.checksums["thumbnails"].startswith("sha256:")
    assert packaged.checksums["poster"].startswith("sha256:")
    await env.run(
        package.publish_manifest,
        PublishInput(
            job=encode_job, probe=probe, plan=plan, videos=videos, audio=audio,
            package=packaged, stage_seconds={},
        ),
    )  # fmt: skip
    out = uri_to_path(encode_job.output_uri) / encode_job.job_id
    manifest = check_package(out, ffmpeg, 2.0, "30/1")  # thumbnails checked there too
    assert manifest["poster"] == "poster.jpg"
    assert manifest["thumbnails"] == {
        "vtt": "thumbnails.vtt", "hls_playlist": "thumbnails.m3u8",
        "sheets": ["sheet-00001.jpg"], "interval_s": 2.0, "tile": "160x90", "layout": "5x5",
        "count": 1, "bandwidth": packaged.thumbnails.bandwidth, "poster_size": "320x180",
        "dash_representation_id": "thumbnails", "checksum": packaged.checksums["thumbnails"],
        "size_bytes": (out / "sheet-00001.jpg").stat().st_size,
    }  # fmt: skip
    assert (out / "thumbnails.vtt").read_text() == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:02.000\nsheet-00001.jpg#xywh=0,0,160,90\n"
    )


# ---------------------------------------------------------------- the workflow (stand-ins)


@dataclass
class ThumbnailStand(Stand):
    """The workflow tests' stand-ins, with a plan of today's form (audio tracks planned: here
    none) and a thumbnail activity."""

    thumbnail_inputs: list[ThumbnailInput] = field(default_factory=list)
    thumbnail_error: Exception | None = None

    def activities(self) -> list[Callable[..., Any]]:
        @activity.defn(name="plan_renditions")
        async def plan(input: PlanInput) -> Plan:
            return plan_renditions(input.job, input.probe).model_copy(update={"audio": []})

        @activity.defn(name="generate_thumbnails")
        async def generate(input: ThumbnailInput) -> ThumbnailMedia:
            self.thumbnail_inputs.append(input)
            self.events.append("thumbnails")
            if self.thumbnail_error:
                raise self.thumbnail_error
            return ThumbnailMedia(
                uri="file:///scratch/t", sheets=["sheet-00001.jpg"], poster="poster.jpg",
                interval_s=2, duration_s=10, tile_width=160, tile_height=90, columns=5, rows=5,
                count=5, poster_width=1280, poster_height=720, poster_at_s=1.0,
            )  # fmt: skip

        others = [a for a in super().activities() if a.__name__ != "plan"]
        return [*others, plan, generate]


async def test_the_workflow_makes_thumbnails_beside_the_encodes(
    client: Client,  # noqa: F811
    run_workers: Any,  # noqa: F811
) -> None:
    stand = ThumbnailStand()
    await run_workers(stand)
    await (await start_job(client, job(thumbnails=ThumbnailOptions(interval_s=4)))).result()
    (request,) = stand.thumbnail_inputs
    assert request.rendition.name == "1080p", "the top rung sizes the poster"
    assert request.options.interval_s == 4 and request.duration_s == 10.0
    assert stand.events.index("thumbnails") < stand.events.index("publish")
    assert stand.packages[0].thumbnails is not None
    assert stand.packages[0].thumbnails.sheets == ["sheet-00001.jpg"]

    await (await start_job(client, job())).result()  # a job without thumbnails
    assert len(stand.thumbnail_inputs) == 1 and stand.packages[1].thumbnails is None


async def test_a_thumbnail_failure_fails_the_job(
    client: Client,  # noqa: F811
    run_workers: Any,  # noqa: F811
) -> None:
    error = ApplicationError("no sheets", type="ThumbnailError", non_retryable=True)
    stand = ThumbnailStand(thumbnail_error=error)
    await run_workers(stand)
    with pytest.raises(WorkflowFailureError):
        await (await start_job(client, job(thumbnails=ThumbnailOptions()))).result()
    assert stand.packages == [] and stand.cleanups[0].remove_outputs is True
