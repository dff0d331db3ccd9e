"""``cosmos``: the one command line (typer)."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import unquote, urlsplit

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from app.cli.client import api_client, refusal
from app.cli.dev import BUCKET, SOURCES_BUCKET, DevError, Stack
from app.cli.follow import FollowError, follow
from app.cli.quality import quality
from app.cli.samples import make_video
from app.core.models import JobList, JobStatus, JobView, ProbeResult, VideoInfo
from app.core.settings import get_settings

app = typer.Typer(help="Cosmos: media encoding on Temporal.", no_args_is_help=True)
worker_app = typer.Typer(help="Run a worker pool.", no_args_is_help=True)
app.add_typer(worker_app, name="worker")
pipeline_app = typer.Typer(help="Plato pipelines: YAML rules over functions.", no_args_is_help=True)
app.add_typer(pipeline_app, name="pipeline")
app.command()(quality)


def _fail(message: str) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


def _request(api_url: str | None, method: str, path: str, **kwargs: object) -> httpx.Response:
    try:
        with api_client(api_url) as http:
            return http.request(method, path, **kwargs)  # type: ignore[arg-type]
    except httpx.HTTPError as err:
        _fail(f"cannot reach the API at {api_url or get_settings().api_url}: {err}")
        raise AssertionError from err  # unreachable


def _print_outcome(view: JobView) -> None:
    color = typer.colors.GREEN if view.status is JobStatus.SUCCEEDED else typer.colors.RED
    typer.secho(f"job {view.job_id}: {view.status}", fg=color, bold=True)
    if view.manifests:
        typer.echo(f"  HLS:      {view.manifests.hls}")
        typer.echo(f"  DASH:     {view.manifests.dash}")
        typer.echo(f"  manifest: {view.manifests.manifest}")
    for dropped in view.dropped:
        typer.echo(f"  dropped {dropped.name}: {dropped.reason}")
    for skipped in view.not_carried:
        typer.echo(f"  not carried {skipped.stream}: {skipped.reason}")
    if view.error:
        typer.echo(f"  error ({view.error.type}): {view.error.message}")
    typer.echo(f"  Web UI:   {view.web_ui_url}")


ApiUrl = Annotated[str | None, typer.Option(help="API base URL [env: COSMOS_API_URL]")]
STATUS_STYLE = {
    JobStatus.PENDING: "dim",
    JobStatus.RUNNING: "cyan",
    JobStatus.SUCCEEDED: "green",
    JobStatus.FAILED: "red",
    JobStatus.CANCELLED: "yellow",
}


def _console() -> Console:
    """Colours and the terminal's width on a terminal; wide plain text in logs and pipes, so
    that IDs and links are never folded."""
    console = Console(highlight=False, soft_wrap=True)
    return console if console.is_terminal else Console(highlight=False, soft_wrap=True, width=200)


def _follow(api_url: str | None, job_id: str) -> JobView:
    try:
        return follow(api_url or get_settings().api_url, job_id, console=_console())
    except FollowError as err:
        _fail(f"cannot follow {job_id}: {err}")
        raise AssertionError from err  # unreachable


def _submitted(api_url: str | None, response: httpx.Response, wait: bool) -> None:
    """A job the API accepted (202), printed; with ``wait``, followed to its end (exit 1
    unless it succeeded)."""
    if response.status_code != 202:
        _fail(f"refused ({response.status_code}): {response.text}")
    job = response.json()
    typer.echo(json.dumps(job, indent=2))
    if wait:
        view = _follow(api_url, job["job_id"])
        _print_outcome(view)
        if view.status is not JobStatus.SUCCEEDED:
            raise typer.Exit(1)


def _profile(value: str) -> str | dict[str, Any]:
    """``720p`` (a preset) or ``NAME:HEIGHT:KBPS`` (an inline rung, e.g. ``low:360:600``)."""
    if ":" not in value:
        return value
    parts = value.split(":")
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        raise typer.BadParameter(f"{value!r}: give a preset (720p) or NAME:HEIGHT:KBPS")
    return {"name": parts[0], "height": int(parts[1]), "bitrate_kbps": int(parts[2])}


def _source_label(uri: str | None) -> str:
    if not uri:
        return "-"
    parts = urlsplit(uri)
    return unquote(parts.path) if parts.scheme == "file" else uri


def _when(stamp: datetime | None) -> str:
    return stamp.astimezone().strftime("%Y-%m-%d %H:%M:%S") if stamp else "-"


@app.command()
def dev(
    api_port: Annotated[int, typer.Option(help="API port.")] = 8000,
    temporal_port: Annotated[int, typer.Option(help="Temporal frontend (gRPC) port.")] = 7233,
    ui_port: Annotated[int, typer.Option(help="Temporal Web UI port.")] = 8233,
    data_dir: Annotated[Path, typer.Option(help="State, samples and outputs.")] = Path(".cosmos"),
    no_sample: Annotated[bool, typer.Option("--no-sample", help="Skip the sample job.")] = False,
    workers: Annotated[
        int, typer.Option(min=1, help="CPU worker processes; they share the cores.")
    ] = 1,
    storage: Annotated[
        str,
        typer.Option(
            help="local: outputs and scratch under the data dir; s3: an embedded SeaweedFS S3"
            " server under <data dir>/s3 holds sources, scratch and outputs."
        ),
    ] = "local",
    s3_port: Annotated[int, typer.Option(help="S3 port of --storage s3.")] = 8333,
) -> None:
    """Start the embedded stack (Temporal dev server, workers, API), run a sample, keep serving.
    A child that exits unexpectedly is restarted (1 s backoff doubling to 30 s)."""
    if storage not in ("local", "s3"):
        raise typer.BadParameter("local or s3", param_hint="--storage")
    stack = Stack(
        data_dir.resolve(), api_port, temporal_port, ui_port, workers=workers,
        storage="s3" if storage == "s3" else "local", s3_port=s3_port, say=typer.echo,
    )  # fmt: skip
    stopping = serving = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        if not serving:  # starting or running the sample: stop there
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        typer.echo(f"starting Temporal on :{temporal_port} (data in {stack.data_dir}) ...")
        stack.start()
        typer.echo(f"API      {stack.api_url}  (docs: {stack.api_url}/docs)")
        typer.echo(f"Web UI   http://localhost:{ui_port}")
        typer.echo(f"Jobs     {stack.api_url}/jobs  (each job's page plays its outputs)")
        if stack.s3 is not None:
            typer.echo(
                f"S3       {stack.s3.endpoint}  (SeaweedFS; buckets {SOURCES_BUCKET}, {BUCKET};"
                f" its key and secret in {stack.s3.config_path})"
            )
        pids = ", ".join(f"{name} (pid {stack.pid(name)})" for name in stack.worker_names)
        typer.echo(f"workers  {pids}")
        typer.echo(f"logs     {stack.data_dir / 'logs'}")
        if not no_sample:
            sample = stack.data_dir / "samples" / "sample.mp4"
            if not sample.exists():
                make_video(sample, seconds=6, width=1280, height=720, rate="30")
            response = _request(
                stack.api_url, "POST", "/v1/encode",
                json={"source": stack.source_uri(sample), "profiles": ["720p", "480p", "360p"]},
            )  # fmt: skip
            if response.status_code != 202:
                _fail(f"sample submission refused: {response.status_code} {response.text}")
            job = response.json()
            typer.echo(
                f"sample job {job['job_id']}" + (" (already known)" if job["deduplicated"] else "")
            )
            _print_outcome(_follow(stack.api_url, job["job_id"]))
            typer.echo(f"  Job page: {stack.api_url}/jobs/{job['job_id']}")
        serving = True
        if not stopping:
            typer.echo("serving; Ctrl-C stops everything")
        while not stopping:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    except DevError as err:
        _fail(str(err))
    finally:
        typer.echo("stopping ...")
        stack.stop()


@app.command()
def api(
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
) -> None:
    """Run the HTTP API (Optimus)."""
    import uvicorn

    uvicorn.run("app.api.main:create_app", factory=True, host=host, port=port)


@worker_app.command("cpu")
def worker_cpu() -> None:
    """Serve workflows and CPU activities."""
    from workers.cpu.main import main

    logging.basicConfig(level=logging.INFO)
    asyncio.run(main())


@worker_app.command("gpu")
def worker_gpu() -> None:
    """Serve GPU activities; exits with one line where there is no NVIDIA GPU."""
    from workers.gpu.main import run

    logging.basicConfig(level=logging.INFO)
    run()


@app.command()
def submit(
    source: Annotated[str, typer.Argument(help="Path or file:// URI under an allowed root.")],
    profile: Annotated[
        list[str] | None,
        typer.Option(
            "--profile",
            "-p",
            help="A preset (720p) or an inline rung NAME:HEIGHT:KBPS (low:360:600); repeat.",
        ),
    ] = None,
    codec: Annotated[str, typer.Option(help="h264, hevc or av1.")] = "h264",
    chunk_seconds: Annotated[
        float | None,
        typer.Option(help="Target chunk length for parallel encoding; 0: each rendition whole."),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Show its progress until it ends; exit 0 on success.")
    ] = False,
    api_url: ApiUrl = None,
) -> None:
    """Submit an encode job."""
    body: dict[str, object] = {"source": source, "codec": codec}
    if profile:
        body["profiles"] = [_profile(p) for p in profile]
    if chunk_seconds is not None:
        body["chunk_seconds"] = chunk_seconds
    _submitted(api_url, _request(api_url, "POST", "/v1/encode", json=body), wait)


@app.command()
def status(
    job_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="The API's JSON, as is.")] = False,
    api_url: ApiUrl = None,
) -> None:
    """Show a job: status, stage, progress, renditions, outputs."""
    response = _request(api_url, "GET", f"/v1/jobs/{job_id}")
    if response.status_code != 200:
        _fail(f"{response.status_code}: {response.text}")
    if as_json:
        typer.echo(json.dumps(response.json(), indent=2))
        return
    view = JobView.model_validate(response.json())
    console = _console()
    style = STATUS_STYLE[view.status]
    console.print(f"[bold]job[/]       {view.job_id}")
    console.print(f"[bold]status[/]    [{style}]{view.status}[/]")
    console.print(f"[bold]stage[/]     {view.stage or '-'}")
    console.print(f"[bold]progress[/]  {view.progress:.1%}")
    console.print(f"[bold]created[/]   {_when(view.created_at)}")
    console.print(f"[bold]updated[/]   {_when(view.updated_at)}")
    if view.renditions:
        table = Table("rendition", "size", "codec", "status", "progress", "speed", "fps", "pool",
                      "encoder")  # fmt: skip
        for r in view.renditions:
            table.add_row(
                r.name, f"{r.width}x{r.height}", r.codec, r.status, f"{r.progress:.0%}",
                f"{r.speed:.2f}x" if r.speed else "-", f"{r.fps:.0f}" if r.fps else "-",
                r.queue or "-", r.encoder or "-",
            )  # fmt: skip
        console.print(table)
    for dropped in view.dropped:
        console.print(f"[bold]dropped[/]   {dropped.name}: {dropped.reason}")
    for skipped in view.not_carried:
        console.print(f"[bold]not carried[/] {skipped.stream}: {skipped.reason}")
    if view.manifests:
        console.print(f"[bold]HLS[/]       {view.manifests.hls}")
        console.print(f"[bold]DASH[/]      {view.manifests.dash}")
        console.print(f"[bold]manifest[/]  {view.manifests.manifest}")
    if view.error:
        console.print(f"[bold]error[/]     [red]{view.error.type}[/]: {view.error.message}")
    console.print(f"[bold]Web UI[/]    {view.web_ui_url}")


INSPECT_WAIT_S = 130.0
"""A little over the API's own limit on an inspection, so its 504 arrives rather than ours."""


