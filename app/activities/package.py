"""package and publish-manifest: HLS + DASH over one set of CMAF segments, then make it public."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from temporalio import activity
from temporalio.exceptions import ApplicationError

from app.activities.common import ActivityBase, input_args, sha256_files
from app.models import Manifests, PackageInput, PackageResult, PublishInput
from app.object_store import LocalStore, S3Store, Store, join, store_for
from app.storage import publish_dir, uri_to_path

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
        """Package on local disk; with S3 scratch the package is uploaded to the job's staging
        prefix, so the publishing step may run on any worker."""
        staging_uri = join(input.scratch_uri, input.job_id, "package")
        store = store_for(staging_uri, self.settings)
        local = isinstance(store, LocalStore)
        staging = self.scratch_path(staging_uri, input.job_id)
        if staging.exists():  # a retry starts from nothing, never from half a package
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        media = [*input.videos, *([input.audio] if input.audio else [])]
        paths = [await self.fetch(m.uri, input.job_id) for m in media]
        videos, audio = paths[: len(input.videos)], paths[len(input.videos) :]
        await self.ffmpeg(
            package_args(videos, audio[0] if audio else None, staging, input.segment_seconds),
            total_s=max(v.duration_s for v in input.videos),
            label="package",
        )
        checksums, sizes = {}, {}
        for rep_id in range(len(paths)):
            files = _representation_files(staging, rep_id)
            checksums[str(rep_id)] = await sha256_files(files)
            sizes[str(rep_id)] = sum(f.stat().st_size for f in files)
        if not local:
            await asyncio.to_thread(store.delete_prefix, staging_uri)
            await asyncio.to_thread(store.upload_tree, staging, staging_uri)
            shutil.rmtree(self.work_dir(input.job_id), ignore_errors=True)
        return PackageResult(
            staging_uri=staging_uri,
            hls_master=HLS_MASTER,
            dash_manifest=DASH_MANIFEST,
            video_playlists=[f"media_{i}.m3u8" for i in range(len(videos))],
            audio_playlist=f"media_{len(videos)}.m3u8" if audio else None,
            checksums=checksums,
            sizes=sizes,
        )

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
                    "settings": rendition.settings.model_dump(),
                    "pool": media.queue,
                    "width": rendition.width,
                    "height": rendition.height,
                    "sample_aspect_ratio": rendition.sample_aspect_ratio,
                    "bitrate_kbps": round(size * 8 / media.duration_s / 1000)
                    if media.duration_s
                    else 0,
                    "duration_s": media.duration_s,
                    "frame_count": media.frames,
                    "checksum": package.checksums.get(str(rep_id), media.checksum),
                    "hls_playlist": package.video_playlists[rep_id],
                    "dash_representation_id": str(rep_id),
                }
            )
        audio = None
        if input.audio is not None and package.audio_playlist is not None:
            rep_id = len(input.videos)
            audio = {
                "codec": "aac",
                "channels": 2,
                "duration_s": input.audio.duration_s,
                "checksum": package.checksums.get(str(rep_id), input.audio.checksum),
                "hls_playlist": package.audio_playlist,
                "dash_representation_id": str(rep_id),
            }
        return {
            "job_id": job.job_id,
            "created_at": datetime.now(UTC).isoformat(),
            "source": {"uri": job.source_uri, **input.probe.model_dump(mode="json")},
            "segment_seconds": input.plan.segment_seconds,
            "renditions": renditions,
            "audio": audio,
            "dropped": [d.model_dump() for d in input.plan.dropped],
            "manifests": {"hls": package.hls_master, "dash": package.dash_manifest},
            "stage_seconds": input.stage_seconds,
        }
