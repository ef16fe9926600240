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
