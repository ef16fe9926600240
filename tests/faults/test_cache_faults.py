"""Data loss and concurrency in the image cache (issue 12, items 1-5)."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.requires("root", "squashfs")

SMALL = "testbed/busybox:latest"


def _layer_digests(registry: str, name: str = SMALL) -> list[str]:
    from hpc_exec.engine.image import manifest as mf
    from hpc_exec.engine.image.registry import RegistryClient

    repo, _, tag = name.partition(":")
    with RegistryClient(registry, insecure=True) as client:
        body, ctype, digest = client.get_manifest(repo, tag)
        image = mf.parse(body, ctype, digest)
        if not isinstance(image, mf.Manifest):
            desc = mf.select_platform(image, "linux/amd64")
            body, ctype, digest = client.get_manifest(repo, desc.digest)
            image = mf.parse(body, ctype, digest)
        assert isinstance(image, mf.Manifest)
        return [d.digest for d in image.layers]


def _wait_for(predicate: Any, what: str, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


# -- item 1 --------------------------------------------------------------------------------------

def test_a_pull_into_another_repository_leaves_a_live_pull_alone(fsite: Any, stall: Any) -> None:
    """Repository A's pull is frozen mid-download (its work dir in the shared tempDir); a pull
    of the same image into repository B runs to the end meanwhile; A must then succeed."""
    stall.hold = set(_layer_digests(fsite.registry))
    a = fsite.start("pull", f"{stall.address}/{SMALL}", home=fsite.root / "A")
    assert stall.held.wait(60), "the pull into A never asked for its layer"
    work = list(fsite.temp.glob("hpc-exec-pull-*"))
    assert len(work) == 1
    out = fsite.hx("pull", f"{fsite.registry}/{SMALL}", home=fsite.root / "B")
    assert out.returncode == 0, out.stderr
    assert work[0].is_dir(), "B's pull deleted A's live work dir"
    stall.release()
    rc, text = fsite.finish(a)
    assert rc == 0, text
    assert list(fsite.temp.glob("hpc-exec-pull-*")) == []


def test_abandoned_work_dirs_are_still_removed(fsite: Any) -> None:
    """What a killed puller leaves (no live owner) is deleted by the next pull of that digest."""
    from hpc_exec.engine.image.registry import RegistryClient

    with RegistryClient(fsite.registry, insecure=True) as client:
        digest = client.get_manifest(*SMALL.split(":"))[2]
    dead = fsite.temp / f"hpc-exec-pull-{digest.partition(':')[2][:32]}.dead"
    dead.mkdir()
    (dead / ".owner").write_text("")
    (dead / "layer").write_bytes(b"x" * 100)
    out = fsite.hx("pull", f"{fsite.registry}/{SMALL}", home=fsite.root / "A")
    assert out.returncode == 0, out.stderr
    assert not dead.exists()


@pytest.mark.requires("system-python")
def test_two_repositories_and_two_users_pull_at_once_20_times(fsite: Any, stall: Any,
                                                              test_user: Any) -> None:
    ref = f"{fsite.registry}/{SMALL}"
    for i in range(20):
        homes = [fsite.root / f"r{i}-a", fsite.root / f"r{i}-b", fsite.root / f"r{i}-u"]
        homes[2].mkdir()
        os.chown(homes[2], test_user.pw_uid, test_user.pw_gid)
        procs = [fsite.start("pull", ref, home=homes[0]),
                 fsite.start("pull", ref, home=homes[1]),
                 fsite.start("pull", ref, home=homes[2], user=True)]
        for proc in procs:
            rc, text = fsite.finish(proc)
            assert rc == 0, f"round {i}: {text}"
    assert list(fsite.temp.glob("hpc-exec-pull-*")) == []


# -- item 2 --------------------------------------------------------------------------------------

def _images(fsite: Any, home: Path, user: bool = False) -> list[str]:
    out = fsite.hx("images", "--json", home=home, user=user)
    assert out.returncode == 0, out.stderr
    return [e["key"] for e in json.loads(out.stdout)]


@pytest.mark.requires("system-python")
def test_a_failed_rmi_or_pull_in_an_unwritable_repository_changes_nothing(
        fsite: Any, test_user: Any, testbed: Any) -> None:
    home = fsite.root / "user-home"
    home.mkdir()
    os.chown(home, test_user.pw_uid, test_user.pw_gid)
    ref = f"{fsite.registry}/{SMALL}"
    out = fsite.hx("pull", ref, home=home, user=True)
    assert out.returncode == 0, out.stderr
    before = sorted(p.name for p in (home / "images").iterdir())
    os.chmod(home, 0o555)  # the repository root: no new index can be renamed into it

    out = fsite.hx("rmi", ref, home=home, user=True)
    assert out.returncode == 117, out.stderr
    assert sorted(p.name for p in (home / "images").iterdir()) == before, "rmi lost the image"
    assert _images(fsite, home, user=True) == [ref]
    assert f"repository {home} is not writable" in out.stderr
    assert len(out.stderr.strip().splitlines()) <= 2  # the message and its hint

    # a pull of another image (80 MB) fails before downloading anything
    out = fsite.hx("pull", testbed.image_python, home=home, user=True)
    assert out.returncode == 117, out.stderr
    assert "is not writable" in out.stderr and "pulling" not in out.stdout
    assert sorted(p.name for p in (home / "images").iterdir()) == before
    assert list((home / "tmp").iterdir()) == []


# -- item 3 --------------------------------------------------------------------------------------

@pytest.mark.requires("runc")
def test_a_truncated_squashfs_is_detected_and_repaired_by_pull(fsite: Any) -> None:
    home = fsite.root / "A"
    ref = f"{fsite.registry}/{SMALL}"
    assert fsite.hx("pull", ref, home=home).returncode == 0
    (sqfs,) = (home / "images").glob("*.squashfs")
    size = sqfs.stat().st_size
    os.truncate(sqfs, size // 2)

    out = fsite.hx("run", ref, "true", home=home)
    assert out.returncode == 117, out.stderr
    assert "is damaged" in out.stderr and f"hpc-exec pull {ref}" in out.stderr

    out = fsite.hx("pull", ref, home=home)
    assert out.returncode == 0, out.stderr
    assert "up to date" not in out.stdout + out.stderr
    assert sqfs.stat().st_size == size
    out = fsite.hx("run", ref, "true", home=home)
    assert out.returncode == 0, out.stderr
    out = fsite.hx("pull", ref, home=home)
    assert "up to date" in out.stdout + out.stderr


def _flip_middle(path: Path, n: int = 64) -> None:
    """Invert ``n`` bytes in the middle of ``path``: the size stays, the content changes."""
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(size // 2)
        data = f.read(n)
        f.seek(size // 2)
        f.write(bytes(b ^ 0xFF for b in data))
    assert path.stat().st_size == size


@pytest.mark.requires("runc")
def test_same_size_damage_is_found_by_images_verify_and_repaired_by_pull(fsite: Any) -> None:
    """The deep check (issue 12, item 3): a same-size corruption passes every size check;
    ``images --verify`` hashes each squashfs against the sha256 recorded at publish time,
    names each damaged image on one line, exits 117, and marks it so that run refuses it and
    pull repairs it."""
    home = fsite.root / "A"
    ref = f"{fsite.registry}/{SMALL}"
    assert fsite.hx("pull", ref, home=home).returncode == 0
    entries = json.loads(fsite.hx("images", "--json", home=home).stdout)
    digest_ref = f"{fsite.registry}/testbed/busybox@{entries[0]['digest']}"
    assert fsite.hx("pull", digest_ref, home=home).returncode == 0  # a second key, same file
    out = fsite.hx("images", "--verify", home=home)
    assert out.returncode == 0, out.stderr
    assert [line.split()[-1] for line in out.stdout.splitlines()[1:]] == ["ok", "ok"]

    (sqfs,) = (home / "images").glob("*.squashfs")
    _flip_middle(sqfs)
    out = fsite.hx("images", home=home)  # the size checks see nothing
    assert out.returncode == 0 and "damaged" not in out.stdout + out.stderr
    out = fsite.hx("images", "--verify", home=home)
    assert out.returncode == 117, out.stderr
    assert [line.split()[-1] for line in out.stdout.splitlines()[1:]] == ["damaged", "damaged"]
    errors = [line for line in out.stderr.splitlines() if line.startswith("hpc-exec: error: ")]
    keys = sorted(e["key"] for e in json.loads(fsite.hx("images", "--json",
                                                        home=home).stdout))
    assert len(errors) == 2, out.stderr  # one line per damaged image
    for key, line in zip(keys, sorted(errors)):
        assert line.startswith(f"hpc-exec: error: image {key} is damaged: {sqfs} changed since "
                               "it was pulled (sha256 now "), out.stderr
    assert f"hpc-exec pull {ref}" in out.stderr.splitlines()[-1]

    out = fsite.hx("run", ref, "true", home=home)
    assert out.returncode == 117, out.stderr
    assert "is damaged" in out.stderr and f"hpc-exec pull {ref}" in out.stderr
    out = fsite.hx("pull", ref, home=home)
    assert out.returncode == 0, out.stderr
    assert "up to date" not in out.stdout + out.stderr and "is damaged" in out.stderr
    out = fsite.hx("images", "--verify", home=home)
    assert out.returncode == 0, out.stderr
    assert [line.split()[-1] for line in out.stdout.splitlines()[1:]] == ["ok", "ok"]
    assert fsite.hx("run", digest_ref, "true", home=home).returncode == 0


def test_images_verify_of_an_index_without_digests_checks_sizes(fsite: Any) -> None:
    """Entries written before digests were recorded: "size only", and a wrong size is still
    damaged."""
    home = fsite.root / "A"
    ref = f"{fsite.registry}/{SMALL}"
    assert fsite.hx("pull", ref, home=home).returncode == 0
    index = json.loads((home / "metadata.json").read_text())
    for entry in index["images"].values():
        assert entry.pop("squashfs_digest").startswith("sha256:")
    (home / "metadata.json").write_text(json.dumps(index))
    (sqfs,) = (home / "images").glob("*.squashfs")
    _flip_middle(sqfs)
    out = fsite.hx("images", "--verify", home=home)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[1].endswith("size only")
    os.truncate(sqfs, sqfs.stat().st_size - 1)
    out = fsite.hx("images", "--verify", "--json", home=home)
    assert out.returncode == 117, out.stderr
    (row,) = json.loads(out.stdout)
    assert row["verified"] == "damaged" and "bytes" in row["problem"]


# -- item 4 --------------------------------------------------------------------------------------

@pytest.mark.requires("runc")
def test_a_repository_on_a_read_only_mount_can_be_used(fsite: Any) -> None:
    """The usual centralized repository on compute nodes: a read-only mount. Mounted in a
    private mount namespace of the test's own (gone with it)."""
    rw, ro = fsite.root / "central", fsite.root / "central-ro"
    ro.mkdir()
    ref = f"{fsite.registry}/{SMALL}"
    assert fsite.hx("pull", ref, home=rw).returncode == 0
    central = fsite.write_config(fsite.config.read_text() + f'centralizedRepositoryDir: "{ro}"\n',
                                 "central.yaml")
    script = (f"mount --bind {rw} {ro} && mount -o remount,bind,ro {ro} && "
              f'touch {ro}/probe 2>/dev/null && exit 9; "$@"')
    from hpc_exec import process

    def in_ns(*args: str, home: Path) -> process.Completed:
        env = fsite.env(home, central)
        return process.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                            script, "sh", *fsite.argv(list(args))], env=env, timeout=300,
                           cwd="/", check=False, desc="hpc-exec in a mount namespace")

    out = in_ns("images", "--json", home=ro)
    assert out.returncode == 0, out.stderr
    assert [e["key"] for e in json.loads(out.stdout)] == [ref]
    out = in_ns("run", ref, "true", home=ro)
    assert out.returncode == 0, out.stderr
    empty = fsite.root / "empty-home"
    out = in_ns("run", "--centralized-repository", ref, "true", home=empty)
    assert out.returncode == 0, out.stderr
    out = in_ns("images", "--centralized-repository", "--json", home=empty)
    assert out.returncode == 0, out.stderr
    out = in_ns("pull", ref.replace(":latest", ":nope"), home=ro)  # a write: a clear refusal
    assert out.returncode in (112, 114, 117), out.stderr
    (sqfs,) = (rw / "images").glob("*.squashfs")
    out = in_ns("rmi", ref, home=ro)
    assert out.returncode == 117 and "read-only file system" in out.stderr, out.stderr
    assert sqfs.exists()


