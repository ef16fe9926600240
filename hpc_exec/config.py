"""Site configuration: one YAML file, validated once, strict about unknown keys.

Where it comes from: ``$HPC_EXEC_CONFIG``, else ``/etc/hpc-exec/config.yaml``, else built-in
defaults (so hpc-exec runs with no config at all). Keys are camelCase, as in ``sarus.json``;
attributes are snake_case. An unknown key or a bad value is a :class:`ConfigError` naming the key
path and the value. Precedence for the values that also have CLI flags or environment variables:
CLI > ``HPC_EXEC_*`` environment > this file > default. docs/configuration.md documents every key.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpc_exec.errors import ConfigError

__all__ = ["LockTimings", "Settings", "SquashfsOptions", "load_settings", "parse_settings"]

DEFAULT_PATH = Path("/etc/hpc-exec/config.yaml")


@dataclass(frozen=True)
class LockTimings:
    """``repositoryMetadataLockTimings``: how long to wait for the index lock, when to warn."""

    timeout_ms: int = 60_000
    warning_ms: int = 10_000


@dataclass(frozen=True)
class SquashfsOptions:
    compression: str = "zstd"
    level: int = 3
    block_size: int = 1 << 20


@dataclass(frozen=True)
class Settings:
    source: str = "built-in defaults"
    local_repository_base_dir: Path | None = None  # None: $HPC_EXEC_HOME, else ~/.hpc-exec
    centralized_repository_dir: Path | None = None  # read-only for users
    temp_dir: Path = Path("/tmp")
    squashfs: SquashfsOptions = field(default_factory=SquashfsOptions)
    repository_metadata_lock_timings: LockTimings = field(default_factory=LockTimings)
    insecure_registries: tuple[str, ...] = ()

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
            raise ConfigError(
                f"config key {where}{key}: unknown key (known: {', '.join(sorted(allowed))})")


def _abspath(value: Any, path: str) -> Path:
    text = _expect(value, str, path)
    if not text.startswith("/"):
        raise ConfigError(f"config key {path}: expected an absolute path, got {text!r}")
    return Path(text)


def parse_settings(data: Mapping[str, Any] | None, source: str = "<dict>") -> Settings:
    """Validate a parsed config mapping into :class:`Settings` (pure)."""
    data = dict(data or {})
    _expect(data, dict, "(top level)")
    _keys(data, {"localRepositoryBaseDir", "centralizedRepositoryDir", "tempDir", "squashfs",
                 "repositoryMetadataLockTimings", "insecureRegistries"}, "")
    kw: dict[str, Any] = {"source": source}
    if data.get("localRepositoryBaseDir") is not None:
        kw["local_repository_base_dir"] = _abspath(data["localRepositoryBaseDir"],
                                                   "localRepositoryBaseDir")
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
    if "insecureRegistries" in data:
        regs = _expect(data["insecureRegistries"], list, "insecureRegistries")
        kw["insecure_registries"] = tuple(
            _expect(r, str, f"insecureRegistries[{i}]") for i, r in enumerate(regs))
    return Settings(**kw)


def _load_file(path: Path) -> Settings:
    import yaml

    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping at the top level")
    return parse_settings(data, str(path))


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
