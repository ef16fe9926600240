"""The OCI bundle, built inside a private mount namespace so nothing can leak.

:func:`enter_private_namespace` moves the calling process into a new mount namespace (as
root) or a new user + mount namespace mapping the caller to root (rootless), with every mount
private. From then on everything below is torn down by the kernel when the last process in the
namespace exits, even after SIGKILL; :meth:`Bundle.close` unmounts it early on a normal exit.

:func:`prepare` then builds, under the site's ``bundleDir``:

* a tmpfs (or ramfs) holding everything else: ``config.json``, runc's state and log;
* the squashfs mounted read-only at ``.lower``: the kernel's loop mount as root,
  ``squashfuse_ll`` rootless (we mount /dev/fuse ourselves and hand the descriptor over, so the
  mount exists before the daemon serves it; it dies with us via PR_SET_PDEATHSIG);
* an overlay at ``rootfs`` (``rootfsFolder``) with its upper and work dirs on the tmpfs,
  mounted ``nosuid,nodev`` (the final nosuid remount Sarus does, done in one step);
* copies of the host's ``/etc/passwd``, ``/etc/group``, ``/etc/hosts`` and
  ``/etc/resolv.conf`` that config.json bind-mounts over the image's, or where the image has
  none (runc resolves destinations safely inside the rootfs and creates missing ones): as in
  Sarus, names resolve in the container as on the host, whatever the image ships.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from hpc_exec.engine.runtime import _linux

from hpc_exec import process
from hpc_exec.config import Settings
from hpc_exec.errors import RuntimeFailure
from hpc_exec.mountspec import Mount

__all__ = ["Bundle", "bundle_dir", "enter_private_namespace", "prepare"]

HOST_ETC_FILES = ("passwd", "group", "hosts", "resolv.conf")


def enter_private_namespace(rootless: bool) -> None:
    """Move this (single-threaded) process into its own mount (and user) namespace."""
    if rootless:
        uid, gid = os.getuid(), os.getgid()
        _linux.unshare(_linux.CLONE_NEWUSER | _linux.CLONE_NEWNS)
        _linux.write_id_maps(f"0 {uid} 1", f"0 {gid} 1")
    else:
        _linux.unshare(_linux.CLONE_NEWNS)
    _linux.mount(None, "/", None, _linux.MS_REC | _linux.MS_PRIVATE)


def bundle_dir(settings: Settings, rootless: bool) -> Path:
    """Where the bundle tmpfs goes: ``bundleDir``, created if missing; rootless, a per-user
    directory under ``tempDir`` when ``bundleDir`` does not exist. Call before entering the
    namespace (it may create a directory on the host)."""
    path = settings.bundle_dir
    if path.is_dir():
        return path
    where = "bundleDir"
    try:
        if not rootless:
            path.mkdir(parents=True, exist_ok=True, mode=0o755)
            return path
        where = "tempDir"
        fallback = settings.temp_dir / f"hpc-exec-bundle-{os.getuid()}"
        fallback.mkdir(mode=0o700, exist_ok=True)
        return fallback
    except OSError as exc:  # e.g. bundleDir: /proc/bundle, or a read-only tempDir
        failed = path if where == "bundleDir" else settings.temp_dir
        raise RuntimeFailure(f"cannot create the bundle directory under {where} {failed}: "
                             f"{exc.strerror}", hint=f"set {where} in the site config to a "
                             "writable local directory") from exc


class Bundle:
    """The mounted bundle of one container (see the module docstring)."""

    def __init__(self, root: Path, rootfs: Path, rootless: bool) -> None:
        self.root = root
        self.rootfs = rootfs
        self.rootless = rootless
        self.extra_mounts: list[Mount] = []
        self.fuse: Any = None  # the squashfuse_ll Popen (process.launch), rootless only

    @property
    def config_path(self) -> Path:
        return self.root / "config.json"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def log_path(self) -> Path:
        return self.root / "runc.log"

    @property
    def pid_file(self) -> Path:
        return self.root / "container.pid"

    def write_config(self, text: str) -> None:
        """Write config.json, mode 0600 as Sarus does: the hooks that read it run as root (or,
        rootless, as the caller, its owner)."""
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                     0o600)
        os.fchmod(fd, 0o600)  # whatever the umask
        with open(fd, "w", encoding="utf-8") as f:
            f.write(text)

    def close(self) -> None:
        """Unmount everything (lazily: a straggler cannot block us) and stop squashfuse_ll."""
        for target in (self.rootfs, self.root / ".lower", self.root):
            try:
                _linux.umount(str(target), _linux.MNT_DETACH)
            except RuntimeFailure:
                pass
        if self.fuse is not None:
            deadline = time.monotonic() + 2  # it exits by itself once unmounted
            while self.fuse.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)
            if self.fuse.poll() is None:
                self.fuse.kill()
                self.fuse.wait(timeout=5)
            self.fuse = None


def _mount_squashfs_fuse(image: Path, target: Path, log_path: Path) -> Any:
    try:
        fd = os.open("/dev/fuse", os.O_RDWR)  # inheritable on purpose: squashfuse_ll gets it
    except OSError as exc:
        raise RuntimeFailure(f"cannot open /dev/fuse for squashfuse_ll: {exc.strerror}",
                             hint="rootless mode needs /dev/fuse readable and writable by "
                             "users (mode 0666, as Debian's udev rule sets it)") from exc
    try:
        flags = _linux.MS_RDONLY | _linux.MS_NOSUID | _linux.MS_NODEV
        _linux.mount(str(image), str(target), "fuse.squashfuse_ll", flags,
                     f"fd={fd},rootmode=40000,user_id=0,group_id=0")
        # libfuse makes SIGTERM/SIGINT/SIGHUP unmount and exit, unless they are ignored when
        # it starts. Slurm signals every process of a step and Ctrl-C the whole foreground
        # group: the daemon must keep serving while the container handles the signal. It
        # leaves when the mount goes away, or with us (parent-death signal).
        quiet = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in quiet}
        try:
            with open(log_path, "ab") as logf, open(os.devnull, "wb") as null:
                return process.launch(["squashfuse_ll", "-f", str(image), f"/dev/fd/{fd}"],
                                      desc="serving the squashfs image (squashfuse_ll)",
                                      pass_fds=[fd], stdout=null, stderr=logf,
                                      parent_death_signal=signal.SIGKILL)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    finally:
        os.close(fd)


def prepare(settings: Settings, squashfs: Path, root: Path, rootless: bool) -> Bundle:
    """Build the bundle at ``root`` (already in the private namespace); see the docstring."""
    nosuid = _linux.MS_NOSUID | _linux.MS_NODEV
    fs = settings.ram_filesystem_type
    _linux.mount(fs, str(root), fs, nosuid, "mode=0700")
    rootfs = root / settings.rootfs_folder
    bundle = Bundle(root=root, rootfs=rootfs, rootless=rootless)
    try:
        for name in (".lower", ".upper", ".work", settings.rootfs_folder, "state", "etc"):
            (root / name).mkdir(mode=0o755)
        lower = root / ".lower"
        if rootless:
            bundle.fuse = _mount_squashfs_fuse(squashfs, lower, root / "squashfuse.log")
        else:
            _linux.mount_loop(str(squashfs), str(lower), "squashfs",
                              _linux.MS_RDONLY | nosuid)
        options = f"lowerdir={lower},upperdir={root / '.upper'},workdir={root / '.work'}"
        if rootless:
            options += ",userxattr"  # trusted.* xattrs are out of reach in a user namespace
        try:
            _linux.mount("overlay", str(rootfs), "overlay", nosuid, options)
        except RuntimeFailure as exc:
            if bundle.fuse is not None and bundle.fuse.poll() is not None:
                log = (root / "squashfuse.log").read_text(errors="replace").strip()
                raise RuntimeFailure(f"squashfuse_ll could not serve {squashfs}: "
                                     f"{log or 'no message'}") from exc
            raise
        for name in HOST_ETC_FILES:
            src = settings.hosts_file if name == "hosts" else Path("/etc") / name
            if src.exists():
                # read and written whole, not shutil.copyfile: shutil's import (with its
                # compression modules) costs every run more than these few KiB
                (root / "etc" / name).write_bytes(src.read_bytes())
                bundle.extra_mounts.append(Mount(str(root / "etc" / name), f"/etc/{name}"))
    except BaseException:
        bundle.close()
        raise
    return bundle
