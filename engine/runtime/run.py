"""Run one container: the per-task cycle of ``hpc-exec run``, top to bottom.

:func:`run` takes an explicit :class:`Image` (a squashfs file plus its config), so it does not
care where the image came from. The cycle:

1. security checks on the files root trusts (``securityChecks``; the site config file itself
   is always checked, :func:`~hpc_exec.engine.runtime.security.check_site_config`);
2. the pure parts: mounts and devices (site, then user, checked against ``userMounts``),
   process args, environment, annotations, hook selection;
3. enter a private mount namespace (rootless: user + mount namespace) and build the bundle
   (:mod:`bundle`);
4. fork the *watchdog*: it sits in its own process group and, if the engine dies without
   saying "done" (SIGKILL), kills the container's session, which runc's ``setsid`` put out of
   reach of a process-group kill, and, rootless (no cgroup), every process of the run's user
   namespace, wherever it moved;
5. write config.json and ``runc run`` it in our process group, forwarding SIGTERM, SIGINT,
   SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2;
6. tear down and return the container's exit status unchanged; a runc failure (an error in its
   JSON log) raises :class:`~hpc_exec.errors.RuntimeFailure` instead.

All of it happens in the calling process, which ends up inside the namespace: this is what
``hpc-exec run`` does. The Python API (:mod:`hpc_exec.engine.runtime.api`) never forks its
caller; it runs ``hpc-exec run`` as a child process.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import stat
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from hpc_exec.engine.runtime import runc
from hpc_exec.engine.runtime.options import Image, RunOptions

from hpc_exec.config import Settings, load_settings
from hpc_exec.errors import InvalidInput, RuntimeFailure
from hpc_exec.mountspec import Device, Mount

__all__ = ["plan", "run"]

# --verbose shows INFO (what runs, from which image, with which mounts and hooks), --debug
# adds DEBUG (every external command); hpc_exec.cli sets the level.
log = logging.getLogger(__name__)



class _Plan(NamedTuple):
    args: list[str]
    env: dict[str, str]
    cwd: str
    mounts: list[Mount]
    devices: list[Any]
    annotations: dict[str, str]
    hooks: dict[str, list[dict[str, Any]]]
    init_path: str | None
    idmap_helper: str | None  # rootless only
    seccomp: dict[str, Any] | None
    runc: str
    pmi_fd: int | None = None  # srun's PMI socket, handed to the container as fd 3
    pid_private: bool = False  # --pid=private, or --ssh


# srun --mpi=pmi2 (or pmi1) gives each task a socket to its PMI server in PMI_FD. runc passes a
# container only stdio unless told otherwise, and MPI then fails at MPI_Init ("PMI_Get_appnum
# returned -1"); so the engine hands that socket over as the container's fd 3
# (``runc run --preserve-fds 1``) and sets PMI_FD=3 in the container's environment.
CONTAINER_PMI_FD = 3


def _pmi_fd(env: Mapping[str, str]) -> int | None:
    """The PMI socket of this task, if PMI_FD names a descriptor open in this process."""
    text = env.get("PMI_FD", "")
    if not text.isdigit():
        return None
    try:
        os.fstat(int(text))
    except OSError:
        return None
    return int(text)


def _find_init(settings: Settings) -> str:
    from hpc_exec.process import which

    if settings.init_path is not None:
        return str(settings.init_path)
    for name in ("tini-static", "tini"):
        found = which(name)
        if found:
            return found
    from hpc_exec.errors import MissingDependency

    raise MissingDependency("tini", "tini")


IDMAP_HELPER = "hpc-exec-idmap"


def find_idmap_helper(settings: Settings) -> str | None:
    """The rootless idmap helper (engine/runtime/idmap.c): ``idmapHelper``, else the one the
    package build compiled beside this module (setup.py, ``build_idmap``: every installation
    has it), else on PATH; None if absent."""
    from hpc_exec.process import which

    if settings.idmap_helper is not None:
        if not settings.idmap_helper.is_file():
            raise InvalidInput(f"idmapHelper {settings.idmap_helper} does not exist")
        return str(settings.idmap_helper)
    packaged = Path(__file__).with_name(IDMAP_HELPER)
    if packaged.is_file() and os.access(packaged, os.X_OK):  # a copy may have lost its x bit
        return str(packaged)
    return which(IDMAP_HELPER)


def _device_node(spec: Device) -> Any:
    from hpc_exec.engine.runtime.spec import DeviceNode

    try:
        st = os.stat(spec.source)
    except OSError as exc:
        raise InvalidInput(f"device {spec.source}: {exc.strerror}") from exc
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        raise InvalidInput(f"device {spec.source} is not a character or block device")
    return DeviceNode(spec.destination, kind, os.major(st.st_rdev), os.minor(st.st_rdev),
                      stat.S_IMODE(st.st_mode), spec.access)


def narrow_devices(site: list[Any], user: list[Any], specs: Sequence[Device]) -> list[Any]:
    """The device nodes of a run, site ones first, for config.json's devices and cgroup rules.

    A user ``--device`` on a device the site grants (same type, major and minor) may only
    narrow its access, never widen it: a wider one is a SecurityError naming the device. The
    cgroup allows, per device, the union of the access the user asked for (each part of the
    site's), else the site's: so the site's own entry is narrowed too, as the rules are per
    device number, not per path, and allow rules add up (a wider rule anywhere would widen
    the device)."""
    if not site or not user:
        return [*site, *user]
    granted: dict[tuple[str, int, int], set[str]] = {}
    for node in site:
        granted.setdefault((node.type, node.major, node.minor), set()).update(node.access)
    asked: dict[tuple[str, int, int], set[str]] = {}
    for node, spec in zip(user, specs):
        key = (node.type, node.major, node.minor)
        if key not in granted:
            continue
        if not set(node.access) <= granted[key]:
            from hpc_exec.errors import SecurityError

            site_access = "".join(c for c in "rwm" if c in granted[key])
            raise SecurityError(f"--device {spec.source}: access '{node.access}' is wider than "
                                f"the '{site_access}' the site grants that device "
                                f"(siteDevices); ask for '{site_access}' or less, e.g. "
                                f"--device {spec.source}:{spec.destination}:{site_access}")
        asked.setdefault(key, set()).update(node.access)

    def narrowed(node: Any) -> Any:
        access = asked.get((node.type, node.major, node.minor))
        if access is None:
            return node
        return node._replace(access="".join(c for c in "rwm" if c in access))

    return [narrowed(n) for n in site] + [narrowed(n) for n in user]


# Python's locale coercion can have changed this process's LC_CTYPE (PEP 538); the host
# environment is the one it started with (see options.uncoerced_environ).
def _initial_environ() -> bytes:
    with open("/proc/self/environ", "rb") as f:
        return f.read()


def host_environ() -> Mapping[str, str]:
    """The host environment a container inherits: ``os.environ`` less Python's locale
    coercion."""
    from hpc_exec.engine.runtime.options import uncoerced_environ

    return uncoerced_environ(os.environ, _initial_environ)


# The engine's flags and the annotations a hook must select on to answer them (issue 12,
# item 14): a flag that sets an annotation no hook reads would silently do nothing.
FLAG_ANNOTATIONS = (
    ("--mpi", "mpi", ("com.hooks.mpi.enabled", "com.hooks.mpi.type")),
    ("--glibc", "glibc", ("com.hooks.glibc.enabled",)),
    ("--ssh", "ssh", ("com.hooks.ssh.enabled",)),
    ("--sync", "sync", ("com.hooks.slurm-global-sync.enabled",)),
)


def _check_flags_answered(options: RunOptions, selected: list[Any], hooks_dir: Path) -> None:
    """ConfigError naming the hooks dir for a flag that no selected hook answers."""
    import re

    from hpc_exec.errors import ConfigError

    for flag, attr, keys in FLAG_ANNOTATIONS:
        wanted = getattr(options, attr) or (attr == "mpi" and bool(options.mpi_type))
        if not wanted:
            continue
        if not any(re.fullmatch(key_re, key) for hook in selected
                   for key_re, _ in hook.annotations for key in keys):
            raise ConfigError(f"{flag}: no hook in {hooks_dir} answers it ({keys[0]})",
                              hint="the site's hooksDir lacks that hook: 'hpc-exec config init' "
                              "writes the standard ones; or run without " + flag)


def plan(options: RunOptions, image: Image, settings: Settings,
         host_env: Mapping[str, str] | None = None) -> _Plan:
    """Everything that needs no namespace: pure rules plus a few stats (step 2).

    ``host_env`` is the host environment the container inherits (default: ``os.environ``)."""
    from hpc_exec.engine.runtime import hookconfig, mounts, runc
    from hpc_exec.engine.runtime import options as opts

    rules = settings.user_mounts
    for spec in options.mounts:
        mounts.check_user_destination(spec.destination, rules.not_allowed_prefixes_of_path,
                                      rules.not_allowed_paths)
    all_mounts = [*settings.site_mounts, *options.mounts]
    for i, spec in enumerate(settings.site_mounts):
        if not os.path.exists(spec.source):
            from hpc_exec.errors import ConfigError

            raise ConfigError(f"config key siteMounts[{i}] ({settings.source}): mount source "
                              f"{spec.source} does not exist")
    for spec in options.mounts:
        if not os.path.exists(spec.source):
            raise InvalidInput(f"mount source {spec.source} does not exist")
    pid = opts.effective_pid(options)
    devices = narrow_devices([_device_node(d) for d in settings.site_devices],
                             [_device_node(d) for d in options.devices], options.devices)
    args = opts.process_args(image.config, options.command, options.entrypoint)
    host = host_environ() if host_env is None else host_env
    edits = settings.environment
    env = opts.merge_environment(host, image.config, site_set=edits.set,
                                 site_prepend=edits.prepend, site_append=edits.append,
                                 site_unset=edits.unset, user=options.env,
                                 clean=options.clean_env, init=options.init)
    pmi_fd = _pmi_fd(env)
    if pmi_fd is not None:
        env["PMI_FD"] = str(CONTAINER_PMI_FD)
    ann = opts.merge_annotations(mpi=options.mpi, mpi_type=options.mpi_type,
                                 default_mpi_type=settings.default_mpi_type,
                                 glibc=options.glibc, ssh=options.ssh, sync=options.sync,
                                 log_level=options.log_level, labels=image.config.labels,
                                 user=options.annotations)
    hooks = hookconfig.load_hooks(settings.hooks_dir)
    selected = hookconfig.select_hooks(hooks, annotations=ann, argv0=args[0],
                                       has_bind_mounts=bool(all_mounts))
    _check_flags_answered(options, selected, settings.hooks_dir)
    if log.isEnabledFor(logging.INFO):  # --verbose; not a string join on every task
        log.info("hooks selected: %s", ", ".join(h.name for h in selected) or "none")
    cwd = options.workdir or image.config.workdir or "/"
    if not cwd.startswith("/"):
        raise InvalidInput(f"workdir must be an absolute path, got {cwd!r}")
    init_path = _find_init(settings) if options.init else None
    idmap_helper = find_idmap_helper(settings) if os.geteuid() != 0 else None
    if os.geteuid() != 0 and idmap_helper is None:
        sys.stderr.write(f"hpc-exec: warning: {IDMAP_HELPER} is not installed (see "
                         "idmapHelper in docs/configuration.md): the container runs as uid 0 "
                         "inside, which is still you on the host\n")
    seccomp = None
    if settings.seccomp_profile is not None:
        try:
            seccomp = json.loads(settings.seccomp_profile.read_text())
        except (OSError, ValueError) as exc:
            raise RuntimeFailure(f"cannot read seccompProfile {settings.seccomp_profile}: "
                                 f"{exc}") from exc
    runc_path = runc.find_runc(settings.runc_path)
    if settings.source.startswith("/") and not settings.security_checks:
        from hpc_exec.engine.runtime.security import check_site_config

        check_site_config(Path(settings.source))  # the file that turned the checks off
    if settings.security_checks:
        from hpc_exec.engine.runtime.security import check_all

        trusted: list[tuple[Path, str]] = []
        if settings.source.startswith("/"):
            trusted.append((Path(settings.source), "the site config"))
        if settings.hosts_file != Path("/etc/hosts"):
            trusted.append((settings.hosts_file, "hostsFile"))
        trusted += [(h.file, "hook file") for h in hooks]
        trusted += [(Path(h.path), f"hook executable of {h.file.name}") for h in selected]
        for h in selected:  # our Python hooks: the module file is the program, and the chain
            chain = hookconfig.chain_key(h.oci())
            if chain is not None:
                trusted.append((Path(h.args[3]), f"hook module of {h.file.name}"))
                trusted.append((Path(chain[2], "_chain.py"), "the hook chain module"))
        trusted.append((Path(runc_path), "runc"))
        if init_path:
            trusted.append((Path(init_path), "the init binary"))
        check_all(trusted)
        # rootless only: it runs as the caller, so it may be theirs. The packaged one is as
        # trusted as this code beside it, which already runs as the caller: a shared,
        # group-writable environment (umask 002) is not refused for it.
        if idmap_helper and Path(idmap_helper) != Path(__file__).with_name(IDMAP_HELPER):
            from hpc_exec.engine.runtime.security import check_trusted

            check_trusted(Path(idmap_helper), "the idmap helper", owners=(0, os.geteuid()))
    return _Plan(args, env, cwd, all_mounts, devices, ann,
                 hookconfig.hooks_by_stage(selected, settings.merge_hooks), init_path,
                 idmap_helper, seccomp, runc_path, pmi_fd, pid == "private")


# -- the watchdog ----------------------------------------------------------------------------

def _watchdog(ctl: int, ready: int, pid_file: Path, sweep_user_namespace: bool,
              state: tuple[Path, str, str] | None = None) -> None:
    """Body of the watchdog child; never returns."""
    code = 0
    try:
        os.setpgid(0, 0)
        from hpc_exec.process import FORWARDED

        for sig in FORWARDED:  # it leaves when the engine does (end of file on its pipe)
            signal.signal(sig, signal.SIG_IGN)
        os.write(ready, b"r")
        os.close(ready)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        # Hold nothing of the engine's but the control pipe: an inherited write end (the error
        # report pipe of hpc_exec.engine.run, a caller's pipes) would keep its reader waiting
        # for as long as the watchdog lives.
        os.closerange(3, ctl)
        os.closerange(ctl + 1, 65536)
        data = b""
        while True:
            chunk = os.read(ctl, 64)
            if not chunk:
                break
            data += chunk
        if b"done" not in data:  # the engine died: kill what runc left behind
            try:
                leader = int(pid_file.read_text().strip())
            except (OSError, ValueError):
                leader = 0
            if leader > 1:
                from hpc_exec.process import session_members

                for pid in [leader, *session_members(leader)]:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
            if sweep_user_namespace:
                _sweep_user_namespace()
            if state is not None:  # runc's state (on the host) and our marker beside it
                root, name, runc_path = state
                runc.remove(root, name, runc_path, rootless=sweep_user_namespace)
    except BaseException:
        code = 1
    os._exit(code)


def _sweep_user_namespace() -> None:
    """Rootless, the engine dead: SIGKILL every process of the run's user namespace, until
    none is left (issue 12, item 8). Without a cgroup this is what finds a container process
    that left the container's session (``setsid``) and was reparented to PID 1."""
    import time

    from hpc_exec.engine.runtime._linux import user_namespace_members

    from hpc_exec.process import alive

    deadline = time.monotonic() + 10  # a fork bomb cannot keep the watchdog forever
    while time.monotonic() < deadline:
        # zombies keep their user namespace until reaped, and a kill cannot end them
        members = [p for p in user_namespace_members(exclude=os.getpid()) if alive(p)]
        if not members:
            return
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.01)


