"""Pull an image into a repository, once, however many processes ask at the same time.

Contract (:func:`pull`), read top to bottom:

1. parse the reference; 2. resolve it with ONE manifest request; 3. if the index already maps
the key to that digest, report "up to date" and return (no other request, no lock); 4. take the
per-digest pull lock (``locks/<digest>.lock``; waiters say whom and what they wait for, bounded
by :data:`PULL_LOCK_TIMEOUT`); 5. if another process indexed that digest meanwhile, reuse it;
6. select the linux/amd64 manifest, fetch the config; 7. unless the squashfs of that config
already exists, download the layers in parallel (verified while streaming) while flattening them
top-down into tar2sqfs, then publish squashfs and metadata by atomic rename; 8. ``index.add``.

Every blob download and conversion appends a line to the repository's ``pulls.log``. A killed
puller leaves only ``tmp/<digest>.*`` (the next holder of the same pull lock deletes them) and
``<temp dir>/hpc-exec-pull-<digest>.*``: the temp dir is shared by every repository and user,
so a work dir is deleted only once the flock its puller held on it is free
(:func:`remove_abandoned_work_dirs`).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import logging
import os
import random
import shutil
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from hpc_exec.engine.image.reference import ImageReference, api_host, parse
from hpc_exec.engine.image.registry import Credentials, RegistryClient
from hpc_exec.engine.store.index import ImageEntry, Index
from hpc_exec.engine.store.layout import Layout
from hpc_exec.engine.store.lock import FileLock

from hpc_exec.config import Settings, SquashfsOptions
from hpc_exec.errors import InvalidInput, RegistryError, RepositoryError

if TYPE_CHECKING:  # the rest loads only when this process does the work (waiters stay light)
    import threading
    from concurrent.futures import Future

    from hpc_exec.engine.image import manifest as mf
    from hpc_exec.engine.image.layers import LayerSource

__all__ = ["PULL_LOCK_TIMEOUT", "PullLock", "Reporter", "Repository", "connect",
           "convert_and_publish", "disk_errors", "entry_for", "now", "pull",
           "remove_abandoned_work_dirs", "remove_damaged", "temp_directory"]

log = logging.getLogger(__name__)

PULL_LOCK_TIMEOUT = 3600.0  # seconds a puller waits for another one pulling the same digest
PARALLEL_DOWNLOADS = 4


class Reporter:
    """Where pull progress goes. The default logs at INFO; the CLI prints (hpc_exec/cli/images.py)."""

    def header(self, fields: Sequence[tuple[str, str]]) -> None:
        for name, value in fields:
            log.info("%s: %s", name, value)

    def say(self, message: str) -> None:
        log.info("%s", message)

    def layer_start(self, digest: str, size: int) -> None:
        pass

    def layer_progress(self, digest: str, nbytes: int) -> None:
        pass

    def layer_done(self, digest: str) -> None:
        pass


@dataclass(frozen=True)
class Repository:
    """A repository root with its index (see engine/api.py for how one is chosen)."""

    layout: Layout
    index: Index
    settings: Settings
    kind: str = "local"  # or "centralized"


def connect(server: str, credentials: Credentials | None, settings: Settings) -> RegistryClient:
    """A client for ``server``: plain http only if the site config lists it as insecure."""
    from hpc_exec.engine.image import auth

    insecure = server in {r.lower() for r in settings.insecure_registries}
    creds = credentials if credentials is not None else auth.from_auth_files(server)
    return RegistryClient(api_host(server), credentials=creds, insecure=insecure,
                          ca_files=[] if insecure else auth.ca_files(server),
                          timeout=settings.registry_timeout_ms / 1000,
                          retries=settings.registry_retries)


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _owner(digest: str) -> str:
    return digest.partition(":")[2][:32]


def pull(
    ref: str | ImageReference,
    repo: Repository,
    *,
    credentials: Credentials | None = None,
    platform: str = "linux/amd64",
    temp_dir: Path | None = None,
    reporter: Reporter | None = None,
) -> ImageEntry:
    """Make ``ref`` present and current in ``repo``; return its entry (module contract)."""
    report = reporter or Reporter()
    reference = parse(ref) if isinstance(ref, str) else ref
    temp_root = temp_directory(temp_dir, repo.settings.temp_dir)
    with connect(reference.server, credentials, repo.settings) as client:
        body, ctype, digest = client.get_manifest(reference.repository,
                                                  reference.manifest_reference)
        report.header([("image", reference.key), ("cache directory", str(repo.layout.root)),
                       ("temp directory", str(temp_root)),
                       ("images directory", str(repo.layout.images_dir)),
                       ("image digest", digest)])
        current = repo.index.get(reference.key)
        if current is not None and current.digest == digest:
            damage = current.damage()
            if damage is None:
                report.say(f"image is up to date: {reference.key}")
                return current
            report.say(f"image {reference.key} is damaged ({damage}); pulling it again")
        repo.layout.ensure()  # RepositoryError now if it cannot be written, before any work

        def pulled() -> ImageEntry | None:
            return repo.index.find(lambda e: e.digest == digest and e.damage() is None)

        with PullLock(repo, digest, reference, report, temp_root, pulled) as done:
            if done is not None:
                report.say(f"reusing {done.short_id}, already pulled as {done.key}"
                           if done.key != reference.key else
                           f"reusing {done.short_id}, pulled by another process")
                if done.key == reference.key:
                    return done
                entry = done._replace(key=reference.key, server=reference.server,
                                repository=reference.repository, tag=reference.tag,
                                created=now())
                repo.index.add(entry)
                return entry
            image = _resolve_platform(client, reference, body, ctype, digest, platform)
            with disk_errors(temp_root, repo.layout.tmp_dir):
                config = _fetch_config(client, reference, image, repo.layout, digest)
                remove_damaged(repo, config.digest, report)
                sqfs_digest = None  # files already there: Index.add keeps what was recorded
                if not (repo.layout.squashfs(config.digest).exists()
                        and repo.layout.image_metadata(config.digest).exists()):
                    sqfs_digest = _download_and_convert(client, reference, image, config, repo,
                                                        temp_root, report, digest)
                else:
                    report.say(f"image {config.digest[:19]} is already in the cache")
            entry = entry_for(reference, digest, config.digest, repo.layout, sqfs_digest)
            repo.index.add(entry)
            report.say(f"pulled {reference.key} ({entry.short_id})")
            return entry


def temp_directory(given: Path | None, site: Path) -> Path:
    """The temp dir of a pull or load: ``given`` (``--temp-dir``, relative to the current
    directory) must be an existing directory, as in Sarus ("invalid temporary directory"),
    never created; else the site's ``tempDir`` (created when missing)."""
    if given is None:
        return Path(site)
    path = Path(os.path.abspath(given))
    if not path.is_dir():
        raise InvalidInput(f"invalid temporary directory {str(path)!r}: "
                           + ("it is not a directory" if path.exists() else "it does not exist"),
                           hint="give an existing directory to --temp-dir")
    return path


