"""Static checks of the container deployment: docker-compose.temporal.yml, .env.example, the
Dockerfile and deploy/ agree with each other and with the code. No Docker needed; runs in
milliseconds."""

from __future__ import annotations

import ast
import json
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from app.core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.temporal.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
COLLECTOR_CONFIG = ROOT / "deploy" / "otel-collector.yaml"

EXPECTED = {
    "minio",
    "minio-create-bucket",
    "otel-healthcheck-tool",
    "otel-collector",
    "postgresql",
    "temporal-admin-tools",
    "temporal",
    "temporal-create-namespace",
    "temporal-ui",
    "api",
    "worker-cpu",
    "worker-gpu",
}
APP_SERVICES = ("api", "worker-cpu", "worker-gpu")
ONE_SHOT_JOBS = {
    "temporal-admin-tools",
    "temporal-create-namespace",
    "minio-create-bucket",
    "otel-healthcheck-tool",
}

# Variables the app reads that are not its own settings: read by boto3 and the OpenTelemetry SDK
# themselves, so only their standard names work. The first group every app container must have.
REQUIRED_STANDARD_VARIABLES = {
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_SERVICE_NAME",
}
STANDARD_VARIABLES = REQUIRED_STANDARD_VARIABLES | {
    "AWS_REGION",
    "AWS_SESSION_TOKEN",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
}
# Being added to app/core/settings.py as `metrics_port`; until it lands it is the one COSMOS_* name
# that need not be a Settings field (test_cosmos_variables_are_settings_fields).
METRICS_PORT = "COSMOS_METRICS_PORT"

# Compose interpolation: `$$` is a literal `$`; ${VAR}, ${VAR:-default}, ${VAR:?error}.
_INTERPOLATION = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?([-?])([^}]*))?\}")


def read_env_file(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep and key == key.strip(), f"{path.name}: not KEY=VALUE: {raw!r}"
            env[key] = value
    return env


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Resolve every string the way `docker compose` does with .env.example copied to .env."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, default = match.groups()
        if env.get(name):
            return env[name]
        assert op == "-", f"${{{name}}} is used by the compose file but not set in .env.example"
        return default

    if isinstance(value, str):
        return _INTERPOLATION.sub(substitute, value)
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    return value


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def compose(env: dict[str, str]) -> dict[str, Any]:
    loaded = interpolate(yaml.safe_load(COMPOSE.read_text()), env)
    assert isinstance(loaded, dict) and isinstance(loaded.get("services"), dict)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = compose["services"]
    return services


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): str(v) for k, v in env.items()}


def command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def option(args: list[str], name: str) -> str:
    assert name in args, f"{name} missing from {args}"
    return args[args.index(name) + 1]


