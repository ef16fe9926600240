"""Fixtures of the fault-injection suite (issue 12).

* ``fsite``: a scratch site under /var/tmp (world-readable, so the test user can use it): a site
  config (``HPC_EXEC_CONFIG``) that marks the testbed registry and the stalling proxy insecure,
  a temp dir shared by every repository (mode 1777, like /tmp), and ``fsite.hx(...)`` to run the
  installed ``hpc-exec`` as root or, with ``user=True``, as the unprivileged test user (a
  world-readable copy of the package run by Debian's python3, as the rootless tests do).
* ``stall``: a plain-http proxy in front of the testbed registry that can hold chosen blob
  downloads until the test releases them, so a test can freeze a pull at a known point.

The scenarios of issue 12 that already held are pinned so they keep holding, here or, where a
test already existed, there (not repeated):

* kill -9 during a pull never damages a good image: test_cache_faults.py::
  test_pulls_killed_at_random_points_never_damage_a_good_image and
  test_a_pull_killed_mid_download_leaves_what_the_next_pull_removes; a killed puller never
  leaves a partial image: tests/integration/image/test_concurrency.py::
  test_sigkilled_puller_never_leaves_a_partial_image.
* wrong registry credentials give exit 113 ("refused the credentials") and the password is in
  no output and no file: tests/integration/image/test_pull.py::
  test_private_registry_auth_and_no_password_leak (and test_bearer.py::
  test_refused_bearer_login_does_not_leak for a token server).
* scancel of a six-rank ``srun … hpc-exec run`` step leaves no process, mount or loop device
  on any node: test_slurm_faults.py (moved here from tests/integration/run/test_run_slurm.py).
* a missing barrier rank fails every rank, naming it, and leaves no sync dir:
  tests/integration/test_hook_slurm_global_sync.py::
  test_a_missing_rank_fails_every_rank_and_leaves_no_sync_dir.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hpc_exec import process

from ..conftest import RegistryProxy

TEST_USER = "hpcexec-test"
SYSTEM_PYTHON = "/usr/bin/python3"


def hpc_exec_exe() -> str:
    """The ``hpc-exec`` under test: the one beside the test interpreter, or ``$FAULTS_HPC_EXEC``
    (e.g. an older install, to see a fault reproduce before its fix)."""
    import sys

    if os.environ.get("FAULTS_HPC_EXEC"):
        return os.environ["FAULTS_HPC_EXEC"]
    beside = Path(sys.executable).parent / "hpc-exec"
    return str(beside) if beside.exists() else (shutil.which("hpc-exec") or "hpc-exec")


@pytest.fixture(scope="session", name="hpc_exec_exe")
def hpc_exec_exe_fixture() -> str:
    return hpc_exec_exe()


@pytest.fixture
def stall(testbed: Any) -> Iterator[RegistryProxy]:
    p = RegistryProxy(testbed.registry)
    try:
        yield p
    finally:
        p.close()


@dataclass
class FaultSite:
    root: Path
    temp: Path
    config: Path
    base_env: dict[str, str]
    registry: str
    procs: list[Any] = field(default_factory=list)

    def write_config(self, text: str, name: str = "config.yaml") -> Path:
        path = self.root / name
        path.write_text(text)
        os.chmod(path, 0o644)
        return path

    def env(self, home: Path | None = None, config: Path | None = None,
            **extra: str) -> dict[str, str]:
        env = dict(self.base_env)
        env["HPC_EXEC_CONFIG"] = str(config or self.config)
        if home is not None:
            env["HPC_EXEC_HOME"] = str(home)
        env.update(extra)
        return env

    def argv(self, args: list[str], user: bool = False, umask: str | None = None) -> list[str]:
        if user:
            argv = ["runuser", "-u", TEST_USER, "--", SYSTEM_PYTHON, "-m", "hpc_exec", *args]
        else:
            argv = [hpc_exec_exe(), *args]
        if umask is not None:
            argv = ["sh", "-c", f'umask {umask}; exec "$@"', "sh", *argv]
        return argv

    def hx(self, *args: str, home: Path | None = None, user: bool = False,
           config: Path | None = None, umask: str | None = None, timeout: float = 300,
           **extra: str) -> process.Completed:
        env = self.env(home, config, **extra)
        if user:
            env["PYTHONPATH"] = str(self.root / "py")
        return process.run(self.argv(list(args), user, umask), env=env, timeout=timeout,
                           cwd="/", check=False, desc="hpc-exec " + args[0])

    def start(self, *args: str, home: Path | None = None, user: bool = False,
              config: Path | None = None) -> Any:
        """``hpc-exec ARGS`` in the background (stdout+stderr to a file); see :meth:`finish`."""
        env = self.env(home, config)
        if user:
            env["PYTHONPATH"] = str(self.root / "py")
        log = tempfile.TemporaryFile(dir=self.root)
        proc = process.launch(self.argv(list(args), user), desc="hpc-exec " + args[0],
                              env=env, cwd="/", stdout=log, stderr=log)
        proc.log = log  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    @staticmethod
    def finish(proc: Any, timeout: float = 300) -> tuple[int, str]:
        rc = proc.wait(timeout=timeout)
        proc.log.seek(0)
        return rc, proc.log.read().decode(errors="replace")


@pytest.fixture
def fsite(testbed: Any, stall: RegistryProxy) -> Iterator[FaultSite]:
    root = Path(tempfile.mkdtemp(prefix="hpc-exec-fault-", dir="/var/tmp"))
    os.chmod(root, 0o755)
    temp = root / "tmp"
    temp.mkdir()
    os.chmod(temp, 0o1777)
    site = FaultSite(root, temp, root / "config.yaml", testbed.environ(), testbed.registry)
    site.base_env.pop("HPC_EXEC_HOME", None)
    site.write_config(f'insecureRegistries: ["{stall.address}", "{testbed.registry}"]\n'
                      f'tempDir: "{temp}"\n')
    try:
        yield site
    finally:
        for proc in site.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
            proc.log.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def test_user(fsite: FaultSite) -> pwd.struct_passwd:
    """The unprivileged test user, with a world-readable copy of the package under the site."""
    try:
        pw = pwd.getpwnam(TEST_USER)
    except KeyError:
        process.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", TEST_USER],
                    timeout=30, desc="creating the test user")
        pw = pwd.getpwnam(TEST_USER)
    import hpc_exec.engine

    import hpc_exec

    target = fsite.root / "py" / "hpc_exec"
    source = Path(hpc_exec.__file__).parent
    if os.environ.get("FAULTS_HPC_EXEC"):  # the package of that (regular) install
        venv = Path(os.environ["FAULTS_HPC_EXEC"]).parents[1]
        source = next(venv.glob("lib/python3*/site-packages/hpc_exec"))
    shutil.copytree(source, target, symlinks=False,
                    ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    if not (target / "engine").exists():  # editable installs keep engine/ elsewhere
        shutil.copytree(Path(hpc_exec.engine.__file__).parent, target / "engine",
                        symlinks=False, ignore=shutil.ignore_patterns("__pycache__"))
    for path in [fsite.root / "py", *(fsite.root / "py").rglob("*")]:  # keeps the idmap
        executable = path.is_dir() or os.stat(path).st_mode & 0o100  # helper executable
        os.chmod(path, 0o755 if executable else 0o644)
    return pw