class PullLock:
    """The per-digest pull lock, with the waiting message and the stale-temp cleanup.

    Entering returns what ``done()`` finds (the work is done: the lock is not held), or None
    with the lock held exclusively (this process does the work). Waiters wait for a *shared*
    lock, so when the puller finishes they all wake at once and reuse its result; only if it
    failed does one of them take the exclusive lock and try again.
    """

    def __init__(self, repo: Repository, digest: str, reference: ImageReference,
                 report: Reporter, temp_root: Path,
                 done: Callable[[], ImageEntry | None] = lambda: None) -> None:
        self.repo, self.digest, self.reference, self.report = repo, digest, reference, report
        self.temp_root = temp_root
        self.done = done
        self.lock = self._lock(shared=False)

    def _lock(self, shared: bool, timeout: float = PULL_LOCK_TIMEOUT) -> FileLock:
        return FileLock(self.repo.layout.pull_lock(self.digest), shared=shared, timeout=timeout,
                        warning=self.repo.settings.repository_metadata_lock_timings.warning_ms
                        / 1000, what=f"the pull of {self.digest[:19]}",
                        on_wait=self.report.say, poll=0.02, mode=self.repo.layout.file_mode)

    def __enter__(self) -> ImageEntry | None:
        deadline = time.monotonic() + PULL_LOCK_TIMEOUT
        said = False
        while not self.lock.try_acquire():
            if not said:
                holder = self.lock.holder()
                self.report.say(f"waiting for another process pulling {self.digest[:19]} "
                                f"({holder or 'starting'}); will reuse its result")
                said = True
            with self._lock(shared=True, timeout=max(0.0, deadline - time.monotonic())):
                found = self.done()
            if found is not None:
                return found
            time.sleep(random.uniform(0.005, 0.05))  # the puller failed: let one waiter win
        self.lock.note(f"{socket.gethostname()} pid {os.getpid()} pulling {self.reference.key}")
        owner = _owner(self.digest)
        for path in self.repo.layout.remove_stale_temps(owner):
            log.info("removed %s left by an interrupted pull", path)
        for path in remove_abandoned_work_dirs(self.temp_root, owner):
            log.info("removed %s left by an interrupted pull", path)
        return self.done()

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