def _start_watchdog(pid_file: Path, rootless: bool = False,
                    state: tuple[Path, str, str] | None = None) -> int:
    """Fork the watchdog; return the write end of its control pipe. ``rootless``: it also
    sweeps the run's user namespace when the engine dies; ``state``: (runc's state root, the
    container's name, runc), whose state and marker it removes then (runc.remove)."""
    ctl_r, ctl_w = os.pipe()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(ctl_w)
        os.close(ready_r)
        _watchdog(ctl_r, ready_w, pid_file, rootless, state)
    os.close(ctl_r)
    os.close(ready_w)
    ok = os.read(ready_r, 1)
    os.close(ready_r)
    if ok != b"r":
        os.close(ctl_w)
        raise RuntimeFailure("the watchdog process did not start")
    os.set_inheritable(ctl_w, False)
    return ctl_w


# -- the cycle ---------------------------------------------------------------------------------

def _run_here(options: RunOptions, image: Image, settings: Settings, p: _Plan) -> int:
    rootless = os.geteuid() != 0
    if not image.squashfs.is_file():
        raise InvalidInput(f"image file {image.squashfs} does not exist")
    state_root, name = _container_name(options, p.runc, rootless)
    try:
        return _run_named(options, image, settings, p, rootless, state_root, name)
    finally:
        if state_root is not None:
            runc.release(state_root, name)


