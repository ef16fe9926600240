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

import collections
import http.client
import http.server
import os
import shutil
import threading
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


# -- a registry proxy for the image tests of the integration and faults tiers ------------------

HOLD_LIMIT = 120.0  # s: a held request is released after this, whatever the test does


class RegistryProxy:
    """A plain-http proxy on 127.0.0.1 in front of a testbed registry. It counts requests per
    (method, path) and can corrupt chosen blobs, answer 503 or break mid-body a number of times,
    or hold GETs of blobs in ``hold`` until :meth:`release` (at most HOLD_LIMIT s): tests count
    downloads and feed faults without touching the real registry."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.hold: set[str] = set()  # blob digests whose GETs wait for release()
        self.held = threading.Event()  # set when a held request arrived
        self.gate = threading.Event()
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self.corrupt: set[str] = set()
        self.fail: dict[str, int] = {}  # blob digest -> how many GETs answer 503 first
        self.truncate: dict[str, int] = {}  # blob digest -> how many GETs break mid-body
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                try:
                    self._relay()
                except OSError:  # the client was killed (SIGKILL tests) or went away
                    self.close_connection = True

            def _relay(self) -> None:
                path = self.path.split("?")[0]
                with proxy.lock:
                    proxy.counts[(self.command, path)] += 1
                if self.command == "GET" and path.rsplit("/", 1)[-1] in proxy.hold:
                    proxy.held.set()
                    proxy.gate.wait(HOLD_LIMIT)
                host, _, port = proxy.upstream.partition(":")
                conn = http.client.HTTPConnection(host, int(port), timeout=60)
                try:
                    self._exchange(conn, path)
                finally:
                    conn.close()

            def _exchange(self, conn: http.client.HTTPConnection, path: str) -> None:
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "connection")}
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                digest = path.rsplit("/", 1)[-1]
                if "/blobs/" in path and digest in proxy.corrupt and data:
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                with proxy.lock:
                    fail = self.command == "GET" and proxy.fail.get(digest, 0) > 0
                    cut = self.command == "GET" and proxy.truncate.get(digest, 0) > 0
                    if fail:
                        proxy.fail[digest] -= 1
                    elif cut:
                        proxy.truncate[digest] -= 1
                if fail:
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    conn.close()
                    return
                if cut:  # promise the whole body, send half, hang up
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[:len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    conn.close()
                    return
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def blob_gets(self) -> dict[str, int]:
        with self.lock:
            return {p.rsplit("/", 1)[-1]: n for (m, p), n in self.counts.items()
                    if m == "GET" and "/blobs/" in p}

    def manifest_requests(self) -> int:
        with self.lock:
            return sum(n for (m, p), n in self.counts.items() if "/manifests/" in p)

    def reset(self) -> None:
        with self.lock:
            self.counts.clear()

    def release(self) -> None:
        self.gate.set()

    def close(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()
