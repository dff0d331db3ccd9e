"""The job pages: ``GET /jobs`` and ``GET /jobs/{id}`` for people, a player for the outputs.

The HTML is a shell that carries no job data: the page's script (``app/api/web/page.js``)
reads everything from the JSON API (``/v1/jobs``, ``/v1/jobs/{id}``, its event stream) and
the outputs from ``/jobs/{id}/files/...``, sending the API key where one is configured (read
once from the page address's ``#key=`` fragment, which never reaches a server, and kept in the
tab's session storage). So the shells and the static files are public, and everything that
says something about a job stays behind the same key as the API. Images, which ``<img>`` loads
without a header, go by a cookie the key buys (``POST /jobs/files-session``), good for the
files route only.

The player libraries come from npm (``web/package.json``, installed by ``make setup`` into the
git-ignored ``web/node_modules``); only the few dist files the page loads are served. Without
them the page still renders and says how to install them.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import re
import time
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials
from temporalio.client import Client, WorkflowExecutionStatus

from app.api.deps import ClientDep, SettingsDep
from app.api.routers.jobs import JobId, _describe
from app.api.security import api_key_header, bearer, require_api_key
from app.core.models import EncodeResult
from app.core.settings import Settings
from app.storage.local import StorageError, uri_to_path
from app.storage.object_store import join, store_for

router = APIRouter(include_in_schema=False)
"""Public: HTML shells and static files, nothing about any job."""
FILES_COOKIE = "cosmos_files"
FILES_COOKIE_TTL_S = 12 * 3600
KeyHeader = Annotated[str | None, Depends(api_key_header)]
Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def _files_token(key: str, expires: int) -> str:
    mac = hmac.new(key.encode(), f"cosmos-files:{expires}".encode(), hashlib.sha256).hexdigest()
    return f"{expires}.{mac}"


def _valid_files_cookie(keys: list[str], value: str) -> bool:
    expires, _, _ = value.partition(".")
    now = time.time()
    if not expires.isdigit() or not now <= int(expires) <= now + FILES_COOKIE_TTL_S + 60:
        return False
    matched = False
    for key in keys:  # every key, always: constant time, as for the header
        matched |= hmac.compare_digest(_files_token(key, int(expires)).encode(), value.encode())
    return matched


def files_access(request: Request, key: KeyHeader, token: Bearer) -> None:
    """The API key as for every endpoint, or the files cookie: images (thumbnails on the seek
    bar, the poster) are loaded by ``<img>``, which cannot send a header."""
    keys = request.app.state.settings.api_key_list
    cookie = request.cookies.get(FILES_COOKIE)
    if keys and cookie and _valid_files_cookie(keys, cookie):
        return
    require_api_key(request, key, token)


files_router = APIRouter(include_in_schema=False, dependencies=[Depends(files_access)])
"""A job's outputs: behind the API key (or the files cookie that the key buys)."""

WEB = Path(__file__).resolve().parent.parent / "web"
NODE_MODULES = Path(__file__).resolve().parents[3] / "web" / "node_modules"
LIBRARIES = {
    "shaka-player.ui.js": "shaka-player/dist/shaka-player.ui.js",
    "controls.css": "shaka-player/dist/controls.css",
    "hls.min.js": "hls.js/dist/hls.min.js",
    "dash.all.min.js": "dashjs/dist/modern/umd/dash.all.min.js",
}
PLAYERS = {"shaka": ["shaka-player.ui.js"], "hlsjs": ["hls.min.js"], "dashjs": ["dash.all.min.js"]}
ASSETS = {"page.js": "text/javascript", "page.css": "text/css"}
# shaka's UI stylesheet names a web font on a CDN; the page uses the system's sans-serif.
FONT_FACE = re.compile(rb"@font-face\{[^}]*\}")

MEDIA_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".mpd": "application/dash+xml",
    ".m4s": "video/iso.segment",
    ".mp4": "video/mp4",
    ".m4a": "audio/mp4",
    ".vtt": "text/vtt; charset=utf-8",
    ".json": "application/json",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
}
# Proxied from S3 rather than redirected, so that the URIs inside stay relative to this API.
TEXT = {".m3u8", ".mpd", ".json"}
TEXT_LIMIT = 16 * 1024 * 1024
PART = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}"
SAFE_PATH = re.compile(rf"{PART}(/{PART}){{0,7}}")


def libraries_missing() -> list[str]:
    return [name for name, rel in LIBRARIES.items() if not (NODE_MODULES / rel).is_file()]


