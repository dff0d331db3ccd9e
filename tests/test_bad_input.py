"""Hostile and broken input, table-driven: each case gets a clear 4xx naming the field, or a
FAILED job with a readable reason; never a 500, never a hang, never output left behind."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from app.cli.samples import make_video
from app.storage.local import uri_to_path
from tests.stack import Stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def bad_media(media_dir: Path, ffmpeg: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Broken and hostile files, inside the allowed root (media_dir)."""
    root = media_dir
    outside = tmp_path_factory.mktemp("outside") / "secret.mp4"
    make_video(outside, width=64, height=64, seconds=0.5)
    (root / "escape.mp4").unlink(missing_ok=True)
    (root / "escape.mp4").symlink_to(outside)
    (root / "inside-link.mp4").unlink(missing_ok=True)
    (root / "inside-link.mp4").symlink_to(root / "basic.mp4")
    run = [ffmpeg, "-v", "error", "-y", "-nostdin"]
    subprocess.run(
        [*run, "-i", str(root / "basic.mp4"), "-vn", "-c", "copy", str(root / "audio.m4a")],
        check=True,
    )
    subprocess.run(
        [
            *run,
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=64x64",
            "-frames:v",
            "1",
            str(root / "image.png"),
        ],
        check=True,
    )
    subprocess.run([*run, "-f", "lavfi", "-i", "testsrc2=size=64x64", "-frames:v", "0",
                    "-c:v", "libx264", str(root / "zero.mp4")], check=False)  # fmt: skip
    # A y4m header declaring 16384x16384, then a few bytes: nothing should allocate for it.
    (root / "huge.y4m").write_bytes(
        b"YUV4MPEG2 W16384 H16384 F30:1 Ip A1:1 C420jpeg\nFRAME\n" + b"\0" * 64
    )
    # Really wider than the platform takes (8192), yet tiny: 8200x16, lossless, two frames.
    subprocess.run([*run, "-f", "lavfi", "-i", "testsrc=size=8200x16:rate=30", "-frames:v", "2",
                    "-c:v", "ffv1", str(root / "wide.mkv")], check=True)  # fmt: skip
    (root / "local.m3u8").write_text(
        f"#EXTM3U\n#EXTINF:2,\nfile://{root / 'basic.mp4'}\n#EXT-X-ENDLIST\n"
    )
    (root / "remote.mp4").write_text(
        "#EXTM3U\n#EXTINF:2,\nhttp://169.254.169.254/seg.ts\n#EXT-X-ENDLIST\n"
    )
    (root / "subs.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n")
    weird = root / "we ird 'quo\"te\nnew línea ✓.mp4"
    if not weird.exists():
        weird.write_bytes((root / "basic.mp4").read_bytes())
    return root


