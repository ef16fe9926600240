"""The mount hook doing real bind mounts, as root, in a private mount namespace.

Two ways runc can run it: inside the container's mount namespace (createContainer: the state's
pid is the container's own view, 1) and from the runtime namespace (createRuntime/prestart: the
hook joins the namespace of the state's pid). Containers are not involved; the namespace is made
with unshare(1) and the rootfs is a plain directory.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
from hpc_exec.hooks import command

from hpc_exec import process

SCRIPT = r"""
"$@" < "$STATE"
cat "$ROOT/data/hello" "$ROOT/etc/thing"
if (echo x > "$ROOT/data/new") 2>/dev/null; then echo data-writable; else echo data-readonly; fi
stat -c 'dev %t:%T' "$ROOT/dev/mynull"
test -e "$ROOT/etc/ld.so.cache" && echo ldconfig-ran
"""


def make_bundle(tmp_path: Path, pid: int) -> tuple[Path, Path, list[str]]:
    root = tmp_path / "bundle" / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "lib").symlink_to("/usr/lib")  # an absolute symlink must stay inside the rootfs
    (tmp_path / "bundle" / "config.json").write_text(json.dumps(
        {"root": {"path": "rootfs"}, "process": {"env": []}}))
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"ociVersion": "1.0.2", "id": "m", "status": "creating",
                                 "pid": pid, "bundle": str(tmp_path / "bundle")}))
    src = tmp_path / "src"
    src.mkdir()
    (src / "hello").write_text("hello from the host\n")
    (tmp_path / "thing").write_text("a single file\n")
    args = [f"--mount=type=bind,src={src},dst=/data,readonly",
            f"--mount=type=bind,source={tmp_path / 'thing'},destination=/etc/thing",
            f"--mount=type=bind,src={src},dst=/lib/x",
            "--device=/dev/null:/dev/mynull:r"]
    return root, state, args


@pytest.mark.requires("root")
def test_mounts_inside_the_container_namespace(tmp_path: Path) -> None:
    root, state, args = make_bundle(tmp_path, 1)
    env = dict(os.environ, STATE=str(state), ROOT=str(root), LDCONFIG_PATH="/sbin/ldconfig")
    out = process.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", SCRIPT,
                       "sh", *command("mount"), *args], env=env, timeout=60,
                      desc="mount hook in a private namespace").stdout
    assert out.split("\n") == ["hello from the host", "a single file", "data-readonly",
                               "dev 1:3", "ldconfig-ran", ""]
    assert (root / "usr/lib/x").is_dir() and not (tmp_path / "usr").exists()
    assert not (root / "data/hello").exists()  # the mounts died with the namespace


@pytest.mark.requires("root")
def test_joins_the_namespace_of_the_state_pid(tmp_path: Path) -> None:
    holder = process.spawn(["unshare", "--mount", "--propagation", "private", "sleep", "60"],
                           desc="a mount namespace to join", log_path=tmp_path / "holder.log")
    try:
        ours = os.stat("/proc/self/ns/mnt").st_ino
        for _ in range(500):
            if os.stat(f"/proc/{holder.pid}/ns/mnt").st_ino != ours:
                break
            time.sleep(0.01)
        root, state, args = make_bundle(tmp_path, holder.pid)
        process.run([*command("mount"), *args[:2]], input=state.read_text(), timeout=60,
                    env={"HOOK_LOG_LEVEL": "debug"}, desc="mount hook joining a namespace")
        seen = process.run(["nsenter", "-t", str(holder.pid), "-m", "cat",
                            str(root / "data/hello")], timeout=30, desc="reading the mount").stdout
        assert seen == "hello from the host\n"
        assert not (root / "data/hello").exists()  # not in our namespace
    finally:
        process.terminate(holder.pid, timeout=5)
    assert sys.executable  # the hooks ran under this interpreter (hpc_exec.hooks.command)
