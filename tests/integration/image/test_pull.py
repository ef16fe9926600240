"""Pulling from the testbed registries: both test images, auth, corrupted and malicious blobs,
load, and the CLI's output and exit codes."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from hpc_exec import engine, process
from hpc_exec.errors import ImageContentError, ImageNotFound

pytestmark = pytest.mark.requires("squashfs")


def cli(args: list[str], env: dict[str, str], stdin: str = "") -> process.Completed:
    return process.run(["hpc-exec", *args], env=env, input=stdin, timeout=600, check=False,
                       desc="hpc-exec")


def test_pull_both_images_with_whiteouts(testbed: Any, proxy: Any, site: Any,
                                         helpers: Any) -> None:
    small = engine.pull(f"{proxy.address}/testbed/busybox:latest")
    files = helpers.squashfs_members(small.squashfs)
    assert files["bin/busybox"].isreg() and files["bin/sh"].issym()

    entry = engine.pull(f"docker://{proxy.address}/testbed/debian-python:bookworm")
    assert entry.key == f"{proxy.address}/testbed/debian-python:bookworm"
    files = helpers.squashfs_members(entry.squashfs)
    assert "bin/busybox" not in files  # the linux/arm64 decoy was not picked
    assert any(n.startswith("usr/bin/python3") for n in files)
    assert "etc/motd" not in files and not any(".wh." in n for n in files)
    assert not any(n.startswith("usr/share/info") for n in files)
    assert [n for n in files if n.startswith("usr/share/doc/")] == [
        "usr/share/doc/README.hpc-exec"]
    link = files["usr/local/bin/hpc-exec-hello-link"]
    assert link.islnk() and link.linkname == "usr/local/bin/hpc-exec-hello"
    meta = json.loads(entry.metadata.read_text())
    assert meta["cmd"] == ["python3"] and "LANG=C.UTF-8" in meta["env"]
    assert meta["workdir"] == "/" and meta["labels"]["org.opencontainers.image.title"]
    assert entry.size == entry.squashfs.stat().st_size
    assert engine.lookup(f"{proxy.address}/testbed/debian-python:bookworm") == entry
    assert {e.key for e in engine.images()} == {small.key, entry.key}

    # Up to date: one manifest request, nothing downloaded or converted.
    proxy.reset()
    converts = len(site.events("convert"))
    again = engine.pull(f"{proxy.address}/testbed/debian-python:bookworm")
    assert again.digest == entry.digest
    assert proxy.manifest_requests() == 1 and proxy.blob_gets() == {}
    assert len(site.events("convert")) == converts
    assert helpers.no_leftovers(site) == []

    # By digest: another key, same squashfs, no second conversion.
    by_digest = engine.pull(f"{proxy.address}/testbed/busybox@{small.digest}")
    assert by_digest.key == f"{proxy.address}/testbed/busybox@{small.digest}"
    assert by_digest.squashfs == small.squashfs and len(site.events("convert")) == converts
    assert engine.lookup(f"{proxy.address}/testbed/busybox@{small.digest}") == by_digest


def test_retries_on_503_and_broken_transfers(testbed: Any, proxy: Any, site: Any) -> None:
    from hpc_exec.engine.image.registry import RegistryClient

    with RegistryClient(proxy.address, insecure=True) as client:
        body, _, _ = client.get_manifest("testbed/busybox", "latest")
    manifest = json.loads(body)
    layer, config = manifest["layers"][0]["digest"], manifest["config"]["digest"]
    proxy.fail[config] = 2
    proxy.truncate[layer] = 1
    entry = engine.pull(f"{proxy.address}/testbed/busybox:latest")
    assert entry.squashfs.exists()
    gets = proxy.blob_gets()
    assert gets[config] == 3 and gets[layer] == 2
    assert site.events("download").count(layer) == 1


def test_cli_pull_images_rmi(testbed: Any, proxy: Any, site: Any) -> None:
    ref = f"{proxy.address}/testbed/busybox"
    out = cli(["pull", ref], site.env)
    assert out.returncode == 0, out.stderr
    for field in ("# image", "# cache directory", "# temp directory", "# images directory",
                  "# image digest"):
        assert field in out.stdout
    assert "> completed" in out.stderr
    out = cli(["pull", ref], site.env)
    assert "image is up to date" in out.stderr
    listing = cli(["images"], site.env).stdout.splitlines()
    assert listing[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE",
                                  "SERVER"]
    # the REPOSITORY column is what run and rmi take (issue 13, item 12), as Sarus lists it
    assert listing[1].split()[0:2] == [f"{proxy.address}/testbed/busybox", "latest"]
    assert listing[1].split()[-1] == proxy.address
    assert cli(["run", listing[1].split()[0], "true"], site.env).returncode == 0
    assert "DIGEST" in cli(["images", "--digests"], site.env).stdout
    out = cli(["images", "--json"], site.env)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data[0]["key"] == f"{ref}:latest" and Path(data[0]["squashfs"]).exists()
    out = cli(["rmi", ref], site.env)
    assert out.stdout.strip() == f"removed {ref}:latest"
    assert not Path(data[0]["squashfs"]).exists()
    out = cli(["rmi", ref], site.env)
    assert out.returncode == 112 and out.stderr.count("\n") == 1
    with pytest.raises(ImageNotFound):
        engine.lookup(ref)


@pytest.mark.parametrize(("args", "code", "text"), [
    (["pull", "bad/Name"], 110, "must be lowercase (found 'Name')"),
    (["pull", "127.0.0.1:1/nothing/here"], 114, "cannot reach registry"),
    (["pull", "{plain}/testbed/nonexistent:latest"], 112, "not found"),
    (["pull", "{private}/testbed/busybox"], 113, "requires a login"),
    (["pull", "--password-stdin", "x/y"], 110, "--password-stdin needs --username"),
])
def test_cli_errors_are_one_line(testbed: Any, site: Any, args: list[str], code: int,
                                 text: str) -> None:
    args = [a.format(plain=testbed.registry, private=testbed.private_registry) for a in args]
    env = dict(site.env, SSL_CERT_FILE=testbed.env["HPC_EXEC_TESTBED_CA"])
    out = cli(args, env)
    assert out.returncode == code, out.stderr
    first = out.stderr.splitlines()[0]
    assert first.startswith("hpc-exec: error:") and text in first


def test_private_registry_auth_and_no_password_leak(testbed: Any, site: Any,
                                                    helpers: Any) -> None:
    user, password = Path(testbed.env["HPC_EXEC_TESTBED_CREDENTIALS"]).read_text().strip() \
        .split(":", 1)
    env = dict(site.env, SSL_CERT_FILE=testbed.env["HPC_EXEC_TESTBED_CA"])
    ref = f"{testbed.private_registry}/testbed/busybox:latest"
    wrong = "wrong-" + password[::-1] + "-Zq7"
    out = cli(["--debug", "pull", "--username", user, "--password-stdin", ref], env,
              stdin=wrong + "\n")
    assert out.returncode == 113
    assert "refused the credentials" in out.stderr
    for secret in (wrong, password):
        assert secret not in out.stdout + out.stderr
    assert not any(secret in p.read_text(errors="replace")
                   for p in site.root.rglob("*") if p.is_file() for secret in (wrong, password))

    out = cli(["pull", "--username", user, "--password-stdin", ref], env, stdin=password + "\n")
    assert out.returncode == 0, out.stderr
    assert password not in out.stdout + out.stderr
    assert helpers.squashfs_members(engine.lookup(ref).squashfs)["bin/busybox"].isreg()

    # An auth file works too (podman's, under XDG_RUNTIME_DIR), and is never copied.
    import base64

    xdg = site.root / "xdg"
    (xdg / "containers").mkdir(parents=True)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    (xdg / "containers" / "auth.json").write_text(json.dumps(
        {"auths": {testbed.private_registry: {"auth": token}}}))
    out = cli(["rmi", ref], env)
    out = cli(["pull", ref], dict(env, XDG_RUNTIME_DIR=str(xdg)))
    assert out.returncode == 0, out.stderr


def test_corrupted_blob_is_rejected_and_nothing_kept(testbed: Any, proxy: Any, site: Any,
                                                     helpers: Any) -> None:
    from hpc_exec.engine.image.registry import RegistryClient

    with RegistryClient(proxy.address, insecure=True) as client:
        body, _, _ = client.get_manifest("testbed/busybox", "latest")
    layer = json.loads(body)["layers"][0]["digest"]
    proxy.corrupt.add(layer)
    with pytest.raises(ImageContentError, match=f"blob {layer} .* corrupted, rejected"):
        engine.pull(f"{proxy.address}/testbed/busybox:latest")
    assert engine.images() == []
    assert list((site.home / "images").iterdir()) == []
    assert helpers.no_leftovers(site) == []
    proxy.corrupt.clear()
    assert engine.pull(f"{proxy.address}/testbed/busybox:latest").squashfs.exists()


def test_layer_listed_twice_is_downloaded_once(testbed: Any, site: Any, push: Any,
                                               helpers: Any) -> None:
    R = tarfile.REGTYPE
    same = helpers.layer_tar([("same", R, "", b"1")])
    ref = push([same, helpers.layer_tar([("top", R, "", b"2")]), same])
    entry = engine.pull(f"{testbed.registry}/{ref}")
    assert {"same", "top"} <= set(helpers.squashfs_members(entry.squashfs))
    downloads = site.events("download")
    assert len(downloads) == len(set(downloads)) == 3  # config + 2 distinct layers


@pytest.mark.parametrize("case", ["dotdot", "absolute", "symlink-escape", "hardlink-out"])
def test_malicious_layers_rejected(testbed: Any, site: Any, push: Any, helpers: Any,
                                   case: str) -> None:
    R, D, S, H = tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE
    marker = f"hpc-exec-escape-{os.getpid()}-{case}"
    members = {
        "dotdot": [("etc", D, "", b""), (f"../../../../../../tmp/{marker}", R, "", b"pwn")],
        "absolute": [(f"/tmp/{marker}", R, "", b"pwn")],
        "symlink-escape": [("evil", S, "/tmp", b""), (f"evil/{marker}", R, "", b"pwn")],
        "hardlink-out": [("shadow", H, "../../../../etc/shadow", b"")],
    }[case]
    ref = push([helpers.layer_tar([("bin", D, "", b""), ("bin/ok", R, "", b"ok")]),
                helpers.layer_tar(members)])
    with pytest.raises(ImageContentError) as info:
        engine.pull(f"{testbed.registry}/{ref}")
    msg = str(info.value)
    assert msg.startswith("layer sha256:") and "member" in msg and "refused" in msg
    assert not Path("/tmp", marker).exists() and not list(site.root.rglob(marker))
    assert engine.images() == [] and list((site.home / "images").iterdir()) == []
    assert helpers.no_leftovers(site) == []


@pytest.mark.parametrize("kind", ["oci-archive", "docker-archive"])
def test_load_archives(testbed: Any, site: Any, helpers: Any, kind: str) -> None:
    archive = site.root / f"busybox-{kind}.tar"
    dest = f"{kind}:{archive}" + (":testbed/busybox:latest" if kind == "docker-archive" else "")
    process.run(["skopeo", "copy", "--src-tls-verify=false",
                 f"docker://{testbed.registry}/testbed/busybox:latest", dest], timeout=300,
                desc="exporting a test archive")
    out = cli(["load", str(archive), f"mybox-{kind}"], site.env)
    assert out.returncode == 0, out.stderr
    entry = engine.lookup(f"load/library/mybox-{kind}")
    assert entry.key == f"load/library/mybox-{kind}:latest"
    assert entry.server == "load" and entry.digest == entry.image_id
    assert helpers.squashfs_members(entry.squashfs)["bin/busybox"].isreg()
    assert json.loads(entry.metadata.read_text())["cmd"] == ["/bin/sh"]
