"""Site config validation: unknown keys and bad values name the key path and the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpc_exec.config import load_settings, parse_settings
from hpc_exec.errors import ConfigError


def test_defaults_without_any_config() -> None:
    s = parse_settings(None)
    assert s.squashfs.compression == "zstd" and s.squashfs.level == 3
    assert s.squashfs.block_size == 1 << 20
    assert s.repository_metadata_lock_timings.timeout_ms == 60_000
    assert s.repository_metadata_lock_timings.warning_ms == 10_000


@pytest.mark.parametrize(("data", "message"), [
    ({"bogus": 1}, "config key bogus: unknown key"),
    ({"squashfs": {"compresion": "xz"}}, "config key squashfs.compresion: unknown key"),
    ({"squashfs": {"compression": "brotli"}}, "unknown compressor 'brotli'"),
    ({"squashfs": {"blockSize": 3000}}, "squashfs.blockSize: 3000 is not a power of two"),
    ({"repositoryMetadataLockTimings": {"timeoutMs": 0}}, "timeoutMs: must be positive, got 0"),
    ({"repositoryMetadataLockTimings": {"timeoutMs": True}}, "expected a number, got True"),
    ({"tempDir": "relative/tmp"}, "tempDir: expected an absolute path, got 'relative/tmp'"),
    ({"insecureRegistries": ["ok:5000", 7]}, "insecureRegistries[1]: expected str, got 7"),
])
def test_bad_values_name_key_and_value(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=None) as exc:
        parse_settings(data)
    assert message in str(exc.value)


def test_file_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("insecureRegistries: ['127.0.0.1:5000']\nsquashfs: {level: 9}\n")
    monkeypatch.setenv("HPC_EXEC_CONFIG", str(cfg))
    s = load_settings()
    assert s.insecure_registries == ("127.0.0.1:5000",) and s.squashfs.level == 9
    assert s.source == str(cfg)


def test_broken_yaml_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("squashfs: [unclosed\n")
    monkeypatch.setenv("HPC_EXEC_CONFIG", str(cfg))
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_settings()


def test_local_repository_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = parse_settings({"localRepositoryBaseDir": str(tmp_path)})
    assert s.local_repository().parent.parent == tmp_path
    monkeypatch.setenv("HPC_EXEC_HOME", str(tmp_path / "mine"))
    assert s.local_repository() == tmp_path / "mine"


# -- issue 12 -------------------------------------------------------------------------------------

def test_config_files_that_are_not_small_regular_utf8_files(tmp_path: Path) -> None:
    """Items 10 and 11: a FIFO (never blocks), a device, a huge or binary file, deep nesting
    and YAML errors each give one line naming the file."""
    import os

    from hpc_exec.config import _load_file

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    cases: list[tuple[Path, str]] = [(fifo, "is not a regular file"),
                                     (Path("/dev/zero"), "is not a regular file")]
    big = tmp_path / "big.yaml"
    big.write_text("# x\n" * (1 << 19))
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"a: \xff\n")
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 50_000 + "]" * 50_000)
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [\n b: c\n")
    cases += [(big, "is larger than 1 MiB"), (binary, "is not UTF-8 text (byte 3)"),
              (deep, "is nested too deeply"),
              (bad, "is not valid YAML: expected ',' or ']', but got '<stream end>' at line 3, "
                    "column 1")]
    for path, message in cases:
        with pytest.raises(ConfigError) as exc:
            _load_file(path)
        assert message in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("squashfs,message", [
    ({"level": 999}, "999 is not a zstd level (1 to 22)"),
    ({"level": 0}, "0 is not a zstd level"),
    ({"compression": "gzip", "level": 10}, "10 is not a gzip level (1 to 9)"),
    ({"compression": "xz", "level": -1}, "-1 is not a xz level (0 to 9)"),
])
def test_squashfs_level_is_checked_per_compressor(squashfs: dict[str, object],
                                                  message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_settings({"squashfs": squashfs})
    assert parse_settings({"squashfs": {"compression": "lz4", "level": 999}}).squashfs.level \
        == 999  # lz4 takes no level: nothing passed to tar2sqfs


def test_registry_timeout_and_retries() -> None:
    s = parse_settings({"registryTimeoutMs": 500, "registryRetries": 0})
    assert (s.registry_timeout_ms, s.registry_retries) == (500, 0)
    for data in ({"registryTimeoutMs": 0}, {"registryRetries": 21}, {"registryRetries": True}):
        with pytest.raises(ConfigError, match="config key registry"):
            parse_settings(data)