# -- item 5 --------------------------------------------------------------------------------------

def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.lstat().st_mode)
            for p in [root, *root.rglob("*")]}


def test_cache_modes_do_not_follow_the_umask(fsite: Any) -> None:
    home = fsite.root / "A"
    out = fsite.hx("pull", f"{fsite.registry}/{SMALL}", home=home, umask="000")
    assert out.returncode == 0, out.stderr
    modes = _modes(home)
    wrong = {k: oct(m) for k, m in modes.items()
             if m != (0o755 if (home / k).is_dir() else 0o644)}
    assert wrong == {}
    assert {"metadata.json", "metadata.lock", "version", "pulls.log"} <= set(modes)


def test_shared_repository_modes_do_not_follow_the_umask(fsite: Any) -> None:
    shared = fsite.root / "shared"
    shared.mkdir()
    os.chmod(shared, 0o2775)
    config = fsite.write_config(fsite.config.read_text() + f'sharedRepositoryDir: "{shared}"\n',
                                "shared.yaml")
    out = fsite.hx("pull", f"{fsite.registry}/{SMALL}", config=config, umask="077")
    assert out.returncode == 0, out.stderr
    modes = _modes(shared)
    immutable = {"version"} | {k for k in modes if k.startswith("images/")}
    wrong = {k: oct(m) for k, m in modes.items()
             if m != (0o2775 if (shared / k).is_dir() else
                      0o644 if k in immutable else 0o664)}
    assert wrong == {}


