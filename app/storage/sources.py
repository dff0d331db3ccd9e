"""Which sources a job may read: local files under the allowed roots, nothing else."""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from pathlib import Path
from urllib.parse import urlparse

from app.storage.local import StorageError, path_to_uri, uri_to_path

OUTSIDE = "source is outside the allowed roots (the data dir and COSMOS_SOURCE_ROOTS)"


class SourceError(ValueError):
    """A source the platform refuses to read; the message is safe to show to the client."""


def _is_under(path: Path, roots: list[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def resolve_source(source: str, roots: list[Path], buckets: AbstractSet[str] = frozenset()) -> str:
    """Validate a user-given source and return the ``file://`` URI of the real file.

    Refuses other schemes (ffmpeg would happily open http:, concat:, subfile: ...), ``..``,
    symlinks that lead outside the roots, and anything that is not a non-empty regular file.
    """
    if "\x00" in source:
        raise SourceError("source contains a NUL byte")
    scheme = urlparse(source).scheme
    if scheme == "file":
        try:
            path = uri_to_path(source)
        except StorageError as err:
            raise SourceError(str(err)) from None
    elif scheme == "s3" and buckets:
        return check_s3_source(source, buckets)
    elif scheme and ("://" in source or len(scheme) > 1):
        raise SourceError(f"source scheme {scheme!r} is not allowed; give a local path or file://")
    else:
        path = Path(source)
    if "\x00" in str(path):
        raise SourceError("source contains a NUL byte")
    if ".." in path.parts:
        raise SourceError("source path must not contain '..'")
    if not path.is_absolute():
        raise SourceError("source path must be absolute")
    real_roots = [root.resolve() for root in roots]
    inside = _is_under(path, real_roots) or _is_under(path, roots)
    try:
        real = path.resolve(strict=True)
    except (FileNotFoundError, NotADirectoryError, RuntimeError):
        # Say nothing about files outside the roots, not even whether they exist.
        if not inside:
            raise SourceError(OUTSIDE) from None
        raise SourceError("source file does not exist") from None
    if not _is_under(real, real_roots):
        if inside:
            raise SourceError("source resolves (through a symlink) outside the allowed roots")
        raise SourceError(OUTSIDE)
    if not real.is_file():
        raise SourceError("source is not a regular file")
    if real.stat().st_size == 0:
        raise SourceError("source file is empty")
    return path_to_uri(real)


def check_s3_source(uri: str, buckets: AbstractSet[str]) -> str:
    """``s3://bucket/key`` from a bucket the operator opened for sources (none by default)."""
    parsed = urlparse(uri)
    key = parsed.path.lstrip("/")
    if parsed.netloc not in buckets:
        raise SourceError(
            f"S3 bucket {parsed.netloc!r} is not an allowed source (COSMOS_SOURCE_BUCKETS)"
        )
    if not key or key.endswith("/") or parsed.query or parsed.fragment or "\x00" in key:
        raise SourceError("S3 sources must name one object: s3://bucket/key")
    return uri


def source_path(uri: str, roots: list[Path]) -> Path:
    """The worker's own check of a URI it was handed (defence in depth)."""
    return uri_to_path(resolve_source(uri, roots))
