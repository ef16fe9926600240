"""engine/runtime/mounts.py: the runtime's own destinations and symlink-safe resolution
(issue 12, items 6 and 7)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpc_exec.engine.runtime.mounts import check_user_destination, resolve_destination
from hpc_exec.errors import SecurityError


@pytest.mark.parametrize("dst", ["/", "//", "/.", "/x/..", "/dev", "/dev/shm/x", "/proc",
                                 "/proc/self/root", "/sys/fs", "/etc/hosts", "/dev/init",
                                 "/dev/fd/3", "/dev/pts"])
def test_the_runtimes_own_paths_are_refused_even_with_no_site_rules(dst: str) -> None:
    with pytest.raises(SecurityError, match="the runtime owns"):
        check_user_destination(dst, (), ())


@pytest.mark.parametrize("dst", ["/data", "/dev/infiniband", "/devices", "/procs", "/etc/x"])
def test_other_paths_pass_with_no_site_rules(dst: str) -> None:
    check_user_destination(dst, (), ())


def _rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc" / "python3").mkdir(parents=True)
    (root / "usr" / "lib" / "python3").mkdir(parents=True)
    (root / "usr" / "lib" / "python3" / "site.py").symlink_to("/etc/python3/site.py")
    (root / "usr" / "lib" / "rel").symlink_to("../../etc")
    (root / "deep").symlink_to("../../../../../etc")
    (root / "loop").symlink_to("loop")
    (root / "bin").symlink_to("usr/bin")
    return root


@pytest.mark.parametrize("dst,want", [
    ("/usr/lib/python3/site.py", "/etc/python3/site.py"),  # absolute link in the image
    ("/usr/lib/rel/profile", "/etc/profile"),  # relative link
    ("/deep/x", "/etc/x"),  # '..' stops at the container's root, not the host's
    ("/bin/tool", "/usr/bin/tool"),  # a missing target is created by runc: taken as it is
    ("/new/dir/x", "/new/dir/x"),
    ("/a/../usr/lib/rel/../lib", "/lib"),  # rel is /etc, whose parent is /
    ("/dev/fd/3", "/dev/fd/3"),  # runc's fresh /dev: the image's is never looked at
])
def test_resolution_follows_image_links_inside_the_root(tmp_path: Path, dst: str,
                                                        want: str) -> None:
    assert resolve_destination(_rootfs(tmp_path), dst) == want


def test_resolution_follows_links_in_earlier_mounts(tmp_path: Path) -> None:
    rootfs = _rootfs(tmp_path)
    src = tmp_path / "src"
    src.mkdir()
    (src / "l").symlink_to("/etc")
    (src / "inside").symlink_to("sub")
    file = tmp_path / "file"
    file.write_text("")
    earlier = [("/data", str(src))]
    assert resolve_destination(rootfs, "/data/l/profile", earlier) == "/etc/profile"
    assert resolve_destination(rootfs, "/data/inside/x", earlier) == "/data/sub/x"
    # a later mount over the same path hides the earlier one
    assert resolve_destination(rootfs, "/data/l/x", [*earlier, ("/data", str(tmp_path))]) \
        == "/data/l/x"
    assert resolve_destination(rootfs, "/f", [("/f", str(file))]) == "/f"


def test_a_link_loop_is_a_security_error(tmp_path: Path) -> None:
    with pytest.raises(SecurityError, match="too many symbolic links"):
        resolve_destination(_rootfs(tmp_path), "/loop/x")