# -- what already held: pullers killed mid-download ----------------------------------------------
# (Also pinned elsewhere, not repeated here: a puller SIGKILLed 20 times at random points never
# leaves a partial image, tests/integration/image/test_concurrency.py::
# test_sigkilled_puller_never_leaves_a_partial_image.)

@pytest.mark.requires("runc")
def test_pulls_killed_at_random_points_never_damage_a_good_image(fsite: Any,
                                                                testbed: Any) -> None:
    """A good image in the repository; pulls of another image (which rewrite the index and
    publish files beside it) and of the same image under its digest are SIGKILLed at random
    points; the good image stays whole (its sha256, `images --verify`) and runnable."""
    import random
    import signal

    home = fsite.root / "A"
    good = f"{fsite.registry}/{SMALL}"
    assert fsite.hx("pull", good, home=home).returncode == 0
    digest = json.loads(fsite.hx("images", "--json", home=home).stdout)[0]["digest"]
    rng = random.Random(12)
    interrupted = 0
    for round_ in range(8):
        victim = f"{fsite.registry}/testbed/busybox@{digest}" if round_ % 3 == 2 \
            else testbed.image_python
        proc = fsite.start("pull", victim, home=home)
        # a same-image pull (by digest) is over in ~0.3 s: kill it within that time
        time.sleep(rng.uniform(0.02, 0.3) if round_ % 3 == 2 else rng.uniform(0.05, 2.5))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        out = fsite.hx("images", "--verify", "--json", home=home)
        assert out.returncode == 0, out.stderr
        rows = {row["key"]: row for row in json.loads(out.stdout)}
        assert rows[good]["verified"] == "ok", rows
        if victim in rows:  # it finished before the kill: make the next one pull again
            assert fsite.hx("rmi", victim, home=home).returncode == 0
        else:
            interrupted += 1
    assert interrupted >= 1  # the kills did land mid-pull
    out = fsite.hx("run", good, "true", home=home)
    assert out.returncode == 0, out.stderr
    assert fsite.hx("pull", testbed.image_python, home=home).returncode == 0  # and recovers


# -- what already held: a puller killed mid-download ----------------------------------------------

def test_a_pull_killed_mid_download_leaves_what_the_next_pull_removes(fsite: Any,
                                                                      stall: Any) -> None:
    """SIGKILL while a layer downloads: the work dir in tempDir (its owner's flock gone with
    it) and the repository temps are removed by the next pull, which succeeds."""
    import signal

    stall.hold = set(_layer_digests(fsite.registry))
    home = fsite.root / "A"
    a = fsite.start("pull", f"{stall.address}/{SMALL}", home=home)
    assert stall.held.wait(60), "the pull never asked for its layer"
    assert len(list(fsite.temp.glob("hpc-exec-pull-*"))) == 1
    os.kill(a.pid, signal.SIGKILL)
    a.wait(timeout=30)
    stall.release()
    out = fsite.hx("pull", f"{fsite.registry}/{SMALL}", home=home)
    assert out.returncode == 0, out.stderr
    assert list(fsite.temp.glob("hpc-exec-pull-*")) == []
    assert list((home / "tmp").iterdir()) == []
    assert _images(fsite, home) == [f"{fsite.registry}/{SMALL}"]
