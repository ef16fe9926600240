"""The live testbed: Slurm submit/run/status on three namespaced nodes, registry push/pull."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest
from hpc_exec.engine.image.registry import Credentials, RegistryClient

from hpc_exec import process
from hpc_exec.errors import AuthenticationFailed

pytestmark = pytest.mark.requires("root", "slurm", "registry")


def test_srun_runs_on_three_distinct_hostnames(testbed) -> None:  # type: ignore[no-untyped-def]
    out = process.run(["srun", "-N3", "-n6", "hostname"], timeout=120, desc="srun",
                      env=testbed.environ())
    hosts = out.stdout.split()
    assert len(hosts) == 6
    assert set(hosts) == {"node1", "node2", "node3"}


def test_sbatch_job_runs_and_status_comes_from_squeue(testbed, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    shared = Path(testbed.state_dir) / "test-jobs"
    shared.mkdir(exist_ok=True)
    marker = shared / f"exit-{time.monotonic_ns()}"
    out = process.run(
        ["sbatch", "--parsable", "-N2", "-J", "hpc-exec-test", f"-o{shared}/%j.out",
         "--wrap", f"srun hostname; echo $? > {marker}"],
        timeout=60, desc="sbatch", env=testbed.environ())
    job = out.stdout.strip().split(";")[0]
    assert job.isdigit()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        q = process.run(["squeue", "-h", "-j", job, "-o", "%T"], timeout=30, desc="squeue",
                        env=testbed.environ(), check=False)
        if not q.stdout.strip():
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"job {job} still queued after 120 s")
    state = process.run(["scontrol", "show", "job", job], timeout=30, desc="scontrol",
                        env=testbed.environ()).stdout
    assert "JobState=COMPLETED" in state
    assert marker.read_text().strip() == "0"
    assert sorted((shared / f"{job}.out").read_text().split()) == ["node1", "node2"]


def _pull_all(client: RegistryClient, repo: str, tag: str) -> list[str]:
    """Fetch the manifest (and the amd64 child of an index) and verify every blob's digest."""
    body, _, _ = client.get_manifest(repo, tag)
    manifest = json.loads(body)
    if "manifests" in manifest:
        child = next(m for m in manifest["manifests"]
                     if m["platform"]["architecture"] == "amd64")
        body, _, _ = client.get_manifest(repo, child["digest"])
        assert "sha256:" + hashlib.sha256(body).hexdigest() == child["digest"]
        manifest = json.loads(body)
    digests = [manifest["config"]["digest"]] + [layer["digest"] for layer in manifest["layers"]]
    for digest in digests:
        h = hashlib.sha256()
        for chunk in client.iter_blob(repo, digest):
            h.update(chunk)
        assert "sha256:" + h.hexdigest() == digest
    return digests


def test_plain_registry_serves_both_test_images(testbed) -> None:  # type: ignore[no-untyped-def]
    with RegistryClient(testbed.registry, insecure=True) as client:
        small = _pull_all(client, "testbed/busybox", "latest")
        python = _pull_all(client, "testbed/debian-python", "bookworm")
    assert len(small) == 2  # config + one layer
    assert len(python) == 4  # config + three layers (base, python3, deletions)


def test_private_registry_requires_auth(testbed) -> None:  # type: ignore[no-untyped-def]
    ca = testbed.env["HPC_EXEC_TESTBED_CA"]
    user, password = Path(testbed.env["HPC_EXEC_TESTBED_CREDENTIALS"]).read_text().strip() \
        .split(":", 1)
    with (RegistryClient(testbed.private_registry, ca_file=ca) as anonymous,
          pytest.raises(AuthenticationFailed, match="requires a login")):
        anonymous.get_manifest("testbed/busybox", "latest")
    wrong = Credentials(user, password + "x")
    with (RegistryClient(testbed.private_registry, ca_file=ca, credentials=wrong) as client,
          pytest.raises(AuthenticationFailed, match="refused the credentials") as exc):
        client.get_manifest("testbed/busybox", "latest")
        assert password not in str(exc.value) and password not in repr(wrong)
    right = Credentials(user, password)
    with RegistryClient(testbed.private_registry, ca_file=ca, credentials=right) as client:
        assert len(_pull_all(client, "testbed/busybox", "latest")) == 2


def test_credentials_file_is_private(testbed) -> None:  # type: ignore[no-untyped-def]
    mode = Path(testbed.env["HPC_EXEC_TESTBED_CREDENTIALS"]).stat().st_mode & 0o777
    assert mode == 0o600


def test_up_again_is_idempotent(testbed) -> None:  # type: ignore[no-untyped-def]
    import hpc_exec.testbed as tb

    before = {p.name: p.pid for p in tb.status(testbed.state_dir).state.procs}
    tb.up(testbed.state_dir)
    after = {p.name: p.pid for p in tb.status(testbed.state_dir).state.procs}
    assert before == after


def _layers(client: RegistryClient, repo: str, tag: str) -> list[str]:
    manifest = json.loads(client.get_manifest(repo, tag)[0])
    return [layer["digest"] for layer in manifest["layers"]]


def _members(client: RegistryClient, repo: str, digest: str) -> dict[str, str]:
    import gzip
    import io
    import tarfile

    data = b"".join(client.iter_blob(repo, digest))
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as tar:
        return {m.name: m.linkname for m in tar.getmembers()}


def test_mpich_images_carry_compatible_and_incompatible_abi(testbed) -> None:  # type: ignore[no-untyped-def]
    lib = "usr/lib/x86_64-linux-gnu"
    with RegistryClient(testbed.registry, insecure=True) as client:
        ok = _layers(client, "testbed/mpich", "compatible")
        bad = _layers(client, "testbed/mpich", "incompatible")
        assert ok[0] == bad[0] and ok[1] != bad[1]  # one shared base, one layer per variant
        compatible = _members(client, "testbed/mpich", ok[1])
        incompatible = _members(client, "testbed/mpich", bad[1])
    assert compatible[f"{lib}/libmpich.so.12"] == "libmpich.so.12.1.0"
    assert f"{lib}/libmpich.so.12.1.0" in compatible
    assert any(n.startswith(f"{lib}/.wh.libmpich.so.12.") for n in compatible)
    assert incompatible[f"{lib}/libmpich.so.13"] == "libmpich.so.13.0.0"
    assert f"{lib}/.wh.libmpich.so.12" in incompatible
    assert "usr/local/bin/mpi-hello" in compatible and "usr/local/bin/mpi-hello" in incompatible


def test_env_names_every_test_image(testbed) -> None:  # type: ignore[no-untyped-def]
    for key in ("SMALL", "PYTHON", "MPICH", "MPICH_INCOMPATIBLE"):
        assert testbed.env[f"HPC_EXEC_TESTBED_IMAGE_{key}"].startswith(testbed.registry + "/")


def test_env_points_hpc_exec_at_a_valid_site_config(testbed) -> None:  # type: ignore[no-untyped-def]
    from hpc_exec.config import _load_file

    settings = _load_file(Path(testbed.env["HPC_EXEC_CONFIG"]))
    assert settings.insecure_registries == (testbed.registry,)
    hosts = settings.hosts_file.read_text()
    assert "127.0.100.2\tnode2" in hosts and "localhost" in hosts
