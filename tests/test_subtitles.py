"""Subtitles: the SRT/WebVTT parsers, per-segment WebVTT, and prepare_subtitles against real
ffmpeg on generated media (embedded mov_text, SubRip and ASS tracks; sidecar files)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import av
import pytest
from pydantic import ValidationError
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from app.cli.samples import make_video
from app.cli.seaweed import Seaweed
from app.core.models import SubtitleInput, SubtitleMedia, SubtitleRendition
from app.core.settings import Settings
from app.media.subtitles import (
    SEGMENT_HEADER,
    Cue,
    SubtitleError,
    parse_srt,
    parse_vtt,
    segment_bounds,
    segment_vtt,
    write_vtt,
)
from app.storage.local import path_to_uri, uri_to_path
from app.stratum.functions.subtitles import MAX_SIDECAR_BYTES, SubtitleActivities

FRAME_S = 0.040  # one frame at 25 fps: what a muxer's timebase may round cue times to

SOURCE_SRT = """1
00:00:00,500 --> 00:00:01,250
<i>Hello</i> & welcome
to the show

2
00:00:01,800 --> 00:00:04,100
{\\an8}Fish < chips > peas

3
00:00:04,200 --> 00:00:04,900
Last <b>one</b>
"""

EXPECTED = [
    Cue(0.5, 1.25, "<i>Hello</i> &amp; welcome\nto the show"),
    Cue(1.8, 4.1, "Fish &lt; chips &gt; peas"),
    Cue(4.2, 4.9, "Last <b>one</b>"),
]

SOURCE_VTT = """WEBVTT - made by hand
Kind: captions

NOTE a comment
over two lines

STYLE
::cue { color: yellow }

intro
00:00.500 --> 00:01.250 align:start bogus
<i>Hello</i> &amp; welcome
to the show

00:00:01.800 --> 00:00:04.100
Fish &lt; chips &gt; peas

