"""Where the testbed keeps everything, and what it remembers between ``up`` and ``down``.

All testbed state lives under one directory (``--state-dir``, else ``$HPC_EXEC_TESTBED_DIR``,
else ``/var/lib/hpc-exec-testbed``). Every user of the cluster must reach it (munge socket,
slurm.conf), so it may not sit below a private home such as /root. :class:`TestbedLayout` is the only place that joins
paths under it. :class:`TestbedState` is saved as ``state.json`` by temp file + ``os.replace``,
so a crash never leaves a half-written record; it lists every process we started (pid plus the
kernel's start time, so a recycled pid is never mistaken for ours).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hpc_exec import process
from hpc_exec.errors import InvalidInput, TestbedError
from hpc_exec.files import replace_file

__all__ = ["ProcRecord", "TestbedLayout", "TestbedState", "default_state_dir", "proc_starttime"]

FORMAT_VERSION = 1


def default_state_dir() -> Path:
    env = os.environ.get("HPC_EXEC_TESTBED_DIR")
    return Path(env) if env else Path("/var/lib/hpc-exec-testbed")


class TestbedLayout:
    """Every path under the testbed state directory."""

    __test__ = False  # not a pytest class

    def __init__(self, root: Path) -> None:
        if not root.is_absolute():
            root = Path.cwd() / root
        self.root = root

    # top level
    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def lock_file(self) -> Path:
        return self.root / "testbed.lock"

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    @property
    def log(self) -> Path:
        return self.root / "log"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def site_config(self) -> Path:
        """An hpc-exec site config for using this testbed (``testbed env`` exports it)."""
        return self.etc / "hpc-exec.yaml"

    @property
    def hooks_dir(self) -> Path:
        """The standard hooks.d (``hpc-exec config init``'s) that the site config names."""
        return self.etc / "hooks.d"

    @property
    def hook_base_dir(self) -> Path:
        """HOOK_BASE_DIR of the SSH hook: users' keys under <dir>/<user>/.oci-hooks/ssh."""
        return self.root / "hook-base"

    @property
    def hosts_file(self) -> Path:
        """The host's /etc/hosts plus the nodes' names; containers get it (hostsFile)."""
        return self.etc / "hosts"

    # munge
    @property
    def munge_key(self) -> Path:
        return self.etc / "munge.key"

    @property
    def munge_socket(self) -> Path:
        return self.run / "munge" / "munge.socket"

    @property
    def munge_pid(self) -> Path:
        return self.run / "munge" / "munged.pid"

    @property
    def munge_seed(self) -> Path:
        return self.run / "munge" / "munged.seed"

    # slurm
    @property
    def slurm_conf(self) -> Path:
        return self.etc / "slurm.conf"

    @property
    def slurmctld_state(self) -> Path:
        return self.root / "slurm" / "ctld"

    @property
    def slurmd_spool(self) -> Path:
        """Where slurm.conf says the spool is; each node bind-mounts its own dir over it."""
        return self.root / "slurm" / "slurmd-spool"

    @property
    def slurmd_run(self) -> Path:
        """Where slurm.conf says the pid file is; each node bind-mounts its own dir over it."""
        return self.root / "slurm" / "slurmd-run"

    def node_dir(self, node: str) -> Path:
        return self.root / "nodes" / node

    def node_spool(self, node: str) -> Path:
        return self.node_dir(node) / "spool"

    def node_run(self, node: str) -> Path:
        return self.node_dir(node) / "run"

    def log_file(self, name: str) -> Path:
        return self.log / f"{name}.log"

    # registry
    def registry_dir(self, variant: str) -> Path:
        return self.root / "registry" / variant

    def registry_config(self, variant: str) -> Path:
        return self.registry_dir(variant) / "config.yml"

    def registry_data(self, variant: str) -> Path:
        return self.registry_dir(variant) / "data"

    @property
    def tls_dir(self) -> Path:
        return self.root / "tls"

    @property
    def ca_cert(self) -> Path:
        return self.tls_dir / "ca.pem"

    @property
    def credentials_file(self) -> Path:
        """user:password for the private registry, mode 0600."""
        return self.etc / "registry-credentials"

    @property
    def htpasswd(self) -> Path:
        return self.registry_dir("private") / "htpasswd"

    # image build cache (survives down; removed by down --purge)
    @property
    def image_cache(self) -> Path:
        return self.root / "image-cache"

    def ensure(self) -> None:
        """Create the directory tree; a one-line error when the root is not writable."""
        dirs = [self.root, self.etc, self.log, self.run, self.munge_socket.parent,
                self.slurmctld_state, self.slurmd_spool, self.slurmd_run, self.tls_dir,
                self.image_cache]
        try:
            for d in dirs:
                d.mkdir(parents=True, exist_ok=True)
            os.chmod(self.root, 0o755)
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".probe-"):
                pass
        except OSError as exc:
            raise InvalidInput(
                f"testbed state directory {self.root} is not writable: "
                f"{exc.strerror or exc}",
                hint="pass --state-dir or set HPC_EXEC_TESTBED_DIR to a writable directory",
            ) from exc
        for parent in self.root.parents:
            if not os.stat(parent).st_mode & 0o001:
                raise InvalidInput(
                    f"testbed state directory {self.root} is below {parent}, which other users "
                    "cannot enter (munged and Slurm clients need to)",
                    hint="choose a state dir outside private homes, e.g. the default "
                    "/var/lib/hpc-exec-testbed",
                )


def proc_starttime(pid: int) -> int | None:
    """The kernel start time (clock ticks since boot) of ``pid``, or None if it is gone."""
    st = process.proc_stat(pid)
    if st is None or st.state in ("Z", "X"):
        return None
    return st.starttime


@dataclass
class ProcRecord:
    name: str  # "munged", "slurmctld", "slurmd-node1", "registry-plain", ...
    pid: int
    starttime: int

    def alive(self) -> bool:
        """True if the process we started is still running (not a recycled pid)."""
        return proc_starttime(self.pid) == self.starttime


@dataclass
class TestbedState:
    __test__ = False

    version: int = FORMAT_VERSION
    nodes: list[str] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)
    procs: list[ProcRecord] = field(default_factory=list)
    images: dict[str, str] = field(default_factory=dict)  # "small"/"python" -> repo:tag

    @classmethod
    def load(cls, layout: TestbedLayout) -> TestbedState | None:
        try:
            raw = json.loads(layout.state_file.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise TestbedError(f"cannot read testbed state {layout.state_file}: {exc}") from exc
        if raw.get("version") != FORMAT_VERSION:
            raise TestbedError(
                f"testbed state {layout.state_file} has format version {raw.get('version')!r}, "
                f"expected {FORMAT_VERSION}",
                hint="run 'hpc-exec testbed down --purge' with the version that created it",
            )
        raw["procs"] = [ProcRecord(**p) for p in raw.get("procs", [])]
        return cls(**raw)

    def save(self, layout: TestbedLayout) -> None:
        data = json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"
        replace_file(layout.state_file, data, mode=0o600, fsync=True)

    def record(self, name: str, pid: int) -> ProcRecord:
        start = proc_starttime(pid)
        if start is None:
            raise TestbedError(f"{name} (pid {pid}) exited right after it was started")
        rec = ProcRecord(name, pid, start)
        self.procs = [p for p in self.procs if p.name != name] + [rec]
        return rec

    def proc(self, name: str) -> ProcRecord | None:
        for p in self.procs:
            if p.name == name:
                return p
        return None
