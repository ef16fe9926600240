"""Site configuration: one YAML file, validated once, strict about unknown keys.

Where it comes from: ``$HPC_EXEC_CONFIG``, else ``/etc/hpc-exec/config.yaml``, else built-in
defaults (so hpc-exec runs with no config at all). Keys are camelCase, as in ``sarus.json``;
attributes are snake_case. An unknown key or a bad value is a :class:`ConfigError` naming the key
path and the value. Precedence for the values that also have CLI flags or environment variables:
CLI > ``HPC_EXEC_*`` environment > this file > default. docs/configuration.md documents every key.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from hpc_exec.errors import ConfigError
from hpc_exec.mountspec import Device, Mount, bind, parse_device, parse_mount

__all__ = ["EnvironmentEdits", "LockTimings", "Settings", "SquashfsOptions", "UserMountRules",
           "load_settings", "parse_settings"]

DEFAULT_PATH = Path("/etc/hpc-exec/config.yaml")


class LockTimings(NamedTuple):
    """``repositoryMetadataLockTimings``: how long to wait for the index lock, when to warn."""

    timeout_ms: int = 60_000
    warning_ms: int = 10_000


class SquashfsOptions(NamedTuple):
    compression: str = "zstd"
    level: int = 3
    block_size: int = 1 << 20


def _install_prefix() -> str:
    """Where hpc-exec is installed: users may not mount over it (``userMounts`` default)."""
    import sys

    if sys.prefix not in ("/", "/usr"):
        return sys.prefix
    return str(Path(__file__).resolve().parent)


# Every settings class is a NamedTuple, not a dataclass: a dataclass costs 1-2 ms to create
# at import, and the dataclasses module (with inspect) more, and 'hpc-exec run' imports this
# module on every task.
class UserMountRules(NamedTuple):
    """``userMounts``: destinations a user ``--mount`` may not use (site mounts are exempt).

    The defaults are the ones the Sarus docs recommend; Sarus's installed config has none.
    """

    not_allowed_prefixes_of_path: tuple[str, ...] = ("/etc", "/var", _install_prefix())
    not_allowed_paths: tuple[str, ...] = ("/opt",)


class EnvironmentEdits(NamedTuple):
    """``environment``: applied after the host and image environment, before ``-e``."""

    set: tuple[tuple[str, str], ...] = ()
    prepend: tuple[tuple[str, str], ...] = ()
    append: tuple[tuple[str, str], ...] = ()
    unset: tuple[str, ...] = ()


class Settings(NamedTuple):
    source: str = "built-in defaults"
    local_repository_base_dir: Path | None = None  # None: $HPC_EXEC_HOME, else ~/.hpc-exec
    centralized_repository_dir: Path | None = None  # read-only for users
    shared_repository_dir: Path | None = None  # group-writable; replaces the local one if set
    temp_dir: Path = Path("/tmp")
    squashfs: SquashfsOptions = SquashfsOptions()
    repository_metadata_lock_timings: LockTimings = LockTimings()
    insecure_registries: tuple[str, ...] = ()
    registry_timeout_ms: int = 60_000  # one registry request (connect, or a silent read)
    registry_retries: int = 4  # attempts after the first, on resets, timeouts and 5xx
    # -- run side (engine/runtime; docs/configuration.md) --
    security_checks: bool = True
    bundle_dir: Path = Path("/var/lib/hpc-exec/bundle")
    rootfs_folder: str = "rootfs"
    hooks_dir: Path = Path("/etc/hpc-exec/hooks.d")
    merge_hooks: bool = True  # run our Python hooks of a stage in one interpreter
    hosts_file: Path = Path("/etc/hosts")  # copied into every container as its /etc/hosts
    runc_path: Path | None = None  # None: runc on PATH (or /usr/sbin)
    init_path: Path | None = None  # None: tini-static, else tini
    idmap_helper: Path | None = None  # None: the packaged one (setup.py), else on PATH
    ram_filesystem_type: str = "tmpfs"
    site_mounts: tuple[Mount, ...] = ()  # parsed here, once (hpc_exec.mountspec)
    site_devices: tuple[Device, ...] = ()
    environment: EnvironmentEdits = EnvironmentEdits()
    user_mounts: UserMountRules = UserMountRules()
    seccomp_profile: Path | None = None
    apparmor_profile: str | None = None
    selinux_label: str | None = None
    selinux_mount_label: str | None = None
    default_mpi_type: str | None = None

    def local_repository(self) -> Path:
        """The per-user local repository root."""
        env = os.environ.get("HPC_EXEC_HOME")
        if env:
            return Path(env)
        if self.local_repository_base_dir is not None:
            import getpass

            return self.local_repository_base_dir / getpass.getuser() / ".hpc-exec"
        return Path.home() / ".hpc-exec"


COMPRESSIONS = ("zstd", "gzip", "xz", "lz4", "lzo", "lzma")
# The levels tar2sqfs accepts (its '-X help'); lz4 has none. Checked when the config is read,
# not after a whole download (issue 12, item 11).
LEVELS = {"zstd": (1, 22), "gzip": (1, 9), "xz": (0, 9), "lzma": (0, 9), "lzo": (1, 9)}


def _expect(value: Any, kind: type | tuple[type, ...], path: str) -> Any:
    if isinstance(value, bool) and kind is int:
        raise ConfigError(f"config key {path}: expected a number, got {value!r}")
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ConfigError(f"config key {path}: expected {names}, got {value!r}")
    return value


def _keys(data: Mapping[str, Any], allowed: set[str], where: str) -> None:
    for key in data:
        if key not in allowed:
            name = key if isinstance(key, str) and key.isprintable() else repr(key)
            raise ConfigError(
                f"config key {where}{name}: unknown key (known: {', '.join(sorted(allowed))})")


def _abspath(value: Any, path: str) -> Path:
    text = _expect(value, str, path)
    if not text.startswith("/"):
        raise ConfigError(f"config key {path}: expected an absolute path, got {text!r}")
    return Path(text)


def parse_settings(data: Mapping[str, Any] | None, source: str = "<dict>") -> Settings:
    """Validate a parsed config mapping into :class:`Settings` (pure)."""
    data = dict(data or {})
    _expect(data, dict, "(top level)")
    _keys(data, {"localRepositoryBaseDir", "centralizedRepositoryDir", "sharedRepositoryDir",
                 "tempDir", "squashfs", "registryTimeoutMs", "registryRetries",
                 "repositoryMetadataLockTimings", "insecureRegistries"} | RUNTIME_KEYS, "")
    kw: dict[str, Any] = {"source": source}
    if data.get("localRepositoryBaseDir") is not None:
        kw["local_repository_base_dir"] = _abspath(data["localRepositoryBaseDir"],
                                                   "localRepositoryBaseDir")
    if data.get("sharedRepositoryDir") is not None:
        kw["shared_repository_dir"] = _abspath(data["sharedRepositoryDir"],
                                               "sharedRepositoryDir")
    if data.get("centralizedRepositoryDir") is not None:
        kw["centralized_repository_dir"] = _abspath(data["centralizedRepositoryDir"],
                                                    "centralizedRepositoryDir")
    if "tempDir" in data:
        kw["temp_dir"] = _abspath(data["tempDir"], "tempDir")
    if "squashfs" in data:
        sq = _expect(data["squashfs"], dict, "squashfs")
        _keys(sq, {"compression", "level", "blockSize"}, "squashfs.")
        comp = _expect(sq.get("compression", "zstd"), str, "squashfs.compression")
        if comp not in COMPRESSIONS:
            raise ConfigError(f"config key squashfs.compression: unknown compressor {comp!r} "
                              f"(known: {', '.join(COMPRESSIONS)})")
        level = _expect(sq.get("level", 3), int, "squashfs.level")
        if comp in LEVELS and not LEVELS[comp][0] <= level <= LEVELS[comp][1]:
            low, high = LEVELS[comp]
            raise ConfigError(f"config key squashfs.level: {level} is not a {comp} level "
                              f"({low} to {high})")
        block = _expect(sq.get("blockSize", 1 << 20), int, "squashfs.blockSize")
        if block < 4096 or block > (1 << 20) or block & (block - 1):
            raise ConfigError(f"config key squashfs.blockSize: {block} is not a power of two "
                              "between 4096 and 1048576")
        kw["squashfs"] = SquashfsOptions(comp, level, block)
    if "repositoryMetadataLockTimings" in data:
        lt = _expect(data["repositoryMetadataLockTimings"], dict,
                     "repositoryMetadataLockTimings")
        _keys(lt, {"timeoutMs", "warningMs"}, "repositoryMetadataLockTimings.")
        timings = {}
        for key, attr in (("timeoutMs", "timeout_ms"), ("warningMs", "warning_ms")):
            if key in lt:
                value = _expect(lt[key], int, f"repositoryMetadataLockTimings.{key}")
                if value <= 0:
                    raise ConfigError(f"config key repositoryMetadataLockTimings.{key}: "
                                      f"must be positive, got {value}")
                timings[attr] = value
        kw["repository_metadata_lock_timings"] = LockTimings(**timings)
    if "registryTimeoutMs" in data:
        value = _expect(data["registryTimeoutMs"], int, "registryTimeoutMs")
        if not 0 < value <= 3_600_000:
            raise ConfigError(f"config key registryTimeoutMs: expected 1 to 3600000, got {value}")
        kw["registry_timeout_ms"] = value
    if "registryRetries" in data:
        value = _expect(data["registryRetries"], int, "registryRetries")
        if not 0 <= value <= 20:
            raise ConfigError(f"config key registryRetries: expected 0 to 20, got {value}")
        kw["registry_retries"] = value
    if "insecureRegistries" in data:
        regs = _expect(data["insecureRegistries"], list, "insecureRegistries")
        kw["insecure_registries"] = tuple(
            _expect(r, str, f"insecureRegistries[{i}]") for i, r in enumerate(regs))
    _parse_runtime(data, kw)
    return Settings(**kw)


# -- run-side keys (issue 4) -----------------------------------------------------------------

RUNTIME_KEYS = {"securityChecks", "mergeHooks", "bundleDir", "rootfsFolder", "hooksDir", "hostsFile",
                "runcPath", "idmapHelper",
                "initPath", "ramFilesystemType", "siteMounts", "siteDevices", "environment",
                "userMounts", "seccompProfile", "apparmorProfile", "selinuxLabel",
                "selinuxMountLabel", "defaultMPIType"}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _env_map(value: Any, path: str) -> tuple[tuple[str, str], ...]:
    items = _expect(value, dict, path)
    out = []
    for name, val in items.items():
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            shown = name if isinstance(name, str) and name.isprintable() else repr(name)
            raise ConfigError(f"config key {path}.{shown}: not a valid variable name")
        out.append((name, str(_expect(val, (str, int, float), f"{path}.{name}"))))
    return tuple(out)


def _str_list(value: Any, path: str) -> tuple[str, ...]:
    items = _expect(value, list, path)
    return tuple(_expect(v, str, f"{path}[{i}]") for i, v in enumerate(items))


def _site_mount(item: Any, path: str) -> Mount:
    """One ``siteMounts`` entry: ``--mount`` text, or {type, source, destination, readonly}."""
    try:
        if isinstance(item, dict):
            _keys(item, {"type", "source", "destination", "readonly"}, f"{path}.")
            if "type" not in item:  # Sarus requires it too
                raise ConfigError(f"config key {path}.type: missing (write type: bind)")
            if item["type"] != "bind":
                raise ConfigError(f"config key {path}.type: unsupported mount type "
                                  f"{item['type']!r} (bind is the only type)")
            for key in ("source", "destination"):
                if not isinstance(item.get(key), str):
                    raise ConfigError(f"config key {path}.{key}: expected an absolute path, "
                                      f"got {item.get(key)!r}")
            readonly = _expect(item.get("readonly", False), bool, f"{path}.readonly")
            return bind(item["source"], item["destination"], readonly=readonly)
        return parse_mount(_expect(item, str, path))
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(f"config key {path}: {exc}") from exc


def _parse_runtime(data: Mapping[str, Any], kw: dict[str, Any]) -> None:
    """Validate the run-side keys of ``data`` into ``kw`` (Settings keyword arguments)."""
    if "securityChecks" in data:
        kw["security_checks"] = _expect(data["securityChecks"], bool, "securityChecks")
    if "mergeHooks" in data:
        kw["merge_hooks"] = _expect(data["mergeHooks"], bool, "mergeHooks")
    for key, attr in (("bundleDir", "bundle_dir"), ("hooksDir", "hooks_dir"),
                      ("hostsFile", "hosts_file"),
                      ("runcPath", "runc_path"), ("initPath", "init_path"),
                      ("idmapHelper", "idmap_helper"),
                      ("seccompProfile", "seccomp_profile")):
        if data.get(key) is not None:
            kw[attr] = _abspath(data[key], key)
    if "rootfsFolder" in data:
        folder = _expect(data["rootfsFolder"], str, "rootfsFolder")
        if not folder or "/" in folder or folder.startswith("."):
            raise ConfigError(f"config key rootfsFolder: expected a plain folder name, "
                              f"got {folder!r}")
        kw["rootfs_folder"] = folder
    if "ramFilesystemType" in data:
        fs = _expect(data["ramFilesystemType"], str, "ramFilesystemType")
        if fs not in ("tmpfs", "ramfs"):
            raise ConfigError(f"config key ramFilesystemType: expected tmpfs or ramfs, "
                              f"got {fs!r}")
        kw["ram_filesystem_type"] = fs
    for key, attr in (("apparmorProfile", "apparmor_profile"), ("selinuxLabel", "selinux_label"),
                      ("selinuxMountLabel", "selinux_mount_label"),
                      ("defaultMPIType", "default_mpi_type")):
        if data.get(key) is not None:
            kw[attr] = _expect(data[key], str, key)
    if "siteMounts" in data:
        kw["site_mounts"] = tuple(_site_mount(item, f"siteMounts[{i}]") for i, item in
                                  enumerate(_expect(data["siteMounts"], list, "siteMounts")))
    if "siteDevices" in data:
        devices = []
        for i, text in enumerate(_str_list(data["siteDevices"], "siteDevices")):
            try:
                devices.append(parse_device(text))
            except ValueError as exc:
                raise ConfigError(f"config key siteDevices[{i}]: {exc}") from exc
        kw["site_devices"] = tuple(devices)
    if "environment" in data:
        env = _expect(data["environment"], dict, "environment")
        _keys(env, {"set", "prepend", "append", "unset"}, "environment.")
        unset = _str_list(env.get("unset", []), "environment.unset")
        for i, name in enumerate(unset):
            if not _ENV_NAME.match(name):
                raise ConfigError(f"config key environment.unset[{i}]: not a valid variable "
                                  f"name: {name!r}")
        kw["environment"] = EnvironmentEdits(
            set=_env_map(env.get("set", {}), "environment.set"),
            prepend=_env_map(env.get("prepend", {}), "environment.prepend"),
            append=_env_map(env.get("append", {}), "environment.append"),
            unset=unset)
    if "userMounts" in data:
        um = _expect(data["userMounts"], dict, "userMounts")
        _keys(um, {"notAllowedPrefixesOfPath", "notAllowedPaths"}, "userMounts.")
        rules: dict[str, Any] = {}
        for key, attr in (("notAllowedPrefixesOfPath", "not_allowed_prefixes_of_path"),
                          ("notAllowedPaths", "not_allowed_paths")):
            if key in um:
                paths = _str_list(um[key], f"userMounts.{key}")
                for i, p in enumerate(paths):
                    if not p.startswith("/"):
                        raise ConfigError(f"config key userMounts.{key}[{i}]: expected an "
                                          f"absolute path, got {p!r}")
                rules[attr] = tuple(os.path.normpath(p) for p in paths)
        kw["user_mounts"] = UserMountRules(**rules)


MAX_CONFIG_BYTES = 1 << 20  # a site config is a few KiB; /dev/zero is not one


def read_config_text(path: Path, what: str = "config file") -> str:
    """The text of a small regular file, or ConfigError: never blocks on a FIFO, never reads
    a device or more than :data:`MAX_CONFIG_BYTES`, and names a file that is not UTF-8."""
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{what} {path} is not a regular file")
        data = os.read(fd, MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from exc
    finally:
        os.close(fd)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{what} {path} is larger than {MAX_CONFIG_BYTES >> 20} MiB")
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is not UTF-8 text (byte {exc.start})") from None


def _yaml_error(path: Path, exc: Exception) -> ConfigError:
    """One line for a YAML error: what and where (PyYAML's own text spans 4-8 lines)."""
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or "syntax error"
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return ConfigError(f"config file {path} is not valid YAML: {problem}{where}")


def _load_file(path: Path) -> Settings:
    text = read_config_text(path)
    try:
        # JSON is YAML: a config written in JSON syntax skips importing the YAML parser, which
        # costs every 'hpc-exec run' (a per-task hot path) more than the rest of the config.
        data = json.loads(text)
    except RecursionError:
        raise ConfigError(f"config file {path} is nested too deeply") from None
    except ValueError:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise _yaml_error(path, exc) from exc
        except RecursionError:
            raise ConfigError(f"config file {path} is nested too deeply") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping at the top level")
    try:
        return parse_settings(data, str(path))
    except RecursionError:
        raise ConfigError(f"config file {path} is nested too deeply") from None


@functools.cache
def _cached(path: str | None) -> Settings:
    if path:
        return _load_file(Path(path))
    if DEFAULT_PATH.exists():
        return _load_file(DEFAULT_PATH)
    return Settings()


def load_settings() -> Settings:
    """The site settings for this process (read and validated once per path)."""
    return _cached(os.environ.get("HPC_EXEC_CONFIG") or None)