def _run_named(options: RunOptions, image: Image, settings: Settings, p: _Plan, rootless: bool,
               state_root: Path | None, name: str) -> int:
    from hpc_exec.engine.runtime import bundle as _bundle
    from hpc_exec.engine.runtime import spec

    from hpc_exec import process

    root = _bundle.bundle_dir(settings, rootless)
    uid, gid = os.getuid(), os.getgid()
    groups = os.getgroups()
    _bundle.enter_private_namespace(rootless)
    b = _bundle.prepare(settings, image.squashfs, root, rootless)
    log.info("bundle in %s (%s)", b.root, "rootless" if rootless else "as root")
    ctl = -1
    try:
        mounts = _contained_mounts(p.mounts, len(settings.site_mounts), b.rootfs, settings)
        ctl = _start_watchdog(b.pid_file, rootless,
                              None if state_root is None else (state_root, name, p.runc))
        config = spec.build_config(
            args=p.args, env=p.env, cwd=p.cwd, uid=uid, gid=gid, groups=groups,
            rootfs=settings.rootfs_folder, terminal=options.tty, rootless=rootless,
            pid_private=p.pid_private, annotations=p.annotations, hooks=p.hooks,
            mounts=[*mounts, *b.extra_mounts], devices=p.devices, init_path=p.init_path,
            seccomp=p.seccomp, apparmor_profile=settings.apparmor_profile,
            selinux_label=settings.selinux_label,
            selinux_mount_label=settings.selinux_mount_label, idmap_helper=p.idmap_helper)
        b.write_config(json.dumps(config))
        argv = runc.run_argv(p.runc, bundle=b.root, container_id=name,
                             state_dir=b.state_dir if state_root is None else state_root,
                             log_path=b.log_path, pid_file=b.pid_file,
                             rootless=rootless, preserve_fds=0 if p.pmi_fd is None else 1)
        status = _run_runc(argv, process, reap=b.pid_file if rootless and
                           not p.pid_private else None,
                           fd_map={} if p.pmi_fd is None else {CONTAINER_PMI_FD: p.pmi_fd},
                           own_process_group=not options.tty)
        if status != 0:
            try:
                errors = runc.log_errors(b.log_path.read_text(errors="replace"))
            except OSError:
                errors = []
            if errors:
                # runc has printed the same text on our stderr already (its fatal() does):
                # say it once (issue 12, item 13); the text stays in the error's runc_error
                err = RuntimeFailure("runc failed (its error is the line above)")
                err.runc_error = errors[-1]  # type: ignore[attr-defined]
                raise err
        return status
    finally:
        if ctl >= 0:
            try:
                os.write(ctl, b"done")
            except OSError:  # the watchdog is gone already (killed with the whole step)
                pass
            os.close(ctl)
        b.close()


