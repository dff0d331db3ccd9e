"""package and publish-manifest: HLS + DASH over one set of CMAF segments, then make it public."""

from __future__ import annotations

import asyncio
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

from temporalio import activity
from temporalio.exceptions import ApplicationError

from app.activities.common import ActivityBase, input_args, sha256_files
from app.models import EncodedMedia, Manifests, PackageInput, PackageResult, PublishInput
from app.storage import job_dir, path_to_uri, publish_dir, uri_to_path

HLS_MASTER = "master.m3u8"
DASH_MANIFEST = "manifest.mpd"
JOB_MANIFEST = "manifest.json"


def package_args(
    videos: list[Path], audio: Path | None, out_dir: Path, segment_seconds: int
) -> list[str]:
    """One ffmpeg dash muxer run, stream copy: fMP4 segments plus an MPD and, from the same
    segments, HLS media playlists and a master playlist (``-hls_playlist``)."""
    args: list[str] = []
    inputs = [*videos, *([audio] if audio else [])]
    for path in inputs:
        args += input_args(path, "mov")
    for i in range(len(videos)):
        args += ["-map", f"{i}:v:0"]
    sets = ["id=0,streams=v"]
    if audio:
        args += ["-map", f"{len(videos)}:a:0"]
        sets.append("id=1,streams=a")
    args += [
        "-c", "copy", "-f", "dash",
        "-seg_duration", str(segment_seconds),
        "-use_template", "1", "-use_timeline", "1",
        "-hls_playlist", "1", "-hls_master_name", HLS_MASTER,
        "-adaptation_sets", " ".join(sets),
        "-init_seg_name", "init-$RepresentationID$.m4s",
        "-media_seg_name", "chunk-$RepresentationID$-$Number%05d$.m4s",
        "-y", str(out_dir / DASH_MANIFEST),
    ]  # fmt: skip
    return args


def _representation_files(staging: Path, rep_id: int) -> list[Path]:
    return [staging / f"init-{rep_id}.m4s", *sorted(staging.glob(f"chunk-{rep_id}-*.m4s"))]


class PackageActivities(ActivityBase):
    @activity.defn(name="package")
    async def package(self, input: PackageInput) -> PackageResult:
        staging = job_dir(input.scratch_uri, input.job_id) / "package"
        if staging.exists():  # a retry starts from nothing, never from half a package
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        videos = [uri_to_path(v.uri) for v in input.videos]
        audio = uri_to_path(input.audio.uri) if input.audio else None
        duration = max(v.duration_s for v in input.videos)
        await self.ffmpeg(
            package_args(videos, audio, staging, input.segment_seconds),
            total_s=duration,
            label="package",
        )
        return PackageResult(
            staging_uri=path_to_uri(staging),
            hls_master=HLS_MASTER,
            dash_manifest=DASH_MANIFEST,
            video_playlists=[f"media_{i}.m3u8" for i in range(len(videos))],
            audio_playlist=f"media_{len(videos)}.m3u8" if audio else None,
        )

    @activity.defn(name="publish_manifest")
    async def publish_manifest(self, input: PublishInput) -> Manifests:
        """Write ``manifest.json`` and move the package into place in one step: the output
        folder either does not exist or is whole."""
        job = input.job
        target = job_dir(job.output_uri, job.job_id)
        staging = uri_to_path(input.package.staging_uri)
        manifests = Manifests(
            hls=path_to_uri(target / input.package.hls_master),
            dash=path_to_uri(target / input.package.dash_manifest),
            manifest=path_to_uri(target / JOB_MANIFEST),
        )
        if not staging.exists() and (target / JOB_MANIFEST).exists():
            return manifests  # published by an attempt whose completion was lost
        document = {
            "job_id": job.job_id,
            "created_at": datetime.now(UTC).isoformat(),
            "source": {"uri": job.source_uri, **input.probe.model_dump(mode="json")},
            "segment_seconds": input.plan.segment_seconds,
            "renditions": [
                await self._rendition_entry(input, staging, i, media)
                for i, media in enumerate(input.videos)
            ],
            "audio": await self._audio_entry(input, staging),
            "dropped": [d.model_dump() for d in input.plan.dropped],
            "manifests": {"hls": input.package.hls_master, "dash": input.package.dash_manifest},
            "stage_seconds": input.stage_seconds,
        }
        (staging / JOB_MANIFEST).write_text(json.dumps(document, indent=2) + "\n")
        try:
            await asyncio.to_thread(publish_dir, staging, target)
        except OSError as err:
            raise ApplicationError(
                f"cannot write the outputs to {target.parent}: {err.strerror or err}",
                type="StorageError",
            ) from None
        return manifests

    async def _rendition_entry(
        self, input: PublishInput, staging: Path, rep_id: int, media: EncodedMedia
    ) -> dict[str, object]:
        rendition = next(r for r in input.plan.renditions if r.name == media.name)
        files = _representation_files(staging, rep_id)
        size = sum(f.stat().st_size for f in files)
        return {
            "name": rendition.name,
            "codec": rendition.codec,
            "encoder": media.encoder or rendition.settings.encoder,
            "settings": rendition.settings.model_dump(),
            "pool": media.queue,
            "width": rendition.width,
            "height": rendition.height,
            "sample_aspect_ratio": rendition.sample_aspect_ratio,
            "bitrate_kbps": round(size * 8 / media.duration_s / 1000) if media.duration_s else 0,
            "duration_s": media.duration_s,
            "frame_count": media.frames,
            "checksum": await sha256_files(files),
            "hls_playlist": input.package.video_playlists[rep_id],
            "dash_representation_id": str(rep_id),
        }

    async def _audio_entry(self, input: PublishInput, staging: Path) -> dict[str, object] | None:
        if input.audio is None or input.package.audio_playlist is None:
            return None
        rep_id = len(input.videos)
        return {
            "codec": "aac",
            "channels": 2,
            "duration_s": input.audio.duration_s,
            "checksum": await sha256_files(_representation_files(staging, rep_id)),
            "hls_playlist": input.package.audio_playlist,
            "dash_representation_id": str(rep_id),
        }