def ports(service: dict[str, Any]) -> list[tuple[int | None, int]]:
    """(host port or None, container port) for each published port."""
    out: list[tuple[int | None, int]] = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            published = port.get("published")
            out.append((int(published) if published else None, int(port["target"])))
        else:
            parts = str(port).split("/")[0].split(":")
            out.append((int(parts[-2]) if len(parts) > 1 else None, int(parts[-1])))
    return out


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Mount target -> source, for short and long volume syntax."""
    out: dict[str, str] = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            out[volume["target"]] = volume.get("source", "")
        else:
            source, _, rest = str(volume).partition(":")
            out[rest.split(":")[0]] = source
    return out


def one_shot_jobs(services: dict[str, dict[str, Any]]) -> set[str]:
    """Services others wait on to *finish*: setup jobs, not long-running servers."""
    return {
        name
        for service in services.values()
        for name, dep in (service.get("depends_on") or {}).items()
        if isinstance(dep, dict) and dep.get("condition") == "service_completed_successfully"
    }


def url_host_port(url: str) -> tuple[str | None, int | None]:
    parts = urlsplit(url)
    return parts.hostname, parts.port


def port_of(address: str) -> int:
    """The port of `host:port`, `:port` or a URL."""
    return int(address.rstrip("/").rpartition(":")[2])


def shell_vars(text: str, env: dict[str, str]) -> str:
    """Expand $NAME and ${NAME} in a job's script with the job's environment."""
    return re.sub(
        r"\$(?:\{(\w+)\}|(\w+))", lambda m: env[m.group(1) or m.group(2)], text.replace('"', "")
    )


def created_bucket(services: dict[str, dict[str, Any]]) -> tuple[str, str]:
    """(MinIO URL the bucket job talks to, bucket it creates), read from its script."""
    job = services["minio-create-bucket"]
    script = shell_vars("\n".join(command(job)), environment(job))
    alias = re.search(r"^mc alias set (\S+) (\S+) ", script, re.M)
    bucket = re.search(r"^mc mb --ignore-existing (\S+)/(\S+)$", script, re.M)
    assert alias and bucket, "bucket job: no `mc alias set` / `mc mb --ignore-existing ALIAS/B`"
    assert bucket.group(1) == alias.group(1), "mc mb does not use the alias it set"
    return alias.group(2), bucket.group(2)


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"bad duration {duration!r}"
    return sum(float(n) * units[u] for n, u in parts)


def cli_api_port_default() -> int:
    """The default of `cosmos api --port`, read from the source (importing the CLI is slow)."""
    tree = ast.parse((ROOT / "app" / "cli" / "main.py").read_text())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "api")
    params = [a.arg for a in fn.args.args][-len(fn.args.defaults) :]
    return int(ast.literal_eval(dict(zip(params, fn.args.defaults, strict=True))["port"]))


def test_expected_services(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) >= EXPECTED, f"missing: {EXPECTED - set(services)}"
    assert one_shot_jobs(services) == ONE_SHOT_JOBS
    schema_job = " ".join(command(services["temporal-admin-tools"]))
    assert "temporal-sql-tool" in schema_job and "update-schema" in schema_job
    assert "namespace create" in " ".join(command(services["temporal-create-namespace"]))


def test_env_example_matches_compose_variables(env: dict[str, str]) -> None:
    used = {m.group(1) for m in _INTERPOLATION.finditer(COMPOSE.read_text()) if m.group(1)}
    assert used - set(env) == set(), "used by compose, missing from .env.example"
    assert set(env) - used == set(), "in .env.example but never used by the compose file"


def test_images_are_pinned(services: dict[str, dict[str, Any]], env: dict[str, str]) -> None:
    for name, service in services.items():
        image = service.get("image", "")
        if "build" in service and not image:
            continue
        repo, _, tag = image.rpartition(":")
        assert repo and "/" not in tag, f"{name}: image {image!r} has no tag"
        assert tag and tag != "latest", f"{name}: image {image!r} is not pinned"
    # A plain `docker build` uses the same Python as compose's build arg.
    arg = re.search(r"^ARG PYTHON_VERSION=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert arg and arg.group(1) == env["PYTHON_VERSION"]
    assert re.search(r"^FROM python:\$\{PYTHON_VERSION\}-slim", DOCKERFILE.read_text(), re.M)


def test_long_running_services_have_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    jobs = one_shot_jobs(services)
    for name, service in services.items():
        if name in jobs:
            assert service.get("restart", "no").startswith(("no", "on-failure")), name
            continue
        check = service.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"


def test_depends_on_uses_conditions(services: dict[str, dict[str, Any]]) -> None:
    jobs = one_shot_jobs(services)
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on needs the long form"
        for dep, spec in depends.items():
            assert dep in services, f"{name} depends on unknown {dep}"
            condition = spec.get("condition")
            if dep in jobs:
                assert condition == "service_completed_successfully", (name, dep)
            else:
                assert condition == "service_healthy", (name, dep)
                assert services[dep].get("healthcheck"), f"{dep} can never become healthy"


def test_cosmos_variables_are_settings_fields(
    services: dict[str, dict[str, Any]], env: dict[str, str]
) -> None:
    named = set(re.findall(r"\bCOSMOS_[A-Z0-9_]+", COMPOSE.read_text())) | {
        key for key in env if key.startswith("COSMOS_")
    }
    assert named, "no COSMOS_* settings at all"
    unknown = {n for n in named if n.removeprefix("COSMOS_").lower() not in Settings.model_fields}
    if METRICS_PORT.removeprefix("COSMOS_").lower() not in Settings.model_fields:
        unknown.discard(METRICS_PORT)  # until `metrics_port` lands in app/core/settings.py
    assert unknown == set(), "not fields of app.core.settings.Settings"
    for name in APP_SERVICES:
        values = {
            key.removeprefix("COSMOS_").lower(): value
            for key, value in environment(services[name]).items()
            if key.startswith("COSMOS_")
        }
        Settings.model_validate(values)  # every value validates (types, bounds)


def test_api_port_agrees_everywhere(services: dict[str, dict[str, Any]]) -> None:
    api = services["api"]
    args = command(api)
    assert args[:2] == ["cosmos", "api"]
    port = int(option(args, "--port"))
    assert port == cli_api_port_default() == 8000
    assert option(args, "--host") == "0.0.0.0"
    assert (port, port) in ports(api)
    assert f":{port}/" in " ".join(api["healthcheck"]["test"])
    cmd = next(line for line in DOCKERFILE.read_text().splitlines() if line.startswith("CMD "))
    assert json.loads(cmd.removeprefix("CMD ")) == args


def test_temporal_address_is_the_temporal_service(
    services: dict[str, dict[str, Any]], env: dict[str, str]
) -> None:
    address = env["COSMOS_TEMPORAL_ADDRESS"]
    host, _, port = address.rpartition(":")
    default_port = int(Settings.model_fields["temporal_address"].default.rpartition(":")[2])
    assert host == "temporal" and host in services
    assert int(port) == default_port == 7233
    assert 7233 in {target for _, target in ports(services["temporal"])}
    for name in ("temporal-ui", "temporal-create-namespace"):
        assert environment(services[name])["TEMPORAL_ADDRESS"] == address, name
    for name in APP_SERVICES:
        assert environment(services[name])["COSMOS_TEMPORAL_ADDRESS"] == address, name


def test_web_ui_url_is_the_published_ui(
    services: dict[str, dict[str, Any]], env: dict[str, str]
) -> None:
    url = urlsplit(env["COSMOS_WEB_UI_URL"])
    assert (url.port, 8080) in ports(services["temporal-ui"])


def test_worker_gpu_reserves_nvidia_devices(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker-gpu"]
    assert command(worker) == ["cosmos", "worker", "gpu"]
    assert "gpu" in worker.get("profiles", [])
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    nvidia = [d for d in devices if d.get("driver") == "nvidia"]
    assert nvidia, "no nvidia device reservation"
    assert {"gpu", "video"} <= set(nvidia[0]["capabilities"])


def test_worker_cpu_is_scalable(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker-cpu"]
    assert command(worker) == ["cosmos", "worker", "cpu"]
    assert "container_name" not in worker
    assert not worker.get("ports")
    assert "profiles" not in worker


def test_app_containers_share_the_data_volume(compose: dict[str, Any], env: dict[str, str]) -> None:
    data_dir = env["COSMOS_DATA_DIR"]
    sources = {mounts(compose["services"][name]).get(data_dir) for name in APP_SERVICES}
    assert len(sources) == 1, f"{data_dir} is not one volume across {APP_SERVICES}: {sources}"
    (volume,) = sources
    assert volume in (compose.get("volumes") or {}), f"{volume!r} is not a named volume"
    # Outputs and scratch must be readable from every container: in the bucket, or on that volume.
    for key in ("COSMOS_OUTPUT_URI", "COSMOS_SCRATCH_URI"):
        uri = urlsplit(env[key])
        assert uri.scheme == "s3" or (
            uri.scheme == "file" and Path(uri.path).is_relative_to(data_dir)
        ), f"{key}={env[key]} is private to one container"
    for name in APP_SERVICES:
        targets = mounts(compose["services"][name])
        for root in env["COSMOS_SOURCE_ROOTS"].split(":"):
            assert root in targets, f"{name}: source root {root} is not mounted"


def test_workers_get_time_to_drain(
    services: dict[str, dict[str, Any]], env: dict[str, str]
) -> None:
    grace = float(env["COSMOS_WORKER_SHUTDOWN_GRACE_S"])
    for name in ("worker-cpu", "worker-gpu"):
        assert seconds(str(services[name].get("stop_grace_period", "10s"))) > grace, name


def test_minio_stores_its_data_in_a_named_volume(compose: dict[str, Any]) -> None:
    minio = compose["services"]["minio"]
    assert minio["image"].startswith("minio/minio:RELEASE.")
    args = command(minio)
    assert args[:1] == ["server"] and "/data" in args
    assert mounts(minio).get("/data") in (compose.get("volumes") or {}), "minio data not named"
    assert "mc" in minio["healthcheck"]["test"], "minio healthcheck is not `mc ready`"
    console = port_of(option(args, "--console-address"))
    assert (console, console) in ports(minio), "the console is not published on its own port"


def test_bucket_job_is_idempotent_and_waits_for_minio(
    services: dict[str, dict[str, Any]], env: dict[str, str]
) -> None:
    job = services["minio-create-bucket"]
    assert job["image"].startswith("minio/mc:RELEASE.")
    assert job["depends_on"] == {"minio": {"condition": "service_healthy"}}
    url, bucket = created_bucket(services)
    assert bucket == env["MINIO_BUCKET"]
    host, port = url_host_port(url)
    assert host == "minio" and port == port_of(option(command(services["minio"]), "--address"))
    # Credentials only in .env: the job uses MinIO's own root account and creates the app's user.
    minio_env = environment(services["minio"])
    job_env = environment(job)
    for key in ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"):
        assert job_env[key] == minio_env[key] == env[key], key
    for name in APP_SERVICES:
        app = environment(services[name])
        assert (app["AWS_ACCESS_KEY_ID"], app["AWS_SECRET_ACCESS_KEY"]) == (
            job_env["APP_ACCESS_KEY"],
            job_env["APP_SECRET_KEY"],
        ), f"{name} does not use the MinIO user the bucket job creates"
        depends = services[name]["depends_on"]["minio-create-bucket"]
        assert depends == {"condition": "service_completed_successfully"}, name


def test_app_reads_standard_aws_and_otel_names(
    services: dict[str, dict[str, Any]], env: dict[str, str]
) -> None:
    names: set[str] = set()
    for name in APP_SERVICES:
        keys = set(environment(services[name]))
        others = {k for k in keys if not k.startswith("COSMOS_")}
        assert others <= STANDARD_VARIABLES, (
            f"{name}: not standard names: {others - STANDARD_VARIABLES}"
        )
        assert keys >= REQUIRED_STANDARD_VARIABLES, (
            f"{name}: missing {REQUIRED_STANDARD_VARIABLES - keys}"
        )
        names.add(environment(services[name])["OTEL_SERVICE_NAME"])
    assert len(names) == len(APP_SERVICES), "OTEL_SERVICE_NAME must tell the services apart"
    # A shell's exported AWS_* would override .env's during interpolation: keep them apart.
    assert not set(env) & STANDARD_VARIABLES, ".env.example sets a variable of the app's own"


def test_s3_endpoint_is_the_minio_service(
    services: dict[str, dict[str, Any]], env: dict[str, str]
) -> None:
    endpoint = env["COSMOS_S3_ENDPOINT_URL"]
    host, port = url_host_port(endpoint)
    assert host == "minio" and host in services
    assert port == port_of(option(command(services["minio"]), "--address")) == 9000
    for name in APP_SERVICES:
        assert environment(services[name])["COSMOS_S3_ENDPOINT_URL"] == endpoint, name


def test_outputs_and_scratch_are_in_the_created_bucket(
    compose: dict[str, Any], env: dict[str, str]
) -> None:
    services = compose["services"]
    _, bucket = created_bucket(services)
    for key in ("COSMOS_OUTPUT_URI", "COSMOS_SCRATCH_URI"):
        uri = urlsplit(env[key])
        assert (uri.scheme, uri.netloc) == ("s3", bucket), f"{key}={env[key]} is not in {bucket}"
        assert uri.path.strip("/"), f"{key} needs a prefix, not the bucket root"
    assert env["COSMOS_OUTPUT_URI"] != env["COSMOS_SCRATCH_URI"]
    # The app user's policy, which the job attaches, grants that bucket and nothing else.
    job = services["minio-create-bucket"]
    (mounted,) = job["configs"]
    assert mounted["target"] in " ".join(command(job))
    policy = json.loads(compose["configs"][mounted["source"]]["content"])
    resources = {r for statement in policy["Statement"] for r in statement["Resource"]}
    assert resources == {f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"}


def test_collector_config_receives_where_the_services_send(
    compose: dict[str, Any], env: dict[str, str]
) -> None:
    services = compose["services"]
    collector = services["otel-collector"]
    assert collector["image"].startswith("otel/opentelemetry-collector-contrib:")
    (mounted,) = collector["configs"]
    source = compose["configs"][mounted["source"]]["file"]
    assert (ROOT / source).resolve() == COLLECTOR_CONFIG, "the collector does not mount deploy/"
    assert command(collector) == [f"--config={mounted['target']}"]
    assert COLLECTOR_CONFIG.is_file()
    config = yaml.safe_load(COLLECTOR_CONFIG.read_text())
    assert isinstance(config, dict), f"{COLLECTOR_CONFIG.name} is not a YAML mapping"

    endpoints = {
        environment(services[name])["OTEL_EXPORTER_OTLP_ENDPOINT"] for name in APP_SERVICES
    }
    assert len(endpoints) == 1, endpoints
    host, port = url_host_port(endpoints.pop())
    assert host == "otel-collector"
    http = config["receivers"]["otlp"]["protocols"]["http"]
    assert port == port_of(http["endpoint"]) == 4318
    assert not http["endpoint"].startswith(("localhost", "127.")), (
        "unreachable from other containers"
    )

    pipelines = config["service"]["pipelines"]
    assert all("batch" in p["processors"] for p in pipelines.values())
    assert (
        "otlp" in pipelines["traces"]["receivers"] and "debug" in pipelines["traces"]["exporters"]
    )
    metrics = pipelines["metrics"]
    assert "prometheus" in metrics["exporters"] or "prometheus" in metrics["receivers"]
    if "prometheus" in metrics["receivers"]:
        jobs = config["receivers"]["prometheus"]["config"]["scrape_configs"]
        scraped = {
            sd_name: sd["port"]
            for job in jobs
            for sd in job.get("dns_sd_configs", [])
            for sd_name in sd["names"]
        }
        assert set(scraped) == set(APP_SERVICES)
        assert set(scraped.values()) == {int(env[METRICS_PORT])}

    # The health check calls the health_check extension, on its port.
    assert "health_check" in config["service"]["extensions"]
    check = " ".join(collector["healthcheck"]["test"])
    assert f":{port_of(config['extensions']['health_check']['endpoint'])}/" in check


def test_namespace_job_registers_the_search_attributes() -> None:
    from app.observability.search import KEYS

    text = (ROOT / "docker-compose.temporal.yml").read_text()
    for key in KEYS:
        assert key.name in text, key.name
