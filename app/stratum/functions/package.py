"""package and publish-manifest: HLS + DASH over one set of CMAF segments, then make it public."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path

import av
from temporalio import activity
from temporalio.exceptions import ApplicationError

from app.core.models import (
    AudioRendition,
    Manifests,
    PackageInput,
    PackageResult,
    PublishInput,
    SubtitleRendition,
    ThumbnailMedia,
)
from app.media.colour import MATRICES, PRIMARIES, TRANSFERS
from app.media.formats import OPEN_OPTIONS
from app.media.packaging.bmff import BoxError, TrackIndex, index_track
from app.media.packaging.codec_strings import codec_string
from app.media.packaging.dash import AudioSet, TextSet, VideoColour, join_video_sets, rewrite
from app.media.packaging.hls import (
    AudioTrack,
    SubtitleEntry,
    VideoVariant,
    audio_groups,
    iframe_bitrate,
    iframe_playlist,
    iframes,
    master_playlist,
    media_playlist,
    subtitle_playlist,
    track_bitrate,
)
from app.media.packaging.thumbnails import REPRESENTATION_ID as THUMBNAILS_ID
from app.media.subtitles import parse_vtt, segment_bounds, segment_vtt
from app.media.validation import (
    AudioTarget,
    ImageTarget,
    PackageExpectations,
    TextTarget,
    VideoTarget,
    validate_package,
)
from app.storage.local import publish_dir, uri_to_path
from app.storage.object_store import LocalStore, S3Store, Store, join, store_for
from app.stratum.functions.common import ActivityBase, input_args, sha256_paths
from app.stratum.functions.thumbnails import package_thumbnails

HLS_MASTER = "master.m3u8"
DASH_MANIFEST = "manifest.mpd"
JOB_MANIFEST = "manifest.json"
VALIDATION_ERROR = "ValidationError"


def package_args(
    videos: list[Path],
    audio: list[Path],
    out_dir: Path,
    segment_seconds: int,
    video_sets: list[list[int]],
) -> list[str]:
    """One ffmpeg dash muxer run, stream copy: fMP4 segments plus an MPD (corrected after);
    the HLS playlists are the project's own, written from the segments.

    Output stream ``i`` is representation ``i``: the videos, then the audio tracks. Videos
    share an adaptation set as ``video_sets`` says (by video index; ``package`` gives each its
    own and joins a codec family's in the MPD after, see ``join_video_sets``); each audio
    track is its own set, so each language gets its ``lang`` and ``Role``."""
    args: list[str] = []
    for path in [*videos, *audio]:
        args += input_args(path, "mov")
    for i in range(len(videos)):
        args += ["-map", f"{i}:v:0"]
    for i in range(len(audio)):
        args += ["-map", f"{len(videos) + i}:a:0"]
    sets = [f"id={n},streams={','.join(map(str, members))}" for n, members in enumerate(video_sets)]
    sets += [f"id={len(video_sets) + i},streams={len(videos) + i}" for i in range(len(audio))]
    args += [
        "-c", "copy", "-f", "dash",
        "-seg_duration", str(segment_seconds),
        "-use_template", "1", "-use_timeline", "1",
        "-adaptation_sets", " ".join(sets),
        "-init_seg_name", "init-$RepresentationID$.m4s",
        "-media_seg_name", "chunk-$RepresentationID$-$Number%05d$.m4s",
        "-y", str(out_dir / DASH_MANIFEST),
    ]  # fmt: skip
    return args


def _representation_files(staging: Path, rep_id: int) -> list[Path]:
    return [staging / f"init-{rep_id}.m4s", *sorted(staging.glob(f"chunk-{rep_id}-*.m4s"))]


def _index(staging: Path, rep_id: int, name: str) -> TrackIndex:
    """A representation's segments indexed; a video segment that does not open on a keyframe
    would make players fail at every switch and seek, so it fails the package."""
    init, *segments = _representation_files(staging, rep_id)
    try:
        track = index_track(init, segments)
    except (BoxError, OSError) as err:
        raise ApplicationError(
            f"cannot index the segments of {name}: {err}",
            type="PackagingError",
            non_retryable=True,
        ) from None
    off_grid = [s.uri for s in track.segments if not s.first_sync]
    if off_grid:
        raise ApplicationError(
            f"{name}: segments {', '.join(off_grid)} do not start with a keyframe",
            type="PackagingError",
            non_retryable=True,
        )
    return track


@dataclass(frozen=True)
class VideoFacts:
    """What a player is told of a video rendition, read from the encoded file itself."""

    codec: str
    width: int
    height: int
    frame_rate: Fraction
    colour: VideoColour

    @property
    def video_range(self) -> str:
        return VIDEO_RANGES.get(self.colour.transfer or "", "SDR")

    @property
    def family(self) -> tuple[str, str]:
        """Renditions a player may switch between: one codec, one transfer (DASH-IF IOP:
        an AdaptationSet per codec family, so SDR H.264 and HDR HEVC sit side by side)."""
        return self.codec, self.colour.transfer or ""


VIDEO_RANGES = {"smpte2084": "PQ", "arib-std-b67": "HLG"}


def video_facts(path: Path) -> VideoFacts:
    with av.open(str(path), options=OPEN_OPTIONS) as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        rate = stream.average_rate or stream.guessed_rate or Fraction(0)
        return VideoFacts(
            codec=ctx.name,
            width=ctx.width,
            height=ctx.height,
            frame_rate=Fraction(rate.numerator, rate.denominator),
            colour=VideoColour(
                primaries=_tag(ctx.color_primaries, PRIMARIES),
                transfer=_tag(ctx.color_trc, TRANSFERS),
                matrix=_tag(ctx.colorspace, MATRICES),
            ),
        )


def _tag(value: object, names: dict[int, str]) -> str | None:
    try:
        return names.get(int(value))  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


def _distinct(bases: list[str]) -> list[str]:
    """The labels, made different from each other (``en``, ``en 2``)."""
    taken: set[str] = set()
    labels = []
    for base in bases:
        label, n = base, 2
        while label in taken:
            label, n = f"{base} {n}", n + 1
        taken.add(label)
        labels.append(label)
    return labels


def track_labels(tracks: list[AudioRendition]) -> list[str]:
    """What players show for each audio rendition (HLS NAME, DASH Label): the title, else the
    language; the same for the stereo and 5.1 renditions of one source track, and different
    between source tracks."""
    first: dict[tuple[str | None, int], AudioRendition] = {}
    for track in tracks:
        first.setdefault((track.source_uri, track.source_index), track)
    names = _distinct([t.title or t.language for t in first.values()])
    label = dict(zip(first, names, strict=True))
    return [label[(t.source_uri, t.source_index)] for t in tracks]


def subtitle_labels(tracks: list[SubtitleRendition]) -> list[str]:
    """The title, else the language with what kind of track it is (``en forced``, ``en SDH``)."""

    def base(track: SubtitleRendition) -> str:
        kinds = ["forced"] * track.forced + ["SDH"] * track.hearing_impaired
        return track.title or " ".join([track.language, *kinds])

    return _distinct([base(t) for t in tracks])


def _legacy_audio() -> AudioRendition:
    """The one track of plans from before audio tracks: AAC stereo, no language."""
    return AudioRendition(name="audio", default=True)


def _thumbnail_entry(package: PackageResult) -> dict[str, object] | None:
    """manifest.json's thumbnail track: its files, tiling and the sheets' checksum."""
    if package.thumbnails is None:
        return None
    return {
        **package.thumbnails.model_dump(exclude={"poster"}),
        "dash_representation_id": "thumbnails",
        "checksum": package.checksums.get("thumbnails"),
        "size_bytes": package.sizes.get("thumbnails"),
    }


def expectations(
    input: PackageInput, result: PackageResult, audio_plan: list[AudioRendition]
) -> PackageExpectations:
    """What the package must hold, from the plan, the encodes and what the packager recorded:
    each video rendition's frames and duration as encoded (assembly checked a chunked
    rendition's against the source's), its codec and settings; each audio track's duration as
    encoded, and its codec and channels where the plan made them."""
    plan = input.plan
    renditions = {r.name: r for r in plan.renditions} if plan else {}
    videos = []
    for i, media in enumerate(input.videos):
        rendition = renditions.get(media.name)
        videos.append(
            VideoTarget(
                name=media.name,
                rep_id=str(i),
                playlist=result.video_playlists[i],
                iframe_playlist=result.iframe_playlists[i] if result.iframe_playlists else None,
                frames=media.frames,
                duration_s=media.duration_s,
                codec=rendition.codec if rendition else None,
                settings=rendition.settings if rendition else None,
            )
        )
    audio_media = input.audio_tracks or ([input.audio] if input.audio else [])
    planned = plan is not None and input.audio_planned
    audio = [
        AudioTarget(
            name=track.name,
            rep_id=str(len(videos) + i),
            playlist=result.audio_playlists[i],
            duration_s=media.duration_s,
            codec=track.codec if planned else None,
            channels=track.channels if planned else None,
        )
        for i, (track, media) in enumerate(zip(audio_plan, audio_media, strict=True))
    ]
    subtitles = [
        TextTarget(name=track.name, rep_id=track.name, playlist=playlist, whole=whole)
        for track, playlist, whole in zip(
            plan.subtitles if plan else [],
            result.subtitle_playlists,
            result.subtitle_files,
            strict=True,
        )
    ]
    sheets = result.thumbnails
    thumbnails = None
    if sheets is not None:
        thumbnails = ImageTarget(
            rep_id=THUMBNAILS_ID,
            playlist=sheets.hls_playlist,
            vtt=sheets.vtt,
            sheets=sheets.sheets,
            poster=sheets.poster,
        )
    return PackageExpectations(
        master=result.hls_master,
        mpd=result.dash_manifest,
        videos=videos,
        audio=audio,
        subtitles=subtitles,
        thumbnails=thumbnails,
        sizes=result.sizes,
    )


class PackageActivities(ActivityBase):
    @activity.defn(name="package")
    async def package(self, input: PackageInput) -> PackageResult:
        """Package on local disk; with S3 scratch the package is uploaded to the job's staging
        prefix, so the publishing step may run on any worker."""
        staging_uri = join(input.scratch_uri, input.job_id, "package")
        store = store_for(staging_uri, self.settings)
        local = isinstance(store, LocalStore)
        staging = self.scratch_path(staging_uri, input.job_id)
        if staging.exists():  # a retry starts from nothing, never from half a package
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        audio_media = input.audio_tracks or ([input.audio] if input.audio else [])
        audio_plan = [_legacy_audio()] * len(audio_media)
        if input.plan is not None and input.plan.audio is not None:
            audio_plan = input.plan.audio
        videos = [await self.fetch(m.uri, input.job_id) for m in input.videos]
        audio = [await self.fetch(m.uri, input.job_id) for m in audio_media]
        subtitles = [await self.fetch(m.uri, input.job_id) for m in input.subtitles]
        facts = [await asyncio.to_thread(video_facts, v) for v in videos]
        families: dict[tuple[str, str], list[int]] = {}
        for i, fact in enumerate(facts):
            families.setdefault(fact.family, []).append(i)
        # ffmpeg gets a set per video (it refuses one set of several picture aspect ratios,
        # as square-pixel ladders have); each family's set is joined again in its MPD
        alone = [[i] for i in range(len(videos))]
        await self.ffmpeg(
            package_args(videos, audio, staging, input.segment_seconds, alone),
            total_s=max(v.duration_s for v in input.videos),
            label="package",
        )
        families_by_id = [[str(i) for i in family] for family in families.values()]
        await asyncio.to_thread(join_video_sets, staging / DASH_MANIFEST, families_by_id)
        result = await asyncio.to_thread(
            self._manifests, staging, input, facts, audio_plan, subtitles
        )
        if input.thumbnails is not None:
            result = await self._thumbnails(staging, input.thumbnails, input.job_id, result)
        result = await self._validate(staging, expectations(input, result, audio_plan), result)
        if not local:
            await asyncio.to_thread(store.delete_prefix, staging_uri)
            await asyncio.to_thread(store.upload_tree, staging, staging_uri)
            shutil.rmtree(self.work_dir(input.job_id), ignore_errors=True)
        return result.model_copy(update={"staging_uri": staging_uri})

    def _manifests(
        self,
        staging: Path,
        input: PackageInput,
        facts: list[VideoFacts],
        audio_plan: list[AudioRendition],
        subtitles: list[Path],
    ) -> PackageResult:
        """The segments indexed, codec strings and bit rates measured from them, subtitles
        segmented, then every HLS playlist written and ffmpeg's MPD corrected."""
        n_video = len(facts)
        playlists = [f"media_{i}.m3u8" for i in range(n_video + len(audio_plan))]
        names = [m.name for m in input.videos] + [t.name for t in audio_plan]
        tracks = [_index(staging, i, names[i]) for i in range(len(playlists))]
        # The title lasts as long as its longest stream (the MPD's duration, the subtitles').
        duration_s = max(t.seconds(t.segments[-1].end) for t in tracks)
        for i, (name, index) in enumerate(zip(playlists, tracks, strict=True)):
            text = media_playlist(index, f"init-{i}.m4s", input.program_date_time)
            (staging / name).write_text(text, encoding="utf-8")
        codecs = {str(i): codec_string(staging / f"init-{i}.m4s") for i in range(len(playlists))}
        rates = [track_bitrate(index) for index in tracks]
        variants = []
        for i, fact in enumerate(facts):
            frames = iframes(tracks[i])
            iframe_uri = f"iframe_{i}.m3u8"
            (staging / iframe_uri).write_text(
                iframe_playlist(frames, f"init-{i}.m4s"), encoding="utf-8"
            )
            variants.append(
                VideoVariant(
                    uri=playlists[i],
                    bitrate=rates[i],
                    codecs=codecs[str(i)],
                    width=fact.width,
                    height=fact.height,
                    frame_rate=fact.frame_rate,
                    video_range=fact.video_range,
                    iframe_uri=iframe_uri,
                    iframe_bitrate=iframe_bitrate(frames),
                )
            )
        labels = track_labels(audio_plan)
        audio_entries = audio_groups(
            [
                AudioTrack(
                    uri=playlists[n_video + i],
                    source=(track.source_uri, track.source_index),
                    label=labels[i],
                    language=track.language,
                    default=track.default,
                    channels=track.channels,
                    codecs=codecs[str(n_video + i)],
                    bitrate=rates[n_video + i],
                )
                for i, track in enumerate(audio_plan)
            ]
        )
        subtitle_plan = input.plan.subtitles if input.plan else []
        sub_entries, text_sets, sub_playlists, sub_files = [], [], [], []
        for track, vtt, label in zip(
            subtitle_plan, subtitles, subtitle_labels(subtitle_plan), strict=True
        ):
            whole = f"{track.name}.vtt"
            shutil.copyfile(vtt, staging / whole)
            cues = parse_vtt((staging / whole).read_text(encoding="utf-8"))
            documents = segment_vtt(cues, input.segment_seconds, duration_s)
            bounds = segment_bounds(input.segment_seconds, duration_s)
            segments = []
            for n, (document, (start, end)) in enumerate(zip(documents, bounds, strict=True), 1):
                name = f"{track.name}-{n:05d}.vtt"
                (staging / name).write_text(document, encoding="utf-8")
                segments.append((name, end - start))
            playlist = f"{track.name}.m3u8"
            (staging / playlist).write_text(subtitle_playlist(segments), encoding="utf-8")
            sub_entries.append(
                SubtitleEntry(playlist, label, track.language, track.default, track.forced,
                              track.hearing_impaired)
            )  # fmt: skip
            size = (staging / whole).stat().st_size
            text_sets.append(
                TextSet(whole, track.name, track.language, label, track.forced,
                        track.hearing_impaired, bandwidth=max(1, round(size * 8 / duration_s)))
            )  # fmt: skip
            sub_playlists.append(playlist)
            sub_files.append(whole)
        (staging / HLS_MASTER).write_text(
            master_playlist(variants, audio_entries, sub_entries), encoding="utf-8"
        )
        rewrite(
            staging / DASH_MANIFEST,
            duration_s=duration_s,
            codecs=codecs,
            bandwidth={str(i): r.peak for i, r in enumerate(rates)},
            hdr={str(i): f.colour for i, f in enumerate(facts) if f.video_range != "SDR"},
            audio=[
                AudioSet(str(n_video + i), labels[i], track.language, track.default)
                for i, track in enumerate(audio_plan)
            ],
            text=text_sets,
        )
        checksums, sizes = {}, {}
        for rep_id in range(len(playlists)):
            files = _representation_files(staging, rep_id)
            checksums[str(rep_id)] = sha256_paths(files)
            sizes[str(rep_id)] = sum(f.stat().st_size for f in files)
        default_audio = next(
            (e.uri for e in audio_entries if e.default),
            audio_entries[0].uri if audio_entries else None,
        )
        return PackageResult(
            staging_uri="",
            hls_master=HLS_MASTER,
            dash_manifest=DASH_MANIFEST,
            video_playlists=playlists[:n_video],
            iframe_playlists=[v.iframe_uri for v in variants if v.iframe_uri],
            audio_playlist=default_audio,
            audio_playlists=playlists[n_video:],
            subtitle_playlists=sub_playlists,
            subtitle_files=sub_files,
            checksums=checksums,
            sizes=sizes,
            codecs=codecs,
            bandwidth={str(i): r.peak for i, r in enumerate(rates)},
        )

    async def _validate(
        self, staging: Path, expected: PackageExpectations, result: PackageResult
    ) -> PackageResult:
        """The validation pass over the written package (:func:`validate_package`); a failed
        check fails the job before anything is published, naming the rendition and the check."""
        loop = asyncio.get_running_loop()

        def progress(target: str) -> None:  # called from the pass's thread
            loop.call_soon_threadsafe(activity.heartbeat, {"label": f"validate {target}"})

        report = await asyncio.to_thread(validate_package, staging, expected, progress)
        failures = report.failures
        if failures:
            first = failures[0]
            more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
            raise ApplicationError(
                f"validation failed: {first.target}: {first.check}: {first.detail}{more}",
                type=VALIDATION_ERROR,
                non_retryable=True,
            )
        return result.model_copy(update={"validation": report})

    async def _thumbnails(
        self, staging: Path, media: ThumbnailMedia, job_id: str, result: PackageResult
    ) -> PackageResult:
        """The thumbnail track and the poster added to the written package (see
        :func:`package_thumbnails`)."""
        sheets = [await self.fetch(join(media.uri, name), job_id) for name in media.sheets]
        poster = await self.fetch(join(media.uri, media.poster), job_id)
        return await asyncio.to_thread(package_thumbnails, staging, media, sheets, poster, result)

    @activity.defn(name="publish_manifest")
    async def publish_manifest(self, input: PublishInput) -> Manifests:
        """Make the package public whole or not at all: on disk by renaming the folder into
        place; on S3 by copying every object and writing ``manifest.json`` last, so a prefix
        without it is never a finished job (and compensation removes it)."""
        job = input.job
        target = join(job.output_uri, job.job_id)
        package = input.package
        manifests = Manifests(
            hls=join(target, package.hls_master),
            dash=join(target, package.dash_manifest),
            manifest=join(target, JOB_MANIFEST),
        )
        out_store = store_for(target, self.settings)
        if await asyncio.to_thread(out_store.exists, manifests.manifest):
            return manifests  # published by an attempt whose completion was lost
        document = json.dumps(self._manifest(input), indent=2) + "\n"
        try:
            await asyncio.to_thread(self._publish, package.staging_uri, target, document)
        except OSError as err:
            raise ApplicationError(
                f"cannot write the outputs to {job.output_uri}: {err.strerror or err}",
                type="StorageError",
            ) from None
        return manifests

    def _publish(self, staging_uri: str, target: str, document: str) -> None:
        staging_store = store_for(staging_uri, self.settings)
        out_store = store_for(target, self.settings)
        if isinstance(staging_store, LocalStore) and isinstance(out_store, LocalStore):
            staging = uri_to_path(staging_uri)
            (staging / JOB_MANIFEST).write_text(document)
            publish_dir(staging, uri_to_path(target))
            return
        out_store.delete_prefix(target)  # nothing of an earlier, failed attempt survives
        if isinstance(staging_store, S3Store) and isinstance(out_store, S3Store):
            staging_store.copy_tree(staging_uri, target)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                local = self._materialize(staging_store, staging_uri, Path(tmp))
                out_store.upload_tree(local, target)
        with tempfile.TemporaryDirectory() as tmp:
            marker = Path(tmp) / JOB_MANIFEST
            marker.write_text(document)
            out_store.upload(marker, join(target, JOB_MANIFEST))
        staging_store.delete_prefix(staging_uri)

    @staticmethod
    def _materialize(store: Store, prefix: str, tmp: Path) -> Path:
        if isinstance(store, LocalStore):
            return uri_to_path(prefix)
        assert isinstance(store, S3Store)
        for key in store.keys(prefix):
            store.download(join(prefix, key.rsplit("/", 1)[-1]), tmp / key.rsplit("/", 1)[-1])
        return tmp

    def _manifest(self, input: PublishInput) -> dict[str, object]:
        job, package = input.job, input.package
        renditions = []
        for rep_id, media in enumerate(input.videos):
            rendition = next(r for r in input.plan.renditions if r.name == media.name)
            size = package.sizes.get(str(rep_id), media.size_bytes)
            renditions.append(
                {
                    "name": rendition.name,
                    "codec": rendition.codec,
                    "encoder": media.encoder or rendition.settings.encoder,
                    "settings": rendition.settings.model_dump(mode="json"),
                    "codecs": package.codecs.get(str(rep_id)),
                    "video_range": rendition.video_range,
                    "peak_bitrate_kbps": round(package.bandwidth.get(str(rep_id), 0) / 1000),
                    "pool": media.queue,
                    "width": rendition.width,
                    "height": rendition.height,
                    "sample_aspect_ratio": rendition.sample_aspect_ratio,
                    "display_aspect_change": rendition.display_aspect_change,
                    "bitrate_kbps": round(size * 8 / media.duration_s / 1000)
                    if media.duration_s
                    else 0,
                    "duration_s": media.duration_s,
                    "frame_count": media.frames,
                    "checksum": package.checksums.get(str(rep_id), media.checksum),
                    "hls_playlist": package.video_playlists[rep_id],
                    "hls_iframe_playlist": package.iframe_playlists[rep_id]
                    if package.iframe_playlists
                    else None,
                    "dash_representation_id": str(rep_id),
                }
            )
        audio_media = input.audio_tracks or ([input.audio] if input.audio else [])
        audio_plan = input.plan.audio if input.plan.audio is not None else [_legacy_audio()]
        tracks = []
        for i, (track, media) in enumerate(zip(audio_plan, audio_media, strict=False)):
            rep = str(len(input.videos) + i)
            tracks.append(
                {
                    "name": track.name,
                    "language": track.language,
                    "title": track.title,
                    "default": track.default,
                    "codec": track.codec,
                    "codecs": package.codecs.get(rep),
                    "channels": track.channels,
                    "sample_rate": track.sample_rate,
                    "bitrate_kbps": track.bitrate_kbps,
                    "source": track.source_uri or f"source stream #{track.source_index}",
                    "duration_s": media.duration_s,
                    "loudness": media.loudness.model_dump() if media.loudness else None,
                    "checksum": package.checksums.get(rep, media.checksum),
                    "hls_playlist": package.audio_playlists[i]
                    if package.audio_playlists
                    else package.audio_playlist,
                    "dash_representation_id": rep,
                }
            )
        subtitles = [
            {
                "name": track.name,
                "language": track.language,
                "title": track.title,
                "forced": track.forced,
                "hearing_impaired": track.hearing_impaired,
                "source": track.source_uri or f"source stream #{track.source_index}",
                "format": "webvtt",
                "cues": media.cues,
                "hls_playlist": playlist,
                "webvtt": whole,
            }
            for track, media, playlist, whole in zip(
                input.plan.subtitles,
                input.subtitles,
                package.subtitle_playlists,
                package.subtitle_files,
                strict=True,
            )
        ]
        default = next((t for t in tracks if t["default"]), tracks[0] if tracks else None)
        return {
            "job_id": job.job_id,
            "created_at": datetime.now(UTC).isoformat(),
            "source": {"uri": job.source_uri, **input.probe.model_dump(mode="json")},
            "segment_seconds": input.plan.segment_seconds,
            "renditions": renditions,
            "audio": default,
            "audio_tracks": tracks,
            "subtitles": subtitles,
            "thumbnails": _thumbnail_entry(package),
            "poster": package.thumbnails.poster if package.thumbnails else None,
            "dropped": [d.model_dump() for d in input.plan.dropped],
            "not_carried": [n.model_dump() for n in input.plan.not_carried],
            "manifests": {"hls": package.hls_master, "dash": package.dash_manifest},
            "quality": input.quality.model_dump(mode="json", exclude={"stage_seconds"})
            if input.quality
            else None,
            "ladder_analysis": input.ladder_analysis.model_dump(mode="json")
            if input.ladder_analysis
            else None,
            "chunking": input.chunking.model_dump() if input.chunking else None,
            "stage_seconds": input.stage_seconds,
            "validation": package.validation.model_dump() if package.validation else None,
        }