3
00:04.200 --> 00:04.900
Last <b>one</b>
"""


def assert_cues_match(got: list[Cue], expected: list[Cue], tolerance_s: float = 1e-9) -> None:
    assert [c.text for c in got] == [c.text for c in expected]
    for g, e in zip(got, expected, strict=True):
        assert abs(g.start_s - e.start_s) <= tolerance_s, (g, e)
        assert abs(g.end_s - e.end_s) <= tolerance_s, (g, e)


# ---------------------------------------------------------------- SRT


def test_parse_srt_reads_the_source() -> None:
    assert parse_srt(SOURCE_SRT) == EXPECTED


def test_parse_srt_tolerates_bom_crlf_no_numbers_and_odd_blank_lines() -> None:
    text = (
        "\ufeff\r\n\r\n00:00:00,500 --> 00:00:01,250\r\n<i>Hello</i> & welcome\r\nto the show"
        "\r\n\r\n\r\n\r\n2\r\n00:00:01.800 --> 00:00:04,100 X1:10 X2:20 Y1:5 Y2:6\r\n"
        "{\\an8}Fish < chips > peas\r\n3\r\n00:00:04,200 --> 00:00:04,900\r\n"
        "Last <B>one</B>"  # no blank line before cue 3, no final line end, upper-case tags
    )
    assert parse_srt(text) == EXPECTED


def test_parse_srt_keeps_webvtt_tags_and_drops_font_and_empty_cues() -> None:
    text = (
        '1\n00:00:01,000 --> 00:00:02,000\n<font color="#ff0000">red</font> <u>u</u> <x>\n\n'
        "2\n00:00:03,000 --> 00:00:04,000\n\n"  # no text
        "3\n00:00:05,000 --> 00:00:05,000\nzero length\n\n"
        "4\n00:00:06,000 --> 00:00:07,000\nA &amp; B --> C\n"
    )
    assert parse_srt(text) == [
        Cue(1.0, 2.0, "red <u>u</u> &lt;x&gt;"),
        Cue(6.0, 7.0, "A &amp; B --&gt; C"),  # an entity stays; "-->" cannot end up in a cue
    ]


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("1\n00:00:01,000 --> 00:00:02,00\nhi\n", 2, "bad timing line"),
        ("1\n00:00:01,000 --> 00:00:02,000\nhi\n\n2\n00:00:05,000 --> 00:00:04,000\nx\n", 6,
         "ends (00:00:04.000) before it starts (00:00:05.000)"),
        ("1\n00:00:01,000 --> 00:00:02,000\nhi\n\n2\nno timing here\n\n", 6,
         "expected a timing line"),
        ("1\n00:00:01,000 --> 00:00:02,000\nhi\n\n2\n\n00:00:03,000 --> 00:00:04,000\nx\n", 6,
         "after cue number 2, found nothing"),
        ("1\n00:00:01,000 --> 00:00:02,000\nhi\n\n2", 5, "after cue number 2"),
        ("1\n00:00:01,000 --> 00:00:02,000\nhi\n\n\nsome stray text\n", 6,
         "expected a cue number or a timing line"),
        ("1\n00:61:01,000 --> 00:62:02,000\nhi\n", 2, "bad time"),
        ("\ufeff1\r\n00:00:01,000 --> 00:00:02,000\r\nhi\r\n\r\n2\r\nhello\r\n", 6,
         "expected a timing line"),
    ],
)  # fmt: skip
def test_parse_srt_errors_name_the_line(text: str, line: int, words: str) -> None:
    with pytest.raises(SubtitleError) as err:
        parse_srt(text)
    assert str(err.value).startswith(f"line {line}: ")
    assert words in str(err.value)


# ---------------------------------------------------------------- WebVTT


def test_parse_vtt_skips_headers_notes_styles_and_keeps_valid_settings() -> None:
    cues = parse_vtt(SOURCE_VTT)
    assert_cues_match(cues, EXPECTED)
    assert [c.settings for c in cues] == ["align:start", "", ""]


def test_parse_vtt_normalises_ffmpeg_output() -> None:
    """ffmpeg's WebVTT encoder writes a raw & and <; ASS override tags are dropped too."""
    text = "WEBVTT\r\n\r\n00:00.500 --> 00:01.250\r\nTom & Jerry < 3 {\\i1}x{\\i0}\r\n"
    assert parse_vtt(text) == [Cue(0.5, 1.25, "Tom &amp; Jerry &lt; 3 x")]


def test_parse_vtt_keeps_cue_markup() -> None:
    text = (
        "WEBVTT\n\n01:02:03.004 --> 01:02:05.000\n"
        "<v Roger>Hi <c.loud.red>there</c> <00:00:01.500>x\n"
    )
    assert parse_vtt(text) == [
        Cue(3723.004, 3725.0, "<v Roger>Hi <c.loud.red>there</c> <00:00:01.500>x")
    ]


def test_parse_vtt_timing_line_in_text_starts_a_new_cue() -> None:
    text = "WEBVTT\n\n00:01.000 --> 00:02.000\none\n00:03.000 --> 00:04.000\ntwo\n"
    assert parse_vtt(text) == [Cue(1.0, 2.0, "one"), Cue(3.0, 4.0, "two")]


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("1\n00:00:01,000 --> 00:00:02,000\nhi\n", 1, "not a WebVTT file"),
        ("WEBVTTX\n\n00:01.000 --> 00:02.000\nhi\n", 1, "first line must be WEBVTT"),
        ("", 1, "not a WebVTT file"),
        ("WEBVTT\n\n00:01.000 --> 00:02.000\nhi\n\n00:03,000 --> 00:04.000\nx\n", 6,
         "bad timing line"),
        ("WEBVTT\n\nNOTE x\n\nintro\nhello\n", 6, "after cue identifier 'intro'"),
        ("WEBVTT\n\n00:05.000 --> 00:04.000\nx\n", 3, "before it starts"),
        ("WEBVTT\n\n00:05.000 --> 00:61.000\nx\n", 3, "bad time"),
    ],
)  # fmt: skip
def test_parse_vtt_errors_name_the_line(text: str, line: int, words: str) -> None:
    with pytest.raises(SubtitleError) as err:
        parse_vtt(text)
    assert str(err.value).startswith(f"line {line}: ")
    assert words in str(err.value)


