"""Build config.json: the OCI runtime spec 1.0.2, as runc 1.1.5 accepts it (pure).

What every container gets, whoever asks (shared/DESIGN.md §4):

* the caller's uid, gid and (as root) supplementary groups (rootless: through the idmap
  helper, see :func:`build_config`); no capabilities at all;
  ``noNewPrivileges``; the host network; the host PID namespace unless ``--pid=private``;
* only a mount namespace of its own (rootless, it lives in the engine's user namespace, which
  maps the caller to uid 0: see :func:`build_config`);
* ``/proc``, a small ``/dev`` tmpfs with devpts, the host's ``/dev/shm`` (MPI ranks in
  different containers share memory through it) and a read-only ``/sys``; then the site and
  user bind mounts, all ``nosuid,nodev``;
* the selected hooks and the annotations; seccomp/AppArmor/SELinux settings passed through.

The rootfs itself is the overlay prepared by :mod:`bundle` (nosuid, nodev, tmpfs upper).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from hpc_exec.mountspec import Mount

__all__ = ["IDMAP_DESTINATION", "INIT_DESTINATION", "DeviceNode", "build_config"]

INIT_DESTINATION = "/dev/init"
IDMAP_DESTINATION = "/dev/hpc-exec-idmap"

# runc's own defaults (runc spec): hide kernel interfaces a container has no business with.
MASKED_PATHS = ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
                "/sys/firmware"]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


class DeviceNode(NamedTuple):
    """A host device node resolved for the container (``--device`` / ``siteDevices``)."""

    path: str  # in the container
    type: str  # "c" or "b"
    major: int
    minor: int
    file_mode: int
    access: str


def _bind(spec: Mount) -> dict[str, Any]:
    # always recursive and private, as in Sarus (no bind-propagation option since Sarus 1.4)
    options = ["rbind", "nosuid", "nodev", "rprivate"]
    if spec.readonly:
        options.append("ro")
    return {"destination": spec.destination, "type": "bind", "source": spec.source,
            "options": options}


def _base_mounts(rootless: bool, pid_private: bool) -> list[dict[str, Any]]:
    if rootless and not pid_private:
        # A user namespace cannot mount a fresh procfs for the host PID namespace; bind it.
        proc: dict[str, Any] = {"destination": "/proc", "type": "bind", "source": "/proc",
                                "options": ["rbind", "nosuid", "noexec", "nodev"]}
    else:
        proc = {"destination": "/proc", "type": "proc", "source": "proc",
                "options": ["nosuid", "noexec", "nodev"]}
    pts = ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]
    if not rootless:
        pts.append("gid=5")
    return [
        proc,
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": pts},
        {"destination": "/dev/shm", "type": "bind", "source": "/dev/shm",
         "options": ["rbind", "nosuid", "nodev", "rprivate"]},
        {"destination": "/sys", "type": "bind", "source": "/sys",
         "options": ["rbind", "nosuid", "noexec", "nodev", "ro", "rprivate"]},
    ]


def build_config(*, args: Sequence[str], env: Mapping[str, str], cwd: str, uid: int, gid: int,
                 groups: Sequence[int], rootfs: str, terminal: bool = False,
                 rootless: bool = False, pid_private: bool = False,
                 annotations: Mapping[str, str] | None = None,
                 hooks: Mapping[str, list[dict[str, Any]]] | None = None,
                 mounts: Sequence[Mount] = (), devices: Sequence[DeviceNode] = (),
                 init_path: str | None = None, seccomp: Mapping[str, Any] | None = None,
                 apparmor_profile: str | None = None, selinux_label: str | None = None,
                 selinux_mount_label: str | None = None,
                 idmap_helper: str | None = None) -> dict[str, Any]:
    """The config.json document (see the module docstring)."""
    caller = (uid, gid)
    if rootless:
        # The engine's user namespace maps the caller to 0, and that is its only id: runc
        # (1.1.5) must be uid 0 in any user namespace it enters. So runc starts the process as
        # that 0, and the idmap helper (engine/runtime/idmap.c) moves it into a child namespace
        # mapping the caller's own uid and gid back onto it. Without the helper the process
        # stays uid 0 inside (still the caller on the host, with no capabilities there).
        # Supplementary groups cannot be set (setgroups is denied in an unprivileged user
        # namespace): the process keeps the caller's, which the kernel still checks.
        uid, gid, groups = 0, 0, ()
    user: dict[str, Any] = {"uid": uid, "gid": gid}
    if groups and not rootless:  # setgroups is denied in an unprivileged user namespace
        user["additionalGids"] = sorted(set(groups) - {gid})
    argv = list(args)
    all_mounts = _base_mounts(rootless, pid_private) + [_bind(m) for m in mounts]
    if init_path:
        argv = [INIT_DESTINATION, "--", *argv]
        all_mounts.append({"destination": INIT_DESTINATION, "type": "bind", "source": init_path,
                           "options": ["bind", "ro", "nosuid", "nodev"]})
    helper_caps: list[str] = []
    if rootless and idmap_helper:
        argv = [IDMAP_DESTINATION, str(caller[0]), str(caller[1]), *argv]
        all_mounts.append({"destination": IDMAP_DESTINATION, "type": "bind",
                           "source": idmap_helper, "options": ["bind", "ro", "nosuid", "nodev"]})
        # Since Linux 5.12 a namespace may map its parent's uid 0 only if its creator held
        # CAP_SETFCAP. The helper holds it, in the engine's namespace only (where uid 0 is the
        # caller), and loses it at its exec: the program runs as a non-zero uid.
        helper_caps = ["CAP_SETFCAP"]
    process: dict[str, Any] = {
        "terminal": terminal,
        "user": user,
        "args": argv,
        "env": [f"{k}={v}" for k, v in env.items()],
        "cwd": cwd,
        "capabilities": {"bounding": helper_caps, "effective": helper_caps,
                         "inheritable": [], "permitted": helper_caps, "ambient": []},
        "noNewPrivileges": True,
    }
    if apparmor_profile:
        process["apparmorProfile"] = apparmor_profile
    if selinux_label:
        process["selinuxLabel"] = selinux_label
    namespaces: list[dict[str, str]] = [{"type": "mount"}]
    if pid_private:
        namespaces.append({"type": "pid"})
    linux: dict[str, Any] = {
        "namespaces": namespaces,
        "maskedPaths": MASKED_PATHS,
        "readonlyPaths": READONLY_PATHS,
    }
    if devices:
        linux["devices"] = [{"path": d.path, "type": d.type, "major": d.major,
                             "minor": d.minor, "fileMode": d.file_mode, "uid": 0, "gid": 0}
                            for d in devices]
        if not rootless:
            linux["resources"] = {"devices": [{"allow": False, "access": "rwm"}] + [
                {"allow": True, "type": d.type, "major": d.major, "minor": d.minor,
                 "access": d.access} for d in devices]}
    if seccomp:
        linux["seccomp"] = dict(seccomp)
    if selinux_mount_label:
        linux["mountLabel"] = selinux_mount_label
    config: dict[str, Any] = {
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": rootfs, "readonly": False},
        "mounts": all_mounts,
        "linux": linux,
    }
    if hooks:
        config["hooks"] = dict(hooks)
    if annotations:
        config["annotations"] = dict(annotations)
    return config
