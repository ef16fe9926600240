"""engine/store: Layout, FileLock (timeout, warnings, shared), Index (drop vanished, remove)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from hpc_exec.config import LockTimings
from hpc_exec.engine.store.index import ImageEntry, Index
from hpc_exec.engine.store.layout import Layout
from hpc_exec.engine.store.lock import FileLock
from hpc_exec.errors import LockTimeout, RepositoryError

ID = "sha256:" + "1" * 64


def _entry(layout: Layout, key: str, image_id: str = ID) -> ImageEntry:
    sqfs, meta = layout.squashfs(image_id), layout.image_metadata(image_id)
    sqfs.write_bytes(b"x")
    meta.write_text("{}")
    return ImageEntry(key=key, server="s", repository="r", tag="t", digest=image_id,
                      image_id=image_id, squashfs=sqfs, metadata=meta, created="c", size=1)


def test_layout_paths_and_version(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "repo")
    layout.ensure()
    assert (tmp_path / "repo" / "version").read_text() == "1\n"
    assert layout.squashfs(ID) == tmp_path / "repo" / "images" / ("1" * 64 + ".squashfs")
    assert layout.pull_lock(ID).parent == layout.locks_dir
    with pytest.raises(RepositoryError, match="bad content digest"):
        layout.squashfs("sha256:../../etc")
    layout.version_file.write_text("99\n")
    with pytest.raises(RepositoryError, match="format version '99'"):
        layout.ensure()


def test_publish_is_no_clobber(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.ensure()
    final = layout.squashfs(ID)
    first, second = layout.temp("x"), layout.temp("x")
    first.write_bytes(b"first")
    second.write_bytes(b"second")
    assert layout.publish(first, final) is True
    assert layout.publish(second, final) is False
    assert final.read_bytes() == b"first" and not second.exists()
    stale = layout.temp("owner")
    stale.write_bytes(b"")
    assert layout.remove_stale_temps("owner") == [stale]


def test_lock_timeout_names_file_and_warns(tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "x.lock"
    seen: list[str] = []
    with FileLock(path) as holder:
        holder.note("node7 pid 42 pulling img")
        waiter = FileLock(path, timeout=0.3, warning=0.1, what="the test lock",
                          on_wait=seen.append)
        with caplog.at_level(logging.WARNING), pytest.raises(LockTimeout) as info:
            waiter.acquire()
        assert str(path) in str(info.value)
        assert seen and seen[0].startswith(f"still waiting for the test lock ({path}) after")
        assert "held by node7 pid 42 pulling img" in seen[0]
        # shared locks exclude the exclusive holder too
        assert not FileLock(path, shared=True).try_acquire()
    with FileLock(path, shared=True), FileLock(path, shared=True):
        assert not FileLock(path).try_acquire()
    assert path.exists()  # never unlinked


def test_index_add_remove_and_drop_vanished(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.ensure()
    index = Index(layout, LockTimings(timeout_ms=2000, warning_ms=1000))
    a, b = _entry(layout, "a"), _entry(layout, "b")
    index.add(a)
    index.add(b)
    assert set(index.read()) == {"a", "b"}
    assert index.remove("a") == a and a.squashfs.exists()  # b still uses the files
    other = _entry(layout, "c", "sha256:" + "2" * 64)
    index.add(other)
    other.squashfs.unlink()
    assert set(index.read()) == {"b"}  # c's file vanished: dropped on read
    data = json.loads(layout.metadata.read_text())
    assert data["version"] == 1 and data["images"]["b"]["squashfs"].startswith("images/")
    assert index.remove("b") is not None and not b.squashfs.exists()
    assert index.remove("nope") is None
    assert list(layout.tmp_dir.iterdir()) == []


def test_index_corrupt_is_repository_error(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.ensure()
    layout.metadata.write_text("{not json")
    with pytest.raises(RepositoryError, match="metadata.json is not valid JSON"):
        Index(layout).read()


def test_moved_tag_frees_the_old_image(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.ensure()
    index = Index(layout)
    old = _entry(layout, "k", "sha256:" + "3" * 64)
    keep = _entry(layout, "other", "sha256:" + "4" * 64)
    index.add(old)
    index.add(keep)
    index.add(_entry(layout, "k", "sha256:" + "5" * 64))
    assert not old.squashfs.exists() and keep.squashfs.exists()
    shared = _entry(layout, "k2", "sha256:" + "4" * 64)
    index.add(shared)
    index.add(_entry(layout, "k2", "sha256:" + "6" * 64))
    assert keep.squashfs.exists()  # still used by "other"