def _field_order(video: VideoInfo) -> str:
    flag = video.field_order or "unflagged"
    measured = video.measured_field_order or "undetermined"
    verdict = "interlaced" if video.interlaced else "progressive"
    return f"{verdict} (flag {flag}, idet {measured})"


def _video_lines(video: VideoInfo) -> list[tuple[str, str]]:
    colour = "/".join(
        t or "?" for t in (video.color_primaries, video.color_transfer, video.color_matrix)
    )
    lines = [
        ("size", f"{video.width}x{video.height} (display {video.display_width}x"
                 f"{video.display_height}, SAR {video.sample_aspect_ratio}, DAR "
                 f"{video.display_aspect_ratio}, rotation {video.rotation})"),
        ("frame rate", video.frame_rate + (" (variable)" if video.variable_frame_rate else "")),
        ("codec", f"{video.codec} {video.profile or ''}".strip()),
        ("sampling", f"{video.pix_fmt or '?'}, {video.bit_depth or '?'}-bit "
                     f"{video.chroma_format or '?'}"),
        ("field order", _field_order(video)),
        ("dynamic range", video.dynamic_range),
        ("colour", f"{colour}, range {video.color_range or '?'}"),
    ]  # fmt: skip
    if video.mastering_display:
        md = video.mastering_display
        lines.append((
            "mastering",
            f"R{md.red} G{md.green} B{md.blue} WP{md.white_point}, "
            f"{md.min_luminance:g}-{md.max_luminance:g} cd/m2",
        ))  # fmt: skip
    if video.content_light:
        cl = video.content_light
        lines.append(("content light", f"MaxCLL {cl.max_cll}, MaxFALL {cl.max_fall} cd/m2"))
    lines.append(("timecode", video.timecode or "-"))
    lines.append(("captions", "CEA-608/708" if video.closed_captions else "none"))
    return lines