def _resolve_platform(client: RegistryClient, reference: ImageReference, body: bytes,
                      ctype: str, digest: str, platform: str) -> mf.Manifest:
    from hpc_exec.engine.image import manifest as mf

    top = mf.parse(body, ctype, digest)
    if isinstance(top, mf.Manifest):
        return top
    desc = mf.select_platform(top, platform)
    body2, ctype2, digest2 = client.get_manifest(reference.repository, desc.digest)
    image = mf.parse(body2, ctype2 or desc.media_type, digest2)
    if not isinstance(image, mf.Manifest):
        raise RegistryError(f"index {digest} points to another index {desc.digest}")
    return image


def _fetch_config(client: RegistryClient, reference: ImageReference, image: mf.Manifest,
                  layout: Layout, owner_digest: str) -> mf.ImageConfig:
    from hpc_exec.engine.image import manifest as mf

    tmp = layout.temp(_owner(owner_digest), ".config")
    try:
        client.download_blob(reference.repository, image.config.digest, tmp,
                             size=image.config.size)
        layout.log_event("download", f"{image.config.digest} {image.config.size}")
        return mf.parse_config(tmp.read_bytes(), image.config.digest)
    finally:
        tmp.unlink(missing_ok=True)


def remove_damaged(repo: Repository, image_id: str, report: Reporter) -> None:
    """Delete the image files of ``image_id`` if an index entry finds them damaged, so that
    they are made anew (a running container keeps its mounted inode)."""
    damaged = repo.index.find(lambda e: e.image_id == image_id and e.damage() is not None)
    if damaged is not None:
        report.say(f"removing the damaged {repo.layout.relative(damaged.squashfs)}")
        for path in (damaged.squashfs, damaged.metadata):
            path.unlink(missing_ok=True)


class _Aborted(Exception):
    pass


# The work dirs of pulls live in the site's tempDir, which every repository and every user
# share: the pull lock of one repository says nothing about another repository's pull of the
# same digest (issue 12, item 1). So each work dir carries its own liveness proof: its puller
# holds an exclusive flock on ``<work>/.owner`` for as long as it works (the kernel drops it
# when the puller dies), and a cleaner deletes only a work dir whose lock it can take.
WORK_OWNER_FILE = ".owner"
WORK_DIR_GRACE = 600.0  # s: an 'hpc-exec-pulling-' dir younger than this may be being made


