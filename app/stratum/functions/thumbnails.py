"""generate_thumbnails: the trick-play sprite sheets and the poster, in one ffmpeg run.

One decode of the source feeds two branches: every ``interval`` one frame, scaled to the tile
size (square pixels, the display aspect ratio) and tiled 5x5 into JPEG sheets; and the poster,
the frame at 10 % of the duration at the top rung's display size (at most 1280 wide). Sources
the plan deinterlaces are deinterlaced first; HDR sources are tone-mapped to BT.709 SDR with
the encoder's own tone-map (a JPEG is SDR). The packager writes the WebVTT and the playlists.

Sampling: ffmpeg's ``fps`` filter (``round=near``) gives thumbnail ``i`` the last frame before
the middle of its interval, ``(i + 0.5) * interval``: the frame that best stands for the span
its cue covers, and never the black first frame of a title (a last, partial interval shows the
frame before its nominal middle, or the last frame). ``tpad`` repeats the last frame, so that
the intervals after the video's last frame (a partial last one; audio that outlasts the video)
have their thumbnail too, and ``trim`` stops at ``ceil(duration / interval)``: the sheets
always hold exactly the plan's thumbnails.
"""

from __future__ import annotations

import asyncio
import shutil
from fractions import Fraction
from pathlib import Path

from temporalio import activity
from temporalio.exceptions import ApplicationError

from app.core.models import (
    EncoderSettings,
    PackagedThumbnails,
    PackageResult,
    Rendition,
    ThumbnailInput,
    ThumbnailMedia,
)
from app.media.packaging.thumbnails import (
    POSTER,
    REPRESENTATION_ID,
    add_image_stream,
    add_thumbnail_set,
    stage,
)
from app.media.thumbnails import TilePlan, plan_tiles, poster_size, poster_time
from app.storage.object_store import join, store_for
from app.stratum.functions.common import ActivityBase, input_args, part_path, sha256_paths
from app.stratum.functions.encode import deinterlace_filter, tonemap_filters

SHEET_PATTERN = "sheet-%05d.jpg"
SHEET_QUALITY = 5
"""mjpeg ``-q:v`` (2 best .. 31): sheets are seen at thumbnail size, small files matter."""
POSTER_QUALITY = 3
HDR_RANGES = ("PQ", "HLG")


def _hdr_settings(rendition: Rendition) -> EncoderSettings | None:
    """The settings :func:`tonemap_filters` reads, where the source is HDR (else None): the
    transfer is the one the plan found, whether this rung keeps HDR or is tone-mapped."""
    s = rendition.settings
    if s.tonemap and s.tonemap_from:
        return s
    if rendition.video_range in HDR_RANGES and s.color_transfer:
        return s.model_copy(update={"tonemap": True, "tonemap_from": s.color_transfer})
    return None


def _to_jpeg(width: int, height: int, hdr: EncoderSettings | None) -> list[str]:
    """Scale (before the tone-map: it then runs at the small size), tone-map where HDR, and
    end in what a JPEG decoder assumes (JFIF: BT.601 matrix, full range) with square pixels."""
    jfif = "out_color_matrix=bt601:out_range=pc"
    if hdr is None:
        return [f"scale={width}:{height}:flags=lanczos:{jfif}", "setsar=1"]
    return [
        f"scale={width}:{height}:flags=lanczos",
        *tonemap_filters(hdr),
        f"scale={jfif}",
        "setsar=1",
    ]


def thumbnail_filters(
    tiles: TilePlan,
    poster: tuple[int, int],
    poster_at_s: float,
    rendition: Rendition,
) -> str:
    """The filter graph: ``[sheets]`` and ``[poster]`` from the first video stream."""
    hdr = _hdr_settings(rendition)
    chains = []
    head = "[0:v:0]"
    if rendition.settings.deinterlace:
        # frame rate whatever the rungs do: one frame per sampled instant is all that is used
        frame_rate = rendition.settings.model_copy(update={"deinterlace": "frame"})
        chains.append(f"[0:v:0]{deinterlace_filter(frame_rate)}[deint]")
        head = "[deint]"
    chains.append(f"{head}split=2[t][p]")
    rate = Fraction(1000, tiles.interval_ms)
    sheets = [
        f"tpad=stop_mode=clone:stop_duration={tiles.duration_s + tiles.interval_s:g}",
        f"fps=fps={rate.numerator}/{rate.denominator}:round=near",
        f"trim=end_frame={tiles.count}",
        *_to_jpeg(tiles.tile_width, tiles.tile_height, hdr),
        f"tile={tiles.layout}",
    ]
    chains.append("[t]" + ",".join(sheets) + "[sheets]")
    frame = [f"trim=start={poster_at_s:g}", "trim=end_frame=1", *_to_jpeg(*poster, hdr)]
    chains.append("[p]" + ",".join(frame) + "[poster]")
    return ";".join(chains)


def thumbnail_args(
    in_args: list[str],
    out_dir: Path,
    tiles: TilePlan,
    poster: tuple[int, int],
    poster_at_s: float,
    rendition: Rendition,
) -> list[str]:
    """The whole ffmpeg command line (after the binary): the sheets as numbered JPEGs from 1,
    the poster as one JPEG; no audio, subtitles or metadata."""
    image = ["-an", "-sn", "-dn", "-map_metadata", "-1", "-c:v", "mjpeg",
             "-fps_mode", "passthrough", "-f", "image2"]  # fmt: skip
    return [
        "-y", *in_args,
        "-filter_complex", thumbnail_filters(tiles, poster, poster_at_s, rendition),
        "-map", "[sheets]", *image, "-q:v", str(SHEET_QUALITY),
        "-start_number", "1", str(out_dir / SHEET_PATTERN),
        "-map", "[poster]", *image, "-q:v", str(POSTER_QUALITY),
        "-frames:v", "1", "-update", "1", str(out_dir / POSTER),
    ]  # fmt: skip


