"""Fixtures for the image-side integration tests.

* ``proxy``: a ``RegistryProxy`` (tests/conftest.py) in front of the testbed's plain registry,
  which counts requests and can corrupt, fail or cut chosen blobs.
* ``site``: a site config (``HPC_EXEC_CONFIG``) listing the proxy and the plain registry as
  insecure, and a fresh local repository (``HPC_EXEC_HOME``) and temp dir, all under a scratch dir
  every testbed node can reach.
* ``push``: pushes a hand-made single-platform image (tar layers given as members) to the plain
  registry under a unique repository, with the engine's own registry client.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import tarfile
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ...conftest import RegistryProxy


@pytest.fixture
def proxy(testbed: object) -> Iterator[RegistryProxy]:
    p = RegistryProxy(testbed.registry)  # type: ignore[attr-defined]
    try:
        yield p
    finally:
        p.close()


@dataclass
class Site:
    root: Path
    home: Path
    temp: Path
    config: Path
    env: dict[str, str]  # for subprocesses (hpc-exec, srun)

    def events(self, kind: str) -> list[str]:
        log = self.home / "pulls.log"
        lines = log.read_text().splitlines() if log.exists() else []
        return [line.split()[4] for line in lines if line.split()[3] == kind]


@pytest.fixture
def site(testbed: object, proxy: RegistryProxy, monkeypatch: pytest.MonkeyPatch
         ) -> Iterator[Site]:
    root = Path(tempfile.mkdtemp(prefix="hpc-exec-image-test-", dir="/var/tmp"))
    home, temp = root / "home", root / "tmp"
    temp.mkdir()
    config = root / "config.yaml"
    config.write_text(
        "insecureRegistries:\n"
        f"  - \"{proxy.address}\"\n  - \"{testbed.registry}\"\n"  # type: ignore[attr-defined]
        f"tempDir: \"{temp}\"\n")
    monkeypatch.setenv("HPC_EXEC_CONFIG", str(config))
    monkeypatch.setenv("HPC_EXEC_HOME", str(home))
    env = testbed.environ(HPC_EXEC_CONFIG=str(config),  # type: ignore[attr-defined]
                          HPC_EXEC_HOME=str(home))
    try:
        yield Site(root, home, temp, config, env)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def layer_tar(members: list[tuple[str, bytes, str, bytes]]) -> bytes:
    """A tar of (name, type, linkname, data) members."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, link, data in members:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, link
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if info.size else None)
    return buf.getvalue()


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def push(testbed: object) -> object:
    """push(layers: list[bytes tar]) -> 'registry/repo:tag' of a fresh one-platform image."""
    from hpc_exec.engine.image.registry import RegistryClient

    def _push(layers: list[bytes], name: str = "img") -> str:
        repo = f"test-{uuid.uuid4().hex[:10]}/{name}"
        blobs, descs, diff_ids = {}, [], []
        for tar in layers:
            gz = gzip.compress(tar, mtime=0)
            blobs[_sha(gz)] = gz
            descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                          "digest": _sha(gz), "size": len(gz)})
            diff_ids.append(_sha(tar))
        config = json.dumps({"architecture": "amd64", "os": "linux",
                             "config": {"Cmd": ["/bin/sh"]},
                             "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
        blobs[_sha(config)] = config
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": _sha(config), "size": len(config)},
            "layers": descs}).encode()
        with RegistryClient(testbed.registry, insecure=True) as client:  # type: ignore
            for digest, data in blobs.items():
                client.push_blob(repo, digest, data)
            client.put_manifest(repo, "v1", manifest,
                                "application/vnd.oci.image.manifest.v1+json")
        return f"{repo}:v1"
    return _push


def squashfs_members(path: Path) -> dict[str, tarfile.TarInfo]:
    """The members of a squashfs, read back with sqfs2tar (no mount needed)."""
    from hpc_exec import process

    with tempfile.TemporaryFile() as out:
        process.run(["sqfs2tar", str(path)], timeout=300, desc="listing a squashfs",
                    capture=False, stdout=out)
        out.seek(0)
        with tarfile.open(fileobj=out) as tar:
            return {m.name.rstrip("/"): m for m in tar.getmembers()}


def no_leftovers(site: Site) -> list[str]:
    """Temp files or directories left in the repository or the temp dir."""
    left = [str(p) for p in (site.home / "tmp").glob("*")] if (site.home / "tmp").exists() \
        else []
    left += [str(p) for p in site.temp.glob("hpc-exec-pull-*")]
    return left



@pytest.fixture
def helpers() -> object:
    """The helper functions above (test modules cannot import a conftest)."""
    import types

    return types.SimpleNamespace(layer_tar=layer_tar, squashfs_members=squashfs_members,
                                 no_leftovers=no_leftovers)
