"""A real mini-cluster on one machine: munge, slurmctld, N slurmd nodes and two registries.

``up`` is idempotent (it starts only what is not running), ``down`` stops exactly the processes
``up`` recorded (by pid and start time) and works after a crash, ``status`` reports each part.
Nothing outside the state directory is written; /etc is never touched. See docs/testbed.md.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hpc_exec.errors import InvalidInput, TestbedError
from hpc_exec.testbed.state import TestbedLayout, TestbedState, default_state_dir

__all__ = ["Status", "TestbedLayout", "TestbedState", "default_state_dir", "down", "env",
           "status", "up"]

log = logging.getLogger(__name__)

SMALL_REPO, SMALL_TAG = "testbed/busybox", "latest"
PYTHON_REPO, PYTHON_TAG = "testbed/debian-python", "bookworm"
MPICH_REPO = "testbed/mpich"
PARSL_REPO = "testbed/parsl"


@contextmanager
def _locked(layout: TestbedLayout) -> Iterator[None]:
    """One testbed command at a time per state dir (a second waits up to 15 minutes)."""
    from filelock import FileLock, Timeout

    try:
        with FileLock(str(layout.lock_file), timeout=900):
            yield
    except Timeout as exc:
        raise TestbedError(f"another testbed command holds {layout.lock_file}") from exc


def _check_root() -> None:
    if os.geteuid() != 0:
        raise TestbedError(
            "the testbed must run as root (slurmd, munged and node namespaces need it)",
            hint="run it with sudo")


def _assign_ports(state: TestbedState, wanted: dict[str, int | None]) -> None:
    """Explicit ports must be free; remembered ports are kept while free; the rest are picked.

    A remembered port that something else took meanwhile (after a reboot, say) is re-picked.
    """
    from hpc_exec.errors import InvalidInput
    from hpc_exec.testbed import daemons

    taken = set(state.ports.values())
    for name, port in wanted.items():
        running = state.proc(name)
        if name in state.ports and (port is None or port == state.ports[name]):
            if running is not None and running.alive():
                continue
            try:
                daemons.check_port_free(state.ports[name], name)
                continue
            except InvalidInput:
                if port is not None:
                    raise
                log.warning("%s port %d is taken now; picking another", name, state.ports[name])
                port = None
        if port is not None:
            daemons.check_port_free(port, name)
            state.ports[name] = port
        else:
            state.ports[name] = daemons.pick_free_port(taken)
        taken.add(state.ports[name])


def up(
    state_dir: Path | None = None,
    *,
    nodes: int = 3,
    slurmctld_port: int | None = None,
    registry_port: int | None = None,
    private_registry_port: int | None = None,
    images: bool = True,
    progress: Callable[[str], None] = lambda _m: None,
) -> TestbedState:
    """Start whatever part of the testbed is not running and return its state."""
    from hpc_exec.testbed import registry, slurm

    if nodes < 1 or nodes > 16:
        raise InvalidInput(f"node count {nodes} is not between 1 and 16")
    _check_root()
    layout = TestbedLayout(state_dir or default_state_dir())
    layout.ensure()
    with _locked(layout):
        state = TestbedState.load(layout) or TestbedState()
        names = slurm.node_names(nodes)
        if state.nodes and state.nodes != names and _any_alive(state):
            raise InvalidInput(
                f"the testbed in {layout.root} is running with {len(state.nodes)} nodes, "
                f"not {nodes}", hint="run 'hpc-exec testbed down' first")
        state.nodes = names
        wanted: dict[str, int | None] = {
            "slurmctld": slurmctld_port,
            "registry-plain": registry_port,
            "registry-private": private_registry_port,
        }
        wanted.update({f"slurmd-{n}": None for n in names})
        _assign_ports(state, wanted)
        state.save(layout)
        progress("starting munge and slurm")
        slurm.start_cluster(state, layout)
        progress("starting registries")
        registry.start_registries(state, layout)
        registry.write_site_config(state, layout)
        if images:
            _push_images(state, layout, progress)
        state.save(layout)
        return state


def _push_images(state: TestbedState, layout: TestbedLayout,
                 progress: Callable[[str], None]) -> None:
    from hpc_exec.engine.image.registry import Credentials, RegistryClient
    from hpc_exec.testbed import images, registry

    progress("preparing test images (built once per state dir, a few minutes; then cached)")
    small = images.build_small(layout)
    python = images.build_python(layout)
    mpich = images.build_mpich(layout)
    parsl_version = images.submit_parsl_version()
    parsl_other = images.other_parsl_version(parsl_version)
    parsl = images.build_parsl(layout, parsl_version)
    parsl_old = images.build_parsl(layout, parsl_other, same_deps=False)
    user, password = registry.read_credentials(layout)
    clients = [
        RegistryClient(registry.registry_address(state, "plain"), insecure=True),
        RegistryClient(registry.registry_address(state, "private"),
                       credentials=Credentials(user, password), ca_file=str(layout.ca_cert)),
    ]
    progress("pushing test images")
    for client in clients:
        with client:
            images.push_image(small, client, SMALL_REPO, SMALL_TAG)
            images.push_image(python, client, PYTHON_REPO, PYTHON_TAG)
    with clients[0] as plain:
        for variant in images.MPICH_VARIANTS:
            images.push_image(mpich, plain, MPICH_REPO, variant, variant)
        images.push_image(parsl, plain, PARSL_REPO, parsl_version)
        images.push_image(parsl_old, plain, PARSL_REPO, parsl_other)
    state.images = {
        "small": f"{SMALL_REPO}:{SMALL_TAG}",
        "python": f"{PYTHON_REPO}:{PYTHON_TAG}",
        "mpich": f"{MPICH_REPO}:compatible",
        "mpich-incompatible": f"{MPICH_REPO}:incompatible",
        "parsl": f"{PARSL_REPO}:{parsl_version}",
        "parsl-other": f"{PARSL_REPO}:{parsl_other}",
    }


def _any_alive(state: TestbedState) -> bool:
    return any(p.alive() for p in state.procs)


def down(state_dir: Path | None = None, *, purge: bool = False) -> list[str]:
    """Stop every process ``up`` started. With ``purge``, delete the state dir too.

    Returns the names of the processes that were stopped.
    """
    from hpc_exec.testbed import registry, slurm

    layout = TestbedLayout(state_dir or default_state_dir())
    if not layout.root.exists():
        return []
    state = TestbedState.load(layout)
    stopped: list[str] = []
    if state is not None:
        _check_root()
        with _locked(layout):
            stopped = [p.name for p in state.procs if p.alive()]
            registry.stop_registries(state)
            slurm.stop_cluster(state, layout)
            still = [p.name for p in state.procs if p.alive()]
            if still:
                raise TestbedError(f"could not stop: {', '.join(still)}")
            state.procs = []
            state.save(layout)
    if purge:
        shutil.rmtree(layout.root)
    return stopped


@dataclass(frozen=True)
class Status:
    root: Path
    state: TestbedState | None
    running: dict[str, bool]

    @property
    def healthy(self) -> bool:
        return bool(self.running) and all(self.running.values())


def status(state_dir: Path | None = None) -> Status:
    layout = TestbedLayout(state_dir or default_state_dir())
    state = TestbedState.load(layout) if layout.root.exists() else None
    running: dict[str, bool] = {}
    if state is not None:
        expected = ["munged", "slurmctld", *(f"slurmd-{n}" for n in state.nodes),
                    "registry-plain", "registry-private"]
        for name in expected:
            rec = state.proc(name)
            running[name] = rec is not None and rec.alive()
    return Status(layout.root, state, running)


def env(state_dir: Path | None = None) -> dict[str, str]:
    """The variables scripts and tests use to find the testbed (``testbed env``)."""
    from hpc_exec.testbed import registry

    layout = TestbedLayout(state_dir or default_state_dir())
    state = TestbedState.load(layout) if layout.root.exists() else None
    if state is None or not state.ports:
        raise TestbedError(f"no testbed in {layout.root}; run 'hpc-exec testbed up'")
    plain = registry.registry_address(state, "plain")
    private = registry.registry_address(state, "private")
    out = {
        "SLURM_CONF": str(layout.slurm_conf),
        "HPC_EXEC_TESTBED_DIR": str(layout.root),
        "HPC_EXEC_TESTBED_REGISTRY": plain,
        "HPC_EXEC_TESTBED_PRIVATE_REGISTRY": private,
        "HPC_EXEC_TESTBED_CA": str(layout.ca_cert),
        "HPC_EXEC_TESTBED_CREDENTIALS": str(layout.credentials_file),
        "HPC_EXEC_CONFIG": str(layout.site_config),
    }
    for key, ref in sorted(state.images.items()):  # small, python, mpich, ...
        out[f"HPC_EXEC_TESTBED_IMAGE_{key.upper().replace('-', '_')}"] = f"{plain}/{ref}"
    return out
