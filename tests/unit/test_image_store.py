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


def test_publish_is_no_clobber(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layout = Layout(tmp_path)
    layout.ensure()
    final = layout.squashfs(ID)
    first, second = layout.temp("x"), layout.temp("x")
    first.write_bytes(b"first")
    second.write_bytes(b"second")
    assert layout.publish(first, final) is True
    assert layout.publish(second, final) is False
    assert final.read_bytes() == b"first" and not second.exists()
    # the file appears between the check and the move (another pull under another lock):
    # it is kept, not replaced (review finding: a rename would have overwritten it)
    third = layout.temp("x")
    third.write_bytes(b"third")
    real_exists = Path.exists
    monkeypatch.setattr(Path, "exists", lambda self, **kw: False if self == final
                        else real_exists(self, **kw))
    assert layout.publish(third, final) is False
    monkeypatch.undo()
    assert final.read_bytes() == b"first" and not third.exists()
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


def test_entries_are_listed_in_pull_order(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """issue 13, item 21: Sarus lists images in the order they were pulled; a pull again of a
    listed image moves it last."""
    from types import SimpleNamespace

    from hpc_exec.engine import api

    layout = Layout(tmp_path)
    layout.ensure()
    index = Index(layout)
    for key, n in (("z", "7"), ("a", "8"), ("m", "9")):
        index.add(_entry(layout, key, "sha256:" + n * 64))
    assert list(index.read()) == ["z", "a", "m"]
    index.add(_entry(layout, "z", "sha256:" + "7" * 64))
    assert list(index.read()) == ["a", "m", "z"]
    assert list(json.loads(layout.metadata.read_text())["images"]) == ["a", "m", "z"]
    monkeypatch.setattr(api, "repository", lambda *a, **k: SimpleNamespace(index=index))
    assert [e.key for e in api.images()] == ["a", "m", "z"]


# -- issue 12 -------------------------------------------------------------------------------------

def test_a_failed_index_write_deletes_no_image_file(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 2: files are deleted only after the new index is stored (rmi and a moved tag)."""
    layout = Layout(tmp_path)
    layout.ensure()
    index = Index(layout)
    first = _entry(layout, "k")
    index.add(first)

    def fail(entries: object) -> None:
        raise RepositoryError("cannot write metadata.json: No space left on device")

    monkeypatch.setattr(index, "_store", fail)
    with pytest.raises(RepositoryError, match="No space left"):
        index.remove("k")
    other = "sha256:" + "2" * 64
    with pytest.raises(RepositoryError, match="No space left"):
        index.add(_entry(layout, "k", other))  # the tag moves: the old image must stay
    monkeypatch.undo()
    assert first.present() and index.get("k") == first


def test_ensure_refuses_an_unwritable_tree_before_any_work(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    layout = Layout(tmp_path / "repo")
    layout.ensure()
    real_access = __import__("os").access
    monkeypatch.setattr("os.access", lambda p, m: False if Path(p) == layout.root
                        else real_access(p, m))
    with pytest.raises(RepositoryError, match=r"repo is not writable: .*repo: permission"):
        layout.ensure()


def test_modes_are_explicit_whatever_the_umask(tmp_path: Path) -> None:
    """Item 5: 0755/0644 for a private repository, 2775/0664 (0644 immutable) group-shared."""
    import os
    import stat

    old = os.umask(0)
    try:
        for shared, dmode, fmode in ((False, 0o755, 0o644), (True, 0o2775, 0o664)):
            layout = Layout(tmp_path / str(shared), group_shared=shared)
            layout.ensure()
            index = Index(layout)
            index.add(_entry(layout, "k"))
            layout.log_event("download", "x")
            tmp = layout.temp("x")
            tmp.write_bytes(b"1")
            layout.publish(tmp, layout.squashfs("sha256:" + "3" * 64))
            for path in [layout.root, *layout.root.rglob("*")]:
                mode = stat.S_IMODE(path.stat().st_mode)
                rel = layout.relative(path) if path != layout.root else "."
                want = dmode if path.is_dir() else \
                    0o644 if rel == "version" or rel.endswith("3" * 64 + ".squashfs") else fmode
                if rel.startswith("images/") and "1" * 64 in rel:
                    continue  # written by the test's own _entry, not by the store
                assert (rel, oct(mode)) == (rel, oct(want))
    finally:
        os.umask(old)


def test_an_existing_too_open_directory_of_ours_is_tightened(tmp_path: Path) -> None:
    import os

    layout = Layout(tmp_path / "repo")
    layout.ensure()
    os.chmod(layout.images_dir, 0o777)
    layout.ensure()
    assert layout.images_dir.stat().st_mode & 0o777 == 0o755


def test_damage_is_a_size_mismatch(tmp_path: Path) -> None:
    """Item 3: one stat finds a truncated squashfs."""
    layout = Layout(tmp_path)
    layout.ensure()
    entry = _entry(layout, "k")
    assert entry.damage() is None
    assert "has 1 bytes, 5 when it was pulled" in (entry._replace(size=5).damage() or "")


def test_verify_hashes_marks_and_a_new_add_clears(tmp_path: Path) -> None:
    """Item 3, deep check: same-size damage is found by hash only, marked in the index (so a
    lookup sees it), and storing the image again clears the mark for every key."""
    from hpc_exec.engine.store.layout import content_digest

    layout = Layout(tmp_path)
    layout.ensure()
    index = Index(layout)
    entry = _entry(layout, "a")
    entry = entry._replace(squashfs_digest=content_digest(entry.squashfs))
    index.add(entry)
    index.add(entry._replace(key="b", squashfs_digest=None))  # reused files: digest kept
    assert {v.entry.key: v.status for v in index.verify()} == {"a": "ok", "b": "ok"}
    assert json.loads(layout.metadata.read_text())["images"]["b"]["squashfs_digest"] == \
        entry.squashfs_digest

    entry.squashfs.write_bytes(b"y")  # same size, other bytes
    assert all(e.damage() is None for e in index.read().values())
    verdicts = index.verify()
    assert [v.status for v in verdicts] == ["damaged", "damaged"]
    assert "changed since it was pulled" in (verdicts[0].problem or "")
    assert all("changed since" in (e.damage() or "") for e in index.read().values())

    entry.squashfs.write_bytes(b"x")  # repaired: the pull adds the entry again
    index.add(entry._replace(squashfs_digest=content_digest(entry.squashfs)))
    assert all(e.damage() is None for e in index.read().values())
    assert [v.status for v in index.verify()] == ["ok", "ok"]
    index.add(_entry(layout, "c", ID.replace("1", "2")))  # as written before digests
    assert {v.entry.key: v.status for v in index.verify()}["c"] == "size only"


def test_shared_lock_falls_back_to_read_only_on_a_read_only_filesystem(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 4: EROFS, not only EACCES, lets a reader take the shared lock read-only."""
    import errno
    import os

    path = tmp_path / "metadata.lock"
    path.write_text("")
    real_open = os.open

    def ro_open(p: object, flags: int, *args: object) -> int:
        if flags & (os.O_RDWR | os.O_WRONLY):
            raise OSError(errno.EROFS, "Read-only file system", str(p))
        return real_open(p, flags, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", ro_open)
    with FileLock(path, shared=True) as lock:
        assert lock.held
    with pytest.raises(RepositoryError, match="Read-only file system"):
        FileLock(path, shared=False).acquire()


def test_work_dirs_in_the_shared_temp_dir_are_removed_only_when_abandoned(tmp_path: Path
                                                                          ) -> None:
    """Item 1: a live pull's work dir (owner file flocked) survives any other cleaner; a dead
    one's (lock free), one whose owner file is gone, and an old half-made one do not."""
    import os

    from hpc_exec.engine.image.pull import (
        _make_work_dir,
        _remove_work_dir,
        remove_abandoned_work_dirs,
    )

    live, fd = _make_work_dir(tmp_path, "abc")
    (live / "layer").write_bytes(b"x")
    dead = tmp_path / "hpc-exec-pull-abc.dead"
    dead.mkdir()
    (dead / ".owner").write_text("")
    ownerless = tmp_path / "hpc-exec-pull-abc.gone"
    ownerless.mkdir()
    young = tmp_path / "hpc-exec-pulling-abc.young"
    young.mkdir()
    old = tmp_path / "hpc-exec-pulling-abc.old"
    old.mkdir()
    os.utime(old, (0, 0))
    other = tmp_path / "hpc-exec-pull-xyz.dead"  # another digest: not this lock's business
    other.mkdir()
    removed = remove_abandoned_work_dirs(tmp_path, "abc")
    assert sorted(p.name for p in removed) == sorted([dead.name, ownerless.name, old.name])
    assert live.is_dir() and (live / "layer").exists() and young.is_dir() and other.is_dir()
    _remove_work_dir(live, fd)
    assert not live.exists()