def test_write_vtt_is_whole_ordered_and_parses_back() -> None:
    cues = [Cue(4.2, 4.9, "b", "line:0"), Cue(0.5, 3725.0015, "a\nz")]
    text = write_vtt(cues)
    assert text == (
        "WEBVTT\n\n00:00:00.500 --> 01:02:05.002\na\nz\n\n"
        "00:00:04.200 --> 00:00:04.900 line:0\nb\n\n"
    )
    assert parse_vtt(write_vtt(EXPECTED)) == EXPECTED  # normalising is idempotent


# ---------------------------------------------------------------- segments


def test_segment_vtt_repeats_spanning_cues_and_keeps_empty_segments() -> None:
    cues = [Cue(0.5, 1.0, "first"), Cue(1.5, 4.5, "long"), Cue(8.2, 8.9, "last"),
            Cue(9.5, 10.0, "after the end")]  # fmt: skip
    segments = segment_vtt(cues, 2, 8.5)
    assert segment_bounds(2, 8.5) == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 8.5)]
    assert len(segments) == 5
    assert all(s.startswith(SEGMENT_HEADER) for s in segments)
    assert SEGMENT_HEADER == "WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000\n\n"
    inside = [parse_vtt(s) for s in segments]
    assert inside[0] == [Cue(0.5, 1.0, "first"), Cue(1.5, 4.5, "long")]
    assert inside[1] == [Cue(1.5, 4.5, "long")]  # original times, in every segment it spans
    assert inside[2] == [Cue(1.5, 4.5, "long")]
    assert segments[3] == SEGMENT_HEADER  # no cue: the header alone
    assert inside[4] == [Cue(8.2, 8.9, "last")]  # the last segment ends at the duration


def test_segment_bounds_edges() -> None:
    assert segment_bounds(2, 4.0) == [(0, 2), (2, 4.0)]
    assert segment_bounds(2, 4.0000001) == [(0, 2), (2, 4.0000001)]  # float noise: no 3rd
    assert segment_bounds(6, 1.0) == [(0, 1.0)]
    assert segment_vtt([], 6, 0.0) == [SEGMENT_HEADER]
    boundary = segment_vtt([Cue(2.0, 3.0, "starts on the boundary")], 2, 4)
    assert boundary[0] == SEGMENT_HEADER  # [0, 2) does not hold a cue that starts at 2
    with pytest.raises(ValueError):
        segment_bounds(0, 4)


# ---------------------------------------------------------------- the activity


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory, ffmpeg: str) -> dict[str, Path]:
    """A 5 s video with SOURCE_SRT muxed as mov_text (MP4), SubRip and ASS (MKV)."""
    root = tmp_path_factory.mktemp("subtitle-media")
    video = make_video(root / "video.mp4", seconds=5.0, width=160, height=90, rate="25",
                       audio_channels=None)  # fmt: skip
    srt = root / "source.srt"
    srt.write_text(SOURCE_SRT)
    made = {}
    for name, codec in [("mov_text.mp4", "mov_text"), ("subrip.mkv", "srt"),
                        ("ass.mkv", "ass")]:  # fmt: skip
        subprocess.run(
            [ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i", str(video),
             "-i", str(srt), "-map", "0:v", "-map", "1:s", "-c:v", "copy", "-c:s", codec,
             "-metadata:s:s:0", "language=eng", str(root / name)],
            check=True,
        )  # fmt: skip
        made[name] = root / name
    return made


