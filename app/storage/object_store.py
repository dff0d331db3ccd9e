"""The object stores behind storage URIs: a local folder (``file://``) or S3 (``s3://``).

Activities work on local files; these stores move those files to and from where the job keeps
them. S3 goes through boto3's managed transfer (multipart, SHA-256 checksums), streamed to and
from disk so a film is never held in memory.
"""

from __future__ import annotations

import shutil
import threading
import uuid
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from app.core.settings import Settings
from app.storage.local import StorageError, path_to_uri, remove_tree, uri_to_path

MIB = 1024 * 1024


class UploadCancelled(Exception):
    """Raised inside boto3's transfer to stop it."""


class Store(Protocol):
    def exists(self, uri: str) -> bool: ...
    def size(self, uri: str) -> int: ...
    def read_bytes(self, uri: str, limit: int) -> bytes: ...
    def names(self, prefix: str) -> list[str]: ...
    def download(self, uri: str, dest: Path) -> None: ...
    def upload(self, src: Path, uri: str, cancelled: threading.Event | None = None) -> None: ...
    def upload_tree(self, src: Path, prefix: str, last: Sequence[str] = ()) -> None: ...
    def delete_prefix(self, prefix: str) -> int: ...
    def presign(self, uri: str, expires_s: int = 3600) -> str: ...


def join(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *(p.strip("/") for p in parts)])


def _tree(src: Path, last: Sequence[str]) -> list[Path]:
    """Every file under ``src``, the ones named in ``last`` at the end (completion markers)."""
    files = sorted(p for p in src.rglob("*") if p.is_file())
    return [p for p in files if p.name not in last] + [p for p in files if p.name in last]


class LocalStore:
    def exists(self, uri: str) -> bool:
        return uri_to_path(uri).exists()

    def size(self, uri: str) -> int:
        return uri_to_path(uri).stat().st_size

    def read_bytes(self, uri: str, limit: int) -> bytes:
        """A small object whole; ValueError past ``limit`` bytes."""
        with uri_to_path(uri).open("rb") as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise ValueError(f"{uri} is over {limit} bytes")
        return data

    def names(self, prefix: str) -> list[str]:
        """Every object under ``prefix``, as paths relative to it."""
        root = uri_to_path(prefix)
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())

    def download(self, uri: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(uri_to_path(uri), dest)

    def upload(self, src: Path, uri: str, cancelled: threading.Event | None = None) -> None:
        target = uri_to_path(uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)

    def upload_tree(self, src: Path, prefix: str, last: Sequence[str] = ()) -> None:
        for path in _tree(src, last):
            self.upload(path, path_to_uri(uri_to_path(prefix) / path.relative_to(src)))

    def delete_prefix(self, prefix: str) -> int:
        return int(remove_tree(uri_to_path(prefix)))

    def presign(self, uri: str, expires_s: int = 3600) -> str:
        return uri


class S3Store:
    def __init__(self, settings: Settings) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig

        self.client: Any = boto3.client("s3", endpoint_url=settings.s3_endpoint_url)
        self.transfer = TransferConfig(multipart_threshold=64 * MIB, multipart_chunksize=64 * MIB)

    @staticmethod
    def _split(uri: str) -> tuple[str, str]:
        parsed = urlparse(uri)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise StorageError(f"not an s3://bucket/key URI: {uri!r}")
        return parsed.netloc, parsed.path.lstrip("/")

    def exists(self, uri: str) -> bool:
        try:
            self.size(uri)
        except FileNotFoundError:
            return False
        return True

    def size(self, uri: str) -> int:
        from botocore.exceptions import ClientError

        bucket, key = self._split(uri)
        try:
            return int(self.client.head_object(Bucket=bucket, Key=key)["ContentLength"])
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise FileNotFoundError(uri) from None
            raise

    def read_bytes(self, uri: str, limit: int) -> bytes:
        """A small object whole (a playlist): FileNotFoundError where there is none,
        ValueError past ``limit`` bytes."""
        from botocore.exceptions import ClientError

        bucket, key = self._split(uri)
        try:
            response = self.client.get_object(Bucket=bucket, Key=key)
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise FileNotFoundError(uri) from None
            raise
        body = response["Body"]
        try:
            if int(response.get("ContentLength", 0)) > limit:
                raise ValueError(f"{uri} is over {limit} bytes")
            data: bytes = body.read(limit + 1)
        finally:
            body.close()
        if len(data) > limit:
            raise ValueError(f"{uri} is over {limit} bytes")
        return data

    def download(self, uri: str, dest: Path) -> None:
        bucket, key = self._split(uri)
        dest.parent.mkdir(parents=True, exist_ok=True)
        # Its own partial name: two activities of one job may fetch the same object at once.
        part = dest.with_name(f"{dest.name}.{uuid.uuid4().hex[:12]}.part")
        try:
            self.client.download_file(bucket, key, str(part), Config=self.transfer)
            part.replace(dest)
        finally:
            part.unlink(missing_ok=True)

    def upload(self, src: Path, uri: str, cancelled: threading.Event | None = None) -> None:
        """``cancelled``: set by the caller that gave up (a cancelled activity), the transfer
        stops at its next chunk (a multipart upload is aborted), so an upload that a cut-off
        worker resumes cannot land after the job's cleanup."""
        bucket, key = self._split(uri)

        def progress(_: int) -> None:
            if cancelled is not None and cancelled.is_set():
                raise UploadCancelled(f"upload of {uri} cancelled")

        self.client.upload_file(
            str(src), bucket, key, Config=self.transfer,
            ExtraArgs={"ChecksumAlgorithm": "SHA256"}, Callback=progress,
        )  # fmt: skip

    def upload_tree(self, src: Path, prefix: str, last: Sequence[str] = ()) -> None:
        for path in _tree(src, last):
            self.upload(path, join(prefix, path.relative_to(src).as_posix()))

    def keys(self, prefix: str) -> list[str]:
        bucket, key = self._split(prefix)
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=key.rstrip("/") + "/"
        )
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]

    def names(self, prefix: str) -> list[str]:
        """Every object under ``prefix``, as paths relative to it."""
        _, key = self._split(prefix)
        return sorted(k[len(key.rstrip("/")) + 1 :] for k in self.keys(prefix))

    def copy_tree(self, src_prefix: str, dst_prefix: str, last: Sequence[str] = ()) -> None:
        """Server-side copies: the bytes never come through this worker."""
        bucket, src_key = self._split(src_prefix)
        dst_bucket, dst_key = self._split(dst_prefix)
        keys = sorted(self.keys(src_prefix), key=lambda k: (k.rsplit("/", 1)[-1] in last, k))
        for key in keys:
            relative = key[len(src_key.rstrip("/")) + 1 :]
            self.client.copy(
                {"Bucket": bucket, "Key": key}, dst_bucket, f"{dst_key.rstrip('/')}/{relative}",
                Config=self.transfer,
            )  # fmt: skip

    def delete_prefix(self, prefix: str) -> int:
        bucket, _ = self._split(prefix)
        keys = self.keys(prefix)
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start : start + 1000]]
            self.client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
        return len(keys)

    def presign(self, uri: str, expires_s: int = 3600) -> str:
        bucket, key = self._split(uri)
        url: str = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires_s
        )
        return url


