"""engine/image/layers.py: whiteouts, opaque dirs, links, devices, and refusals (pure)."""

from __future__ import annotations

import gzip
import io
import tarfile

import pytest

from hpc_exec.engine.image.layers import LayerSource, flatten
from hpc_exec.errors import ImageContentError

Member = tuple[str, bytes, str, bytes]  # name, type, linkname, data


def _layer(members: list[Member], digest: str, compress: bool = True) -> LayerSource:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, link, data in members:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.uid, info.gid = kind, link, 1000, 100
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            if kind == tarfile.CHRTYPE:
                info.devmajor, info.devminor = 1, 3
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if info.size else None)
    raw = gzip.compress(buf.getvalue()) if compress else buf.getvalue()
    return LayerSource(digest, lambda: io.BytesIO(raw), "gzip" if compress else "")


def F(name: str, data: bytes = b"x") -> Member:
    return (name, tarfile.REGTYPE, "", data)


def D(name: str) -> Member:
    return (name, tarfile.DIRTYPE, "", b"")


def S(name: str, target: str) -> Member:
    return (name, tarfile.SYMTYPE, target, b"")


def H(name: str, target: str) -> Member:
    return (name, tarfile.LNKTYPE, target, b"")


def _merged(*layers: list[Member]) -> dict[str, tarfile.TarInfo]:
    out = io.BytesIO()
    srcs = [_layer(m, f"sha256:{i:064x}", compress=i % 2 == 0) for i, m in enumerate(layers)]
    flatten(srcs, out)
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        names = [m.name for m in tar.getmembers()]
        assert len(names) == len(set(names)), "each path exactly once"
        return {m.name: m for m in tar.getmembers()}


def test_whiteouts_opaque_and_override() -> None:
    got = _merged(
        [D("etc"), F("etc/motd"), F("etc/keep"), D("usr"), D("usr/share"), D("usr/share/info"),
         F("usr/share/info/dir"), D("usr/share/doc"), F("usr/share/doc/a"), F("over", b"old")],
        [F("etc/.wh.motd"), F("usr/share/.wh.info"), D("usr/share/doc"),
         F("usr/share/doc/.wh..wh..opq"), F("usr/share/doc/new"), F("over", b"new"),
         F(".wh..wh.plnk")],
    )
    assert "etc/motd" not in got and "etc/keep" in got
    assert not any(n.startswith("usr/share/info") for n in got)
    assert "usr/share/doc/a" not in got and "usr/share/doc/new" in got
    assert got["over"].size == 3
    assert not any(".wh." in n for n in got)
    assert got["etc/keep"].uid == 1000 and got["etc/keep"].gid == 100


def test_upper_file_replaces_lower_dir_and_whiteout_then_readd() -> None:
    got = _merged([D("a"), F("a/b"), F("c")], [F("a")], [F("c", b"again")])
    assert got["a"].isreg() and "a/b" not in got
    got = _merged([F("x", b"1")], [F(".wh.x")], [F("x", b"333")])
    assert got["x"].size == 3


def test_links_and_devices_kept_or_noted() -> None:
    out = io.BytesIO()
    res = flatten([_layer([D("bin"), F("bin/busybox"), S("bin/sh", "/bin/busybox"),
                           H("bin/ls", "bin/busybox"), D("dev"),
                           ("dev/null", tarfile.CHRTYPE, "", b"")], "sha256:" + "1" * 64)],
                  out)
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        got = {m.name: m for m in tar.getmembers()}
    assert got["bin/sh"].issym() and got["bin/sh"].linkname == "/bin/busybox"
    assert got["bin/ls"].islnk() and got["bin/ls"].linkname == "bin/busybox"
    assert "dev/null" not in got
    assert any("skipped 1 device" in n for n in res.notes)


@pytest.mark.parametrize(("layer", "why"), [
    ([F("../escape")], "'..' in path"),
    ([F("a/../../escape")], "'..' in path"),
    ([F("/etc/passwd")], "absolute path"),
    ([S("evil", "/etc"), F("evil/passwd")], "writes through symlink 'evil'"),
    ([F("evil/passwd"), S("evil", "/etc")], "symlink that members of layer this write through"),
    ([H("link", "../../etc/shadow")], "hard link to outside the image"),
    ([H("link", "/etc/shadow")], "hard link to outside the image"),
    ([S("d", "/etc"), H("link", "d/shadow")], "hard link through symlink 'd'"),
])
def test_refused_names_layer_and_member(layer: list[Member], why: str) -> None:
    digest = "sha256:" + "e" * 64
    with pytest.raises(ImageContentError) as info:
        flatten([_layer(layer, digest)], io.BytesIO())
    msg = str(info.value)
    assert digest in msg and why in msg and "member" in msg


def test_symlink_escape_across_layers_refused() -> None:
    with pytest.raises(ImageContentError, match="symlink that members of layer above"):
        _merged([S("evil", "/etc")], [F("evil/passwd")])


def test_corrupt_layer_is_content_error() -> None:
    src = LayerSource("sha256:" + "c" * 64, lambda: io.BytesIO(b"\x1f\x8bnot gzip"), "gzip")
    with pytest.raises(ImageContentError, match="not a readable tar"):
        flatten([src], io.BytesIO())


def test_dot_slash_names_are_renamed_keeping_metadata() -> None:
    got = _merged([D("./etc"), F("./etc/x", b"abc"), D("./bin"), F("./bin/busybox"),
                   H("./bin/ls", "./bin/busybox"), S("./bin/sh", "busybox"), D("./")])
    assert {"etc", "etc/x", "bin", "bin/busybox", "bin/ls", "bin/sh"} <= set(got)
    assert got["etc/x"].size == 3 and got["etc/x"].uid == 1000 and got["etc/x"].mode == 0o644
    assert got["bin/ls"].islnk() and got["bin/ls"].linkname == "bin/busybox"
    assert got["bin/sh"].issym() and got["bin/sh"].linkname == "busybox"
    assert "" not in got and "." not in got


def test_long_names_and_pax_pass_through() -> None:
    long = "d/" + "n" * 150
    got = _merged([D("d"), F(long, b"12345")])
    assert got[long].size == 5
