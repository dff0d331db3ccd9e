"""Headless Chromium (Debian's ``chromium``, never a downloaded build) driven by Playwright, and
the play-to-end check the job page's tests share."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from app.api.routers.pages import libraries_missing

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / ".cosmos" / "test-artifacts"
# Without these Chromium reaches for the network at start (there is none) and stalls.
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required", "--mute-audio",
]  # fmt: skip
TOLERANCE_S = 0.2


def chromium_path() -> str:
    found = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(found).is_file():
        pytest.fail(
            "headless Chromium is missing: apt-get install chromium (.ci/run installs it); the"
            " job page's player tests need a real browser",
            pytrace=False,
        )
    missing = libraries_missing()
    if missing:
        pytest.fail(
            f"player libraries not installed ({', '.join(missing)}): run make setup", pytrace=False
        )
    return found


@contextmanager
def chromium() -> Iterator[Browser]:
    path = chromium_path()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=FLAGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


class Watch:
    """What a page did that it should not: requests off loopback, script errors."""

    def __init__(self, page: Page) -> None:
        self.external: list[str] = []
        self.page_errors: list[str] = []
        self.requests: list[tuple[str, dict[str, str]]] = []
        page.on("request", self._request)
        page.on("pageerror", lambda err: self.page_errors.append(str(err)))

    def _request(self, request: Any) -> None:
        self.requests.append((request.url, dict(request.headers)))
        if not request.url.startswith(("http://127.0.0.1:", "data:", "blob:")):
            self.external.append(request.url)


def wait_for(page: Page, condition: str, timeout_s: float = 30) -> None:
    """Wait for a JS condition; on timeout fail with what the page said and logged."""
    try:
        page.wait_for_function(condition, timeout=timeout_s * 1000)
    except PlaywrightTimeout:
        said = page.evaluate(
            "() => [document.getElementById('error')?.textContent,"
            " document.getElementById('player-note')?.textContent, window.cosmosLog]"
        )
        raise AssertionError(
            f"{condition}: not within {timeout_s} s on {page.url}: {said}"
        ) from None


def open_job(page: Page, url: str, timeout_s: float = 30) -> None:
    """The job page, its outputs loaded into the player."""
    page.goto(url)
    wait_for(page, "() => window.cosmosPlayer !== null", timeout_s)


def log(page: Page, *types: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = page.evaluate("() => window.cosmosLog")
    return [e for e in entries if e["type"] in types]


def tracks(page: Page) -> dict[str, Any]:
    """What shaka found in the manifest: variants, audio and text tracks, thumbnails."""
    found: dict[str, Any] = page.evaluate(
        """() => {
        const p = window.cosmosPlayer.player;
        return {
          variants: p.getVariantTracks().map((t) => ({height: t.height, width: t.width,
            language: t.language, bandwidth: t.bandwidth, active: t.active})),
          audio: p.getAudioTracks().map((t) => ({language: t.language, active: t.active})),
          text: p.getTextTracks().map((t) => ({language: t.language, kind: t.kind,
            label: t.label})),
          images: p.getImageTracks().map((t) => ({width: t.width, height: t.height})),
        };
      }"""
    )
    return found


# Loads the format afresh, selects the rendition, audio language and subtitles asked for (shaka),
# plays from the start at `rate` until `ended`, an error or the timeout, and reports what the
# browser decoded: frame heights (requestVideoFrameCallback), the audio's dominant frequency
# (Web Audio analyser, every 100 ms) and the subtitle cues shown.
CHECK = """async ({format, height, language, subtitles, rate, timeoutMs}) => {
  const start = cosmosLog.length;
  const errors = () => cosmosLog.slice(start).filter((e) => e.type === 'error')
    .map((e) => String(e.detail));
  const out = {errors: [], ended: false, heights: [], peaks: [], cues: []};
  try { await cosmosPage.load(format); } catch (err) {
    out.errors.push(`load: ${err.message || err}`, ...errors());
    return out;
  }
  const {kind, player, video} = window.cosmosPlayer;
  out.kind = kind;
  const cues = new Set();
  let observer = null;
  if (kind === 'shaka') {
    player.configure({abr: {enabled: false}});
    if (language) {
      const audio = player.getAudioTracks().find((t) => t.language === language);
      if (!audio) return {...out, errors: [`no audio track ${language}`]};
      player.selectAudioTrack(audio);
    }
    if (height) {
      const lang = language || player.getVariantTracks().find((t) => t.active).language;
      const variant = player.getVariantTracks()
        .find((t) => t.height === height && t.language === lang);
      if (!variant) return {...out, errors: [`no variant ${height}p ${lang}`]};
      player.selectVariantTrack(variant, true);
    }
    if (subtitles) {
      const track = player.getTextTracks().find((t) => t.language === subtitles);
      if (!track) return {...out, errors: [`no subtitle track ${subtitles}`]};
      player.selectTextTrack(track);
      const box = video.parentElement;
      observer = new MutationObserver(() => {
        for (const node of box.querySelectorAll('.shaka-text-container')) {
          if (node.textContent.trim()) cues.add(node.textContent.trim());
        }
      });
      observer.observe(box, {subtree: true, childList: true, characterData: true});
    }
  }
  const heights = [];
  const onFrame = () => {
    if (video.videoHeight && heights[heights.length - 1] !== video.videoHeight) {
      heights.push(video.videoHeight);
    }
    if (!video.ended) video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
  if (!window.cosmosAudio || window.cosmosAudio.video !== video) {
    const ctx = new AudioContext();
    const node = ctx.createAnalyser();
    node.fftSize = 8192;
    ctx.createMediaElementSource(video).connect(node);
    node.connect(ctx.destination);
    window.cosmosAudio = {ctx, node, video};
  }
  const analyser = window.cosmosAudio.node;
  await window.cosmosAudio.ctx.resume();
  const peaks = [];
  const sampler = setInterval(() => {
    if (video.paused || video.ended) return;
    const bins = new Float32Array(analyser.frequencyBinCount);
    analyser.getFloatFrequencyData(bins);
    let best = 1;
    for (let i = 2; i < bins.length; i++) if (bins[i] > bins[best]) best = i;
    if (bins[best] > -90) {
      peaks.push(Math.round(best * analyser.context.sampleRate / analyser.fftSize));
    }
  }, 100);
  video.playbackRate = rate;
  const ended = new Promise((resolve) => video.addEventListener('ended', resolve, {once: true}));
  const t0 = performance.now();
  try { await video.play(); } catch (err) { out.errors.push(`play(): ${err}`); }
  out.duration = video.duration;
  const failed = new Promise((resolve) => {
    const tick = () => (errors().length ? resolve() : setTimeout(tick, 50));
    tick();
  });
  await Promise.race([ended, failed, new Promise((resolve) => setTimeout(resolve, timeoutMs))]);
  clearInterval(sampler);
  if (observer) observer.disconnect();
  out.wallMs = Math.round(performance.now() - t0);
  out.ended = video.ended;
  out.currentTime = video.currentTime;
  out.heights = heights;
  out.peaks = peaks;
  out.cues = [...cues];
  out.errors.push(...errors());
  // every duration the element was given since the load: a wrong one that the player later
  // corrects (shaka trims to the media at the end of stream) is still a wrong manifest
  out.durations = cosmosLog.slice(start).filter((e) => e.type === 'durationchange')
    .map((e) => e.detail.duration).filter((d) => Number.isFinite(d));
  if (kind === 'shaka') {
    const active = player.getVariantTracks().find((t) => t.active);
    out.active = active && {height: active.height, language: active.language};
  }
  video.pause();
  return out;
}"""


def play_to_end(
    page: Page,
    format: str,
    duration_s: float,
    *,
    height: int | None = None,
    language: str | None = None,
    subtitles: str | None = None,
    rate: float = 4.0,
    timeout_s: float = 20.0,
) -> tuple[str | None, dict[str, Any]]:
    """Play ``format`` on the open job page from the start to the end. Returns what went wrong
    (None: it played to ``ended``, its duration and end within 0.2 s of ``duration_s``, with no
    player error) and the player's report."""
    args = {"format": format, "height": height, "language": language, "subtitles": subtitles,
            "rate": rate, "timeoutMs": int(timeout_s * 1000)}  # fmt: skip
    report: dict[str, Any] = page.evaluate(CHECK, args)
    problems = list(report["errors"])
    duration = report.get("duration")
    told = [*report.get("durations", []), duration]
    wrong = [d for d in told if not isinstance(d, int | float) or abs(d - duration_s) > TOLERANCE_S]
    if wrong:
        problems.append(f"duration mismatch: the player was told {wrong} s, the job {duration_s} s")
    if not report["ended"]:
        problems.append(f"no 'ended': stopped at {report.get('currentTime')} s")
    elif abs(report["currentTime"] - duration_s) > TOLERANCE_S:
        problems.append(f"ended at {report['currentTime']} s, not at {duration_s} s")
    return ("; ".join(problems) or None), report


def dominant(peaks: list[int], tail: int = 5) -> list[int]:
    """The last frequencies heard: the first samples after a switch are the track before."""
    return peaks[-tail:]


def hover_thumbnail(page: Page) -> dict[str, Any]:
    """Move the mouse along shaka's seek bar; the thumbnail it shows there, once loaded."""
    seek_bar = page.locator(".shaka-seek-bar-container")
    seek_bar.scroll_into_view_if_needed()
    bar = seek_bar.bounding_box()
    assert bar is not None, "no seek bar"
    y = bar["y"] + bar["height"] / 2
    page.mouse.move(bar["x"] + 5, y)
    page.mouse.move(bar["x"] + bar["width"] * 0.6, y, steps=5)
    wait_for(
        page,
        "() => { const i = document.querySelector('.shaka-player-ui-thumbnail-image');"
        " return i && i.src.includes('/files/') && i.complete && i.naturalWidth > 0; }",
        10,
    )
    shown: dict[str, Any] = page.evaluate(
        "() => { const i = document.querySelector('.shaka-player-ui-thumbnail-image');"
        " return {src: i.src, width: i.naturalWidth, height: i.naturalHeight}; }"
    )
    page.mouse.move(0, 0)
    return shown


def image_loads(page: Page, url: str) -> bool:
    """Whether ``url`` loads as an image in the page (as a poster or thumbnail does)."""
    loaded: bool = page.evaluate(
        """(url) => new Promise((resolve) => {
          const img = new Image();
          img.onload = () => resolve(img.naturalWidth > 0);
          img.onerror = () => resolve(false);
          img.src = url;
        })""",
        url,
    )
    return loaded