def _row(table: Table, *cells: str) -> None:
    """Cells from the file (titles, tags) are text, never rich markup."""
    table.add_row(*(escape(cell) for cell in cells))


def _print_report(report: ProbeResult) -> None:
    console = _console()
    console.print(
        f"[bold]container[/] {report.container}, {report.duration_s:g} s, "
        f"{report.size_bytes} bytes, timecode {report.timecode or '-'}"
    )
    table = Table("#", "type", "codec", "language", "details")
    video = report.video
    _row(
        table, str(video.index), "video", video.codec, "-",
        f"{video.width}x{video.height}, {video.frame_rate} fps, {video.dynamic_range}",
    )  # fmt: skip
    for a in report.audio_streams:
        flags = ", ".join(f for f, on in (("default", a.default), ("forced", a.forced)) if on)
        _row(
            table, str(a.index), "audio", a.codec, a.language or "-",
            f"{a.channels} ch {a.channel_layout}, {a.sample_rate} Hz"
            + (f", {a.title!r}" if a.title else "") + (f" ({flags})" if flags else ""),
        )  # fmt: skip
    for t in report.subtitles:
        flags = ", ".join(
            f
            for f, on in (
                ("default", t.default), ("forced", t.forced), ("SDH", t.hearing_impaired)
            )
            if on
        )  # fmt: skip
        _row(
            table, str(t.index), "subtitle", t.codec, t.language or "-",
            ("text" if t.text else "image") + (f", {t.title!r}" if t.title else "")
            + (f" ({flags})" if flags else ""),
        )  # fmt: skip
    for o in report.other_streams:
        _row(table, str(o.index), o.type, o.codec, "-", "")
    console.print(table)
    for label, value in _video_lines(video):
        console.print(f"[bold]{label:<14}[/]{escape(value)}")


