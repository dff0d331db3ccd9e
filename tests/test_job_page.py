"""The job page: HTML from the API, and real players (shaka-player; hls.js and dash.js too) in
headless Chromium playing a real job's HLS and DASH to the end, switching rendition, audio
language and subtitles; then the same check shown to fail on a broken package.

Needs Debian's ``chromium`` and the npm player libraries (``make setup``): without them these
tests fail, saying so; they never skip.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser

from app.cli.samples import make_video
from app.storage.local import uri_to_path
from tests.browser import (
    ARTIFACTS,
    Watch,
    chromium,
    dominant,
    hover_thumbnail,
    image_loads,
    log,
    open_job,
    play_to_end,
    tracks,
    wait_for,
)
from tests.stack import Stack
from tests.test_catalogue_e2e import VTT, make_multilingual

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
PROFILES = [
    {"name": "180p", "height": 180, "bitrate_kbps": 300, "preset": "veryfast"},
    {"name": "144p", "height": 144, "bitrate_kbps": 150, "preset": "veryfast"},
]
TONES = {"en": 440, "fr": 880}  # make_multilingual: eng 440 Hz, fra 880 Hz
MARKUP = "<img src=x onerror=window.__xss=1> Français"
KEY = "page-test-key"


@dataclass
class Job:
    id: str
    view: dict[str, Any]
    out: Path
    manifest: dict[str, Any]

    @property
    def duration_s(self) -> float:
        return float(self.view["source"]["duration_s"])

    def rep(self, rendition: str) -> str:
        return next(
            str(r["dash_representation_id"])
            for r in self.manifest["renditions"]
            if r["name"] == rendition
        )


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as found:
        yield found


@pytest.fixture(scope="module")
def job(stack: Stack, media_dir: Path, ffmpeg: str) -> Job:
    """6 s, two rungs, audio en and fr, subtitles en (embedded) and fr (a file, with markup in
    its title)."""
    folder = media_dir / "job-page"
    folder.mkdir(exist_ok=True)
    source = make_multilingual(folder, ffmpeg)
    (folder / "fra.vtt").write_text(VTT)
    job_id = stack.submit(
        source=str(source),
        profiles=PROFILES,
        subtitles=[{"source": str(folder / "fra.vtt"), "language": "fra", "title": MARKUP}],
    )["job_id"]
    view = stack.wait(job_id, timeout=120)
    assert view["status"] == "SUCCEEDED", view
    out = uri_to_path(view["manifests"]["manifest"]).parent
    with stack.http() as http:
        manifest = http.get(f"/jobs/{job_id}/files/manifest.json").json()
    return Job(job_id, view, out, manifest)


def _check(ok: tuple[str | None, dict[str, Any]]) -> dict[str, Any]:
    problem, report = ok
    assert problem is None, (problem, report)
    return report


def test_page_plays_hls_and_dash_switching_tracks(browser: Browser, stack: Stack, job: Job) -> None:
    context = browser.new_context(viewport={"width": 1200, "height": 1500})
    page = context.new_page()
    watch = Watch(page)
    open_job(page, f"{stack.api_url}/jobs/{job.id}")

    # The page: status, stage timeline, renditions with bitrate and pool, tracks.
    assert page.text_content("#status") == "SUCCEEDED"
    stages = page.eval_on_selector_all("#timeline li", "els => els.map(e => e.dataset.stage)")
    assert {"probe", "encode", "package", "publish"} <= set(stages), stages
    rows = page.eval_on_selector_all(
        "#renditions tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))"
    )
    assert [(r[0], r[1]) for r in rows] == [("180p", "320x180"), ("144p", "256x144")], rows
    for row in rows:
        assert re.fullmatch(r"\d+ kb/s \(peak \d+ kb/s\)", row[2]), row
        assert row[3].startswith("h264 avc1.") and row[5] not in ("", "-"), row
    subtitle_cells = page.eval_on_selector_all("#subtitles td", "cs => cs.map(c => c.textContent)")
    assert any(MARKUP in cell for cell in subtitle_cells), subtitle_cells
    assert page.evaluate("() => window.__xss") is None, "markup in job data ran as HTML"
    assert page.query_selector("#subtitles img") is None

    # HLS: what shaka lists matches the job; rendition and audio switches are heard and seen.
    found = tracks(page)
    assert sorted({v["height"] for v in found["variants"]}) == [144, 180]
    assert [a["language"] for a in found["audio"]] == ["en", "fr"]
    languages = sorted(s["language"] for s in job.manifest["subtitles"])
    assert sorted(t["language"] for t in found["text"]) == languages == ["en", "fr"]
    sheets = job.manifest["thumbnails"]["sheets"]
    assert found["images"], "thumbnails in the package but not in the player"
    shown = hover_thumbnail(page)
    assert shown["src"].endswith(f"/jobs/{job.id}/files/{sheets[0]}"), shown
    poster = page.evaluate("() => window.cosmosPlayer.video.poster")
    assert poster.endswith(f"/files/{job.manifest['poster']}") and image_loads(page, poster)

    report = _check(play_to_end(page, "hls", job.duration_s, height=180, language="en"))
    assert report["heights"] == [180] and report["active"] == {"height": 180, "language": "en"}
    assert all(abs(p - TONES["en"]) < 20 for p in dominant(report["peaks"])), report["peaks"]
    report = _check(
        play_to_end(page, "hls", job.duration_s, height=144, language="fr", subtitles="fr")
    )
    assert report["heights"][-1] == 144 and report["active"] == {"height": 144, "language": "fr"}
    assert all(abs(p - TONES["fr"]) < 30 for p in dominant(report["peaks"])), report["peaks"]
    assert "Bonjour" in report["cues"] and "Au revoir" in report["cues"], report["cues"]

    # DASH, the same way.
    page.click("#play-dash")
    wait_for(page, "() => window.cosmosPlayer && window.cosmosPlayer.format === 'dash'")
    found = tracks(page)
    assert sorted({v["height"] for v in found["variants"]}) == [144, 180]
    assert [a["language"] for a in found["audio"]] == ["en", "fr"]
    assert sorted(t["language"] for t in found["text"]) == languages
    assert found["images"] and hover_thumbnail(page)["src"].endswith(sheets[0])
    report = _check(
        play_to_end(page, "dash", job.duration_s, height=144, language="en", subtitles="en")
    )
    assert report["heights"][-1] == 144 and report["active"] == {"height": 144, "language": "en"}
    assert all(abs(p - TONES["en"]) < 20 for p in dominant(report["peaks"])), report["peaks"]
    assert "Hello there" in report["cues"], report["cues"]
    report = _check(play_to_end(page, "dash", job.duration_s, height=180, language="fr"))
    assert report["heights"][-1] == 180 and report["active"] == {"height": 180, "language": "fr"}
    assert all(abs(p - TONES["fr"]) < 30 for p in dominant(report["peaks"])), report["peaks"]

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "job-page.png"
    page.evaluate("() => { const v = window.cosmosPlayer.video; v.currentTime = 1.5; }")
    page.wait_for_timeout(300)
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")
    assert watch.external == [], "the page fetched from off this machine"
    assert watch.page_errors == [] and log(page, "csp", "page-error") == []
    context.close()


@pytest.mark.parametrize(("player", "format"), [("hlsjs", "hls"), ("dashjs", "dash")])
def test_hlsjs_and_dashjs_play_to_the_end(
    browser: Browser, stack: Stack, job: Job, player: str, format: str
) -> None:
    context = browser.new_context()
    page = context.new_page()
    watch = Watch(page)
    open_job(page, f"{stack.api_url}/jobs/{job.id}?player={player}")
    report = _check(play_to_end(page, format, job.duration_s))
    assert report["kind"] == player and report["heights"]
    assert watch.page_errors == [] and watch.external == []
    context.close()


def test_page_follows_a_running_job(browser: Browser, stack: Stack, media_dir: Path) -> None:
    """Opened while the job runs, the page shows its progress from the event stream as it
    comes, then plays the outputs once the job has succeeded."""
    source = media_dir / "job-page" / "running.mp4"
    if not source.exists():
        make_video(source, seconds=6, width=1280, height=720, rate="30")
    context = browser.new_context()
    page = context.new_page()  # ready before the job starts: the page opens at once
    job_id = stack.submit(
        source=str(source),
        profiles=[{"name": "720p", "height": 720, "bitrate_kbps": 2000, "preset": "medium"}],
        chunk_seconds=0,
    )["job_id"]
    open_job(page, f"{stack.api_url}/jobs/{job_id}", timeout_s=120)
    events = [e["detail"] for e in log(page, "event")]
    live = [e for e in events if e["status"] in ("PENDING", "RUNNING")]
    # How many stages a page sees depends on how soon it opens (the plan and the route can
    # be over in a second); the encode alone moves its progress on several times.
    assert len({(e["stage"], e["progress"]) for e in live}) >= 2, f"no live updates: {events}"
    progress = [e["progress"] for e in events]
    assert progress == sorted(progress) and progress[-1] == 1.0, progress
    assert events[-1]["status"] == "SUCCEEDED" and events[-1]["stage"] == "done", events
    assert (
        page.text_content("#status") == "SUCCEEDED"
        and page.text_content("#progress-text") == "100%"
    )
    context.close()


def test_jobs_page_links_to_the_job(browser: Browser, stack: Stack, job: Job) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{stack.api_url}/jobs")
    link = page.locator("#jobs a", has_text=job.id)
    link.wait_for()
    row = link.locator("xpath=ancestor::tr")
    assert "SUCCEEDED" in (row.text_content() or "")
    link.click()
    wait_for(page, "() => window.cosmosPlayer !== null")
    assert page.url == f"{stack.api_url}/jobs/{job.id}"
    context.close()


def _fresh(browser: Browser, url: str, format: str, duration_s: float, height: int) -> str | None:
    """The play-to-end check in a new context (an empty HTTP cache)."""
    context = browser.new_context()
    page = context.new_page()
    try:
        open_job(page, f"{url}?format={format}")
        problem, _ = play_to_end(page, format, duration_s, height=height, timeout_s=15)
        print(f"{format}: {problem}")
        return problem
    finally:
        context.close()


def test_the_check_fails_on_a_broken_package(
    browser: Browser, stack: Stack, job: Job, tmp_path: Path
) -> None:
    """The player check is not a formality: one segment gone, or an MPD whose duration is
    wrong, and it reports the failure."""
    url = f"{stack.api_url}/jobs/{job.id}"
    backup = tmp_path / "outputs"
    shutil.copytree(job.out, backup)
    segment = job.out / f"chunk-{job.rep('180p')}-00002.m4s"
    mpd = job.out / "manifest.mpd"
    try:
        segment.unlink()
        for format in ("hls", "dash"):
            problem = _fresh(browser, url, format, job.duration_s, height=180)
            assert problem is not None and "404" in problem, (format, problem)
        shutil.copyfile(backup / segment.name, segment)

        text = mpd.read_text()
        wrong, count = re.subn(
            r'mediaPresentationDuration="[^"]+"', 'mediaPresentationDuration="PT9.000S"', text
        )
        assert count == 1
        mpd.write_text(wrong)
        problem = _fresh(browser, url, "dash", job.duration_s, height=180)
        assert problem is not None and "duration mismatch" in problem, problem
    finally:
        shutil.rmtree(job.out)
        shutil.copytree(backup, job.out)
    # Restored, the same check passes: it failed for the damage and nothing else.
    assert _fresh(browser, url, "dash", job.duration_s, height=180) is None


def test_page_with_api_keys(browser: Browser, stack: Stack, job: Job, tmp_path: Path) -> None:
    """With COSMOS_API_KEYS the shells are public and say nothing; the page's script reads the
    key from the address's fragment (never sent), keeps it in the tab and sends it as a header
    to this API only; the outputs need it like the JSON API does."""
    keyed = Stack(
        data_dir=tmp_path / "keyed",
        temporal_address=stack.temporal_address,
        source_roots=stack.source_roots,
        extra_env={"COSMOS_API_KEYS": KEY},
    )
    keyed.start_api()
    try:
        with httpx.Client(base_url=keyed.api_url, timeout=30) as http:
            assert http.get(f"/jobs/{job.id}").status_code == 200
            assert http.get("/jobs/enc-unknown").status_code == 200  # tells nothing
            files = f"/jobs/{job.id}/files/master.m3u8"
            assert http.get(files).status_code == 401
            bearer = http.get(files, headers={"Authorization": f"Bearer {KEY}"})
            assert bearer.status_code == 200 and bearer.text.startswith("#EXTM3U")
            assert http.get(files, headers={"X-API-Key": KEY}).status_code == 200
            assert http.post("/jobs/files-session").status_code == 401
            session = http.post("/jobs/files-session", headers={"X-API-Key": KEY})
            assert session.status_code == 204
            cookie = session.cookies["cosmos_files"]
            http.cookies.clear()
            expires, mac = cookie.split(".")

            def with_cookie(path: str, value: str) -> int:
                return http.get(path, headers={"Cookie": f"cosmos_files={value}"}).status_code

            assert with_cookie(files, cookie) == 200
            assert with_cookie(files, f"{int(expires) + 1}.{mac}") == 401  # forged expiry
            assert with_cookie(f"/v1/jobs/{job.id}", cookie) == 401  # files only

        context = browser.new_context()
        page = context.new_page()
        watch = Watch(page)
        page.goto(f"{keyed.api_url}/jobs/{job.id}")
        page.wait_for_selector("#auth:not([hidden])")
        assert "401" in (page.text_content("#error") or "")

        page = context.new_page()  # a new document: the same one would only change its hash
        watch = Watch(page)
        open_job(page, f"{keyed.api_url}/jobs/{job.id}#key={KEY}")
        assert "key" not in page.url, "the key stays out of the address"
        _check(play_to_end(page, "hls", job.duration_s, height=144))
        # images go by the files cookie the key bought: HttpOnly, not the key, /jobs/ only
        assert hover_thumbnail(page)["width"] > 0
        (cookie,) = context.cookies()
        assert cookie["name"] == "cosmos_files" and cookie["httpOnly"]
        assert KEY not in cookie["value"]
        assert cookie["path"] == "/jobs/" and cookie["sameSite"] == "Strict"
        assert page.evaluate("() => document.cookie") == ""
        assert all(KEY not in url for url, _ in watch.requests)
        sent = [
            h.get("authorization")
            for url, h in watch.requests
            if "/files/" in url and not url.endswith(".jpg")  # images: the cookie
        ]
        assert sent and all(h == f"Bearer {KEY}" for h in sent), sent
        context.close()
    finally:
        keyed.stop_all()


# ---------------------------------------------------------------- HTTP, no browser


def test_jobs_page_and_job_page(stack: Stack, job: Job) -> None:
    with stack.http() as http:
        listing = http.get("/jobs")
        assert listing.status_code == 200
        assert listing.headers["content-type"].startswith("text/html")
        csp = listing.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp
        assert 'data-page="jobs"' in listing.text
        jobs = http.get("/v1/jobs").json()["jobs"]
        assert job.id in [j["job_id"] for j in jobs]
        page = http.get(f"/jobs/{job.id}")
        assert page.status_code == 200 and f'data-job="{job.id}"' in page.text
        assert 'data-libraries="ok"' in page.text
        missing = http.get("/jobs/enc-0000000000000000000000000000dead")
        assert missing.status_code == 404 and "No job" in missing.text
        assert http.get("/jobs/bad%20id").status_code == 422
        paths = http.get("/openapi.json").json()["paths"]
        assert not [p for p in paths if p.startswith(("/jobs", "/web"))], paths


def test_player_libraries_are_served_from_npm(stack: Stack) -> None:
    with stack.http() as http:
        for name in ("shaka-player.ui.js", "hls.min.js", "dash.all.min.js"):
            lib = http.get(f"/web/lib/{name}")
            assert lib.status_code == 200 and "javascript" in lib.headers["content-type"], name
        css = http.get("/web/lib/controls.css")
        assert css.status_code == 200 and ".shaka-" in css.text
        assert "@font-face" not in css.text and "gstatic" not in css.text
        assert http.get("/web/lib/package.json").status_code == 404
        assert http.get("/web/lib/..%2F..%2Fpackage.json").status_code == 404
        assert http.get("/web/page.js").status_code == 200
        assert http.get("/web/page.css").status_code == 200


def test_files_route_refuses_traversal(stack: Stack, job: Job) -> None:
    base = f"/jobs/{job.id}/files"
    with stack.http() as http:
        ok = http.get(f"{base}/master.m3u8")
        assert ok.status_code == 200 and ok.text.startswith("#EXTM3U")
        assert ok.headers["content-type"] == "application/vnd.apple.mpegurl"
        assert http.get(f"{base}/manifest.mpd").headers["content-type"] == "application/dash+xml"
        segment = http.get(f"{base}/init-0.m4s")
        assert segment.status_code == 200
        assert segment.content == (job.out / "init-0.m4s").read_bytes()
        ranged = http.get(f"{base}/init-0.m4s", headers={"Range": "bytes=0-7"})
        assert ranged.status_code == 206 and len(ranged.content) == 8
        for bad in (
            "..%2F..%2F..%2Fetc%2Fpasswd", "%2E%2E%2Fmanifest.json", "%2Fetc%2Fpasswd",
            "..%5Cmanifest.json", "a%00.m3u8", ".hidden", "sub/..%2F..%2Fx",
        ):  # fmt: skip
            response = http.get(f"{base}/{bad}")
            assert response.status_code == 400, (bad, response.status_code, response.text)
        # A symlink out of the job's folder is not followed.
        link = job.out / "escape.m3u8"
        link.symlink_to("/etc/passwd")
        try:
            assert http.get(f"{base}/escape.m3u8").status_code == 404
        finally:
            link.unlink()
        assert http.get(f"{base}/none.m4s").status_code == 404
        assert http.get("/jobs/enc-unknown/files/master.m3u8").status_code == 404


def test_job_page_without_player_libraries(
    stack: Stack, job: Job, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No web/node_modules: the page renders and says how to install them; nothing crashes."""
    from fastapi.testclient import TestClient

    from app.api import main
    from app.api.routers import pages
    from app.core.settings import Settings

    monkeypatch.setattr(pages, "NODE_MODULES", Path("/nonexistent"))
    settings = Settings(temporal_address=stack.temporal_address, data_dir=stack.data_dir)
    with TestClient(main.create_app(settings)) as client:
        page = client.get(f"/jobs/{job.id}")
        assert page.status_code == 200 and 'data-libraries="missing"' in page.text
        lib = client.get("/web/lib/shaka-player.ui.js")
        assert lib.status_code == 404 and "run make setup" in lib.json()["detail"]


def test_page_says_when_player_libraries_are_missing(
    browser: Browser, stack: Stack, job: Job
) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.route("**/web/lib/*.js", lambda route: route.fulfill(status=404, body="not installed"))
    page.goto(f"{stack.api_url}/jobs/{job.id}")
    page.wait_for_selector("#player-note:not([hidden])")
    assert page.text_content("#player-note") == "player libraries not installed: run make setup"
    assert page.text_content("#status") == "SUCCEEDED"
    assert len(page.query_selector_all("#renditions tbody tr")) == 2
    context.close()
