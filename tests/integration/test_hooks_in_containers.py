"""Hooks in real ``hpc-exec run`` containers on the testbed, installed from the sample hooks.d
files (filled in as an installer would).

``srun -N3 -n12 hpc-exec run --sync IMAGE``: some ranks start late by random amounts; each container prints the wall clock when its process
starts, and no container may start before the last rank started ``hpc-exec run`` (its arrival
at the barrier can only be later). A rank later than the timeout makes every rank fail with
the engine's runtime-failure code and an error naming it, leaving no sync dir behind.

``hpc-exec run --mpi`` with the testbed's MPICH images: the ABI-compatible one (12.1.0) gets the
host's libmpich (Debian's 12.x) bind-mounted over its own, the incompatible one (13.0.0) is
refused with both versions named.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hpc_exec.hooks import command, fill_sample, sample_values

from hpc_exec import process

ROOT = Path(__file__).resolve().parents[2]
RANK_SCRIPT = Path(__file__).with_name("_run_rank.py")
NTASKS = 12
HOST_MPICH = [f"/usr/lib/x86_64-linux-gnu/{lib}.so.12"
              for lib in ("libmpich", "libmpichcxx", "libmpichfort")]
RUNTIME_FAILURE = 121  # hpc_exec.errors.ExitCode.RUNTIME
MISSING = re.compile(r"rank\(s\) ([\d, ]+) of 12 did not arrive within the 5 s timeout "
                     r"\(SYNC_TIMEOUT\)")


def hpc_exec_exe() -> str:
    beside = Path(sys.executable).parent / "hpc-exec"
    return str(beside) if beside.exists() else (shutil.which("hpc-exec") or "hpc-exec")


class Site:
    def __init__(self, root: Path, testbed: Any) -> None:
        self.root = root
        self.hooks_dir = root / "hooks.d"
        self.hooks_dir.mkdir(mode=0o755)
        self.base = root / "sync"
        config = root / "config.yaml"
        # the testbed's hosts file names its nodes (nodeK -> 127.0.100.K), for SSH between them
        hosts = json.loads(Path(testbed.env["HPC_EXEC_CONFIG"]).read_text())["hostsFile"]
        config.write_text(f'insecureRegistries: ["{testbed.registry}"]\n'
                          f"hooksDir: {self.hooks_dir}\ntempDir: {root}\n"
                          f"hostsFile: {hosts}\n")
        self.env = testbed.environ(HPC_EXEC_CONFIG=str(config),
                                   HPC_EXEC_HOME=str(root / "home"))
        self.image = testbed.image_python
        self.mpich = self.mpich_incompatible = ""

    def install(self, sample_name: str, **edits: str) -> None:
        """Make the filled-in sample the only hook; ``edits`` replace text in it."""
        for old in self.hooks_dir.iterdir():
            old.unlink()
        sample = ROOT / "workflows/hooks.d" / sample_name
        text = fill_sample(sample.read_text(), sample_values(
            HOOK_BASE_DIR=str(self.base), MPI_LIBS=":".join(HOST_MPICH),
            MPI_DEPENDENCY_LIBS="", GLIBC_LIBS="/lib/x86_64-linux-gnu/libc.so.6"))
        for old_text, new_text in edits.items():
            text = text.replace(old_text, new_text)
        (self.hooks_dir / sample.name).write_text(text)

    def install_sync_hook(self, timeout: int) -> None:
        self.install("09-slurm-global-sync-hook.json",
                     **{"SYNC_TIMEOUT=300": f"SYNC_TIMEOUT={timeout}"})

    def run(self, *args: str) -> process.Completed:
        return process.run([hpc_exec_exe(), "run", *args], env=self.env, timeout=300,
                           check=False, desc="hpc-exec run")

    def step(self, delays: dict[int, float]) -> list[dict[str, Any]]:
        out = Path(tempfile.mkdtemp(dir=self.root))
        os.chmod(out, 0o755)
        delay_arg = ",".join(f"{r}:{d:.3f}" for r, d in delays.items())
        process.run(["srun", "-N3", f"-n{NTASKS}", sys.executable, str(RANK_SCRIPT), str(out),
                     delay_arg, hpc_exec_exe(), self.image], env=self.env, timeout=600,
                    desc="srun -N3 -n12 hpc-exec run --sync")
        results = [json.loads((out / f"{r}.json").read_text()) for r in range(NTASKS)]
        assert {r["host"] for r in results} == {"node1", "node2", "node3"}
        return results

    def sync_dirs(self) -> list[Path]:
        return [p for p in self.base.glob("*/.oci-hooks/slurm-global-sync/*") if p.is_dir()]


@pytest.fixture(scope="module")
def site(testbed: Any) -> Iterator[Site]:
    root = Path(tempfile.mkdtemp(prefix="hpc-exec-sync-test-", dir="/var/tmp"))
    os.chmod(root, 0o755)
    try:
        s = Site(root, testbed)
        for image in (s.image, testbed.env["HPC_EXEC_TESTBED_IMAGE_MPICH"],
                      testbed.env["HPC_EXEC_TESTBED_IMAGE_MPICH_INCOMPATIBLE"]):
            process.run([hpc_exec_exe(), "pull", image], env=s.env, timeout=600,
                        desc="pulling a test image")
        s.mpich = testbed.env["HPC_EXEC_TESTBED_IMAGE_MPICH"]
        s.mpich_incompatible = testbed.env["HPC_EXEC_TESTBED_IMAGE_MPICH_INCOMPATIBLE"]
        yield s
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.requires("root", "runc", "slurm")
def test_no_container_starts_before_the_last_arrival(site: Site) -> None:
    site.install_sync_hook(timeout=120)
    rng = random.Random(11)
    delays = {r: rng.uniform(0.2, 2.0) for r in rng.sample(range(NTASKS), 5)}
    results = site.step(delays)
    assert [r["rc"] for r in results] == [0] * NTASKS, [r["stderr"] for r in results]
    last_start = max(r["start"] for r in results)
    assert min(r["container"] for r in results) >= last_start
    assert site.sync_dirs() == []


@pytest.mark.requires("root", "runc", "slurm")
def test_a_missing_rank_fails_every_container_clearly(site: Site) -> None:
    site.install_sync_hook(timeout=5)
    results = site.step({7: 10.0})
    for r in results:
        # The late rank starts 10 s late: well after every other rank's hook gave up, even
        # when a loaded node takes seconds to reach the hook.
        assert r["rc"] == RUNTIME_FAILURE, r["stderr"]
        # 7 is missing; on a very loaded node another slow starter may be named with it
        found = MISSING.search(r["stderr"])
        assert found is not None and 7 in {int(x) for x in found[1].split(", ")}, r["stderr"]
        if r["rank"] != 7:  # failed within its own timeout, before the late rank even started
            assert r["stderr"].count("failed on rank") >= 1
    assert "the barrier had already failed" in results[7]["stderr"]
    assert site.sync_dirs() == []


@pytest.mark.requires("root", "runc")
@pytest.mark.skipif(not os.path.exists(HOST_MPICH[0]), reason="needs Debian's libmpich12")
def test_mpi_hook_swaps_in_the_host_mpich(site: Site) -> None:
    site.install("05-mpi-hook.json")
    done = site.run("--mpi", site.mpich, "sh", "-c",
                    "grep libmpich /proc/self/mountinfo; ls /usr/lib/x86_64-linux-gnu")
    assert done.returncode == 0, done.stderr
    host = os.path.realpath(HOST_MPICH[0])
    # the host's libmpich.so.12.x.y is mounted over the image's libmpich.so.12.1.0
    assert any(host in line and "/libmpich.so.12.1.0 " in line
               for line in done.stdout.splitlines()), done.stdout
    plain = site.run(site.mpich, "sh", "-c", "grep -c libmpich /proc/self/mountinfo || true")
    assert plain.stdout.strip() == "0"  # without --mpi the hook does not apply


@pytest.mark.requires("root", "runc")
@pytest.mark.skipif(not os.path.exists(HOST_MPICH[0]), reason="needs Debian's libmpich12")
def test_two_rank_mpi_hello_under_srun_pmi2_uses_the_host_mpich(site: Site) -> None:
    """srun's PMI socket reaches MPI inside the container (PMI_FD), on two nodes, while the MPI
    hook has put the host's libmpich over the image's."""
    site.install("05-mpi-hook.json")
    out = process.run(
        ["srun", "--mpi=pmi2", "-N2", "-n2", hpc_exec_exe(), "run", "--mpi", site.mpich,
         "sh", "-c", "mpi-hello && echo \"host-lib-mounts $(grep -c '/libmpich.so.12.1.0 ' "
         "/proc/self/mountinfo)\""],
        env=site.env, timeout=300, desc="srun --mpi=pmi2 hpc-exec run --mpi")
    hello = sorted(ln for ln in out.stdout.splitlines() if ln.startswith("mpi-hello"))
    assert [ln.split()[2:5] for ln in hello] == [["0", "of", "2"], ["1", "of", "2"]]
    assert {ln.split()[6] for ln in hello} == {"node1", "node2"}
    assert all(ln.endswith("sum 1") for ln in hello)  # MPI_Allreduce of ranks 0 + 1
    mounts = [ln for ln in out.stdout.splitlines() if ln.startswith("host-lib-mounts")]
    assert len(mounts) == 2 and all(int(ln.split()[1]) >= 1 for ln in mounts)


@pytest.mark.skipif(not os.path.exists(HOST_MPICH[0]), reason="needs Debian's libmpich12")
def test_mpi_hook_refuses_an_incompatible_image(site: Site) -> None:
    site.install("05-mpi-hook.json")
    done = site.run("--mpi", site.mpich_incompatible, "true")
    assert done.returncode == RUNTIME_FAILURE
    assert "ABI-incompatible MPI libraries: major versions differ (host 12." in done.stderr
    assert "vs container 13.0.0)" in done.stderr


@pytest.mark.requires("root", "runc")
def test_timestamp_hook_logs_on_request(site: Site) -> None:
    site.install("00-timestamp-hook.json")
    log = site.root / "timestamps.log"
    done = site.run("--annotation", "com.hooks.timestamp.enabled=true", "-e",
                    f"TIMESTAMP_HOOK_LOGFILE={log}", site.image, "true")
    assert done.returncode == 0, done.stderr
    assert log.read_text().endswith("[hook] [INFO] Timestamp hook: After-runtime\n")
    log.unlink()
    assert site.run("-e", f"TIMESTAMP_HOOK_LOGFILE={log}", site.image, "true").returncode == 0
    assert not log.exists()  # not enabled for this container


@pytest.mark.requires("root", "runc")
def test_mount_hook_binds_files_and_devices(site: Site) -> None:
    src = site.root / "share"
    src.mkdir(mode=0o755, exist_ok=True)
    (src / "hello").write_text("hello from the site\n")
    for old in site.hooks_dir.iterdir():
        old.unlink()
    (site.hooks_dir / "06-mount.json").write_text(json.dumps({
        "version": "1.0.0",
        "hook": {"path": command("mount")[0],
                 "args": [*command("mount"),
                          f"--mount=type=bind,src={src},dst=/site/share,readonly",
                          "--device=/dev/null:/dev/site-null:rw"]},
        "when": {"annotations": {"^com.hooks.site.share$": "^true$"}},
        "stages": ["createContainer"]}))
    done = site.run("--annotation", "com.hooks.site.share=true", site.image, "sh", "-c",
                    "cat /site/share/hello; echo x > /site/share/new || echo read-only; "
                    "echo x > /dev/site-null && echo device-ok")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["hello from the site", "read-only", "device-ok"]


@pytest.mark.requires("root", "runc")
def test_glibc_and_amdgpu_hooks_are_no_ops_here(site: Site) -> None:
    site.install("01-glibc-hook.json")
    shutil.copy(ROOT / "workflows/hooks.d/03-amdgpu-hook.json", site.hooks_dir)
    text = (site.hooks_dir / "03-amdgpu-hook.json").read_text()
    (site.hooks_dir / "03-amdgpu-hook.json").write_text(
        fill_sample(text, sample_values()))
    # Debian bookworm's glibc is the host's: not older, so left alone; no /dev/kfd here.
    done = site.run("--glibc", site.image, "sh", "-c", "grep -c libc.so.6 /proc/self/mountinfo"
                    " || true; ls /dev/kfd 2>&1 || true")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == "0"


@pytest.mark.requires("root", "runc")
@pytest.mark.skipif(not os.path.exists("/usr/sbin/dropbear"), reason="needs dropbear-bin")
def test_ssh_hook_serves_the_container_over_ssh(site: Site) -> None:
    import socket

    with socket.socket() as s:  # a free port for this test's dropbear
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    site.install("08-ssh-hook.json", **{"SERVER_PORT=15263": f"SERVER_PORT={port}"})
    no_keys = site.run("--ssh", site.image, "true")
    assert no_keys.returncode == RUNTIME_FAILURE
    assert "run 'hpc-exec ssh-keygen' first" in no_keys.stderr
    keygen = process.run([hpc_exec_exe(), "ssh-keygen"], env=site.env, timeout=120,
                         desc="hpc-exec ssh-keygen")
    assert "SSH keys in" in keygen.stdout
    done = site.run("--ssh", "-e", "PROBE=from-the-container", site.image, "sh", "-c",
                    "timeout 30 ssh localhost 'echo remote $PROBE'")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "remote from-the-container"


@pytest.mark.requires("root", "runc")
@pytest.mark.skipif(not os.path.exists("/usr/sbin/dropbear"), reason="needs dropbear-bin")
def test_ssh_hook_honours_port_authorized_key_and_pidfile_annotations(site: Site) -> None:
    """issue 13, item 20: com.hooks.ssh.port, authorize_ssh_key and pidfile_host, as Sarus'."""
    import socket

    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    site.install("08-ssh-hook.json", **{"SERVER_PORT=15263": f"SERVER_PORT={ports[0]}"})
    process.run([hpc_exec_exe(), "ssh-keygen"], env=site.env, timeout=120,
                desc="hpc-exec ssh-keygen")
    keys = site.root / "extra-key"
    keys.mkdir()
    process.run(["dropbearkey", "-t", "ecdsa", "-f", str(keys / "key")], timeout=60,
                desc="dropbearkey")
    public = process.run(["dropbearkey", "-y", "-f", str(keys / "key")], timeout=60,
                         desc="dropbearkey -y").stdout
    (keys / "key.pub").write_text(next(line for line in public.splitlines()
                                       if line.startswith("ecdsa-")) + "\n")
    pidfile = site.root / "dropbear.pid"
    # HOME=/tmp: dbclient then offers only -i's key, not the user's own id_dropbear
    done = site.run("--ssh", "--annotation", f"com.hooks.ssh.port={ports[1]}",
                    "--annotation", f"com.hooks.ssh.authorize_ssh_key={keys / 'key.pub'}",
                    "--annotation", f"com.hooks.ssh.pidfile_host={pidfile}",
                    "--mount", f"type=bind,src={keys},dst=/extra", site.image, "sh", "-c",
                    f"HOME=/tmp timeout 30 /opt/oci-hooks/ssh/bin/dbclient -y -p {ports[1]} "
                    "-i /extra/key localhost 'echo via the extra key'")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "via the extra key"
    assert pidfile.read_text().strip().isdigit()


