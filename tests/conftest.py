"""Test tiers, requirement markers and the live testbed fixture.

* ``tests/unit/`` is pure: an autouse fixture makes every entry point of
  :mod:`hpc_exec.process` (run, spawn, launch, feed, foreground) raise, so a unit test that
  would run a program fails.
* ``tests/integration/`` runs real programs against the real testbed.
* ``tests/faults/`` is the fault-injection suite (issue 12): integration-like (real programs, the
  real testbed, the same ``requires`` markers), one test per reproduced defect and per fault
  that already holds. CI runs it like the integration tier.
* ``@pytest.mark.requires("root", "slurm", ...)`` names what a test needs. Outside CI a missing
  requirement skips the test with the reason; in CI (``CI`` set) it fails it, because CI has
  everything and must run every test. An unknown requirement is an error.
* Every test starts without inherited ``SLURM_*`` / ``HPC_EXEC_*`` variables; tests that talk to
  the testbed take its variables from the ``testbed`` fixture.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IN_CI = bool(os.environ.get("CI"))


def _have_fuse() -> bool:
    return os.path.exists("/dev/fuse") and shutil.which("squashfuse_ll") is not None


def _have_userns() -> bool:
    try:
        return Path("/proc/sys/kernel/unprivileged_userns_clone").read_text().strip() != "0"
    except FileNotFoundError:
        return True


REQUIREMENTS: dict[str, Callable[[], bool]] = {
    "root": lambda: os.geteuid() == 0,
    "runc": lambda: shutil.which("runc") is not None,
    "slurm": lambda: all(shutil.which(p) for p in ("srun", "sbatch", "squeue"))
    and shutil.which("slurmd", path="/usr/sbin:/usr/bin") is not None,
    "registry": lambda: shutil.which("docker-registry") is not None,
    "squashfs": lambda: shutil.which("tar2sqfs") is not None,
    "fuse": _have_fuse,
    # rootless FUSE mounts: Debian's udev rule makes /dev/fuse 0666; scripts/install-deps.sh
    # does the same where no udev runs (containers)
    "userfuse": lambda: _have_fuse() and os.stat("/dev/fuse").st_mode & 0o006 == 0o006,
    "userns": _have_userns,
    # an interpreter other users can run (the pytest one may live under a private home)
    "system-python": lambda: os.access("/usr/bin/python3", os.X_OK),
}

# What the testbed fixture needs; tests that use it get these requirements implicitly.
TESTBED_NEEDS = ("root", "slurm", "registry")


TIERS = ("unit", "integration", "faults")


def pytest_configure(config: pytest.Config) -> None:
    # pyproject.toml registers unit and integration; the faults tier is registered here
    config.addinivalue_line("markers", "faults: fault-injection tests (set by directory)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.fspath))
        try:
            tier = path.relative_to(ROOT / "tests").parts[0]
        except ValueError:
            tier = ""
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))
        for mark in item.iter_markers("requires"):
            for what in mark.args:
                if what not in REQUIREMENTS:
                    raise pytest.UsageError(
                        f"{item.nodeid}: unknown requirement {what!r}; known: "
                        f"{', '.join(sorted(REQUIREMENTS))}")


def _missing(needs: tuple[str, ...] | list[str]) -> list[str]:
    return [w for w in needs if not REQUIREMENTS[w]()]


def pytest_runtest_setup(item: pytest.Item) -> None:
    needs: list[str] = []
    for mark in item.iter_markers("requires"):
        needs += mark.args
    if "testbed" in getattr(item, "fixturenames", ()):
        needs += TESTBED_NEEDS
    missing = _missing(needs)
    if missing:
        reason = f"needs {', '.join(missing)}"
        if IN_CI:
            pytest.fail(f"{reason}, which CI must provide", pytrace=False)
        pytest.skip(reason)


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith(("SLURM_", "HPC_EXEC_")) or key == "SQUEUE_FORMAT":
            monkeypatch.delenv(key)


@pytest.fixture(autouse=True)
def _no_programs_in_unit_tests(request: pytest.FixtureRequest,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    if request.node.get_closest_marker("unit") is None:
        return
    from hpc_exec import process

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"unit tests must not run programs: {args[:1]!r}")

    for name in ("run", "spawn", "launch", "feed", "foreground"):
        monkeypatch.setattr(process, name, refuse)


@dataclass(frozen=True)
class LiveTestbed:
    state_dir: Path
    env: dict[str, str]  # the 'hpc-exec testbed env' variables

    def environ(self, **extra: str) -> dict[str, str]:
        """os.environ plus the testbed variables plus ``extra``: for subprocesses."""
        out = dict(os.environ)
        out.update(self.env)
        out.update(extra)
        return out

    @property
    def registry(self) -> str:
        return self.env["HPC_EXEC_TESTBED_REGISTRY"]

    @property
    def private_registry(self) -> str:
        return self.env["HPC_EXEC_TESTBED_PRIVATE_REGISTRY"]

    @property
    def image_small(self) -> str:
        return self.env["HPC_EXEC_TESTBED_IMAGE_SMALL"]

    @property
    def image_python(self) -> str:
        return self.env["HPC_EXEC_TESTBED_IMAGE_PYTHON"]

    @property
    def image_mpich(self) -> str:
        """MPICH image whose libmpich is ABI-compatible with the host's (version 12.1.0)."""
        return self.env["HPC_EXEC_TESTBED_IMAGE_MPICH"]

    @property
    def image_mpich_incompatible(self) -> str:
        """MPICH image whose libmpich has another major version (13.0.0)."""
        return self.env["HPC_EXEC_TESTBED_IMAGE_MPICH_INCOMPATIBLE"]

    @property
    def image_parsl(self) -> str:
        """Debian python3 with parsl at exactly this Python's parsl version."""
        return self.env["HPC_EXEC_TESTBED_IMAGE_PARSL"]

    @property
    def image_parsl_other(self) -> str:
        """Debian python3 with another parsl version (the version-mismatch test)."""
        return self.env["HPC_EXEC_TESTBED_IMAGE_PARSL_OTHER"]


