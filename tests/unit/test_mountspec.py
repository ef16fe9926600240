"""hpc_exec.mountspec: the one --mount/--device grammar, its escaping, and format/parse round
trips over generated values."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hpc_exec.errors import InvalidInput
from hpc_exec.mountspec import (
    Device,
    Mount,
    bind,
    format_device,
    format_mount,
    parse_device,
    parse_mount,
)

ROOT = Path(__file__).resolve().parents[2]


def test_escaped_comma_is_part_of_the_path() -> None:
    assert parse_mount(r"type=bind,src=/data/a\,b,dst=/x") == Mount("/data/a,b", "/x")
    assert parse_mount(r"type=bind,src=/d\\e,dst=/x,ro") == Mount("/d\\e", "/x", True)
    assert format_mount(Mount("/data/a,b", "/x")) == r"type=bind,source=/data/a\,b,destination=/x"


def test_unescaped_comma_names_the_stray_part() -> None:
    with pytest.raises(InvalidInput, match=r"invalid mount option 'b' .*write a comma"):
        parse_mount("type=bind,src=/data/a,b,dst=/x")


def test_a_lone_backslash_is_kept() -> None:
    assert parse_mount(r"type=bind,src=/a\b,dst=/x").source == "/a\\b"


def test_bind_validates() -> None:
    assert bind("/a/", "//b") == Mount("/a", "/b")
    with pytest.raises(InvalidInput, match="mount source must be an absolute path, got 'a'"):
        bind("a", "/b")


def test_device_with_colon_cannot_be_written() -> None:
    with pytest.raises(InvalidInput, match="contains ':'"):
        format_device(Device("/dev/a:b", "/dev/x"))


_segment = st.text(st.characters(blacklist_characters="/\0", blacklist_categories=("Cs",)),
                   min_size=1, max_size=8).filter(lambda s: s not in (".", ".."))
_path = st.lists(_segment, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts))


@given(_path, _path, st.booleans())
def test_mount_round_trip(src: str, dst: str, readonly: bool) -> None:
    mount = bind(src, dst, readonly=readonly)
    assert parse_mount(format_mount(mount)) == mount


_dev_path = _path.filter(lambda p: ":" not in p)


@given(_dev_path, _dev_path, st.sets(st.sampled_from("rwm"), min_size=1))
def test_device_round_trip(src: str, dst: str, access: set[str]) -> None:
    device = parse_device(f"{src}:{dst}:{''.join(sorted(access))}")
    assert parse_device(format_device(device)) == device


def test_base_modules_import_only_the_standard_library() -> None:
    """mountspec and errors are shared with the hooks, which are standard-library programs."""
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    for rel, allowed in (("hpc_exec/mountspec.py", {"hpc_exec.errors"}),
                         ("hpc_exec/errors.py", set())):
        tree = ast.parse((ROOT / rel).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in stdlib or name in allowed, (rel, name)
