"""hpc_exec/cli/images.py: the images table and the command-line surface (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpc_exec.cli import build_parser, main
from hpc_exec.engine.store.index import ImageEntry
from hpc_exec.cli.images import format_images, human_size


def _entry(key: str, tag: str) -> ImageEntry:
    return ImageEntry(key=key, server="127.0.0.1:5000", repository="testbed/busybox", tag=tag,
                      digest="sha256:" + "d" * 64, image_id="sha256:" + "a" * 64,
                      squashfs=Path("/x.squashfs"), metadata=Path("/x.json"),
                      created="2026-01-02T03:04:05+00:00", size=1_090_000)


def test_images_table() -> None:
    table = format_images([_entry("127.0.0.1:5000/testbed/busybox:latest", "latest"),
                           _entry("127.0.0.1:5000/testbed/busybox@sha256:" + "d" * 64, "x")])
    lines = table.splitlines()
    assert lines[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE", "SERVER"]
    assert lines[1].split() == ["127.0.0.1:5000/testbed/busybox", "latest", "a" * 12,
                                "2026-01-02T03:04:05", "1.04MB", "127.0.0.1:5000"]
    assert lines[2].split()[1] == "<none>"
    assert "DIGEST" in format_images([], digests=True)


def test_sizes_are_1024_based_as_sarus_prints_them() -> None:
    # issue 13, item 21: Sarus' createSizeString divides by 1024 while the size is above 1024
    assert human_size(1_090_000) == "1.04MB"
    assert human_size(999) == "999.00B" and human_size(1024) == "1024.00B"
    assert human_size(1025) == "1.00KB" and human_size(2_500_000_000) == "2.33GB"


@pytest.mark.parametrize(("server", "repository", "shown"), [
    ("127.0.0.1:5000", "testbed/busybox", "127.0.0.1:5000/testbed/busybox"),
    ("docker.io", "library/alpine", "alpine"),
    ("docker.io", "ethcscs/mpich", "ethcscs/mpich"),
    ("docker.io", "library/a/b", "library/a/b"),
    ("load", "library/my_debian", "load/library/my_debian"),
])
def test_the_listed_name_is_the_one_run_finds(tmp_path: Path, server: str, repository: str,
                                              shown: str) -> None:
    """issue 13, item 12: the REPOSITORY column pasted into run/rmi finds the same entry (as
    Sarus lists it: no server for docker.io, no library/ namespace there)."""
    from hpc_exec.cli.images import display_name
    from hpc_exec.engine.api import _find, _references
    from hpc_exec.engine.store.index import Index
    from hpc_exec.engine.store.layout import Layout

    layout = Layout(tmp_path)
    layout.ensure()
    image_id = "sha256:" + "a" * 64
    sqfs, meta = layout.squashfs(image_id), layout.image_metadata(image_id)
    sqfs.write_bytes(b"x")
    meta.write_text("{}")
    entry = ImageEntry(key=f"{server}/{repository}:latest", server=server,
                       repository=repository, tag="latest", digest=image_id, image_id=image_id,
                       squashfs=sqfs, metadata=meta, created="c", size=1)
    index = Index(layout)
    index.add(entry)
    assert display_name(entry) == shown
    assert format_images([entry]).splitlines()[1].split()[0] == shown
    assert _find(index, _references(shown)) == entry


def test_commands_and_options_exist() -> None:
    parser = build_parser()
    args = parser.parse_args(["pull", "--username", "u", "--password-stdin", "--temp-dir", "/t",
                              "--centralized-repository", "docker://alpine"])
    assert args.username == "u" and args.password_stdin and args.temp_dir == Path("/t")
    assert parser.parse_args(["images", "--digests", "--json"]).json
    assert parser.parse_args(["rmi", "--centralized-repository", "x"]).image == "x"
    assert parser.parse_args(["load", "a.tar", "name"]).archive == Path("a.tar")
    with pytest.raises(SystemExit):
        parser.parse_args(["pull", "--login", "--username", "u", "x"])


def test_password_stdin_needs_username(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pull", "--password-stdin", "alpine"]) == 110
    assert "--password-stdin needs --username" in capsys.readouterr().err


class _Stream:
    def __init__(self, tty: bool) -> None:
        self.tty, self.text = tty, ""

    def isatty(self) -> bool:
        return self.tty

    def write(self, s: str) -> int:
        self.text += s
        return len(s)

    def flush(self) -> None:
        pass


@pytest.mark.parametrize("tty", [True, False])
def test_progress_on_a_tty_plain_lines_otherwise(tty: bool) -> None:
    from hpc_exec.cli.images import CliReporter

    out, err = _Stream(False), _Stream(tty)
    r = CliReporter(out, err)  # type: ignore[arg-type]
    r.header([("image", "x"), ("cache directory", "/c")])
    digest = "sha256:" + "ab" * 32
    r.layer_start(digest, 2_000_000)
    r.layer_progress(digest, 1_000_000)
    r.layer_done(digest)
    assert out.text == '# image           : x\n# cache directory : "/c"\n'
    assert f"> completed      : {digest}" in err.text
    if tty:
        assert "\r\x1b[K  abababababab 1.0/2.0 MB" in err.text
        assert "> pulling        :" not in err.text
    else:
        assert "\r" not in err.text and f"> pulling        : {digest} (2.0 MB)" in err.text
