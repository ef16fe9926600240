"""RegistryClient.download_blob tells a full local disk from a broken transfer: the first is
raised as it is (the pull then names the full filesystem, exit 117), never retried as a
registry fault (exit 114)."""

from __future__ import annotations

import errno
import http.client
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hpc_exec.engine.image import registry
from hpc_exec.errors import RegistryError


class _FullDisk:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def write(self, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


def _client(monkeypatch: pytest.MonkeyPatch, chunks: Iterator[bytes]) -> registry.RegistryClient:
    client = registry.RegistryClient("registry.test:5000", insecure=True, retries=3)
    calls: list[int] = []

    def iter_blob(repo: str, digest: str) -> Iterator[bytes]:
        calls.append(1)
        yield from chunks

    monkeypatch.setattr(client, "iter_blob", iter_blob)
    monkeypatch.setattr(registry.time, "sleep", lambda s: None)
    client.calls = calls  # type: ignore[attr-defined]
    return client


def test_a_full_disk_is_raised_as_it_is(monkeypatch: pytest.MonkeyPatch,
                                        tmp_path: Path) -> None:
    client = _client(monkeypatch, iter([b"x" * 1000, b"y" * 1000]))
    monkeypatch.setattr(registry, "open", _FullDisk, raising=False)
    with pytest.raises(OSError) as exc:
        client.download_blob("ns/img", "sha256:" + "0" * 64, tmp_path / "blob", size=2000)
    assert exc.value.errno == errno.ENOSPC and not isinstance(exc.value, RegistryError)
    assert client.calls == [1]  # not retried


def test_a_broken_transfer_is_retried_then_a_registry_error(monkeypatch: pytest.MonkeyPatch,
                                                            tmp_path: Path) -> None:
    def broken() -> Iterator[bytes]:
        yield b"x" * 10
        raise http.client.IncompleteRead(b"")

    client = registry.RegistryClient("registry.test:5000", insecure=True, retries=2)
    attempts: list[int] = []

    def iter_blob(repo: str, digest: str) -> Iterator[bytes]:
        attempts.append(1)
        return broken()

    monkeypatch.setattr(client, "iter_blob", iter_blob)
    monkeypatch.setattr(registry.time, "sleep", lambda s: None)
    with pytest.raises(RegistryError, match="broke"):
        client.download_blob("ns/img", "sha256:" + "0" * 64, tmp_path / "blob", size=2000)
    assert len(attempts) == 3 and not (tmp_path / "blob").exists()


@pytest.mark.parametrize("reference,expected", [
    ("latest", "testbed/busybox:latest"),
    ("sha256:" + "a" * 64, "testbed/busybox@sha256:" + "a" * 64),
])
def test_manifest_names_in_messages(reference: str, expected: str) -> None:
    assert registry.manifest_name("testbed/busybox", reference) == expected