def _csp(settings: Settings) -> str:
    """Scripts and styles from this API only; media, manifests and thumbnails from here and,
    for S3 outputs, the store the segments are redirected to."""
    store = ""
    if settings.resolved_output_uri.startswith("s3://"):
        if settings.s3_endpoint_url:
            parts = urlsplit(settings.s3_endpoint_url)
            store = f" {parts.scheme}://{parts.netloc}"
        else:
            store = " https://*.amazonaws.com"
    return (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        f"img-src 'self' data: blob:{store}; media-src 'self' blob:{store}; "
        f"connect-src 'self'{store}; worker-src 'self' blob:; font-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def _shell(
    request: Request, settings: Settings, page: str, title: str, body: str, status: int = 200,
    **data: str,
) -> HTMLResponse:  # fmt: skip
    root = request.scope.get("root_path", "")
    attrs = {"page": page, "base": root, **data}
    missing = libraries_missing()
    attrs["libraries"] = "missing" if missing else "ok"
    data_attrs = " ".join(
        f'data-{k.replace("_", "-")}="{html.escape(v)}"' for k, v in attrs.items()
    )
    css = html.escape(f"{root}/web/page.css")
    lib_css = html.escape(f"{root}/web/lib/controls.css")
    js = html.escape(f"{root}/web/page.js")
    document = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<link rel="icon" href="data:,">
<title>{html.escape(title)} · Cosmos</title>
<link rel="stylesheet" href="{lib_css}">
<link rel="stylesheet" href="{css}">
</head>
<body {data_attrs}>
<header><a class="brand" href="{html.escape(root)}/jobs">Cosmos</a>
<span class="crumb">{html.escape(title)}</span></header>
<main>
{body}
</main>
<script src="{js}"></script>
</body>
</html>
"""
    return HTMLResponse(
        document,
        status_code=status,
        headers={
            "Content-Security-Policy": _csp(settings),
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-cache",
        },
    )


KEY_FORM = """<section id="auth" hidden>
<p>This API needs a key. It stays in this tab (session storage) and is sent as a header.</p>
<input id="key" type="password" autocomplete="off" placeholder="API key" aria-label="API key">
<button id="key-save" type="button">Use key</button>
</section>
<p id="error" class="error" role="alert" hidden></p>"""

JOBS_BODY = f"""{KEY_FORM}
<section>
<h1>Jobs</h1>
<table id="jobs"><thead><tr><th>job</th><th>status</th><th>codec</th><th>source</th>
<th>created</th><th>closed</th></tr></thead><tbody></tbody></table>
<p id="jobs-empty" hidden>No jobs yet.</p>
</section>"""

JOB_BODY = f"""{KEY_FORM}
<section id="summary">
<h1 id="job-id"></h1>
<p><span id="status" class="status"></span> <span id="stage"></span>
<a id="web-ui" href="#" rel="noopener noreferrer" target="_blank">Temporal Web UI</a></p>
<progress id="progress" max="1" value="0"></progress> <span id="progress-text"></span>
<p id="source"></p>
<p id="job-error" class="error" hidden></p>
</section>
<section id="player-section">
<h2>Player</h2>
<p id="player-note" class="note" hidden></p>
<div class="toggle" role="group" aria-label="Format">
<button type="button" id="play-hls" data-format="hls" disabled>HLS</button>
<button type="button" id="play-dash" data-format="dash" disabled>DASH</button>
<span id="now-playing"></span>
</div>
<div id="player" class="player"></div>
</section>
<section>
<h2>Stages</h2>
<ol id="timeline" class="timeline"></ol>
</section>
<section>
<h2>Renditions</h2>
<table id="renditions"><thead><tr><th>rendition</th><th>resolution</th><th>bitrate</th>
<th>codec</th><th>encoder</th><th>ran on</th><th>quality</th><th>status</th></tr></thead>
<tbody></tbody></table>
<h3>Audio</h3>
<table id="audio"><thead><tr><th>track</th><th>language</th><th>codec</th><th>channels</th>
<th>bitrate</th><th>loudness</th></tr></thead><tbody></tbody></table>
<h3>Subtitles</h3>
<table id="subtitles"><thead><tr><th>track</th><th>language</th><th>kind</th><th>cues</th>
</tr></thead><tbody></tbody></table>
<ul id="notes"></ul>
</section>"""


@router.get("/jobs", response_class=HTMLResponse)
async def jobs_page(request: Request, settings: SettingsDep) -> HTMLResponse:
    return _shell(request, settings, "jobs", "Jobs", JOBS_BODY)


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
async def job_page(
    job_id: JobId,
    request: Request,
    client: ClientDep,
    settings: SettingsDep,
    player: Annotated[Literal["shaka", "hlsjs", "dashjs"], Query()] = "shaka",
    format: Annotated[Literal["hls", "dash"] | None, Query()] = None,
) -> HTMLResponse:
    """Without API keys the page answers 404 for a job that does not exist. With keys it
    cannot know who asks (a browser sends no header on navigation), so it tells nothing: the
    script asks the API with the key and shows what it answers."""
    if not settings.api_key_list:
        try:
            await _describe(client, job_id)
        except HTTPException as err:
            if err.status_code != 404:
                raise
            body = f'<h1>No job {html.escape(job_id)}</h1><p><a href="../jobs">All jobs</a></p>'
            return _shell(request, settings, "missing", job_id, body, status=404)
    return _shell(
        request, settings, "job", job_id, JOB_BODY,
        job=job_id, player=player, start_format=format or "hls",
    )  # fmt: skip


@router.get("/web/page.{kind}", name="web_asset")
async def web_asset(kind: Literal["js", "css"]) -> FileResponse:
    name = f"page.{kind}"
    return FileResponse(WEB / name, media_type=ASSETS[name], headers={"Cache-Control": "no-cache"})


@router.get("/web/lib/{name}", name="web_library")
async def web_library(name: str) -> Response:
    rel = LIBRARIES.get(name)
    path = NODE_MODULES / rel if rel else None
    if path is None or not path.is_file():
        detail = "player libraries not installed: run make setup" if rel else "no such file"
        raise HTTPException(status_code=404, detail=detail)
    headers = {"Cache-Control": "public, max-age=3600"}
    if name.endswith(".css"):
        css = FONT_FACE.sub(b"", await asyncio.to_thread(path.read_bytes))
        return Response(css, media_type="text/css", headers=headers)
    return FileResponse(path, media_type="text/javascript", headers=headers)


def output_path(path: str) -> str:
    """A file name inside a job's folder, or 400: no ``..``, no absolute path, no backslash,
    no NUL or control characters, no hidden files; at most 8 levels."""
    if not SAFE_PATH.fullmatch(path):
        raise HTTPException(status_code=400, detail="not a file name of the job's outputs")
    return path


async def _outputs(client: Client, job_id: str) -> str:
    """The URI of the job's published folder, from its result in Temporal."""
    _, desc = await _describe(client, job_id)
    if desc.status != WorkflowExecutionStatus.COMPLETED:
        raise HTTPException(status_code=404, detail=f"job {job_id!r} has no outputs")
    handle = client.get_workflow_handle(job_id, run_id=desc.run_id, result_type=EncodeResult)
    result: EncodeResult = await handle.result()
    return result.manifests.manifest.rsplit("/", 1)[0]