def _container_name(options: RunOptions, runc_path: str, rootless: bool
                    ) -> tuple[Path | None, str]:
    """runc's state root (made here, on the host, before any namespace; None: the run's
    private bundle) and the container's name, taken for this engine (runc.claim); what
    engines killed earlier left there is removed first."""
    from hpc_exec.errors import SecurityError

    name = runc.default_name() if options.name is None else runc.check_name(options.name)
    try:
        root = runc.make_state_root(runc.state_root(rootless))
    except SecurityError as exc:
        if options.name is not None or not rootless:
            raise
        sys.stderr.write(f"hpc-exec: warning: {exc.message}; this container's state stays in "
                         "its private bundle ('hpc-exec ps' does not list it)\n")
        return None, name
    runc.sweep(root, runc_path, rootless)
    runc.claim(root, name, runc_path, rootless)
    return root, name


def _contained_mounts(mounts: list[Mount], n_site: int, rootfs: Path,
                      settings: Settings) -> list[Mount]:
    """``mounts`` (site mounts first) with each destination resolved inside the container as
    runc would resolve it (the image, then the mounts before it), the user ones checked again
    on that path: a symlink in the image or in a mounted source cannot carry a mount to a
    forbidden place (issue 12, item 6). runc gets paths with no symlink left to follow."""
    from hpc_exec.engine.runtime.mounts import check_user_destination, resolve_destination

    from hpc_exec.errors import SecurityError

    rules = settings.user_mounts
    out: list[Mount] = []
    earlier: list[tuple[str, str]] = []
    for i, spec in enumerate(mounts):
        dest = resolve_destination(rootfs, spec.destination, earlier)
        if i >= n_site and dest != spec.destination:  # plan() checked the text as given
            try:
                check_user_destination(dest, rules.not_allowed_prefixes_of_path,
                                       rules.not_allowed_paths)
            except SecurityError as exc:
                raise SecurityError(f"mount destination {spec.destination!r} is not allowed: "
                                    f"it resolves to {dest!r} in the container "
                                    f"({exc.message.rpartition(': ')[2]})") from None
        earlier.append((dest, os.path.realpath(spec.source)))
        out.append(spec if dest == spec.destination else spec._replace(destination=dest))
    return out