def _make_work_dir(temp_root: Path, owner: str) -> tuple[Path, int]:
    """A fresh ``<temp_root>/hpc-exec-pull-<owner>.<random>`` (mode 0700) and the descriptor
    of its flocked owner file (give both to :func:`_remove_work_dir`). The dir is made under
    another name and renamed once its owner file is locked, so a work dir without an owner
    file is never a live one."""
    import fcntl
    import tempfile

    making = Path(tempfile.mkdtemp(prefix=f"hpc-exec-pulling-{owner}.", dir=temp_root))
    fd = os.open(making / WORK_OWNER_FILE, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        work = temp_root / making.name.replace("hpc-exec-pulling-", "hpc-exec-pull-", 1)
        os.rename(making, work)
    except BaseException:
        os.close(fd)
        shutil.rmtree(making, ignore_errors=True)
        raise
    return work, fd


def _remove_work_dir(work: Path, owner_fd: int) -> None:
    """Delete ``work``, its owner file last, so that a kill midway leaves a dir that is
    either still marked as ours-and-dead (the flock is gone) or has nothing left to mark."""
    try:
        for entry in os.scandir(work):
            if entry.name == WORK_OWNER_FILE:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                try:
                    os.unlink(entry.path)
                except FileNotFoundError:
                    pass
        (work / WORK_OWNER_FILE).unlink(missing_ok=True)
        os.rmdir(work)
    except OSError:
        shutil.rmtree(work, ignore_errors=True)
    finally:
        os.close(owner_fd)


def remove_abandoned_work_dirs(temp_root: Path, owner: str) -> list[Path]:
    """Delete the ``hpc-exec-pull-<owner>.*`` work dirs whose puller is gone (their owner
    file is not locked); leave live ones, whichever repository or user they belong to."""
    import fcntl

    removed: list[Path] = []
    uid = os.getuid()
    for path in temp_root.glob(f"hpc-exec-pulling-{owner}.*"):  # killed while being made
        try:
            st = path.lstat()
        except OSError:
            continue
        if (st.st_uid == uid or uid == 0) and time.time() - st.st_mtime > WORK_DIR_GRACE:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    for path in temp_root.glob(f"hpc-exec-pull-{owner}.*"):
        try:
            st = path.lstat()
        except OSError:
            continue
        if st.st_uid != uid and uid != 0:
            continue  # another user's: not ours to judge
        try:
            fd = os.open(path / WORK_OWNER_FILE, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            fd = -1  # a live work dir always has its owner file: this one was being removed
        except OSError:
            continue
        try:
            if fd >= 0:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # a live pull (of any repository) works in it
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        finally:
            if fd >= 0:
                os.close(fd)
    return removed


def _download_and_convert(client: RegistryClient, reference: ImageReference,
                          image: mf.Manifest, config: mf.ImageConfig, repo: Repository,
                          temp_root: Path, report: Reporter, digest: str) -> str | None:
    """Download layers in parallel and flatten them top-down as each one completes; the
    sha256 of the published squashfs (see :func:`convert_and_publish`)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from hpc_exec.engine.image import manifest as mf
    from hpc_exec.engine.image.layers import LayerSource

    temp_root.mkdir(parents=True, exist_ok=True)
    work, owner_fd = _make_work_dir(temp_root, _owner(digest))
    abort = threading.Event()
    pool = ThreadPoolExecutor(max_workers=PARALLEL_DOWNLOADS, thread_name_prefix="hpc-pull")
    try:
        compressions = [mf.compression_of(d) for d in image.layers]
        report.say(f"pulling {len(image.layers)} layer(s), "
                   f"{sum(d.size for d in image.layers) / 1e6:.1f} MB")
        # Top layer first: it is the first one the flattener needs. A layer listed twice
        # (the same digest) is downloaded once.
        by_digest: dict[str, Future[Path]] = {}
        for desc in reversed(image.layers):
            if desc.digest not in by_digest:
                by_digest[desc.digest] = pool.submit(_download_layer, client, reference, desc,
                                                     work, repo.layout, report, abort)
        futures = [by_digest[d.digest] for d in image.layers]
        sources = [LayerSource(d.digest, _opener(futures[i], compressions[i], work),
                               "gzip" if compressions[i] == "gzip" else "")
                   for i, d in enumerate(image.layers)]
        return _convert(sources, config, repo.layout, report, digest, repo.settings.squashfs)
    except BaseException:
        abort.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        _remove_work_dir(work, owner_fd)


@contextlib.contextmanager
def disk_errors(*dirs: Path) -> Iterator[None]:
    """Turn a full filesystem (ENOSPC, EDQUOT) into RepositoryError naming it: the one of
    ``dirs`` with the least space left when the error carries no file name (issue 12, item 10)."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise

        from hpc_exec.files import free_bytes

        def free(d: Path) -> int:
            known = free_bytes(d)
            return 1 << 62 if known is None else known

        where = exc.filename or min(dirs, key=free)
        raise RepositoryError(f"no space left on the filesystem of {where}: {exc.strerror}",
                              hint="free space there, or pull into another repository or "
                              "with another tempDir (--temp-dir)") from exc


def _download_layer(client: RegistryClient, reference: ImageReference, desc: mf.Descriptor,
                    work: Path, layout: Layout, report: Reporter,
                    abort: threading.Event) -> Path:
    dest = work / desc.hex
    report.layer_start(desc.digest, desc.size)

    def progress(n: int) -> None:
        if abort.is_set():
            raise _Aborted()
        report.layer_progress(desc.digest, n)

    with client.clone() as mine:
        mine.download_blob(reference.repository, desc.digest, dest, size=desc.size,
                           progress=progress)
    layout.log_event("download", f"{desc.digest} {desc.size}")
    report.layer_done(desc.digest)
    return dest


def _opener(future: Future[Path], compression: str, work: Path) -> Callable[[], IO[bytes]]:
    def open_layer() -> IO[bytes]:
        path = future.result()
        if compression == "zstd":
            from hpc_exec import process

            plain = path.with_suffix(".tar")
            if not plain.exists():
                process.run(["zstd", "-q", "-d", "-f", "-o", str(plain), str(path)],
                            timeout=1800, desc="decompressing a zstd layer")
            path = plain
        return open(path, "rb")
    return open_layer


def convert_and_publish(sources: Sequence[LayerSource], config: mf.ImageConfig, layout: Layout,
                        report: Reporter, owner_digest: str, options: SquashfsOptions
                        ) -> str | None:
    """Flatten ``sources`` into a squashfs + metadata and publish both (caller holds the lock
    of ``owner_digest``); the sha256 of the published squashfs, None if one was there."""
    return _convert(sources, config, layout, report, owner_digest, options)


def _convert(sources: Sequence[LayerSource], config: mf.ImageConfig, layout: Layout,
             report: Reporter, owner_digest: str, options: SquashfsOptions) -> str | None:
    from hpc_exec.engine.image.layers import flatten
    from hpc_exec.engine.image.squash import squash
    from hpc_exec.engine.store.layout import content_digest

    owner = _owner(owner_digest)
    tmp_sqfs = layout.temp(owner, ".squashfs")
    tmp_meta = layout.temp(owner, ".json")
    report.say(f"converting to squashfs ({options.compression} level {options.level}, "
               f"{options.block_size >> 10} KiB blocks)")
    try:
        result = squash(lambda out: flatten(sources, out), tmp_sqfs, options)
        for note in result.notes:
            report.say(note)
        with open(tmp_meta, "w") as f:
            json.dump(config.metadata(), f, indent=1)
            f.write("\n")
        layout.publish(tmp_meta, layout.image_metadata(config.digest))
        # hashed now, while the file is in the page cache: what `images --verify` compares
        digest: str | None = content_digest(tmp_sqfs)
        if not layout.publish(tmp_sqfs, layout.squashfs(config.digest)):
            digest = None  # another process's copy is there, not ours
        layout.log_event("convert", f"{config.digest} {result.members} members")
        return digest
    finally:
        tmp_sqfs.unlink(missing_ok=True)
        tmp_meta.unlink(missing_ok=True)


def entry_for(reference: ImageReference, digest: str, image_id: str, layout: Layout,
              squashfs_digest: str | None = None) -> ImageEntry:
    sqfs = layout.squashfs(image_id)
    return ImageEntry(key=reference.key, server=reference.server,
                      repository=reference.repository, tag=reference.tag, digest=digest,
                      image_id=image_id, squashfs=sqfs, metadata=layout.image_metadata(image_id),
                      created=now(), size=sqfs.stat().st_size, squashfs_digest=squashfs_digest)