# (case, body; "MEDIA" stands for the allowed root, field the 422 must name)
REFUSED: list[tuple[str, dict[str, Any], str]] = [
    ("empty file", {"source": "MEDIA/empty.mp4"}, "source"),
    ("outside the roots", {"source": "/etc/hostname"}, "source"),
    ("dot-dot traversal", {"source": "MEDIA/../../etc/passwd"}, "source"),
    ("symlink escaping the root", {"source": "MEDIA/escape.mp4"}, "source"),
    ("file:///etc/passwd", {"source": "file:///etc/passwd"}, "source"),
    ("metadata service URL", {"source": "http://169.254.169.254/latest/meta-data"}, "source"),
    ("https URL", {"source": "https://example.com/a.mp4"}, "source"),
    ("concat protocol", {"source": "concat:MEDIA/basic.mp4|/etc/passwd"}, "source"),
    ("subfile protocol", {"source": "subfile,,start,0,end,0,,:/etc/passwd"}, "source"),
    ("s3 without a backend", {"source": "s3://bucket/key.mp4"}, "source"),
    ("relative path", {"source": "basic.mp4"}, "source"),
    ("missing file", {"source": "MEDIA/nope.mp4"}, "source"),
    ("a directory", {"source": "MEDIA"}, "source"),
    ("NUL byte", {"source": "MEDIA/basic.mp4\u0000.txt"}, "source"),
    ("unknown profile", {"profiles": ["4320p"]}, "profiles"),
    ("bitrate 0", {"profiles": [{"name": "x", "height": 240, "bitrate_kbps": 0}]}, "profiles"),
    (
        "bitrate 10^12",
        {"profiles": [{"name": "x", "height": 240, "bitrate_kbps": 10**12}]},
        "profiles",
    ),
    ("duplicate profiles", {"profiles": ["240p", "240p"]}, "profiles"),
    ("empty profile list", {"profiles": []}, "profiles"),
    ("unsupported codec", {"codec": "prores"}, "codec"),
    (
        "ffmpeg option as preset",
        {"profiles": [{"name": "x", "height": 240, "bitrate_kbps": 300, "preset": "-vf"}]},
        "profiles",
    ),
    (
        "profile name with quotes",
        {"profiles": [{"name": 'a"; rm', "height": 240, "bitrate_kbps": 300}]},
        "profiles",
    ),
    ("webhook on a private address", {"webhook_url": "http://10.0.0.1/hook"}, "webhook_url"),
    ("webhook on link-local metadata", {"webhook_url": "http://169.254.169.254/"}, "webhook_url"),
    ("webhook on localhost", {"webhook_url": "http://localhost:9/hook"}, "webhook_url"),
    ("webhook not http", {"webhook_url": "file:///etc/passwd"}, "webhook_url"),
    ("unknown field", {"sources": "x"}, "sources"),
    ("wrong type", {"segment_seconds": "four"}, "segment_seconds"),
    ("negative chunk length", {"chunk_seconds": -2}, "chunk_seconds"),
    ("chunks of a day", {"chunk_seconds": 86400}, "chunk_seconds"),
    ("minimum above the target", {"chunk_seconds": 4, "min_chunk_seconds": 5}, "min_chunk_seconds"),
    ("unknown pixel aspect", {"pixel_aspect": "anamorphic"}, "pixel_aspect"),
    ("pixel aspect not a string", {"pixel_aspect": 1}, "pixel_aspect"),
    ("unknown ladder", {"ladder": "best"}, "ladder"),
    (
        "ladder minimum above its maximum",
        {"ladder": "auto", "ladder_options": {"min_kbps": 900, "max_kbps": 300}},
        "ladder_options.max_kbps",
    ),
    ("ladder VMAF above 99", {"ladder": "auto", "ladder_options": {"top_vmaf": 120}}, "top_vmaf"),
    ("ladder options without auto", {"ladder_options": {"max_rungs": 3}}, "ladder_options"),
]

# (case, file, words the job's error must contain)
FAILED_JOBS: list[tuple[str, str, str]] = [
    ("text file named .mp4", "text.mp4", "not a readable media file"),
    ("truncated file", "truncated.mp4", "not a readable media file"),
    ("audio only", "audio.m4a", "no video stream"),
    ("an image", "image.png", "not a readable media file"),
    ("zero duration (no frames)", "zero.mp4", "no video stream"),
    ("huge declared dimensions", "huge.y4m", "not a readable media file"),
    ("wider than 8192 pixels", "wide.mkv", "8200x16"),
    ("HLS playlist of local files", "local.m3u8", "not a readable media file"),
    ("HLS playlist named .mp4 pointing at another host", "remote.mp4", "not a readable media file"),
    ("subtitles, not video", "subs.srt", "not a readable media file"),
]


def post(stack: Stack, body: dict[str, Any], media: Path) -> Any:
    payload = {"source": str(media / "basic.mp4"), "profiles": ["240p"]} | body
    raw = json.dumps(payload).replace("MEDIA", str(media))
    with stack.http() as http:
        return http.post("/v1/encode", content=raw, headers={"content-type": "application/json"})