def _reap_leftovers(pid_file: Path, stop: Any) -> None:
    """Rootless, host PID namespace: when the container's first process has exited, SIGKILL
    what it left in its session. As root runc does this through the container's cgroup;
    without one, runc would wait for those processes forever."""
    from hpc_exec.process import alive, session_members

    leader = 0
    while not stop.wait(0.1):
        if not leader:
            try:
                leader = int(pid_file.read_text().strip())
            except (OSError, ValueError):
                continue
        if not alive(leader):
            for pid in session_members(leader):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            return


def _run_runc(argv: list[str], process: Any, reap: Path | None = None,
              fd_map: Mapping[int, int] | None = None, own_process_group: bool = True) -> int:
    """``runc run`` in the foreground, signals forwarded; ``reap``: see _reap_leftovers;
    ``fd_map``: descriptors runc gets (its number -> ours), for --preserve-fds.

    runc forwards what it receives to the container. In our process group it would receive
    a terminal's Ctrl-C both from the terminal and from us, and pass it on twice; so it gets a
    group of its own, except with ``-t``: then it proxies the terminal and must stay in the
    foreground group, and the terminal's Ctrl-C travels through the container's own pty."""
    # The handlers are in place before runc starts: a SIGTERM in between would otherwise end
    # this process by default and leave runc, in a group of its own, to start the container.
    from hpc_exec.process import forwarded_signals

    stop = None
    with forwarded_signals() as attach:
        try:
            child = process.launch(argv, desc="running the container (runc run)",
                                   fd_map=fd_map or {}, own_process_group=own_process_group)
            attach(child)
            if reap is not None:
                import threading

                stop = threading.Event()
                threading.Thread(target=_reap_leftovers, args=(reap, stop),
                                 daemon=True).start()
            rc = int(child.wait())
        finally:
            if stop is not None:
                stop.set()
    return 128 - rc if rc < 0 else rc


