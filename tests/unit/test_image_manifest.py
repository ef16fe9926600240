"""engine/image/manifest.py and auth.py: parsing, platform selection, auth files (pure)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from hpc_exec.engine.image import auth, manifest
from hpc_exec.errors import ImageContentError, ImageNotFound, RegistryError

H = "sha256:" + "a" * 64


def _desc(arch: str, os_: str = "linux", **extra: str) -> dict[str, object]:
    return {"mediaType": manifest.OCI_MANIFEST, "digest": H, "size": 10,
            "platform": {"architecture": arch, "os": os_, **extra}}


def test_index_selects_linux_amd64() -> None:
    body = json.dumps({"schemaVersion": 2, "mediaType": manifest.OCI_INDEX, "manifests": [
        _desc("arm64"), _desc("unknown", "unknown"), _desc("amd64")]}).encode()
    idx = manifest.parse(body, "", "sha256:" + "b" * 64)
    assert isinstance(idx, manifest.Index)
    assert manifest.select_platform(idx).platform["architecture"] == "amd64"
    with pytest.raises(ImageNotFound, match="no linux/ppc64le image .*linux/arm64, linux/amd64"):
        manifest.select_platform(idx, "linux/ppc64le")


def test_manifest_and_config() -> None:
    body = json.dumps({"schemaVersion": 2, "config": {"digest": H, "size": 2, "mediaType": "x"},
                       "layers": [{"mediaType": manifest.DOCKER_MANIFEST.replace(
                           "distribution.manifest.v2+json", "image.rootfs.diff.tar.gzip"),
                           "digest": H, "size": 3}]}).encode()
    m = manifest.parse(body, manifest.DOCKER_MANIFEST, "sha256:" + "c" * 64)
    assert isinstance(m, manifest.Manifest) and m.layers[0].size == 3
    assert manifest.compression_of(m.layers[0]) == "gzip"
    cfg = manifest.parse_config(json.dumps({"architecture": "amd64", "os": "linux", "config": {
        "Entrypoint": ["/e"], "Cmd": "sh", "Env": ["A=1"], "WorkingDir": "/w",
        "Labels": {"k": "v"}}}).encode(), H)
    meta = cfg.metadata()
    assert meta["entrypoint"] == ["/e"] and meta["cmd"] == ["sh"] and meta["env"] == ["A=1"]
    assert meta["workdir"] == "/w" and meta["labels"] == {"k": "v"}


def test_bad_manifests() -> None:
    with pytest.raises(RegistryError, match="schema 1"):
        manifest.parse(b'{"schemaVersion": 1}', "", H)
    with pytest.raises(ImageContentError, match="not valid JSON"):
        manifest.parse(b"{", "", H)
    with pytest.raises(ImageContentError, match="bad or unsupported digest"):
        manifest.parse(json.dumps({"schemaVersion": 2, "config": {"digest": "md5:x", "size": 1},
                                   "layers": []}).encode(), manifest.OCI_MANIFEST, H)


def test_auth_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = base64.b64encode(b"alice:s3cret").decode()
    docker = tmp_path / "docker"
    docker.mkdir()
    (docker / "config.json").write_text(json.dumps(
        {"auths": {"https://index.docker.io/v1/": {"auth": token},
                   "reg.example:5000": {"auth": token}}}))
    runtime = tmp_path / "run"
    (runtime / "containers").mkdir(parents=True)
    (runtime / "containers" / "auth.json").write_text(json.dumps(
        {"auths": {"reg.example:5000": {"auth": base64.b64encode(b"bob:pw").decode()}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(docker))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    creds = auth.from_auth_files("reg.example:5000")
    assert creds is not None and creds.username == "bob"  # containers' file first
    hub = auth.from_auth_files("docker.io")
    assert hub is not None and hub.username == "alice" and "s3cret" not in repr(hub)
    assert auth.from_auth_files("other.example") is None