@lru_cache(maxsize=8)
def _s3(endpoint_url: str | None) -> S3Store:
    """One client per endpoint and process: boto3 clients are thread-safe and slow to make."""
    return S3Store(Settings(s3_endpoint_url=endpoint_url))


def store_for(uri: str, settings: Settings) -> Store:
    scheme = urlparse(uri).scheme
    if scheme == "file":
        return LocalStore()
    if scheme == "s3":
        return _s3(settings.s3_endpoint_url)
    raise StorageError(f"unsupported storage URI scheme {scheme!r} in {uri!r}")


def storage_problem(uri: str, settings: Settings, timeout_s: float = 5.0) -> str | None:
    """Why the store behind ``uri`` cannot be used now, in a few words; None when it can.

    ``s3://``: one HeadBucket on its bucket, one attempt with short timeouts (a worker checks
    this before it takes any task, so it must not hang for boto3's minute of retries). A local
    folder is always usable: it is created on first write."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3":
        return None
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    # A session of its own: credentials are read afresh at every check.
    client: Any = boto3.session.Session().client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        config=Config(
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
            retries={"total_max_attempts": 1, "mode": "standard"},
        ),
    )
    endpoint = client.meta.endpoint_url
    bucket = parsed.netloc
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as err:
        code = str(err.response.get("Error", {}).get("Code", "")) or "error"
        if code in ("404", "NoSuchBucket", "NotFound"):
            return f"s3 bucket {bucket} does not exist at {endpoint}"
        if code in ("403", "AccessDenied", "Forbidden"):
            return f"s3 bucket {bucket} at {endpoint}: access denied (check the AWS_* credentials)"
        return f"s3 bucket {bucket} at {endpoint}: {code}"
    except NoCredentialsError:
        return f"no S3 credentials for {endpoint} (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"
    except BotoCoreError as err:
        return f"s3 endpoint {endpoint} unreachable ({_network_reason(err, timeout_s)})"
    return None


def _network_reason(err: BaseException, timeout_s: float) -> str:
    """The OS's words for a failed connection (``Connection refused``, ``No route to host``),
    found down the exception's causes; a timeout says how long it waited."""
    from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError

    if isinstance(err, ConnectTimeoutError):
        return f"no answer to connect within {timeout_s:g}s"
    if isinstance(err, ReadTimeoutError):
        return f"no reply within {timeout_s:g}s"
    seen: set[int] = set()
    todo: list[BaseException] = [err]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            return current.strerror
        kwargs = getattr(current, "kwargs", None)
        nested = [kwargs.get("error")] if isinstance(kwargs, dict) else []
        for e in [current.__cause__, current.__context__, *nested, *current.args]:
            if isinstance(e, BaseException):
                todo.append(e)
    return str(err) or type(err).__name__