def test_ssh_from_rank_0_reaches_the_container_on_another_node(site: Site) -> None:
    """OpenMPI-over-SSH style: rank 0's container runs 'ssh node2 hostname' and is answered by
    rank 1's container on node2 (its dropbear listens on node2's own address)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    site.install("08-ssh-hook.json", **{
        '"SERVER_PORT=15263"': f'"SERVER_PORT={port}", "SERVER_ADDRESS=hostname"'})
    process.run([hpc_exec_exe(), "ssh-keygen"], env=site.env, timeout=120,
                desc="hpc-exec ssh-keygen")
    shared = Path(tempfile.mkdtemp(dir=site.root))
    os.chmod(shared, 0o777)
    script = (
        'if [ "$SLURM_PROCID" = 0 ]; then '
        "  for i in $(seq 50); do "
        "    out=$(timeout 10 ssh node2 'echo $(hostname) $PROBE' 2>/dev/null) && break; "
        "    sleep 0.2; "
        "  done; echo \"$out\" > /shared/answer; touch /shared/done; "
        "else "
        "  for i in $(seq 600); do [ -e /shared/done ] && break; sleep 0.1; done; "
        "fi")
    process.run(["srun", "-N2", "-n2", hpc_exec_exe(), "run", "--ssh", "-e", "PROBE=probe",
                 "--mount", f"type=bind,src={shared},dst=/shared", site.image,
                 "sh", "-c", script],
                env=site.env, timeout=300, desc="srun -N2 -n2 hpc-exec run --ssh")
    assert (shared / "answer").read_text().split() == ["node2", "probe"]


@pytest.mark.requires("root", "runc")
def test_chained_python_hooks_keep_their_order_around_other_hooks(site: Site) -> None:
    # 01 and 02 run in one interpreter (mergeHooks, hooks/_chain.py); the shell hook between 02
    # and 04 splits the chain, and 04 runs alone, after it.
    from hpc_exec.hooks import command

    for old in site.hooks_dir.iterdir():
        old.unlink()
    log = site.root / "chain.log"

    def entry(path: str, args: list[str], env: list[str]) -> str:
        return json.dumps({"version": "1.0.0",
                           "hook": {"path": path, "args": args, "env": env, "timeout": 30},
                           "when": {"always": True}, "stages": ["createContainer"]})

    stamp = command("timestamp")
    for name, message in (("01-a", "A"), ("02-b", "B"), ("04-c", "C")):
        (site.hooks_dir / f"{name}.json").write_text(
            entry(stamp[0], stamp, [f"TIMESTAMP_HOOK_MESSAGE={message}"]))
    (site.hooks_dir / "03-shell.json").write_text(
        entry("/bin/sh", ["sh", "-c", f"echo shell-hook >> {log}"], []))
    done = site.run("-e", f"TIMESTAMP_HOOK_LOGFILE={log}", site.image, "true")
    assert done.returncode == 0, done.stderr
    lines = log.read_text().splitlines()
    assert [line.rpartition(" ")[2] for line in lines] == ["A", "B", "shell-hook", "C"]
