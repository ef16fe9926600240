"""Thin wrappers over the Linux system calls the run side needs, through ctypes.

``unshare``, ``mount``, ``umount2``, ``prctl`` and the loop-device ioctls, with errors raised
as :class:`~hpc_exec.errors.RuntimeFailure` naming the target. Python 3.11 has no
``os.unshare``; ctypes costs a few milliseconds and avoids spawning ``unshare``/``mount``/
``losetup`` on every task.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import struct
import time

from hpc_exec.errors import RuntimeFailure

__all__ = ["CLONE_NEWNS", "CLONE_NEWUSER", "MNT_DETACH", "MS_BIND", "MS_NODEV", "MS_NOSUID",
           "MS_PRIVATE", "MS_RDONLY", "MS_REC", "MS_REMOUNT", "mount", "mount_loop",
           "set_parent_death_signal", "umount", "unshare", "user_namespace_members",
           "write_id_maps"]

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_RDONLY, MS_NOSUID, MS_NODEV = 1, 2, 4
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG = 1

_LOOP_CTL_GET_FREE = 0x4C82
_LOOP_CONFIGURE = 0x4C0A
_LO_FLAGS_READ_ONLY, _LO_FLAGS_AUTOCLEAR = 1, 4

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]


def _fail(what: str) -> RuntimeFailure:
    err = ctypes.get_errno()
    return RuntimeFailure(f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    if _libc.unshare(flags) != 0:
        raise _fail("cannot create a private namespace (unshare)")


def write_id_maps(uid_map: str, gid_map: str, pid: str = "self") -> None:
    """Write an unprivileged user namespace's maps (setgroups must be denied first)."""
    try:
        with open(f"/proc/{pid}/setgroups", "w") as f:
            f.write("deny")
        with open(f"/proc/{pid}/uid_map", "w") as f:
            f.write(uid_map)
        with open(f"/proc/{pid}/gid_map", "w") as f:
            f.write(gid_map)
    except OSError as exc:
        raise RuntimeFailure(f"cannot write user namespace id maps: {exc.strerror}") from exc


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0,
          data: str | None = None) -> None:
    if _libc.mount(source.encode() if source else None, target.encode(),
                   fstype.encode() if fstype else None, flags,
                   data.encode() if data else None) != 0:
        raise _fail(f"cannot mount {fstype or 'bind'} {source or ''} on {target}".replace(
            "  ", " "))


def umount(target: str, flags: int = MNT_DETACH) -> None:
    if _libc.umount2(target.encode(), flags) != 0:
        raise _fail(f"cannot unmount {target}")


def set_parent_death_signal(sig: int) -> None:
    """PR_SET_PDEATHSIG for the calling process (used in a child before exec)."""
    _libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)


def mount_loop(image: str, target: str, fstype: str, flags: int,
               timeout: float = 10.0) -> str:
    """Attach ``image`` read-only to a free loop device with autoclear and mount it.

    Autoclear detaches the device when its last user goes away: our descriptor (held until
    the mount holds the device) and then the mount. So a loop device never outlives the mount
    namespace, even if we are killed at any point. Returns the device path.
    """
    backing = os.open(image, os.O_RDONLY | os.O_CLOEXEC)
    try:
        ctl = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
        try:
            deadline = time.monotonic() + timeout
            while True:
                index = fcntl.ioctl(ctl, _LOOP_CTL_GET_FREE)
                dev = f"/dev/loop{index}"
                fd = os.open(dev, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    # struct loop_config { u32 fd; u32 block_size; loop_info64 info;
                    #                      u64 reserved[8]; }  (linux/loop.h)
                    info = struct.pack("=QQQQQIIII64s64s32sQQ", 0, 0, 0, 0, 0, 0, 0, 0,
                                       _LO_FLAGS_READ_ONLY | _LO_FLAGS_AUTOCLEAR,
                                       os.path.basename(image).encode()[:63], b"", b"", 0, 0)
                    config = struct.pack("=II", backing, 0) + info + bytes(64)
                    fcntl.ioctl(fd, _LOOP_CONFIGURE, config)
                    mount(dev, target, fstype, flags)
                    return dev
                except OSError as exc:
                    if exc.errno != 16 or time.monotonic() > deadline:  # EBUSY: lost a race
                        raise RuntimeFailure(f"cannot attach {image} to {dev}: "
                                             f"{exc.strerror}") from exc
                finally:
                    os.close(fd)
        finally:
            os.close(ctl)
    finally:
        os.close(backing)


_NS_GET_PARENT = 0xB702  # _IO(0xb7, 0x2), linux/nsfs.h


def _in_user_namespace(pid: int, ns: tuple[int, int]) -> bool:
    """Whether ``pid`` lives in user namespace ``ns`` ((st_dev, st_ino)) or one nested in it."""
    try:
        fd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        for _ in range(33):  # the kernel nests user namespaces at most 32 deep
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) == ns:
                return True
            try:
                parent = fcntl.ioctl(fd, _NS_GET_PARENT)
            except OSError:  # the initial namespace, or one above ours: not ours
                return False
            os.close(fd)
            fd = parent
        return False
    finally:
        os.close(fd)


def user_namespace_members(exclude: int = 0) -> list[int]:
    """Every process (but ``exclude``) of this process's user namespace or of one nested in
    it. A rootless run makes that namespace first, so this is everything it started -- runc,
    squashfuse_ll, every container process, whatever session or parent it moved to; no
    process can leave a user namespace."""
    st = os.stat("/proc/self/ns/user")
    ns = (st.st_dev, st.st_ino)
    return [int(e) for e in os.listdir("/proc")
            if e.isdigit() and int(e) != exclude and _in_user_namespace(int(e), ns)]
