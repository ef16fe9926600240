"""SSH hook: a dropbear server in the container and an ``ssh`` client that reaches its peers.

Contract (docs/hooks.md; a ``createContainer`` hook):

* ``keygen`` (the first argument, outside runc; ``hpc-exec ssh-keygen`` runs it): creates the
  user's keys under ``<HOOK_BASE_DIR>/<user>/.oci-hooks/ssh/keys`` (a host key, a user key and
  ``authorized_keys``) with Debian's ``dropbearkey``; ``--overwrite`` replaces existing keys.
* As a hook, applies when the annotation ``com.hooks.ssh.enabled`` is ``true``; otherwise exits
  0 (DEBUG line). Exit 1 when the keys are missing ("run hpc-exec ssh-keygen") or the
  container user's home (from the container's /etc/passwd) is empty or ``/nonexistent``.
* Hook env: ``HOOK_BASE_DIR``, ``PASSWD_FILE`` (as the sync hook), ``SERVER_PORT`` (default
  15263), optional ``SERVER_ADDRESS`` (default: every address; ``hostname``: the address of
  this node's name in the container's /etc/hosts; or an IP), optional ``DROPBEAR_DIR`` (where ``dropbear``, ``dbclient`` and ``dropbearkey`` are;
  default: /usr/sbin and /usr/bin).
* In the container: a tmpfs at ``/opt/oci-hooks/ssh`` holds dropbear, dbclient, the host
  libraries they need and the host's dynamic loader (so they run in any glibc or non-glibc
  image), the host key, and ``environment`` (the container env as ``export`` lines).
  ``~/.ssh`` gets an overlay whose upper layer is in that tmpfs, so the user's real ``~/.ssh``
  (often the host home) is never written; ``authorized_keys`` and ``id_dropbear`` go there.
  ``/usr/bin/ssh`` becomes a wrapper around dbclient (port, key, no host-key prompt) that runs
  remote commands after sourcing ``environment``, and ``/etc/profile`` sources it for login
  shells. dropbear then starts, chrooted in the rootfs as the container user, on
  ``SERVER_PORT``; it ends with the container (runc kills what is left in its cgroup).
* Annotations (as Sarus' SSH hook): ``com.hooks.ssh.port`` overrides ``SERVER_PORT``;
  ``com.hooks.ssh.authorize_ssh_key=/host/key.pub`` adds that public key file (read as the
  user, before anything is mounted) to the container's ``authorized_keys``;
  ``com.hooks.ssh.pidfile_container`` is where dropbear writes its PID file (default
  ``/opt/oci-hooks/ssh/run/dropbear.pid``) and ``com.hooks.ssh.pidfile_host`` a host file
  (written as the user) that gets a copy of it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

if not __package__:  # run as a file (python3 -I -S .../hpc_exec/hooks/<hook>.py): docs/hooks.md
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from hpc_exec.hooks._state import (
    Container,
    HookError,
    Log,
    exit_now,
    passwd_entry,
    read_container,
    run_hook,
    run_program,
)

__all__ = ["DEFAULT_PORT", "host_address", "keygen", "keys_dir", "listen_spec", "main",
           "public_keys", "server_port"]

HOOK = "ssh"
DEFAULT_PORT = 15263
SSH_DIR = "/opt/oci-hooks/ssh"
HOST_KEY = "dropbear_ecdsa_host_key"
USER_KEY = "id_dropbear"
_LOADERS = {"x86_64": "/lib64/ld-linux-x86-64.so.2", "aarch64": "/lib/ld-linux-aarch64.so.1"}


def keys_dir(base: str, user: str) -> str:
    """``<HOOK_BASE_DIR>/<user>/.oci-hooks/ssh/keys``."""
    return os.path.join(base, user, ".oci-hooks", "ssh", "keys")


def _tool(name: str) -> str:
    directory = os.environ.get("DROPBEAR_DIR", "")
    candidates = [os.path.join(directory, name)] if directory else [
        os.path.join(d, name) for d in ("/usr/sbin", "/usr/bin")]
    for path in candidates:
        if os.access(path, os.X_OK):
            return path
    raise HookError(f"{name} not found in {' or '.join(os.path.dirname(c) for c in candidates)} "
                    "(Debian package dropbear-bin; or set DROPBEAR_DIR)")


def _base_and_user(uid: int) -> tuple[str, str]:
    base = os.environ.get("HOOK_BASE_DIR", "")
    if not os.path.isabs(base):
        raise HookError(f"HOOK_BASE_DIR must be an absolute path in the hook env (got {base!r})")
    passwd = os.environ.get("PASSWD_FILE", "")
    if not passwd:
        raise HookError("PASSWD_FILE is not set in the hook env")
    return base, passwd_entry(passwd, uid).name


def keygen(overwrite: bool = False) -> str:
    """Create this user's keys (keeping existing ones unless ``overwrite``); returns the dir."""
    base, user = _base_and_user(os.getuid())
    directory = keys_dir(base, user)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    tool = _tool("dropbearkey")
    for name in (HOST_KEY, USER_KEY):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            if not overwrite:
                continue
            os.unlink(path)
        run_program([tool, "-t", "ecdsa", "-f", path], timeout=60, what=f"creating {name}")
    public = run_program([tool, "-y", "-f", os.path.join(directory, USER_KEY)], timeout=60,
                         what="reading the public user key")
    lines = [line for line in public.splitlines() if line.startswith(("ecdsa-", "ssh-"))]
    if not lines:
        raise HookError(f"dropbearkey -y printed no public key: {public.strip()}")
    authorized = os.path.join(directory, "authorized_keys")
    with open(authorized + ".tmp", "w", encoding="ascii") as f:
        f.write(lines[0] + "\n")
    os.chmod(authorized + ".tmp", 0o600)
    os.replace(authorized + ".tmp", authorized)
    return directory


