"""Issue 13, items 1-10 (environment and runtime): the pure rules that make a run behave as
Sarus 1.6.3 does. The integration side is tests/integration/run/test_run_sarus_parity.py."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hpc_exec.engine.runtime.bundle import Bundle
from hpc_exec.engine.runtime.options import (
    ImageConfig,
    RunOptions,
    cuda_renumber,
    effective_pid,
    log_level_number,
    merge_annotations,
    merge_environment,
    uncoerced_environ,
)
from hpc_exec.engine.runtime.run import narrow_devices
from hpc_exec.engine.runtime.spec import DeviceNode, build_config

from hpc_exec.errors import InvalidInput, SecurityError
from hpc_exec.mountspec import parse_device

CUDA_IMAGE = ImageConfig(env=(("PATH", "/usr/local/cuda/bin:/usr/bin"),
                              ("NVIDIA_VISIBLE_DEVICES", "all"),
                              ("NVIDIA_DRIVER_CAPABILITIES", "compute,utility"),
                              ("CUDA_VERSION", "12.2.0"), ("CUDA_VISIBLE_DEVICES", "0,1")))


# -- item 1: the host's GPU allocation wins over the image ---------------------------------------

@pytest.mark.parametrize(("host", "container"), [
    ("1", "0"), ("3,1,5", "1,0,2"), ("2,5", "0,1"), ("5,2", "1,0"), ("0,1,2,3", "0,1,2,3"),
    ("2,10", "0,1"),  # numbers sort as numbers (Sarus sorts text: docs/sarus-differences.md)
    ("GPU-b,GPU-a", "1,0"),  # UUIDs as text
    (" 3 , 1 ", "1,0"),
])
def test_cuda_ids_keep_their_order(host: str, container: str) -> None:
    assert cuda_renumber(host) == container


def test_host_cuda_visible_devices_wins_over_the_image() -> None:
    env = merge_environment({"CUDA_VISIBLE_DEVICES": "1", "PATH": "/bin"}, CUDA_IMAGE)
    assert env["NVIDIA_VISIBLE_DEVICES"] == "1"
    assert env["CUDA_VISIBLE_DEVICES"] == "0"
    assert env["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"  # the image's is kept
    assert env["CUDA_VERSION"] == "12.2.0"


def test_driver_capabilities_all_only_with_gpus_and_when_the_image_has_none() -> None:
    env = merge_environment({"CUDA_VISIBLE_DEVICES": "3,1,5"}, ImageConfig())
    assert env == {"CUDA_VISIBLE_DEVICES": "1,0,2", "NVIDIA_VISIBLE_DEVICES": "3,1,5",
                   "NVIDIA_DRIVER_CAPABILITIES": "all"}
    assert "NVIDIA_DRIVER_CAPABILITIES" not in merge_environment({}, ImageConfig())


@pytest.mark.parametrize("host", [{}, {"CUDA_VISIBLE_DEVICES": "NoDevFiles"},
                                  {"CUDA_VISIBLE_DEVICES": ""}])
def test_no_gpu_granted_removes_the_image_gpu_variables(host: dict[str, str]) -> None:
    env = merge_environment({**host, "NVIDIA_DRIVER_CAPABILITIES": "host"}, CUDA_IMAGE)
    for name in ("CUDA_VERSION", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES",
                 "NVIDIA_DRIVER_CAPABILITIES"):
        assert name not in env
    assert env["PATH"] == "/usr/local/cuda/bin:/usr/bin"


def test_gpu_allocation_holds_with_clean_env_and_site_and_user_still_win() -> None:
    host = {"CUDA_VISIBLE_DEVICES": "4,2"}
    env = merge_environment(host, CUDA_IMAGE, clean=True)
    assert (env["NVIDIA_VISIBLE_DEVICES"], env["CUDA_VISIBLE_DEVICES"]) == ("4,2", "1,0")
    env = merge_environment(host, CUDA_IMAGE, site_set=[("NVIDIA_DRIVER_CAPABILITIES", "site")],
                            user=[("CUDA_VISIBLE_DEVICES", "0")])
    assert env["NVIDIA_DRIVER_CAPABILITIES"] == "site" and env["CUDA_VISIBLE_DEVICES"] == "0"


# -- item 2: PMIx ----------------------------------------------------------------------------

def test_image_pmix_variables_are_dropped_host_ones_kept() -> None:
    image = ImageConfig(env=(("PMIX_SERVER_TMPDIR", "/image/tmp"), ("PMIX_ONLY_IMAGE", "x"),
                             ("NOT_PMIX", "image")))
    env = merge_environment({"PMIX_SERVER_TMPDIR": "/host/tmp", "PMIX_RANK": "3"}, image)
    assert env["PMIX_SERVER_TMPDIR"] == "/host/tmp" and env["PMIX_RANK"] == "3"
    assert "PMIX_ONLY_IMAGE" not in env and env["NOT_PMIX"] == "image"
    assert merge_environment({}, image, site_set=[("PMIX_SITE", "s")])["PMIX_SITE"] == "s"


# -- item 3: tini as a subreaper ---------------------------------------------------------------

def test_init_sets_tini_subreaper() -> None:
    assert merge_environment({}, ImageConfig(), init=True)["TINI_SUBREAPER"] == "1"
    assert "TINI_SUBREAPER" not in merge_environment({}, ImageConfig())
    assert "TINI_SUBREAPER" not in merge_environment({}, ImageConfig(), init=True,
                                                     site_unset=["TINI_SUBREAPER"])


# -- item 5: --mpi enables glibc, --ssh a private PID namespace ----------------------------------

def test_mpi_enables_the_glibc_hook() -> None:
    assert merge_annotations(mpi=True)["com.hooks.glibc.enabled"] == "true"
    assert merge_annotations(mpi_type="mpich")["com.hooks.glibc.enabled"] == "true"
    assert "com.hooks.glibc.enabled" not in merge_annotations(ssh=True, sync=True)
    # an --annotation still has the last word
    ann = merge_annotations(mpi=True, user=[("com.hooks.glibc.enabled", "false")])
    assert ann["com.hooks.glibc.enabled"] == "false"


@pytest.mark.parametrize(("options", "pid"), [
    (RunOptions(), "host"), (RunOptions(pid="host"), "host"),
    (RunOptions(pid="private"), "private"), (RunOptions(ssh=True), "private"),
    (RunOptions(ssh=True, pid="private"), "private"),
])
def test_effective_pid(options: RunOptions, pid: str) -> None:
    assert effective_pid(options) == pid


def test_ssh_with_host_pid_is_refused() -> None:
    with pytest.raises(InvalidInput, match=r"^--ssh cannot be used with --pid=host"):
        effective_pid(RunOptions(ssh=True, pid="host"))
    with pytest.raises(InvalidInput, match="'shared'"):
        effective_pid(RunOptions(pid="shared"))


def test_ssh_private_pid_reaches_config_json() -> None:
    config = build_config(args=["true"], env={}, cwd="/", uid=1, gid=1, groups=(),
                          rootfs="rootfs", pid_private=effective_pid(RunOptions(ssh=True))
                          == "private")
    assert {"type": "pid"} in config["linux"]["namespaces"]


# -- item 6: site devices cannot be widened -------------------------------------------------------

def _node(path: str, access: str, minor: int = 5) -> DeviceNode:
    return DeviceNode(path, "c", 1, minor, 0o666, access)


def _rules(site: list[DeviceNode], user: list[DeviceNode], specs: list[str]) -> list[object]:
    devices = narrow_devices(site, user, [parse_device(s) for s in specs])
    config = build_config(args=["true"], env={}, cwd="/", uid=1, gid=1, groups=(),
                          rootfs="rootfs", devices=devices)
    return [(r["allow"], r.get("minor"), r["access"])
            for r in config["linux"]["resources"]["devices"]]


@pytest.mark.parametrize("access", ["rwm", "rw", "w", "m", "rm"])
def test_user_device_cannot_widen_a_site_device(access: str) -> None:
    spec = f"/dev/zero:/dev/mine:{access}"
    with pytest.raises(SecurityError, match="^--device /dev/zero: access .* is wider than "
                       "the 'r' the site grants that device"):
        _rules([_node("/dev/site0", "r")], [_node("/dev/mine", access)], [spec])


def test_user_device_without_access_is_rwm_and_refused_on_a_narrower_site_device() -> None:
    with pytest.raises(SecurityError, match=r"ask for 'rw' or less, e\.g\. "
                       "--device /dev/zero:/dev/zero:rw"):
        _rules([_node("/dev/site0", "rw")], [_node("/dev/zero", "rwm")], ["/dev/zero"])


def test_user_device_narrows_a_site_device() -> None:
    rules = _rules([_node("/dev/site0", "rw")], [_node("/dev/mine", "r")], ["/dev/zero:/dev/mine:r"])
    # deny all; the site's entry narrowed to the user's r (cgroup rules are per device); the user's
    assert rules == [(False, None, "rwm"), (True, 5, "r"), (True, 5, "r")]
    rules = _rules([_node("/dev/site0", "r")], [_node("/dev/mine", "r")], ["/dev/zero:/dev/mine:r"])
    assert rules == [(False, None, "rwm"), (True, 5, "r"), (True, 5, "r")]


def test_other_user_devices_are_not_restricted() -> None:
    rules = _rules([_node("/dev/site0", "r")], [_node("/dev/null", "rwm", minor=3)],
                   ["/dev/null"])
    assert rules == [(False, None, "rwm"), (True, 5, "r"), (True, 3, "rwm")]


# -- item 8: Python's locale coercion does not reach the container ------------------------------

def _initial(*entries: str) -> bytes:
    return b"".join(e.encode() + b"\0" for e in entries)


def test_coerced_lc_ctype_is_dropped() -> None:
    env = uncoerced_environ({"LC_CTYPE": "C.UTF-8", "PATH": "/bin"}, lambda: _initial("PATH=/bin"))
    assert env == {"PATH": "/bin"}


def test_coerced_lc_ctype_gets_its_original_value_back() -> None:
    env = uncoerced_environ({"LC_CTYPE": "C.UTF-8"}, lambda: _initial("LC_CTYPE=C", "X=1"))
    assert env == {"LC_CTYPE": "C"}


def test_a_real_lc_ctype_is_kept_without_reading_anything() -> None:
    def initial() -> bytes:
        raise AssertionError("read /proc/self/environ for nothing")

    for environ in ({"LC_CTYPE": "en_US.UTF-8"}, {"LANG": "C"},
                    {"LC_CTYPE": "C.UTF-8", "LC_ALL": "C"}):
        assert uncoerced_environ(environ, initial) is environ
    environ = {"LC_CTYPE": "C.UTF-8"}
    assert uncoerced_environ(environ, lambda: _initial("LC_CTYPE=C.UTF-8")) is environ


def test_an_unreadable_initial_environment_changes_nothing() -> None:
    def initial() -> bytes:
        raise PermissionError(13, "denied")

    environ = {"LC_CTYPE": "C.UTF-8"}
    assert uncoerced_environ(environ, initial) is environ


# -- item 9: the hooks' log level is Sarus's number ------------------------------------------------

@pytest.mark.parametrize(("level", "number"), [("debug", "0"), ("info", "1"), (None, "2")])
def test_logging_level_is_a_number(level: str | None, number: str) -> None:
    assert log_level_number(level) == number
    assert merge_annotations(log_level=level)["com.hooks.logging.level"] == number
    int(number)  # what a Sarus hook does with it (std::stoi)


# -- item 10: config.json is 0600 ---------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o000, 0o022, 0o777])
def test_config_json_is_0600_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    bundle = Bundle(root=tmp_path, rootfs=tmp_path / "rootfs", rootless=False)
    old = os.umask(umask)
    try:
        bundle.write_config('{"ociVersion": "1.0.2"}')
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(bundle.config_path).st_mode) == 0o600
    assert bundle.config_path.read_text() == '{"ociVersion": "1.0.2"}'