def _media_type(path: str) -> str:
    return MEDIA_TYPES.get(Path(path).suffix.lower(), "application/octet-stream")


@router.post("/jobs/files-session", status_code=204, dependencies=[Depends(require_api_key)])
async def files_session(request: Request, key: KeyHeader, token: Bearer) -> Response:
    """With API keys: a cookie for ``/jobs/*/files/`` only (HttpOnly, SameSite=Strict, 12 h),
    an HMAC of its expiry under the key, never the key itself; without keys, nothing."""
    response = Response(status_code=204)
    given = key or (token.credentials if token else None)
    if given:
        expires = int(time.time()) + FILES_COOKIE_TTL_S
        response.set_cookie(
            FILES_COOKIE, _files_token(given, expires), max_age=FILES_COOKIE_TTL_S,
            path=f"{request.scope.get('root_path', '')}/jobs/", httponly=True, samesite="strict",
            secure=request.url.scheme == "https",
        )  # fmt: skip
    return response


@files_router.get("/jobs/{job_id}/files/{path:path}", name="job_file")
async def job_file(job_id: JobId, path: str, client: ClientDep, settings: SettingsDep) -> Response:
    """One file of a finished job's outputs. Local outputs are streamed from the job's folder;
    on S3 the manifests and playlists are read through (so the URIs in them resolve here) and
    every other file is a 307 to a presigned URL."""
    relative = output_path(path)
    base = await _outputs(client, job_id)
    headers = {"Cache-Control": "private, max-age=60", "X-Content-Type-Options": "nosniff"}
    missing = HTTPException(status_code=404, detail="no such file in the job's outputs")
    try:
        store = store_for(base, settings)
    except StorageError:
        raise missing from None
    if urlsplit(base).scheme == "file":
        folder = uri_to_path(base).resolve()
        target = (folder / relative).resolve()
        if not target.is_relative_to(folder) or not target.is_file():
            raise missing
        return FileResponse(target, media_type=_media_type(relative), headers=headers)
    uri = join(base, relative)
    if Path(relative).suffix.lower() in TEXT:
        try:
            data = await asyncio.to_thread(store.read_bytes, uri, TEXT_LIMIT)
        except FileNotFoundError:
            raise missing from None
        except ValueError:
            raise HTTPException(status_code=413, detail="too large to read through") from None
        return Response(data, media_type=_media_type(relative), headers=headers)
    url: str = await asyncio.to_thread(store.presign, uri)
    return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})
