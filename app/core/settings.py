"""Every setting of the platform, read once from the environment (``COSMOS_*``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.core.models import DEFAULT_WINDOW


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COSMOS_", extra="ignore")

    data_dir: Path = Field(Path(".cosmos"), description="Server state, samples, scratch, outputs.")
    temporal_address: str = Field("localhost:7233", description="Temporal frontend host:port.")
    namespace: str = Field("default", description="Temporal namespace.")
    source_roots: str = Field(
        "", description="Colon-separated folders sources may be read from (plus the data dir)."
    )
    output_uri: str | None = Field(
        None, description="Where outputs go; default file://<data dir>/outputs."
    )
    scratch_uri: str | None = Field(
        None, description="Intermediate files; default file://<data dir>/scratch."
    )
    pipelines_uri: str | None = Field(
        None, description="Registered Plato definitions; default file://<data dir>/pipelines."
    )
    pipeline_max_firings: int = Field(
        2000, ge=1, description="Rule firings one pipeline run may make (the runaway guard)."
    )
    pipeline_max_firings_ceiling: int = Field(
        100_000, ge=1, description="The most a definition's own max_firings may raise it to."
    )
    pipeline_max_parallel: int = Field(
        8, ge=1, le=1000, description="Fan-out items one run keeps in flight, by default."
    )
    web_ui_url: str = Field("http://localhost:8233", description="Temporal Web UI base URL.")
    api_url: str = Field("http://127.0.0.1:8000", description="Where the CLI finds the API.")
    ffmpeg_path: str | None = Field(
        None, description="ffmpeg binary; default the one shipped by imageio-ffmpeg."
    )
    activity_max_attempts: int = Field(3, ge=1, le=20, description="Attempts per activity.")
    heartbeat_timeout_s: float = Field(
        30.0, gt=0, description="An ffmpeg run with no progress for this long is killed."
    )
    worker_max_activities: int | None = Field(
        None, ge=1, description="Concurrent activities per worker; default from the core count."
    )
    worker_cores: int | None = Field(
        None,
        ge=1,
        description="Cores this worker sizes its encodes for (its share when several workers"
        " share a machine, as `cosmos dev --workers N` runs them); default all of them.",
    )
    worker_name: str = Field(
        "", description="Added to this worker's Temporal identity (pid@host NAME)."
    )
    worker_shutdown_grace_s: float = Field(
        30.0, ge=0, description="How long a stopping worker lets running work finish."
    )
    gpu_schedule_to_start_s: float = Field(
        60.0, gt=0, description="GPU work waiting longer than this for a worker goes to CPU."
    )
    chunk_window: int = Field(
        DEFAULT_WINDOW, ge=1, le=1000, description="Chunk tasks one job keeps in flight, at most."
    )
    nvenc_sessions_per_gpu: int = Field(
        3, ge=1, le=64, description="Concurrent hardware encodes per GPU."
    )
    api_keys: str = Field(
        "", description="Comma-separated API keys; when set, every endpoint but health needs one."
    )
    api_key: str | None = Field(None, description="The key the CLI sends (default: the first).")
    admin_api_keys: str = Field(
        "",
        description="Comma-separated admin API keys: they may also register command functions"
        " (POST /v1/functions); none by default.",
    )
    command_programs: str = Field(
        "ffmpeg",
        description="Comma-separated programs a command function may run (ffmpeg: the"
        " platform's own ffmpeg binary; others are looked up on PATH).",
    )
    webhook_allowed_hosts: str = Field(
        "", description="Comma-separated webhook hosts allowed although private or loopback."
    )
    webhook_secret: SecretStr | None = Field(
        None,
        description="Signs every webhook event (HMAC-SHA256) unless the job gives its own;"
        " a job with a webhook needs one or the other.",
    )
    webhook_retry_hours: float = Field(
        24.0, gt=0, le=720, description="How long an event's delivery is retried."
    )
    webhook_progress_step: int = Field(
        10, ge=1, le=100, description="A job.progress event every this many percent."
    )
    s3_endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint (MinIO, SeaweedFS); AWS S3 when unset."
    )
    source_buckets: str = Field(
        "", description="Comma-separated S3 buckets sources may be read from."
    )
    max_source_bytes: int = Field(
        200 * 1024**3, ge=1, description="Largest source a worker will download from S3."
    )
    payload_keys: str = Field(
        "",
        description="Comma-separated key-id=base64(32-byte key) pairs; the first encrypts, all"
        " decrypt; empty = payloads are not encrypted.",
    )
    metrics_port: int | None = Field(
        None,
        ge=1,
        le=65534,
        description="Prometheus /metrics port of this process (Temporal SDK metrics on the port"
        " after it); off when unset.",
    )
    codec_cors_origins: str = Field(
        "",
        description="Comma-separated origins allowed to call the codec server, e.g. the Web UI's"
        " http://localhost:8233; default: the Web UI URL's origin.",
    )

    @field_validator("payload_keys")
    @classmethod
    def _check_payload_keys(cls, value: str) -> str:
        """A bad key fails the process at start-up, not its first workflow task."""
        from app.core.codec import parse_keys

        parse_keys(value)
        return value

    @property
    def data_path(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def allowed_source_roots(self) -> list[Path]:
        roots = [self.data_path]
        roots += [Path(p).expanduser().resolve() for p in self.source_roots.split(":") if p.strip()]
        return roots

    @property
    def source_bucket_set(self) -> set[str]:
        return {b.strip() for b in self.source_buckets.split(",") if b.strip()}

    @property
    def api_key_list(self) -> list[str]:
        return [k.strip() for k in self.api_keys.split(",") if k.strip()]

    @property
    def admin_api_key_list(self) -> list[str]:
        return [k.strip() for k in self.admin_api_keys.split(",") if k.strip()]

    @property
    def command_program_set(self) -> set[str]:
        return {p.strip() for p in self.command_programs.split(",") if p.strip()}

    @property
    def webhook_hosts(self) -> set[str]:
        return {h.strip() for h in self.webhook_allowed_hosts.split(",") if h.strip()}

    @property
    def codec_origins(self) -> list[str]:
        origins = [o.strip().rstrip("/") for o in self.codec_cors_origins.split(",") if o.strip()]
        if origins:
            return origins
        ui = urlsplit(self.web_ui_url)
        return [f"{ui.scheme}://{ui.netloc}"]

    @property
    def resolved_output_uri(self) -> str:
        return self.output_uri or (self.data_path / "outputs").as_uri()

    @property
    def resolved_scratch_uri(self) -> str:
        return self.scratch_uri or (self.data_path / "scratch").as_uri()

    @property
    def resolved_pipelines_uri(self) -> str:
        return self.pipelines_uri or (self.data_path / "pipelines").as_uri()

    def workflow_ui_link(self, workflow_id: str) -> str:
        return f"{self.web_ui_url.rstrip('/')}/namespaces/{self.namespace}/workflows/{workflow_id}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