# --- the hook ---------------------------------------------------------------------------------

PORT_ANNOTATION = "com.hooks.ssh.port"
KEY_ANNOTATION = "com.hooks.ssh.authorize_ssh_key"
PIDFILE_CONTAINER = "com.hooks.ssh.pidfile_container"
PIDFILE_HOST = "com.hooks.ssh.pidfile_host"
DEFAULT_PIDFILE = f"{SSH_DIR}/run/dropbear.pid"
_KEY_TYPES = ("ssh-", "ecdsa-", "sk-ssh-", "sk-ecdsa-")


def server_port(env: Mapping[str, str], annotations: Mapping[str, str]) -> int:
    """The TCP port of dropbear: the ``com.hooks.ssh.port`` annotation, else ``SERVER_PORT``,
    else 15263 (HookError naming a value that is not a port)."""
    if annotations.get(PORT_ANNOTATION, "").strip():
        where, raw = PORT_ANNOTATION, annotations[PORT_ANNOTATION].strip()
    else:
        where, raw = "SERVER_PORT", env.get("SERVER_PORT", "").strip() or str(DEFAULT_PORT)
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise HookError(f"{where}={raw!r} is not a TCP port")
    return int(raw)


def public_keys(text: str, path: str) -> str:
    """``text`` (a public key file) as authorized_keys lines; HookError unless every line is
    an SSH public key (so no other file of the user's ends up in the container's)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise HookError(f"{KEY_ANNOTATION}: {path} is empty")
    for line in lines:
        if not line.startswith(_KEY_TYPES) or len(line.split()) < 2:
            raise HookError(f"{KEY_ANNOTATION}: {path} is not a public key file (a line "
                            "does not start with ssh-…, ecdsa-… or sk-…)")
    return "".join(line + "\n" for line in lines)


class _AsUser:
    """Within it, files are opened with the container user's ids, not root's (a user's
    annotation must not read or write what the user could not)."""

    def __init__(self, container: Container) -> None:
        self.drop = os.geteuid() == 0 and not container.rootless and container.uid != 0
        self.uid, self.gid = container.uid, container.gid

    def __enter__(self) -> None:
        if self.drop:
            self.groups = os.getgroups()
            os.setgroups([self.gid])
            os.setegid(self.gid)
            os.seteuid(self.uid)

    def __exit__(self, *exc: object) -> None:
        if self.drop:
            os.seteuid(0)
            os.setegid(0)
            os.setgroups(self.groups)


def _user_path(annotation: str, path: str) -> str:
    if not os.path.isabs(path):
        raise HookError(f"{annotation}={path!r}: not an absolute path")
    return path


def read_user_key(container: Container, path: str) -> str:
    """The authorized_keys lines of the public key file ``path`` on the host, read as the
    user (HookError naming the file when that fails)."""
    _user_path(KEY_ANNOTATION, path)
    try:
        with _AsUser(container), open(path, encoding="utf-8") as f:
            text = f.read(65536)
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not text"
        raise HookError(f"{KEY_ANNOTATION}: cannot read {path}: {reason}") from None
    return public_keys(text, path)


def open_host_pidfile(container: Container, path: str) -> int:
    """``path`` on the host opened for writing as the user (a descriptor, opened before the
    hook enters the container's mount namespace)."""
    _user_path(PIDFILE_HOST, path)
    try:
        with _AsUser(container):
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                           | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise HookError(f"{PIDFILE_HOST}: cannot write {path}: {exc.strerror}") from None


def copy_pidfile(source: str, fd: int, timeout: float = 10.0) -> None:
    """Copy dropbear's PID file (written by its daemon soon after it forks) to ``fd``.

    The hook runs as root and ``source`` is a path in the rootfs the user chose
    (``pidfile_container``): it is opened without following a final symlink, at most 32 bytes
    are read, and only a PID (digits) is copied, so no other file's content can reach the
    user's host file."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            src = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                text = os.read(src, 32).decode("ascii", "replace")
            finally:
                os.close(src)
        except OSError:
            text = ""
        if text.strip().isdigit():
            text = text.strip() + "\n"
            break
        if text.strip() and len(text) >= 32:  # not a PID file: no waiting for one to appear
            raise HookError(f"{source} is not a PID file")
        if time.monotonic() > deadline:
            raise HookError(f"dropbear wrote no PID file {source} within {timeout:.0f} s")
        time.sleep(0.01)
    os.write(fd, text.encode())


def _container_home(container: Container) -> str:
    path = container.in_rootfs("/etc/passwd")
    try:
        entry = passwd_entry(path, container.uid)
    except HookError as exc:
        raise HookError(f"the container's /etc/passwd has no user {container.uid}: the SSH "
                        "hook needs the user's home") from exc
    if entry.home in ("", "/nonexistent") or not entry.home.startswith("/"):
        raise HookError(f"the container user {entry.name} has no usable home directory "
                        f"({entry.home!r}): the SSH hook needs one for ~/.ssh")
    return entry.home


def _libraries(binaries: list[str]) -> list[str]:
    """The host libraries ``binaries`` need, transitively (from the host's linker cache)."""
    from hpc_exec.hooks import _ldcache
    from hpc_exec.hooks._libs import elf_dynamic

    with open("/etc/ld.so.cache", "rb") as f:
        cache = dict(reversed(_ldcache.parse(f.read())))  # first entry wins
    found: dict[str, str] = {}
    todo = list(binaries)
    while todo:
        for name in elf_dynamic(todo.pop())[1]:
            if name in found:
                continue
            if name not in cache:
                raise HookError(f"{name}, needed by dropbear, is not in the host's linker cache")
            found[name] = cache[name]
            todo.append(os.path.realpath(cache[name]))
    return sorted(found.values())


def _copy(source: str, target: str, mode: int) -> None:
    with open(os.path.realpath(source), "rb") as src, open(target, "wb") as dst:
        dst.write(src.read())
    os.chmod(target, mode)


def _wrapper(port: int) -> str:
    run = f"{SSH_DIR}/lib/ld.so --library-path {SSH_DIR}/lib {SSH_DIR}/bin/dbclient.bin"
    return f"""#!/bin/sh
# ssh for containers started with the hpc-exec SSH hook: dbclient on port {port}, the user key,
# no host-key prompt; a remote command runs after the container environment is loaded.
key="$HOME/.ssh/{USER_KEY}"
if [ "$#" -le 1 ]; then exec {run} -y -p {port} -i "$key" "$@"; fi
host="$1"; shift
exec {run} -y -p {port} -i "$key" "$host" ". {SSH_DIR}/environment; $*"
"""


def _environment(env: dict[str, str]) -> str:
    lines = []
    for key, value in sorted(env.items()):
        if key.replace("_", "").isalnum() and not key[0].isdigit():
            lines.append(f"export {key}='" + value.replace("'", "'\"'\"'") + "'\n")
    return "".join(lines)


def host_address(hosts_text: str, name: str) -> str | None:
    """The first address ``name`` has in a hosts file's text (pure)."""
    for line in hosts_text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and name in fields[1:]:
            return fields[0]
    return None


def listen_spec(port: int, address: str, hosts_text: str, nodename: str) -> str:
    """dropbear's ``-p`` value for SERVER_ADDRESS (pure).

    Empty: every address (``port``). ``hostname``: the address this node's name has in the
    container's /etc/hosts, so that containers of several nodes sharing one network namespace
    (the testbed's) each listen on their own. Anything else: that literal address.
    """
    if not address:
        return str(port)
    if address == "hostname":
        found = host_address(hosts_text, nodename)
        if found is None:
            raise HookError(f"SERVER_ADDRESS=hostname: {nodename!r} is not in the container's "
                            "/etc/hosts")
        address = found
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _start_dropbear(container: Container, port: int | str, log: Log,
                    pidfile: str = DEFAULT_PIDFILE) -> None:
    """Fork dropbear, chrooted in the rootfs as the container user; it daemonises itself."""
    # dropbear re-executes argv[0] for every connection: make that the wrapper script, which
    # runs the real binary through the host loader again.
    argv = [f"{SSH_DIR}/lib/ld.so", "--argv0", f"{SSH_DIR}/bin/dropbear", "--library-path",
            f"{SSH_DIR}/lib", f"{SSH_DIR}/bin/dropbear.bin", "-r", f"{SSH_DIR}/keys/{HOST_KEY}", "-p", str(port),
            "-P", pidfile, "-s", "-E"]  # keys only, no passwords; log to stderr: /opt/oci-hooks/ssh/dropbear.log
    pid = os.fork()
    if pid == 0:  # child: never returns
        try:
            os.chroot(container.rootfs)
            os.chdir("/")
            if os.getuid() == 0 and container.uid != 0 and not container.rootless:
                os.setgroups([container.gid])
                os.setgid(container.gid)
                os.setuid(container.uid)
            # No inherited descriptor may outlive the hook: runc reads the hook's stdout and
            # stderr until every copy is closed, so a daemon holding one would hang the start.
            devnull = os.open("/dev/null", os.O_RDWR)
            logfile = os.open(f"{SSH_DIR}/dropbear.log",
                              os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            for fd, src in ((0, devnull), (1, devnull), (2, logfile)):
                os.dup2(src, fd)
            os.closerange(3, 65536)
            os.execve(argv[0], argv, {"PATH": "/usr/local/bin:/usr/bin:/bin"})
        except OSError:
            pass
        os._exit(127)
    import time

    deadline = time.monotonic() + 30
    while True:  # dropbear forks into the background and its first process exits
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise HookError("dropbear did not start within 30 s")
        time.sleep(0.01)
    if os.waitstatus_to_exitcode(status) != 0:
        raise HookError(f"dropbear failed to start on port {port} "
                        f"(exit status {os.waitstatus_to_exitcode(status)})")
    log.debug(f"dropbear listening on port {port}")


def _run(log: Log) -> int:
    if sys.argv[1:2] == ["keygen"]:
        print(f"SSH keys in {keygen(overwrite='--overwrite' in sys.argv[2:])}")
        return 0
    container = read_container()
    if container.annotations.get("com.hooks.ssh.enabled", "").lower() != "true":
        log.debug("annotation com.hooks.ssh.enabled is not 'true': nothing to do")
        return 0
    from hpc_exec.hooks._mount import (
        bind,
        enter_mount_namespace,
        mount_filesystem,
        resolve_in_rootfs,
    )

    base, user = _base_and_user(container.uid)
    keys = keys_dir(base, user)
    for name in (HOST_KEY, USER_KEY, "authorized_keys"):
        if not os.path.isfile(os.path.join(keys, name)):
            raise HookError(f"no SSH keys for {user} in {keys}: run 'hpc-exec ssh-keygen' first")
    home = _container_home(container)
    port = server_port(os.environ, container.annotations)
    # What the user's annotations name on the host is read or opened now, as the user, before
    # the hook enters the container's mount namespace.
    extra_key = container.annotations.get(KEY_ANNOTATION, "").strip()
    extra_keys = read_user_key(container, extra_key) if extra_key else ""
    pidfile = container.annotations.get(PIDFILE_CONTAINER, "").strip() or DEFAULT_PIDFILE
    _user_path(PIDFILE_CONTAINER, pidfile)
    host_pid = container.annotations.get(PIDFILE_HOST, "").strip()
    host_pid_fd = open_host_pidfile(container, host_pid) if host_pid else -1
    loader = _LOADERS.get(os.uname().machine)
    if loader is None:
        raise HookError(f"the SSH hook does not know the dynamic loader of {os.uname().machine}")
    binaries = [_tool("dropbear"), _tool("dbclient")]
    enter_mount_namespace(container.state.pid)

    # One tmpfs for everything the hook adds.
    top = resolve_in_rootfs(container.rootfs, SSH_DIR)
    os.makedirs(top, mode=0o755, exist_ok=True)
    mount_filesystem("tmpfs", top, "mode=755,size=64m")
    for sub in ("bin", "lib", "keys", "upper", "work", "run"):
        os.mkdir(os.path.join(top, sub), 0o755)
    for binary in binaries:
        _copy(binary, os.path.join(top, "bin", os.path.basename(binary) + ".bin"), 0o755)
        with open(os.path.join(top, "bin", os.path.basename(binary)), "w", encoding="ascii") as f:
            f.write(f'#!/bin/sh\nexec {SSH_DIR}/lib/ld.so --argv0 "$0" --library-path '
                    f'{SSH_DIR}/lib {SSH_DIR}/bin/{os.path.basename(binary)}.bin "$@"\n')
        os.chmod(os.path.join(top, "bin", os.path.basename(binary)), 0o755)
    for lib in _libraries(binaries):
        _copy(lib, os.path.join(top, "lib", os.path.basename(lib)), 0o755)
    _copy(loader, os.path.join(top, "lib", "ld.so"), 0o755)
    _copy(os.path.join(keys, HOST_KEY), os.path.join(top, "keys", HOST_KEY), 0o600)
    with open(os.path.join(top, "environment"), "w", encoding="utf-8") as f:
        f.write(_environment(container.env))
    with open(os.path.join(top, "bin", "ssh"), "w", encoding="ascii") as f:
        f.write(_wrapper(port))
    os.chmod(os.path.join(top, "bin", "ssh"), 0o755)
    os.close(os.open(os.path.join(top, "dropbear.log"), os.O_WRONLY | os.O_CREAT, 0o644))
    for sub in ("keys", "upper", "work", "run", "dropbear.log"):
        os.chown(os.path.join(top, sub), *container.owner)
    os.chown(os.path.join(top, "keys", HOST_KEY), *container.owner)

    # ~/.ssh: an overlay whose upper layer is ours, so the real one is never written.
    dot_ssh = resolve_in_rootfs(container.rootfs, os.path.join(home, ".ssh"))
    if not os.path.isdir(dot_ssh):
        os.makedirs(dot_ssh, mode=0o700)
        os.chown(dot_ssh, *container.owner)
    mount_filesystem("overlay", dot_ssh, f"lowerdir={dot_ssh},upperdir={top}/upper,"
                                         f"workdir={top}/work")
    os.chmod(dot_ssh, 0o700)
    os.chown(dot_ssh, *container.owner)
    for name in ("authorized_keys", USER_KEY):
        target = os.path.join(dot_ssh, name)
        _copy(os.path.join(keys, name), target, 0o600)
        os.chown(target, *container.owner)
    if extra_keys:
        with open(os.path.join(dot_ssh, "authorized_keys"), "a", encoding="utf-8") as f:
            f.write(extra_keys)
        log.debug(f"authorized the key(s) of {extra_key}")

    # ssh on PATH, and the container environment for login shells.
    bind(os.path.join(top, "bin", "ssh"), resolve_in_rootfs(container.rootfs, "/usr/bin/ssh"),
         readonly=True)
    profile = resolve_in_rootfs(container.rootfs, "/etc/profile")
    with open(profile, "a", encoding="utf-8") as f:
        f.write(f"\n. {SSH_DIR}/environment  # added by the hpc-exec SSH hook\n")

    address = os.environ.get("SERVER_ADDRESS", "").strip()
    hosts_text = ""
    if address == "hostname":
        with open(resolve_in_rootfs(container.rootfs, "/etc/hosts"), encoding="utf-8") as f:
            hosts_text = f.read()
    _start_dropbear(container, listen_spec(port, address, hosts_text, os.uname().nodename), log,
                    pidfile)
    if host_pid_fd >= 0:
        try:
            copy_pidfile(resolve_in_rootfs(container.rootfs, pidfile), host_pid_fd)
        finally:
            os.close(host_pid_fd)
        log.debug(f"copied {pidfile} to {host_pid} on the host")
    return 0


def main() -> int:
    """Console script ``hpc-hook-ssh`` (and ``hpc-hook-ssh keygen [--overwrite]``)."""
    return run_hook(HOOK, _run)


if __name__ == "__main__":
    exit_now(main())
