"""Unit tests of source validation: only non-empty regular files under the allowed roots."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.storage.local import path_to_uri, uri_to_path
from app.storage.sources import OUTSIDE, SourceError, resolve_source, source_path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    path.mkdir()
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    path = tmp_path / "outside"
    path.mkdir()
    return path


def make_file(path: Path, data: bytes = b"media") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------- accepted


def test_path_inside_root(root: Path) -> None:
    media = make_file(root / "in.mp4")
    uri = resolve_source(str(media), [root])
    assert uri.startswith("file:///")
    assert uri == media.resolve().as_uri()
    assert uri_to_path(uri) == media.resolve()


def test_nested_path_inside_root(root: Path) -> None:
    media = make_file(root / "a" / "b" / "in.mp4")
    assert uri_to_path(resolve_source(str(media), [root])) == media.resolve()


@pytest.mark.parametrize("prefix", ["file://", "file://localhost"])
def test_file_uri_inside_root(root: Path, prefix: str) -> None:
    media = make_file(root / "in.mp4")
    uri = resolve_source(prefix + str(media), [root])
    assert uri == media.resolve().as_uri()


def test_percent_encoded_file_uri(root: Path) -> None:
    media = make_file(root / "with space.mp4")
    assert resolve_source(path_to_uri(media), [root]) == media.resolve().as_uri()


def test_second_root_is_allowed(root: Path, outside: Path) -> None:
    media = make_file(outside / "in.mp4")
    assert uri_to_path(resolve_source(str(media), [root, outside])) == media.resolve()


def test_result_is_the_real_path_through_a_symlinked_root(tmp_path: Path, root: Path) -> None:
    media = make_file(root / "in.mp4")
    alias = tmp_path / "alias"
    alias.symlink_to(root, target_is_directory=True)
    # Given through the alias, with the alias as the configured root.
    uri = resolve_source(str(alias / "in.mp4"), [alias])
    assert uri_to_path(uri) == media.resolve()
    assert "alias" not in uri


def test_symlink_inside_root_to_a_file_inside(root: Path) -> None:
    target = make_file(root / "real" / "in.mp4")
    link = root / "link.mp4"
    link.symlink_to(target)
    uri = resolve_source(str(link), [root])
    assert uri_to_path(uri) == target.resolve()
    assert "link.mp4" not in uri


def test_redundant_slashes_and_dots_are_fine(root: Path) -> None:
    media = make_file(root / "in.mp4")
    uri = resolve_source(f"{root}//./in.mp4", [root])
    assert uri_to_path(uri) == media.resolve()


# ---------------------------------------------------------------- path shape


@pytest.mark.parametrize("source", ["in.mp4", "./in.mp4", "sub/in.mp4", "~/in.mp4"])
def test_relative_paths_are_refused(
    root: Path, source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_file(root / "in.mp4")
    make_file(root / "sub" / "in.mp4")
    monkeypatch.chdir(root)
    with pytest.raises(SourceError, match="absolute"):
        resolve_source(source, [root])


def test_relative_file_uri_is_refused(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_file(root / "in.mp4")
    monkeypatch.chdir(root)
    with pytest.raises(SourceError):
        resolve_source("file:in.mp4", [root])


def test_dotdot_is_refused_even_if_it_lands_inside(root: Path) -> None:
    make_file(root / "in.mp4")
    (root / "sub").mkdir()
    for source in (f"{root}/sub/../in.mp4", f"file://{root}/sub/../in.mp4"):
        with pytest.raises(SourceError, match=r"'\.\.'"):
            resolve_source(source, [root])


def test_percent_encoded_dotdot_is_refused(root: Path) -> None:
    make_file(root / "in.mp4")
    (root / "sub").mkdir()
    with pytest.raises(SourceError, match=r"'\.\.'"):
        resolve_source(f"file://{root}/sub/%2e%2e/in.mp4", [root])


def test_dotdot_escaping_the_root_is_refused(root: Path, outside: Path) -> None:
    make_file(outside / "secret.mp4")
    with pytest.raises(SourceError):
        resolve_source(f"{root}/../outside/secret.mp4", [root])


def test_nul_byte_is_refused(root: Path) -> None:
    make_file(root / "in.mp4")
    with pytest.raises(SourceError, match="NUL"):
        resolve_source(f"{root}/in.mp4\x00.txt", [root])


def test_percent_encoded_nul_byte_is_refused_as_a_source_error(root: Path) -> None:
    # uri_to_path unquotes %00 into a real NUL after the raw-NUL check; Path.resolve then raises
    # a bare ValueError("embedded null byte"), which is not a SourceError.
    make_file(root / "in.mp4")
    with pytest.raises(SourceError):
        resolve_source(f"file://{root}/in.mp4%00.txt", [root])


# ---------------------------------------------------------------- outside the roots


def test_path_outside_the_roots_is_refused(root: Path, outside: Path) -> None:
    secret = make_file(outside / "secret.mp4")
    with pytest.raises(SourceError) as err:
        resolve_source(str(secret), [root])
    assert "allowed roots" in str(err.value)
    assert str(err.value) == OUTSIDE


def test_file_uri_outside_the_roots_is_refused(root: Path, outside: Path) -> None:
    secret = make_file(outside / "secret.mp4")
    with pytest.raises(SourceError, match="allowed roots"):
        resolve_source(secret.as_uri(), [root])


def test_system_file_is_refused(root: Path) -> None:
    with pytest.raises(SourceError, match="allowed roots"):
        resolve_source("/etc/passwd", [root])


def test_sibling_with_common_prefix_is_outside(tmp_path: Path, root: Path) -> None:
    sibling = make_file(tmp_path / "root2" / "in.mp4")
    with pytest.raises(SourceError, match="allowed roots"):
        resolve_source(str(sibling), [root])


@pytest.mark.parametrize(
    "missing",
    ["outside/nope.mp4", "outside/no/such/dir/nope.mp4", "outside/secret.mp4/child"],
)
def test_no_existence_oracle_outside_the_roots(
    tmp_path: Path, root: Path, outside: Path, missing: str
) -> None:
    secret = make_file(outside / "secret.mp4")
    with pytest.raises(SourceError) as existing:
        resolve_source(str(secret), [root])
    with pytest.raises(SourceError) as absent:
        resolve_source(str(tmp_path / missing), [root])
    assert str(absent.value) == str(existing.value) == OUTSIDE


def test_missing_file_inside_a_root_says_so(root: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        resolve_source(str(root / "nope.mp4"), [root])


def test_symlink_inside_root_pointing_outside_is_refused(root: Path, outside: Path) -> None:
    secret = make_file(outside / "secret.mp4")
    link = root / "link.mp4"
    link.symlink_to(secret)
    with pytest.raises(SourceError, match="symlink"):
        resolve_source(str(link), [root])
    with pytest.raises(SourceError, match="symlink"):
        resolve_source(link.as_uri(), [root])


def test_symlinked_directory_inside_root_pointing_outside_is_refused(
    root: Path, outside: Path
) -> None:
    make_file(outside / "secret.mp4")
    (root / "dir").symlink_to(outside, target_is_directory=True)
    with pytest.raises(SourceError, match="symlink"):
        resolve_source(str(root / "dir" / "secret.mp4"), [root])


def test_symlink_to_system_file_is_refused(root: Path) -> None:
    link = root / "passwd.mp4"
    link.symlink_to("/etc/passwd")
    with pytest.raises(SourceError, match="symlink"):
        resolve_source(str(link), [root])


def test_symlink_loop_is_refused(root: Path) -> None:
    (root / "a").symlink_to(root / "b")
    (root / "b").symlink_to(root / "a")
    with pytest.raises(SourceError):
        resolve_source(str(root / "a"), [root])


# ---------------------------------------------------------------- not a usable file


def test_directory_is_refused(root: Path) -> None:
    (root / "dir").mkdir()
    with pytest.raises(SourceError, match="not a regular file"):
        resolve_source(str(root / "dir"), [root])


def test_root_itself_is_refused(root: Path) -> None:
    with pytest.raises(SourceError, match="not a regular file"):
        resolve_source(str(root), [root])


def test_fifo_is_refused(root: Path) -> None:
    fifo = root / "pipe.mp4"
    os.mkfifo(fifo)
    with pytest.raises(SourceError, match="not a regular file"):
        resolve_source(str(fifo), [root])


def test_empty_file_is_refused(root: Path) -> None:
    empty = make_file(root / "empty.mp4", b"")
    with pytest.raises(SourceError, match="empty"):
        resolve_source(str(empty), [root])


# ---------------------------------------------------------------- schemes


@pytest.mark.parametrize(
    "source",
    [
        "http://example.com/in.mp4",
        "https://example.com/in.mp4",
        "HTTP://example.com/in.mp4",
        "s3://bucket/in.mp4",
        "ftp://example.com/in.mp4",
        "rtmp://example.com/live",
        "concat:/etc/passwd|/etc/passwd",
        "data:text/plain;base64,aGVsbG8=",
        "pipe:0",
        "tcp://127.0.0.1:1234",
    ],
)
def test_other_schemes_are_refused(root: Path, source: str) -> None:
    with pytest.raises(SourceError, match="scheme"):
        resolve_source(source, [root])


def test_ffmpeg_protocols_over_a_root_path_are_refused(root: Path) -> None:
    media = make_file(root / "in.mp4")
    for source in (
        f"concat:{media}|{media}",
        f"subfile,,start,0,end,0,,:{media}",
        f"file:{media}|{media}",
        f"cache:{media}",
    ):
        with pytest.raises(SourceError):
            resolve_source(source, [root])


def test_file_uri_with_another_host_is_refused(root: Path) -> None:
    media = make_file(root / "in.mp4")
    with pytest.raises(SourceError, match="host"):
        resolve_source(f"file://otherhost{media}", [root])


# ---------------------------------------------------------------- awkward names


@pytest.mark.parametrize(
    "name",
    [
        "with space.mp4",
        "quote'single.mp4",
        'quote"double.mp4',
        "new\nline.mp4",
        "tab\there.mp4",
        "ünïcödé-日本語.mp4",
        "emoji-🎬.mp4",
        "percent%20not-encoded.mp4",
        "hash#and?query.mp4",
        "semi;colon&amp.mp4",
        "colon:in:name.mp4",
        "-leading-dash.mp4",
    ],
)
def test_awkward_names_round_trip(root: Path, name: str) -> None:
    media = make_file(root / name)
    uri = resolve_source(str(media), [root])
    assert "\n" not in uri
    assert " " not in uri
    assert uri_to_path(uri) == media.resolve()
    # The returned URI is itself an accepted source naming the same file.
    assert resolve_source(uri, [root]) == uri
    assert source_path(uri, [root]) == media.resolve()


def test_non_utf8_name_round_trips(root: Path) -> None:
    # Linux names are bytes; path_to_uri percent-encodes them, uri_to_path decodes them as UTF-8
    # with replacement, so the worker's source_path then looks for a different file.
    media = make_file(root / os.fsdecode(b"latin1-\xe9t\xe9.mp4"))
    uri = resolve_source(str(media), [root])
    assert uri_to_path(uri) == media.resolve()
    assert source_path(uri, [root]) == media.resolve()


# ---------------------------------------------------------------- source_path


def test_source_path_of_an_accepted_uri(root: Path) -> None:
    media = make_file(root / "in.mp4")
    uri = resolve_source(str(media), [root])
    path = source_path(uri, [root])
    assert isinstance(path, Path)
    assert path == media.resolve()
    assert path.read_bytes() == b"media"


def test_source_path_accepts_a_plain_path(root: Path) -> None:
    media = make_file(root / "in.mp4")
    assert source_path(str(media), [root]) == media.resolve()


def test_source_path_rechecks_the_roots(root: Path, outside: Path) -> None:
    # A URI accepted with one set of roots is refused by a worker with another.
    media = make_file(outside / "in.mp4")
    uri = resolve_source(str(media), [outside])
    with pytest.raises(SourceError, match="allowed roots"):
        source_path(uri, [root])


def test_source_path_rechecks_the_file(root: Path) -> None:
    media = make_file(root / "in.mp4")
    uri = resolve_source(str(media), [root])
    media.write_bytes(b"")
    with pytest.raises(SourceError, match="empty"):
        source_path(uri, [root])
    media.unlink()
    with pytest.raises(SourceError, match="does not exist"):
        source_path(uri, [root])


def test_source_path_refuses_a_swapped_in_symlink(root: Path, outside: Path) -> None:
    media = make_file(root / "in.mp4")
    uri = resolve_source(str(media), [root])
    media.unlink()
    media.symlink_to(make_file(outside / "secret.mp4"))
    with pytest.raises(SourceError, match="symlink"):
        source_path(uri, [root])


@pytest.mark.parametrize("uri", ["http://example.com/in.mp4", "s3://bucket/in.mp4"])
def test_source_path_refuses_other_schemes(root: Path, uri: str) -> None:
    with pytest.raises(SourceError, match="scheme"):
        source_path(uri, [root])