@pytest.fixture(scope="session")
def testbed() -> Iterator[LiveTestbed]:
    """The live testbed: reused if already up (and left up), else started and stopped after."""
    missing = _missing(TESTBED_NEEDS)
    if missing:
        if IN_CI:
            pytest.fail(f"the testbed needs {', '.join(missing)}, which CI must provide")
        pytest.skip(f"the testbed needs {', '.join(missing)}")
    import hpc_exec.testbed as tb

    state_dir = Path(os.environ.get("HPC_EXEC_TESTBED_DIR") or tb.default_state_dir())
    was_up = tb.status(state_dir).healthy
    tb.up(state_dir)
    try:
        yield LiveTestbed(state_dir, tb.env(state_dir))
    finally:
        if not was_up and not os.environ.get("HPC_EXEC_TESTBED_KEEP"):
            tb.down(state_dir)


# -- leak checks shared by the Slurm tests of the integration and faults tiers -----------------

def pids_with_cmdline(argv: list[str]) -> list[int]:
    """The pids whose command line is exactly ``argv``."""
    want = "\0".join(argv).encode() + b"\0"
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if f.read() == want:
                        out.append(int(entry))
            except OSError:
                pass
    return out


def loops_backed_by(path: Path) -> list[str]:
    """The loop devices whose backing file is ``path``."""
    out = []
    for dev in Path("/sys/block").glob("loop*"):
        try:
            if (dev / "loop" / "backing_file").read_text().strip() == str(path):
                out.append(dev.name)
        except OSError:
            pass
    return out


def poll(what: str, done: Callable[[], object], timeout: float) -> None:
    """Wait until ``done()`` is true; AssertionError naming ``what`` after ``timeout`` s."""
    import time

    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"still {what} after {timeout} s")
        time.sleep(0.1)
