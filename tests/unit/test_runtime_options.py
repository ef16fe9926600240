"""Pure run-side rules: --mount/--device parsing, user-mount rules, env merge, process args,
annotations and the run-side config keys."""

from __future__ import annotations

import pytest
from hpc_exec.engine.runtime.mounts import check_user_destination
from hpc_exec.engine.runtime.options import (
    ImageConfig,
    merge_annotations,
    cuda_renumber,
    merge_environment,
    parse_env_option,
    process_args,
)

from hpc_exec.config import parse_settings
from hpc_exec.errors import ConfigError, InvalidInput, SecurityError
from hpc_exec.mountspec import Device as DeviceSpec
from hpc_exec.mountspec import Mount as MountSpec
from hpc_exec.mountspec import parse_device, parse_mount


@pytest.mark.parametrize(("text", "expected"), [
    ("type=bind,src=/a,dst=/b", MountSpec("/a", "/b")),
    ("type=bind,source=/a/,destination=/b//c,readonly", MountSpec("/a", "/b/c", True)),
    ("type=bind,target=/b,source=/a,ro", MountSpec("/a", "/b", True)),
    ("type=bind,src=/a,dst=/b,readonly=false", MountSpec("/a", "/b", False)),
])
def test_parse_mount(text: str, expected: MountSpec) -> None:
    assert parse_mount(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("src=/a,dst=/b", "lacks type=bind"),
    ("type=volume,src=/a,dst=/b", "unsupported mount type 'volume'"),
    ("type=bind,src=a,dst=/b", "mount source must be an absolute path, got 'a'"),
    ("type=bind,src=/a,dst=b", "mount destination must be an absolute path, got 'b'"),
    ("type=bind,dst=/b", "lacks a source"),
    ("type=bind,src=/a", "lacks a destination"),
    ("type=bind,src=/a,dst=/b,colour=red", "unknown mount option 'colour'"),
    ("type=bind,src=/a,source=/c,dst=/b", "given twice"),
    ("type=bind,src=/a,dst=/b,bogus", "invalid mount option 'bogus'"),
])
def test_parse_mount_errors(text: str, message: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_mount(text)
    assert message in str(exc.value)


@pytest.mark.parametrize(("text", "expected"), [
    ("/dev/fuse", DeviceSpec("/dev/fuse", "/dev/fuse", "rwm")),
    ("/dev/fuse:r", DeviceSpec("/dev/fuse", "/dev/fuse", "r")),
    ("/dev/nvidia0:/dev/gpu", DeviceSpec("/dev/nvidia0", "/dev/gpu", "rwm")),
    ("/dev/nvidia0:/dev/gpu:wr", DeviceSpec("/dev/nvidia0", "/dev/gpu", "rw")),
])
def test_parse_device(text: str, expected: DeviceSpec) -> None:
    assert parse_device(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("/dev/fuse:rr", "repeats a letter"),
    ("/dev/fuse:rx", "invalid device access 'rx'"),
    ("dev/fuse", "must be an absolute path"),
    ("/a:/b:rw:x", "invalid device"),
    (":/b", "lacks a host path"),
])
def test_parse_device_errors(text: str, message: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_device(text)
    assert message in str(exc.value)


def test_user_mount_rules_defaults() -> None:
    rules = parse_settings(None).user_mounts
    assert rules.not_allowed_prefixes_of_path[:2] == ("/etc", "/var")
    assert rules.not_allowed_paths == ("/opt",)
    for dst in ("/etc", "/etc/x", "/var/lib/y"):
        with pytest.raises(SecurityError) as exc:
            check_user_destination(dst, rules.not_allowed_prefixes_of_path,
                                   rules.not_allowed_paths)
        assert "cannot be a subdirectory of '/" in str(exc.value)
    with pytest.raises(SecurityError, match="destination cannot be '/opt'"):
        check_user_destination("/opt", rules.not_allowed_prefixes_of_path,
                               rules.not_allowed_paths)
    check_user_destination("/opt/app", rules.not_allowed_prefixes_of_path,
                           rules.not_allowed_paths)
    check_user_destination("/etcetera", rules.not_allowed_prefixes_of_path,
                           rules.not_allowed_paths)


def test_site_can_lift_rules() -> None:
    s = parse_settings({"userMounts": {"notAllowedPrefixesOfPath": [], "notAllowedPaths": []}})
    check_user_destination("/etc/x", s.user_mounts.not_allowed_prefixes_of_path,
                           s.user_mounts.not_allowed_paths)


IMAGE = ImageConfig(entrypoint=("/ep",), cmd=("c1", "c2"), workdir="/w",
                    env=(("PATH", "/img/bin"), ("IMG", "1"), ("SHARED", "image")))


@pytest.mark.parametrize(("args", "entrypoint", "expected"), [
    ((), None, ["/ep", "c1", "c2"]),
    (("x", "y"), None, ["/ep", "x", "y"]),
    ((), "/other", ["/other"]),
    (("x",), "/other", ["/other", "x"]),
    (("x",), "", ["x"]),
])
def test_process_args(args: tuple[str, ...], entrypoint: str | None,
                      expected: list[str]) -> None:
    assert process_args(IMAGE, args, entrypoint) == expected


def test_process_args_nothing_to_run() -> None:
    with pytest.raises(InvalidInput, match="no command to run"):
        process_args(ImageConfig(), (), None)


def test_environment_order() -> None:
    host = {"PATH": "/host/bin", "SHARED": "host", "ONLYHOST": "h", "COPY": "c", "GONE": "g"}
    env = merge_environment(
        host, IMAGE, site_set=[("SITE", "s"), ("SHARED", "site")],
        site_prepend=[("PATH", "/pre")], site_append=[("PATH", "/post"), ("NEWAPP", "a")],
        site_unset=["GONE"],
        user=[parse_env_option("COPY"), parse_env_option("MISSING"),
              parse_env_option("EMPTY="), parse_env_option("SITE=user")])
    assert env["PATH"] == "/pre:/img/bin:/post"
    assert env["SHARED"] == "site" and env["IMG"] == "1" and env["ONLYHOST"] == "h"
    assert env["NEWAPP"] == "a" and "GONE" not in env
    assert env["COPY"] == "c" and "MISSING" not in env and env["EMPTY"] == ""
    assert env["SITE"] == "user"


def test_env_option_errors() -> None:
    with pytest.raises(InvalidInput, match="invalid environment variable name"):
        parse_env_option("=x")
    with pytest.raises(InvalidInput, match="'1A=x'"):
        parse_env_option("1A=x")


def test_cuda_visible_devices() -> None:
    # each host id becomes its rank among the sorted ids (issue 13, item 1; more in
    # test_runtime_sarus_parity.py)
    assert cuda_renumber("2,5") == "0,1"
    env = merge_environment({"CUDA_VISIBLE_DEVICES": "3,1,7"}, ImageConfig())
    assert env["NVIDIA_VISIBLE_DEVICES"] == "3,1,7"
    assert env["CUDA_VISIBLE_DEVICES"] == "1,0,2"
    assert "NVIDIA_VISIBLE_DEVICES" not in merge_environment({}, ImageConfig())


def test_annotations_precedence() -> None:
    ann = merge_annotations(mpi=True, default_mpi_type="mpich", ssh=True,
                      labels=[("com.hooks.mpi.type", "openmpi"), ("label", "l")],
                      user=[("label", "user"), ("com.hooks.ssh.enabled", "false")])
    assert ann["com.hooks.mpi.enabled"] == "true"
    assert ann["com.hooks.mpi.type"] == "openmpi"  # label beats the engine
    assert ann["label"] == "user"  # --annotation has the last word
    assert ann["com.hooks.ssh.enabled"] == "false"
    assert ann["com.hooks.slurm-global-sync.enabled"] == "true"
    assert merge_annotations(mpi_type="x")["com.hooks.mpi.type"] == "x"
    assert merge_annotations(glibc=True) == {"com.hooks.glibc.enabled": "true",
                                             "com.hooks.logging.level": "2"}


def test_image_config_from_metadata() -> None:
    cfg = ImageConfig.from_mapping({"entrypoint": None, "cmd": ["sh"], "env": ["A=b=c"],
                                    "workdir": "", "labels": {"k": "v"}})
    assert cfg == ImageConfig((), ("sh",), (("A", "b=c"),), "/", (("k", "v"),))


def test_runtime_config_keys() -> None:
    s = parse_settings({
        "securityChecks": False, "bundleDir": "/b", "rootfsFolder": "rf", "hooksDir": "/h",
        "runcPath": "/r/runc", "initPath": "/i", "ramFilesystemType": "ramfs",
        "siteMounts": ["type=bind,src=/scratch,dst=/scratch",
                       {"type": "bind", "source": "/a", "destination": "/b", "readonly": True}],
        "siteDevices": ["/dev/fuse"],
        "environment": {"set": {"A": "1"}, "prepend": {"PATH": "/p"}, "append": {},
                        "unset": ["X"]},
        "seccompProfile": "/s.json", "apparmorProfile": "p", "selinuxLabel": "l",
        "selinuxMountLabel": "m", "defaultMPIType": "mpich"})
    assert not s.security_checks and str(s.bundle_dir) == "/b" and s.rootfs_folder == "rf"
    assert s.site_mounts == (MountSpec("/scratch", "/scratch"), MountSpec("/a", "/b", True))
    assert s.site_devices == (DeviceSpec("/dev/fuse", "/dev/fuse", "rwm"),)
    assert s.environment.set == (("A", "1"),) and s.environment.unset == ("X",)
    assert s.default_mpi_type == "mpich" and s.ram_filesystem_type == "ramfs"


@pytest.mark.parametrize(("data", "message"), [
    ({"securityChecks": "yes"}, "securityChecks: expected bool, got 'yes'"),
    ({"ramFilesystemType": "zram"}, "ramFilesystemType: expected tmpfs or ramfs, got 'zram'"),
    ({"rootfsFolder": "a/b"}, "rootfsFolder: expected a plain folder name, got 'a/b'"),
    ({"siteMounts": ["type=bind,src=x,dst=/y"]}, "siteMounts[0]: mount source must be"),
    ({"siteDevices": ["/dev/fuse:rr"]}, "siteDevices[0]: device access 'rr' repeats"),
    ({"environment": {"sett": {}}}, "config key environment.sett: unknown key"),
    ({"environment": {"set": {"1X": "a"}}}, "environment.set.1X: not a valid variable name"),
    ({"userMounts": {"notAllowedPaths": ["opt"]}}, "notAllowedPaths[0]: expected an absolute"),
    ({"bundleDir": "rel"}, "bundleDir: expected an absolute path, got 'rel'"),
])
def test_runtime_config_errors(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_settings(data)
    assert message in str(exc.value)


def test_mounts_are_rprivate_in_config_json() -> None:
    from hpc_exec.engine.runtime.spec import _bind

    assert "rprivate" in _bind(parse_mount("type=bind,src=/a,dst=/b"))["options"]