def poster_of(rendition: Rendition) -> tuple[int, int]:
    """The top rung's display size (its width times its SAR), at most 1280 wide."""
    sar = Fraction(rendition.sample_aspect_ratio.replace(":", "/"))
    return poster_size(round(rendition.width * sar), rendition.height)


class ThumbnailActivities(ActivityBase):
    """Thumbnails and the poster: on the CPU queue, beside the encodes (never waited for
    before them: the workflow runs this with the audio and the subtitles)."""

    @activity.defn(name="generate_thumbnails")
    async def generate(self, input: ThumbnailInput) -> ThumbnailMedia:
        """The sheets and the poster into ``<scratch>/<job>/thumbnails/``. The poster is
        placed last, so when it is there every sheet is: a retry after that does no work."""
        video = input.video
        tiles = plan_tiles(
            input.duration_s,
            video.display_width,
            video.display_height,
            input.options.interval_s,
            input.options.width,
        )
        poster = poster_of(input.rendition)
        poster_at = poster_time(input.duration_s)
        folder = join(input.scratch_uri, input.job_id, "thumbnails")
        media = ThumbnailMedia(
            uri=folder,
            sheets=tiles.sheet_names,
            poster=POSTER,
            interval_s=tiles.interval_s,
            duration_s=tiles.duration_s,
            tile_width=tiles.tile_width,
            tile_height=tiles.tile_height,
            columns=tiles.columns,
            rows=tiles.rows,
            count=tiles.count,
            poster_width=poster[0],
            poster_height=poster[1],
            poster_at_s=poster_at,
        )
        poster_uri = join(folder, POSTER)
        if await asyncio.to_thread(store_for(poster_uri, self.settings).exists, poster_uri):
            return media
        src = await self.local_source(input.source_uri, input.job_id)
        part = part_path(self.scratch_path(folder, input.job_id))
        part.mkdir(parents=True)
        try:
            args = thumbnail_args(
                input_args(src, input.container), part, tiles, poster, poster_at, input.rendition
            )
            await self.ffmpeg(args, total_s=input.duration_s, label="thumbnails", encodes=False)
            made = sorted(p.name for p in part.glob("sheet-*.jpg"))
            posted = (part / POSTER).is_file()
            if made != tiles.sheet_names or not posted:
                raise ApplicationError(
                    f"ffmpeg made {len(made)} thumbnail sheets of {tiles.sheets} "
                    f"({tiles.count} thumbnails) and {'a' if posted else 'no'} poster",
                    type="ThumbnailError",
                )
            for name in [*tiles.sheet_names, POSTER]:
                uri = join(folder, name)
                await self.place(part / name, uri, input.job_id)
                self.drop_copy(uri, input.job_id)
        finally:
            shutil.rmtree(part, ignore_errors=True)
        return media


def tile_plan(media: ThumbnailMedia) -> TilePlan:
    """The plan the thumbnails were made by, again (the packager writes from it)."""
    plan = TilePlan(
        interval_ms=round(media.interval_s * 1000),
        duration_ms=round(media.duration_s * 1000),
        tile_width=media.tile_width,
        tile_height=media.tile_height,
        columns=media.columns,
        rows=media.rows,
    )
    if plan.count != media.count or plan.sheet_names != media.sheets:
        raise ValueError(f"thumbnails of {media.uri} do not match their own tiling")
    return plan


def package_thumbnails(
    staging: Path, media: ThumbnailMedia, sheets: list[Path], poster: Path, result: PackageResult
) -> PackageResult:
    """The sheets and the poster into the package with the WebVTT and the image playlist;
    the image stream added to the HLS master, the thumbnail set to the MPD, and both files'
    checksums and sizes (``thumbnails``: the sheets; ``poster``) to the package's."""
    plan = tile_plan(media)
    staged = stage(staging, plan, sheets, poster)
    master = staging / result.hls_master
    text = master.read_text(encoding="utf-8")
    master.write_text(add_image_stream(text, plan, staged.peak, staged.playlist), encoding="utf-8")
    add_thumbnail_set(staging / result.dash_manifest, plan, staged.peak)
    packaged = PackagedThumbnails(
        vtt=staged.vtt,
        hls_playlist=staged.playlist,
        sheets=staged.sheets,
        interval_s=plan.interval_s,
        tile=plan.tile,
        layout=plan.layout,
        count=plan.count,
        bandwidth=staged.peak,
        poster=staged.poster,
        poster_size=f"{media.poster_width}x{media.poster_height}",
    )
    return result.model_copy(
        update={
            "thumbnails": packaged,
            "checksums": {
                **result.checksums,
                REPRESENTATION_ID: sha256_paths(staged.sheet_paths),
                "poster": sha256_paths([staged.poster_path]),
            },
            "sizes": {
                **result.sizes,
                REPRESENTATION_ID: sum(p.stat().st_size for p in staged.sheet_paths),
                "poster": staged.poster_path.stat().st_size,
            },
        }
    )
