"""Local files behind ``file://`` URIs: the conversions, and publishing a folder atomically.

Payloads carry URIs only; activities resolve them to files here or move them through an
object store (``app/storage/object_store.py``, which also serves ``s3://``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse


class StorageError(ValueError):
    """A URI this deployment cannot serve."""


def uri_to_path(uri: str) -> Path:
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        raise StorageError(f"unsupported storage URI scheme {parsed.scheme!r} in {uri!r}")
    if parsed.netloc not in ("", "localhost"):
        raise StorageError(f"file URIs must not name a host: {uri!r}")
    # surrogateescape: file names need not be UTF-8, and as_uri() quotes their raw bytes.
    return Path(unquote(parsed.path, errors="surrogateescape"))


def path_to_uri(path: Path) -> str:
    return path.absolute().as_uri()


def remove_tree(path: Path) -> bool:
    """Remove a job's folder; True if something was there."""
    if not path.exists():
        return False
    shutil.rmtree(path)
    return True


def publish_dir(staging: Path, target: Path) -> None:
    """Make a finished folder appear at ``target`` whole or not at all.

    A rename is atomic on one file system; across file systems the copy goes to a hidden
    sibling first and is renamed into place.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(target)
    try:
        os.rename(staging, target)
    except OSError:
        tmp = partial_dir(target)
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            shutil.copytree(staging, tmp)
            os.rename(tmp, target)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)  # a full disk leaves nothing half-copied
            raise
        shutil.rmtree(staging, ignore_errors=True)


def partial_dir(target: Path) -> Path:
    return target.with_name(f".{target.name}.partial")
