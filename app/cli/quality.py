"""``cosmos quality REF DIST``: submit a quality job, follow it, print what it measured."""

from __future__ import annotations

import json
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.table import Table

from app.cli.client import api_client, refusal
from app.cli.follow import FollowError, follow
from app.core.models import (
    ALL_METRICS,
    JobStatus,
    JobView,
    MetricSummary,
    QualityResult,
    QualityViewSummary,
)
from app.core.settings import get_settings


def _fail(message: str) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


def _n(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _vmaf(summary: MetricSummary | None) -> str:
    if summary is None:
        return "-"
    return (
        f"{_n(summary.mean)} (hm {_n(summary.harmonic_mean)}, p1 {_n(summary.p1)}, "
        f"p5 {_n(summary.p5)}, min {_n(summary.min)})"
    )


def _psnr(view: QualityViewSummary) -> str:
    if view.psnr is None:
        return "-"
    p = view.psnr
    return f"{_n(p.average.mean)} (Y {_n(p.y.mean)} U {_n(p.u.mean)} V {_n(p.v.mean)})"


def print_quality(result: QualityResult, console: Console) -> None:
    """One row per comparison and size; the worst chunk and any alignment below."""
    table = Table("compared", "at", "size", "VMAF", "PSNR dB avg", "SSIM All")
    for comparison in result.comparisons:
        for view in comparison.views:
            ssim = view.ssim.all.mean if view.ssim else None
            table.add_row(
                comparison.name, view.at, f"{view.width}x{view.height}", _vmaf(view.vmaf),
                _psnr(view), _n(ssim, 4),
            )  # fmt: skip
    console.print(table)
    for comparison in result.comparisons:
        for view in comparison.views:
            worst = view.vmaf.worst_chunk if view.vmaf else None
            whole = worst is not None and worst.end_s - worst.start_s >= comparison.duration_s
            if worst is not None and worst.value is not None and not whole:
                console.print(
                    f"{comparison.name} ({view.at}): worst chunk {worst.index} at "
                    f"{worst.start_s:.2f}-{worst.end_s:.2f} s, VMAF {worst.value:.2f}"
                )
        for note in comparison.notes:
            console.print(f"{comparison.name}: {note}")
    console.print(f"quality.json: {result.quality_uri}")


def quality(
    reference: Annotated[
        str, typer.Argument(metavar="REF", help="The original: path, file:// or s3:// URI.")
    ],
    distorted: Annotated[str, typer.Argument(metavar="DIST", help="The copy measured against it.")],
    metrics: Annotated[
        str, typer.Option(help="Comma-separated, any of vmaf, psnr, ssim.")
    ] = ",".join(ALL_METRICS),
    align: Annotated[
        str,
        typer.Option(
            help="strict: a frame-rate or duration mismatch is an error; auto: resample the "
            "distorted to the reference's rate and compare the common duration."
        ),
    ] = "strict",
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Follow the job and print its results.")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    api_url: Annotated[str | None, typer.Option(help="API base URL [env: COSMOS_API_URL]")] = None,
) -> None:
    """Measure VMAF, PSNR and SSIM of DIST against REF (POST /v1/quality)."""
    chosen = [m.strip() for m in metrics.split(",") if m.strip()]
    body = {"reference": reference, "distorted": distorted, "metrics": chosen, "align": align}
    url = api_url or get_settings().api_url
    try:
        with api_client(url) as http:
            response = http.post("/v1/quality", json=body)
    except httpx.HTTPError as err:
        _fail(f"cannot reach the API at {url}: {err}")
        raise AssertionError from err  # unreachable
    if response.status_code != 202:
        _fail(f"refused ({response.status_code}): {refusal(response)}")
    job_id = response.json()["job_id"]
    if not wait:
        typer.echo(json.dumps(response.json(), indent=2))
        return
    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console = Console(highlight=False, soft_wrap=True, width=200)
    if not as_json:
        console.print(f"job {job_id}")
    try:
        view: JobView = follow(url, job_id, console=Console(stderr=True) if as_json else console)
    except FollowError as err:
        _fail(f"cannot follow {job_id}: {err}")
        raise AssertionError from err  # unreachable
    if view.status is not JobStatus.SUCCEEDED or view.quality is None:
        error = f" ({view.error.type}): {view.error.message}" if view.error else ""
        _fail(f"job {job_id}: {view.status}{error}")
    assert view.quality is not None
    if as_json:
        typer.echo(view.quality.model_dump_json(indent=2))
        return
    print_quality(view.quality, console)