def run(options: RunOptions, image: Image, *, settings: Settings | None = None,
        host_env: Mapping[str, str] | None = None) -> int:
    """Run ``image`` with ``options`` in this process; return the container's exit status.

    The process enters the container's mount (and, rootless, user) namespace and stays there:
    call this only from a process that ends afterwards (``hpc-exec run``). Other callers use
    :func:`hpc_exec.engine.run`, which runs ``hpc-exec run`` as a child process."""
    settings = settings or load_settings()
    p = plan(options, image, settings, host_env)  # bad input fails here, before any namespace
    # The caller's umask must not decide the modes of what the run creates: the bundle, the
    # overlay's upper layer (which gives the rootfs its root directory), the /etc copies,
    # runc's mount points and the hooks' files. Under umask 777 the container user could
    # not even look up /bin/echo. Sarus sets the same at its start; the container itself
    # gets runc's 0022.
    os.umask(0o022)
    if log.isEnabledFor(logging.INFO):
        _log_plan(image, p)
    status = _run_here(options, image, settings, p)
    log.info("the container exited with status %d", status)
    return status


def _log_plan(image: Image, p: _Plan) -> None:
    import shlex

    log.info("image %s: %s", image.name or "(file)", image.squashfs)
    log.info("command: %s (in %s)", shlex.join(p.args), p.cwd)
    for m in p.mounts:
        log.info("mount %s on %s%s", m.source, m.destination, " (read-only)" if m.readonly
                 else "")
    for d in p.devices:
        log.info("device %s (%s)", d.path, d.access)
    log.info("runtime: %s", p.runc)