@pytest.mark.parametrize(("case", "body", "field"), REFUSED, ids=[c[0] for c in REFUSED])
def test_refused_with_a_4xx_naming_the_field(
    stack: Stack, bad_media: Path, case: str, body: dict[str, Any], field: str
) -> None:
    response = post(stack, body, bad_media)
    assert response.status_code == 422, (case, response.status_code, response.text)
    detail = response.json()["detail"]
    assert any(field in ".".join(map(str, d["loc"])) for d in detail), detail
    assert all(d["msg"] for d in detail)
    assert "Traceback" not in response.text


@pytest.mark.parametrize(("case", "name", "words"), FAILED_JOBS, ids=[c[0] for c in FAILED_JOBS])
def test_broken_media_fails_the_job_with_a_reason(
    stack: Stack, bad_media: Path, case: str, name: str, words: str
) -> None:
    job_id = stack.submit(source=str(bad_media / name), profiles=["240p"])["job_id"]
    view = stack.wait(job_id, timeout=60)
    assert view["status"] == "FAILED", view
    assert view["error"]["type"] == "InvalidSource"
    assert words in view["error"]["message"], view["error"]
    assert not (stack.data_dir / "outputs" / job_id).exists()
    assert not (stack.data_dir / "scratch" / job_id).exists()


def test_oversized_and_malformed_bodies(stack: Stack) -> None:
    with stack.http() as http:
        big = http.post("/v1/encode", content=b"{" + b" " * (10 << 20) + b"}",
                        headers={"content-type": "application/json"})  # fmt: skip
        assert big.status_code == 413
        assert (
            http.post(
                "/v1/encode", content=b"{not json", headers={"content-type": "application/json"}
            ).status_code
            == 422
        )
        assert (
            http.post(
                "/v1/encode", content=b"source=x", headers={"content-type": "text/plain"}
            ).status_code
            == 422
        )


def test_odd_but_legal_names_and_links_work(stack: Stack, bad_media: Path) -> None:
    """Spaces, quotes, a newline and non-ASCII in a file name; a symlink that stays inside."""
    for name in ["we ird 'quo\"te\nnew línea ✓.mp4", "inside-link.mp4"]:
        job_id = stack.submit(
            source=str(bad_media / name),
            profiles=["240p"]
            and [{"name": "small", "height": 144, "bitrate_kbps": 150, "preset": "ultrafast"}],
        )["job_id"]
        view = stack.wait(job_id, timeout=60)
        assert view["status"] == "SUCCEEDED", (name, view)


def test_pixel_aspect_is_accepted_and_reaches_the_outputs(stack: Stack, bad_media: Path) -> None:
    """160 lines of 16:9: square by default (284x160, 0.16% narrower, recorded), the exact
    fit (284x160 at SAR 640:639) when asked."""
    rung = {"name": "small", "height": 160, "bitrate_kbps": 150, "preset": "ultrafast"}
    got = {}
    for pixel_aspect in (None, "exact"):
        body = {"pixel_aspect": pixel_aspect} if pixel_aspect else {}
        job_id = stack.submit(source=str(bad_media / "basic.mp4"), profiles=[rung], **body)[
            "job_id"
        ]
        view = stack.wait(job_id, timeout=60)
        assert view["status"] == "SUCCEEDED", (pixel_aspect, view)
        manifest = json.loads(uri_to_path(view["manifests"]["manifest"]).read_text())
        (r,) = manifest["renditions"]
        got[pixel_aspect] = (r["width"], r["height"], r["sample_aspect_ratio"],
                             r["display_aspect_change"])  # fmt: skip
    assert got == {None: (284, 160, "1:1", -0.001563), "exact": (284, 160, "640:639", 0.0)}


def test_cases_are_at_least_thirty() -> None:
    assert len(REFUSED) + len(FAILED_JOBS) + 3 >= 30
    assert os.path.basename(__file__) == "test_bad_input.py"