@app.command()
def inspect(
    source: Annotated[
        str, typer.Argument(help="Path, file:// or s3:// URI under an allowed root.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="The API's JSON, as is.")] = False,
    api_url: ApiUrl = None,
) -> None:
    """Report every stream of a source (nothing is encoded): field order, HDR, tracks."""
    try:
        with api_client(api_url, timeout=INSPECT_WAIT_S) as http:
            response = http.post("/v1/inspect", json={"source": source})
    except httpx.HTTPError as err:
        _fail(f"cannot reach the API at {api_url or get_settings().api_url}: {err}")
        raise AssertionError from err  # unreachable
    if response.status_code != 200:
        _fail(f"refused ({response.status_code}): {refusal(response)}")
    if as_json:
        typer.echo(json.dumps(response.json(), indent=2))
        return
    _print_report(ProbeResult.model_validate(response.json()))


@app.command()
def jobs(
    status: Annotated[
        JobStatus | None, typer.Option("--status", "-s", help="Only jobs in this state.")
    ] = None,
    codec: Annotated[str | None, typer.Option(help="Only jobs of this codec.")] = None,
    source: Annotated[
        str | None, typer.Option(help="Only jobs whose source starts with this path or URI.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=200)] = 20,
    api_url: ApiUrl = None,
) -> None:
    """List recent jobs (newest first), from Temporal's visibility."""
    params: dict[str, str | int] = {"limit": limit}
    for name, value in (("status", status), ("codec", codec), ("source", source)):
        if value is not None:
            params[name] = str(value)
    response = _request(api_url, "GET", "/v1/jobs", params=params)
    if response.status_code != 200:
        _fail(f"{response.status_code}: {response.text}")
    listed = JobList.model_validate(response.json()).jobs
    console = _console()
    if not listed:
        console.print("no jobs")
        return
    table = Table("job", "status", "codec", "source", "created", "ended")
    table.columns[0].no_wrap = True
    table.columns[3].overflow = "fold"
    for job in listed:
        table.add_row(
            job.job_id,
            f"[{STATUS_STYLE[job.status]}]{job.status}[/]",
            job.codec or "-",
            _source_label(job.source),
            _when(job.created_at),
            _when(job.closed_at),
        )
    console.print(table)


@app.command()
def cancel(job_id: str, api_url: ApiUrl = None) -> None:
    """Cancel a running job (its ffmpeg processes are killed, its outputs removed)."""
    response = _request(api_url, "POST", f"/v1/jobs/{job_id}/cancel")
    if response.status_code != 202:
        _fail(f"{response.status_code}: {response.text}")
    typer.echo(f"cancelling {job_id}")


@app.command()
def replay(
    target: Annotated[str, typer.Argument(help="A history .json file, or a workflow (job) ID.")],
    debug: Annotated[
        bool, typer.Option("--debug", help="No deadlock detector, so breakpoints can stop.")
    ] = False,
) -> None:
    """Replay a history against the current workflow code: is it still deterministic?"""
    from app.cli.replay import HistoryError
    from app.cli.replay import replay as replay_target

    try:
        report = asyncio.run(replay_target(target, debug=debug))
    except HistoryError as err:
        typer.secho(str(err), fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    if report.nondeterministic:
        _fail(f"NOT deterministic: {report.workflow_id}: {report.divergence}")
    if not report.deterministic:
        _fail(f"replay failed: {report.workflow_id}: {report.divergence}")
    typer.secho(f"deterministic: {report.workflow_id} ({report.events} events)", fg="green")


def _definition_text(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        _fail(f"cannot read {file}: {err}")
        raise AssertionError from err  # unreachable


def _print_issues(errors: list[dict[str, Any]], file: str) -> None:
    for issue in errors:
        typer.secho(
            f"{file}:{issue['line']}:{issue['column']}: {issue['message']}",
            fg=typer.colors.RED,
            err=True,
        )


@pipeline_app.command("validate")
def pipeline_validate(file: Path) -> None:
    """Check a definition here, against the functions installed beside this CLI."""
    from app.plato.functions import parse
    from app.plato.rules.validate import DefinitionError

    try:
        definition = parse(_definition_text(file), get_settings())
    except DefinitionError as err:
        _print_issues([vars(e) for e in err.errors], str(file))
        raise typer.Exit(1) from None
    typer.secho(f"{file}: {definition.id} is valid ({definition.version})", fg="green")


@pipeline_app.command("register")
def pipeline_register(file: Path, api_url: ApiUrl = None) -> None:
    """Register a definition (the same text again is the same version)."""
    response = _request(
        api_url,
        "POST",
        "/v1/pipelines",
        content=_definition_text(file).encode(),
        headers={"Content-Type": "application/yaml"},
    )
    if response.status_code == 422 and "errors" in response.json():
        _print_issues(response.json()["errors"], str(file))
        raise typer.Exit(1)
    if response.status_code not in (200, 201):
        _fail(f"refused ({response.status_code}): {refusal(response)}")
    body = response.json()
    new = "registered" if response.status_code == 201 else "already registered"
    typer.echo(f"{body['id']} {new}: {body['version']} ({', '.join(body['steps'])})")


@pipeline_app.command("list")
def pipeline_list(api_url: ApiUrl = None) -> None:
    """The registered pipelines and their latest versions."""
    response = _request(api_url, "GET", "/v1/pipelines")
    if response.status_code != 200:
        _fail(f"refused ({response.status_code}): {refusal(response)}")
    table = Table("pipeline", "latest version", "versions", "registered", "steps", box=None)
    for item in response.json():
        latest = item["latest"]
        table.add_row(
            escape(item["id"]),
            latest["version"][:19],
            str(item["versions"]),
            _when(datetime.fromisoformat(latest["created_at"])),
            escape(", ".join(latest["steps"])),
        )
    _console().print(table)


@pipeline_app.command("run")
def pipeline_run(
    pipeline_id: str,
    input: Annotated[str, typer.Option("--input", help="The run input, JSON.")] = "{}",
    version: Annotated[str | None, typer.Option(help="A registered version.")] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Show its progress until it ends; exit 0 on success.")
    ] = False,
    api_url: ApiUrl = None,
) -> None:
    """Run a registered pipeline."""
    try:
        value = json.loads(input)
    except json.JSONDecodeError as err:
        raise typer.BadParameter(f"--input is not JSON: {err}") from None
    if not isinstance(value, dict):
        raise typer.BadParameter("--input must be a JSON object")
    body: dict[str, Any] = {"input": value}
    if version:
        body["version"] = version
    response = _request(api_url, "POST", f"/v1/pipelines/{pipeline_id}/runs", json=body)
    _submitted(api_url, response, wait)


if __name__ == "__main__":
    sys.exit(app())
