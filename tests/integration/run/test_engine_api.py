"""The engine's Python API against real containers (root): the CLI and the API take the same
road, threaded callers are safe, errors keep their fields, the environment policy holds, and
output can be captured."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from hpc_exec import engine, errors, process
from hpc_exec.mountspec import Mount, format_mount

from .conftest import RunSite, write_config

pytestmark = pytest.mark.requires("root", "runc", "registry")


@pytest.fixture
def api_env(run_site: RunSite, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunSite]:
    """The caller's environment points at the test site (as a front end's would)."""
    import hpc_exec.config

    for key in ("HPC_EXEC_CONFIG", "HPC_EXEC_HOME"):
        monkeypatch.setenv(key, run_site.env[key])
    hpc_exec.config._cached.cache_clear()
    yield run_site
    hpc_exec.config._cached.cache_clear()


def test_comma_path_binds_through_api_and_cli(api_env: RunSite) -> None:
    data = api_env.root / "a,b"
    data.mkdir(exist_ok=True)
    (data / "f").write_text("comma\n")
    got = engine.run(api_env.small, ["cat", "/x/f"], binds=[(str(data), "/x")], capture=True)
    assert got == engine.RunResult(0, "comma\n", "")
    spec = format_mount(Mount(str(data), "/x"))
    assert "\\," in spec
    out = api_env.run("run", f"--mount={spec}", api_env.small, "cat", "/x/f")
    assert (out.returncode, out.stdout) == (0, "comma\n"), out.stderr


def test_relative_squashfs_runs_through_cli_and_api(api_env: RunSite,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    here = api_env.root / "rel"
    here.mkdir(exist_ok=True)
    squashfs = api_env.squashfs_of(api_env.small)
    for suffix in (".sqfs", ".json"):
        target = here / f"img{suffix}"
        if not target.exists():
            target.symlink_to(squashfs.with_suffix(".squashfs" if suffix == ".sqfs" else ".json"))
    from hpc_exec import process

    from .conftest import hpc_exec_exe

    out = process.run([hpc_exec_exe(), "run", "./img.sqfs", "--", "echo", "cli"], cwd=here,
                      env=api_env.env, timeout=120, check=False, desc="hpc-exec run ./img.sqfs")
    assert (out.returncode, out.stdout) == (0, "cli\n"), out.stderr
    monkeypatch.chdir(here)
    assert engine.run("./img.sqfs", ["echo", "api"], capture=True).stdout == "api\n"
    assert engine.inspect("./img.sqfs") == engine.inspect(api_env.small)


def test_sixteen_threads_at_once(api_env: RunSite) -> None:
    def one(i: int) -> int:
        return int(engine.run(api_env.small, ["sh", "-c", f"exit {i % 7}"], timeout=300))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(one, range(16)))
    assert statuses == [i % 7 for i in range(16)]
    assert [str(w.message) for w in caught if "fork" in str(w.message)] == []


def test_errors_keep_class_and_fields(api_env: RunSite, monkeypatch: pytest.MonkeyPatch) -> None:
    import hpc_exec.config

    # A runc that cannot be executed: the child's launch fails with CommandFailed (127).
    fake = api_env.root / "not-a-runc"
    fake.write_text("this is not a program\n")
    os.chmod(fake, 0o755)
    config = api_env.root / "config-bad-runc.yaml"
    write_config(config, api_env.config.read_text() + f"runcPath: {fake}\n")
    monkeypatch.setenv("HPC_EXEC_CONFIG", str(config))
    hpc_exec.config._cached.cache_clear()
    with pytest.raises(errors.CommandFailed) as exc:
        engine.run(api_env.small, ["true"])
    assert exc.value.returncode == 127 and exc.value.argv[0] == str(fake)
    assert "Exec format error" in exc.value.stderr_tail


def test_container_status_is_not_an_engine_error(api_env: RunSite) -> None:
    # 121 from the container is its own status; 121 from the engine is an exception.
    assert engine.run(api_env.small, ["sh", "-c", "exit 121"]) == 121
    with pytest.raises(errors.RuntimeFailure, match="runc failed"):
        engine.run(api_env.small, ["/no/such/program"])


def test_environment_policy(api_env: RunSite, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPC_TEST_HOST", "from-host")
    show = ["sh", "-c", 'echo "${HPC_TEST_HOST:-unset} ${PATH:-nopath} ${SET:-unset}"']
    image_path = dict(engine.inspect(api_env.small).env).get("PATH", "nopath")
    assert engine.run(api_env.small, show, capture=True).stdout.split() == \
        ["from-host", image_path, "unset"]
    assert engine.run(api_env.small, show, clean_env=True, env={"SET": "1"},
                      capture=True).stdout.split() == ["unset", image_path, "1"]
    assert engine.run(api_env.small, show, clean_env=True, env_passthrough=["HPC_TEST_HOST"],
                      capture=True).stdout.split() == ["from-host", image_path, "unset"]
    out = api_env.run("run", "--clean-env", "-e", "HPC_TEST_HOST", api_env.small, *show,
                      env={**api_env.env, "HPC_TEST_HOST": "cli-host"})
    assert out.stdout.split() == ["cli-host", image_path, "unset"], out.stderr


def test_home_and_workdir(api_env: RunSite, tmp_path: Path) -> None:
    home = tmp_path / "home-dir"  # not under /var, which the default userMounts forbid
    home.mkdir()
    (home / "mark").touch()
    got = engine.run(api_env.small, ["sh", "-c", "echo $HOME; pwd; ls $HOME"],
                     home=str(home), workdir="/tmp", capture=True)
    assert got.stdout.split() == [str(home), "/tmp", "mark"]


def test_built_command_line_runs(api_env: RunSite) -> None:
    opts = engine.run_options(["sh", "-c", "echo $A-$1", "sh", "arg"], env={"A": "x"})
    argv = engine.command_line(api_env.small, opts)
    out = api_env.run(*argv[1:])
    assert (out.returncode, out.stdout) == (0, "x-arg\n"), out.stderr


def _sleepers(seconds: str) -> list[int]:
    """Pids of live ``sleep SECONDS`` processes (a value no other test uses)."""
    out = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv[:2] == [b"sleep", seconds.encode()] and process.alive(int(entry)):
            out.append(int(entry))
    return out


def _wait_for(predicate: Callable[[], bool], what: str, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_timeout_stops_the_container(api_env: RunSite) -> None:
    with pytest.raises(errors.CommandTimeout):
        engine.run(api_env.small, ["sleep", "86399"], timeout=2)
    _wait_for(lambda: not _sleepers("86399"), "the timed-out container to go")


def test_ctrl_c_ends_containers_of_worker_threads(api_env: RunSite) -> None:
    import signal
    import sys

    script = Path(__file__).with_name("_api_threads.py")
    child = process.launch([sys.executable, str(script), api_env.small, "86398"],
                           desc="four threads of engine.run", own_process_group=True,
                           stdout=process.PIPE, env=os.environ)
    try:
        _wait_for(lambda: len(_sleepers("86398")) == 4, "four containers to start")
        os.killpg(child.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        out, _ = child.communicate(timeout=120)
        assert out.decode().split() == ["130"] * 4  # each container ended by the SIGINT
        _wait_for(lambda: not _sleepers("86398"), "the containers to go")
    finally:  # if the behaviour under test is broken, leave nothing of ours running
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        for pid in _sleepers("86398"):  # containers this test started
            os.kill(pid, signal.SIGKILL)


def test_missing_image_fails_in_the_caller(api_env: RunSite) -> None:
    with pytest.raises(errors.ImageNotFound, match="image docker.io/no/such:img is not in"):
        engine.run("no/such:img", ["true"])
    try:
        engine.run("no/such:img", ["true"])
    except errors.ImageNotFound as exc:
        assert exc.hint == "pull it first: hpc-exec pull no/such:img"