@pytest.fixture
def settings(tmp_path: Path, sources: dict[str, Path]) -> Settings:
    folder = next(iter(sources.values())).parent
    return Settings(data_dir=tmp_path / "data", source_roots=str(folder), heartbeat_timeout_s=20)


def subtitle_input(settings: Settings, source: Path, track: SubtitleRendition) -> SubtitleInput:
    container = None
    if track.source_uri is None:
        with av.open(str(source)) as f:
            container = f.format.name
    return SubtitleInput(
        job_id="job-subs",
        source_uri=track.source_uri or path_to_uri(source),
        container=container,
        scratch_uri=settings.resolved_scratch_uri,
        track=track,
        duration_s=5.0,
    )


async def prepare(settings: Settings, input: SubtitleInput) -> SubtitleMedia:
    media: SubtitleMedia = await ActivityEnvironment().run(
        SubtitleActivities(settings).prepare, input
    )
    return media


def embedded_track(source: Path, codec: str) -> SubtitleRendition:
    with av.open(str(source)) as f:
        stream = f.streams.subtitles[0]
        assert stream.codec_context.name == codec
        index = stream.index
    return SubtitleRendition(name="sub-eng", source_index=index, codec=codec, language="eng")


def read_back_with_ffmpeg(ffmpeg: str, vtt: Path) -> list[Cue]:
    """ffmpeg's own WebVTT demuxer and decoder turn the file into SRT, parsed as a source."""
    srt = subprocess.run(
        [ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-i", str(vtt), "-f", "srt",
         "-"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return parse_srt(srt)


def read_back_with_pyav(vtt: Path) -> list[tuple[float, float]]:
    with av.open(str(vtt)) as f:
        stream = f.streams.subtitles[0]
        assert stream.time_base is not None
        return [
            (float(p.pts * stream.time_base), float((p.pts + p.duration) * stream.time_base))
            for p in f.demux(stream)
            if p.pts is not None and p.duration
        ]


@pytest.mark.parametrize(
    ("name", "codec"), [("mov_text.mp4", "mov_text"), ("subrip.mkv", "srt"), ("ass.mkv", "ssa")]
)
async def test_embedded_track_becomes_webvtt(
    settings: Settings, sources: dict[str, Path], ffmpeg: str, name: str, codec: str
) -> None:
    source = sources[name]
    track = embedded_track(source, codec)
    media = await prepare(settings, subtitle_input(settings, source, track))
    out = uri_to_path(media.uri)
    assert out == settings.data_path / "scratch" / "job-subs" / "subtitles" / "sub-eng.vtt"
    assert media.name == "sub-eng" and media.cues == 3 and media.size_bytes == out.stat().st_size
    text = out.read_text()
    assert text.startswith("WEBVTT\n\n")
    assert "{\\" not in text and "&amp;" in text
    assert_cues_match(parse_vtt(text), EXPECTED, FRAME_S)
    # What other tools read: ffmpeg (decoding the entities back) and PyAV's demuxer.
    assert_cues_match(read_back_with_ffmpeg(ffmpeg, out), EXPECTED, FRAME_S)
    times = read_back_with_pyav(out)
    assert len(times) == 3
    for (start, end), cue in zip(times, EXPECTED, strict=True):
        assert abs(start - cue.start_s) <= FRAME_S and abs(end - cue.end_s) <= FRAME_S
    assert not list(settings.data_path.rglob("*.part"))  # nothing half-written left behind


async def test_a_retry_reuses_the_placed_file(settings: Settings, sources: dict[str, Path]) -> None:
    source = sources["subrip.mkv"]
    input = subtitle_input(settings, source, embedded_track(source, "srt"))
    first = await prepare(settings, input)
    out = uri_to_path(first.uri)
    out.write_text(write_vtt(EXPECTED[:2]))  # marks the file: a second conversion would undo it
    again = await prepare(settings, input)
    assert again == first.model_copy(update={"cues": 2, "size_bytes": out.stat().st_size})
    assert parse_vtt(out.read_text()) == EXPECTED[:2]


async def test_embedded_bitmap_or_unknown_codec_is_refused(
    settings: Settings, sources: dict[str, Path]
) -> None:
    source = sources["subrip.mkv"]
    track = SubtitleRendition(name="sub-pgs", source_index=1, codec="hdmv_pgs_subtitle")
    with pytest.raises(ApplicationError) as err:
        await prepare(settings, subtitle_input(settings, source, track))
    assert err.value.non_retryable and err.value.type == "InvalidSubtitle"
    assert "not a text subtitle format" in str(err.value)


def sidecar(settings: Settings, path: Path, codec: str, name: str = "sub-fra") -> SubtitleInput:
    track = SubtitleRendition(name=name, source_uri=str(path), codec=codec, language="fra")
    return subtitle_input(settings, path, track)


@pytest.mark.parametrize(
    ("suffix", "codec", "content"),
    [(".srt", "subrip", SOURCE_SRT), (".srt", "srt", "\ufeff" + SOURCE_SRT.replace("\n", "\r\n")),
     (".vtt", "webvtt", SOURCE_VTT), (".vtt", "vtt", SOURCE_VTT)],
)  # fmt: skip
async def test_sidecar_file_becomes_webvtt(
    settings: Settings, sources: dict[str, Path], ffmpeg: str, suffix: str, codec: str,
    content: str,
) -> None:  # fmt: skip
    path = sources["subrip.mkv"].parent / f"sidecar-{codec}{suffix}"
    path.write_bytes(content.encode())
    media = await prepare(settings, sidecar(settings, path, codec))
    out = uri_to_path(media.uri)
    assert out.name == "sub-fra.vtt" and media.cues == 3
    assert_cues_match(parse_vtt(out.read_text()), EXPECTED)
    assert_cues_match(read_back_with_ffmpeg(ffmpeg, out), EXPECTED)


@pytest.mark.parametrize(
    ("content", "codec", "words"),
    [
        (b"1\n00:00:01,000 --> 00:00:02,000\nhi\n\n2\n00:00:03.5 --> 00:00:04,000\nx\n",
         "subrip", "subtitle file bad.txt: line 6: bad timing line"),
        (b"1\n00:00:01,000 --> 00:00:02,000\nhi\n", "webvtt",
         "subtitle file bad.txt: line 1: not a WebVTT file"),
        (b"1\n00:00:01,000 --> 00:00:02,000\ncaf\xe9\n", "subrip", "not UTF-8 text"),
        ("1\n00:00:01,000 --> 00:00:02,000\nhi\n".encode("utf-16"), "subrip", "UTF-16"),
        (b"\n\n", "subrip", "has no cues"),
        (b"WEBVTT\n\nNOTE nothing else\n", "webvtt", "has no cues"),
        (b"[Script Info]\n", "ass", "not supported for sidecar files"),
    ],
)  # fmt: skip
async def test_bad_sidecar_is_a_non_retryable_failure(
    settings: Settings, sources: dict[str, Path], content: bytes, codec: str, words: str
) -> None:
    path = sources["subrip.mkv"].parent / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(ApplicationError) as err:
        await prepare(settings, sidecar(settings, path, codec))
    assert err.value.non_retryable and err.value.type == "InvalidSubtitle"
    assert words in str(err.value)
    assert not (settings.data_path / "scratch" / "job-subs" / "subtitles" / "sub-fra.vtt").exists()


async def test_oversized_sidecar_is_refused(settings: Settings, sources: dict[str, Path]) -> None:
    path = sources["subrip.mkv"].parent / "huge.srt"
    path.write_bytes(SOURCE_SRT.encode() + b"\n" * MAX_SIDECAR_BYTES)
    with pytest.raises(ApplicationError) as err:
        await prepare(settings, sidecar(settings, path, "subrip"))
    assert err.value.non_retryable and "at most 10485760 bytes" in str(err.value)


async def test_sidecar_outside_the_allowed_roots_is_refused(
    settings: Settings, sources: dict[str, Path], tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere" / "subs.srt"
    outside.parent.mkdir()
    outside.write_text(SOURCE_SRT)
    inside = sources["subrip.mkv"].parent
    refused = [
        (str(outside), "outside the allowed roots"),
        (f"{inside}/../{outside.parent.name}/subs.srt", "must not contain '..'"),
        (f"{inside}/../{inside.name}/source.srt", "must not contain '..'"),  # even inside
        ("http://example.com/subs.srt", "scheme 'http' is not allowed"),
    ]
    for uri, words in refused:
        track = SubtitleRendition(name="sub-x", source_uri=uri, codec="srt")
        with pytest.raises(ApplicationError) as err:
            await prepare(settings, subtitle_input(settings, outside, track))
        assert err.value.non_retryable and err.value.type == "InvalidSource", uri
        assert words in str(err.value), uri


def test_unsafe_track_name_is_refused(sources: dict[str, Path]) -> None:
    """The name becomes a file name: the model (validated on every activity's input) refuses."""
    fields = embedded_track(sources["subrip.mkv"], "srt").model_dump()
    with pytest.raises(ValidationError, match="pattern"):
        SubtitleRendition.model_validate({**fields, "name": "../escape"})


async def test_s3_sidecars_of_one_job_each_get_their_own_download(
    tmp_path: Path, s3_server: Seaweed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two ``.srt`` sidecars of one job from S3: each track reads its own file (the job
    source's download, one per suffix, would hand the second track the first's file)."""
    for key, value in s3_server.client_env().items():
        monkeypatch.setenv(key, value)
    s3 = s3_server.client()
    s3.create_bucket(Bucket="subs")
    other = SOURCE_SRT.replace("one", "uno")  # the same size: a shared download would pass
    s3.put_object(Bucket="subs", Key="a/eng.srt", Body=SOURCE_SRT.encode())
    s3.put_object(Bucket="subs", Key="b/fra.srt", Body=other.encode())
    settings = Settings(data_dir=tmp_path / "data", s3_endpoint_url=s3_server.endpoint,
                        source_buckets="subs")  # fmt: skip
    texts = []
    for name, uri in [("sub-eng", "s3://subs/a/eng.srt"), ("sub-fra", "s3://subs/b/fra.srt")]:
        track = SubtitleRendition(name=name, source_uri=uri, codec="subrip")
        media = await prepare(settings, subtitle_input(settings, Path("/unused"), track))
        texts.append([c.text for c in parse_vtt(uri_to_path(media.uri).read_text())])
    assert texts[0][-1] == "Last <b>one</b>" and texts[1][-1] == "Last <b>uno</b>"
    track = SubtitleRendition(name="sub-x", source_uri="s3://elsewhere/x.srt", codec="srt")
    with pytest.raises(ApplicationError) as err:
        await prepare(settings, subtitle_input(settings, Path("/unused"), track))
    assert err.value.non_retryable and err.value.type == "InvalidSource"
    assert "COSMOS_SOURCE_BUCKETS" in str(err.value)
    s3.put_object(Bucket="subs", Key="huge.srt", Body=b"\n" * (MAX_SIDECAR_BYTES + 1))
    track = SubtitleRendition(name="sub-huge", source_uri="s3://subs/huge.srt", codec="srt")
    with pytest.raises(ApplicationError) as err:
        await prepare(settings, subtitle_input(settings, Path("/unused"), track))
    assert err.value.non_retryable and "at most 10485760 bytes" in str(err.value)
    assert not list(settings.data_path.rglob("subtitle-sub-huge*"))  # refused before download
