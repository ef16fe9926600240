"""Benchmark the OCI hooks: barrier release latency and per-hook start-up cost.

Run: ``python bench/hooks.py [--ranks 16 64] [--repeat 3] [--startup-runs 15]``.

1. **Barrier release latency after the last arrival** for 16 and 64 ranks, as processes on
   this machine: all ranks but one start and arrive, then the last one starts; the latency is
   the time from the last arrival to the moment the last rank is released (each rank logs both
   instants with the same clock). The hook is compared with a baseline written here that does
   what Sarus' hook does: arrival and departure files, every rank listing the arrival dir every
   0.1 s. Target: >= 5x faster at 64 ranks.
2. **Per-hook start-up latency**: each hook in its not-applicable path, run the way hooks.d
   runs it (``python -I -S <module file>``, hpc_exec.hooks.command) and, for comparison, via its
   console script (which pays for ``site`` and every ``.pth`` file of the environment). It is
   measured three ways: as the wall time of the hook process; as the gap it adds between two
   timestamp hooks run one after the other here (T, hook, T against T, T); and, when the
   testbed is up and we are root, as that gap inside real ``hpc-exec run`` containers, where
   runc runs the hooks at createContainer, with ``mergeHooks`` off and on, plus the whole
   ``hpc-exec run`` cycle with all Python hooks selected against none (see
   :func:`in_containers`). Target: <= 15 ms per Python hook.

Prints a table with the ratios and writes bench/results/hooks.json (git-ignored).
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and sys.argv[1:2] == ["--exec-with-stdin"]:
    # Launcher for one barrier rank (before the heavier imports): the state file as stdin.
    os.dup2(os.open(sys.argv[2], os.O_RDONLY), 0)
    os.execv(sys.argv[3], sys.argv[3:])

import argparse
import json
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from subprocess import Popen

BASELINE_POLL = 0.1  # Sarus' hook checks every 0.1 s
RESULTS = Path(__file__).resolve().parent / "results" / "hooks.json"
_EVENT = re.compile(r"rank (\d+) (arrived|released) at ([0-9.]+)")


# --- the Sarus-style baseline, run as its own process (stdlib only, like a hook) --------------

def baseline_rank(directory: str, rank: int, ntasks: int) -> int:
    """Arrival/departure barrier polling every 0.1 s by listing the dir (Sarus' algorithm)."""
    arrival, departure = os.path.join(directory, "arrival"), os.path.join(directory, "departure")
    os.makedirs(arrival, exist_ok=True)
    os.makedirs(departure, exist_ok=True)
    open(os.path.join(arrival, str(rank)), "w").close()
    print(f"rank {rank} arrived at {time.time():.6f}", file=sys.stderr, flush=True)
    deadline = time.monotonic() + 120
    while len(os.listdir(arrival)) < ntasks:
        if time.monotonic() > deadline:
            return 1
        time.sleep(BASELINE_POLL)
    print(f"rank {rank} released at {time.time():.6f}", file=sys.stderr, flush=True)
    open(os.path.join(departure, str(rank)), "w").close()
    if rank == 0:
        while len(os.listdir(departure)) < ntasks:
            if time.monotonic() > deadline:
                return 1
            time.sleep(BASELINE_POLL)
        shutil.rmtree(directory)
    return 0


# --- helpers ----------------------------------------------------------------------------------

def make_bundle(root: Path, name: str, env: dict[str, str]) -> str:
    """A bundle dir with a config.json carrying ``env``; returns the OCI state JSON for it."""
    bundle = root / name
    (bundle / "rootfs").mkdir(parents=True, exist_ok=True)
    (bundle / "config.json").write_text(json.dumps({
        "ociVersion": "1.0.2", "root": {"path": "rootfs"},
        "process": {"user": {"uid": os.getuid(), "gid": os.getgid()},
                    "env": [f"{k}={v}" for k, v in env.items()]}}))
    return json.dumps({"ociVersion": "1.0.2", "id": name, "status": "creating",
                       "pid": os.getpid(), "bundle": str(bundle)})


def run_barrier(kind: str, ntasks: int, work: Path) -> tuple[float, float]:
    """One barrier of ``ntasks`` processes: (release, exit) latency after the last arrival.

    Release: the last rank's own log line saying it passed the barrier. Exit: when the bench
    saw the last rank's process end (includes reaping 64 processes from threads, so an upper
    bound of when every container could start).
    """
    from hpc_exec.hooks import command

    from hpc_exec import process

    base = work / f"base-{kind}-{ntasks}-{time.monotonic_ns()}"
    job = "900"
    hook_env = {"HOOK_BASE_DIR": str(base), "PASSWD_FILE": "/etc/passwd",
                "HOOK_LOG_LEVEL": "debug", "SYNC_TIMEOUT": "120"}
    import pwd

    user = pwd.getpwuid(os.getuid()).pw_name
    step_dir = base / user / ".oci-hooks" / "slurm-global-sync" / f"{job}.0"

    def rank_argv(rank: int) -> list[str]:
        if kind == "hook":
            return command("slurm-global-sync")
        return [sys.executable, "-I", "-S", __file__, "--baseline-rank", str(step_dir),
                str(rank), str(ntasks)]

    def start(rank: int) -> Popen[bytes]:
        env = {"SLURM_JOB_ID": job, "SLURM_STEP_ID": "0", "SLURM_NTASKS": str(ntasks),
               "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank)}  # all on one node
        state = make_bundle(work / f"bundles-{ntasks}", f"r{rank}", env)
        state_file = work / f"state-{rank}.json"
        state_file.write_text(state)
        # spawn, not run: no bench thread per rank competing with the ranks for the 2 cores;
        # the rank's stdin is its state file and its stderr (the events) a log file.
        return process.spawn([sys.executable, "-I", "-S", __file__, "--exec-with-stdin",
                              str(state_file), *rank_argv(rank)],
                             desc=f"{kind} barrier rank {rank}", env=hook_env,
                             log_path=work / f"log-{kind}-{ntasks}-{rank}")

    last = ntasks - 1
    for rank in range(ntasks):
        (work / f"log-{kind}-{ntasks}-{rank}").unlink(missing_ok=True)
    procs = [start(r) for r in range(last)]
    try:
        arrival = step_dir / "arrival"
        deadline = time.monotonic() + 120
        while not (arrival.is_dir() and len(os.listdir(arrival)) == last):
            if any(p.poll() is not None for p in procs):
                raise RuntimeError(f"a {kind} rank ended before the last one started")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {kind} ranks did not all arrive")
            time.sleep(0.02)
        time.sleep(0.3)  # let the waiting ranks settle into their poll loops
        procs.append(start(last))
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
        exited = time.time()
    finally:
        for p in procs:
            if p.poll() is None:
                process.terminate(p.pid, timeout=5)
    if any(p.returncode for p in procs):
        raise RuntimeError(f"{kind}: a rank failed (logs in {work})")
    arrived: list[float] = []
    released: list[float] = []
    for rank in range(ntasks):
        text = (work / f"log-{kind}-{ntasks}-{rank}").read_text()
        for _, what, when in _EVENT.findall(text):
            (arrived if what == "arrived" else released).append(float(when))
    if len(arrived) != ntasks or len(released) != ntasks:
        raise RuntimeError(f"{kind}: expected {ntasks} arrivals/releases in the logs")
    shutil.rmtree(base, ignore_errors=True)
    return max(released) - max(arrived), exited - max(arrived)


def time_process(argv: list[str], state: str, env: dict[str, str], runs: int) -> float:
    """Median wall time in ms of running ``argv`` with ``state`` on stdin."""
    from hpc_exec import process

    times = []
    for _ in range(runs):
        t = time.perf_counter()
        process.run(argv, input=state, env=env, timeout=60, desc="timing a hook")
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def timestamp_gap(hook_argv: list[str] | None, state: str, env: dict[str, str],
                  logfile: Path, runs: int) -> float:
    """Median ms between two timestamp hooks with ``hook_argv`` (or nothing) run in between."""
    from hpc_exec.hooks import command

    from hpc_exec import process

    gaps = []
    for _ in range(runs):
        logfile.unlink(missing_ok=True)
        process.run(command("timestamp"), input=state, env={"TIMESTAMP_HOOK_MESSAGE": "before"},
                    timeout=60, desc="timestamp hook")
        if hook_argv:
            process.run(hook_argv, input=state, env=env, timeout=60, desc="hook")
        process.run(command("timestamp"), input=state, env={"TIMESTAMP_HOOK_MESSAGE": "after"},
                    timeout=60, desc="timestamp hook")
        stamps = [float(line[1:line.index("]")]) for line in logfile.read_text().splitlines()]
        gaps.append(stamps[1] - stamps[0])
    return statistics.median(gaps) * 1e3


def startup(work: Path, runs: int) -> dict[str, dict[str, float]]:
    from hpc_exec.hooks import HOOKS, command

    logfile = work / "timestamps.log"
    # No SLURM_*, no other hook's trigger: every hook takes its not-applicable path; the
    # timestamp hook's log file is what the timestamp measurement itself needs.
    state = make_bundle(work, "startup", {"TIMESTAMP_HOOK_LOGFILE": str(logfile)})
    env: dict[str, str] = {}
    floor = time_process([sys.executable, "-I", "-S", "-c", "pass"], state, env, runs)
    empty_gap = timestamp_gap(None, state, env, logfile, runs)
    out: dict[str, dict[str, float]] = {"(python -I -S -c pass)": {"process_ms": floor}}
    bindir = os.path.dirname(sys.executable)
    for name in HOOKS:
        if name == "timestamp":
            continue
        argv = command(name)
        row = {"process_ms": time_process(argv, state, env, runs),
               "added_between_timestamps_ms": timestamp_gap(argv, state, env, logfile, runs)
               - empty_gap}
        script = os.path.join(bindir, f"hpc-hook-{name}")
        if os.path.exists(script):
            from hpc_exec.errors import CommandFailed

            try:  # the console script needs the environment's site-packages and .pth files
                row["console_script_process_ms"] = time_process([script], state, env, runs)
            except CommandFailed as exc:
                print(f"  ({script} failed: {exc})")
        out[name] = row
    out["timestamp"] = {"process_ms": time_process(command("timestamp"), state, {}, runs),
                        "gap_between_two_timestamp_hooks_ms": empty_gap}
    return out


def _hook_file(argv: list[str], env: list[str], message: str | None = None) -> str:
    entry_env = [*env, f"TIMESTAMP_HOOK_MESSAGE={message}"] if message else env
    return json.dumps({"version": "1.0.0",
                       "hook": {"path": argv[0], "args": argv,
                                "env": entry_env, "timeout": 60},
                       "when": {"always": True}, "stages": ["createContainer"]})


def in_containers(work: Path, runs: int) -> dict[str, dict[str, float]]:
    """Added latency of the hooks inside ``hpc-exec run`` (runc, createContainer stage), with
    ``mergeHooks`` off (each hook its own interpreter) and on (our Python hooks of a stage
    chained in one interpreter, hooks/_chain.py), measured side by side:

    * per hook: the gap between two timestamp hooks around it, minus the gap with nothing
      between them. Off, that is a whole interpreter per hook; on, all three run in one chain,
      so it is what one more hook adds to a chain (fork, import, work);
    * ``all_N_hooks_per_hook``: the full ``hpc-exec run IMG true`` cycle with every Python hook
      but timestamp selected (not-applicable paths) minus the cycle with no hook, divided by
      their number: the start-up cost per Python hook a container pays on a site that
      installs them all. Runs alternate between the two configurations and modes.

    Needs the testbed (its registry and busybox image) and root; returns {} without them.
    """
    from hpc_exec.hooks import HOOKS, command

    from hpc_exec import process

    try:
        import hpc_exec.testbed as tb

        state_dir = Path(os.environ.get("HPC_EXEC_TESTBED_DIR") or tb.default_state_dir())
        if os.geteuid() != 0 or not tb.status(state_dir).healthy:
            return {}
        tb_env = tb.env(state_dir)
    except Exception as exc:  # noqa: BLE001 - optional part of the bench
        print(f"  (in containers: skipped, no testbed: {exc})")
        return {}
    site = work / "site"
    hooks_dir = site / "hooks.d"
    hooks_dir.mkdir(parents=True)
    configs = {}
    for mode, merge in (("separate", "false"), ("chained", "true")):
        configs[mode] = site / f"config-{mode}.yaml"
        configs[mode].write_text(
            f'insecureRegistries: ["{tb_env["HPC_EXEC_TESTBED_REGISTRY"]}"]\n'
            f"hooksDir: {hooks_dir}\ntempDir: {site}\nmergeHooks: {merge}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(tb_env, HPC_EXEC_HOME=str(site / "home"))
    image = tb_env["HPC_EXEC_TESTBED_IMAGE_SMALL"]
    exe = str(Path(sys.executable).parent / "hpc-exec")
    process.run([exe, "pull", image], env={**env, "HPC_EXEC_CONFIG": str(configs["chained"])},
                timeout=600, desc="pulling the bench image")
    logfile = site / "timestamps.log"
    hook_env = [f"HOOK_BASE_DIR={site}", "PASSWD_FILE=/etc/passwd"]
    others = [name for name in HOOKS if name != "timestamp"]

    def install(between: list[str], stamps: bool) -> None:
        for f in hooks_dir.iterdir():
            f.unlink()
        if stamps:
            (hooks_dir / "00-before.json").write_text(
                _hook_file(command("timestamp"), [], "before"))
            (hooks_dir / "99-after.json").write_text(
                _hook_file(command("timestamp"), [], "after"))
        for i, name in enumerate(between):
            (hooks_dir / f"{i + 1:02d}-{name}.json").write_text(
                _hook_file(command(name), hook_env))

    def run_once(mode: str) -> float:
        begin = time.perf_counter()
        process.run([exe, "run", "-e", f"TIMESTAMP_HOOK_LOGFILE={logfile}", image, "true"],
                    env={**env, "HPC_EXEC_CONFIG": str(configs[mode])}, timeout=120,
                    desc="hpc-exec run")
        return time.perf_counter() - begin

    def gaps(between: list[str]) -> dict[str, float]:
        install(between, stamps=True)
        got: dict[str, list[float]] = {mode: [] for mode in configs}
        for _ in range(runs):
            for mode in configs:  # interleaved: both modes see the same load
                logfile.unlink(missing_ok=True)
                run_once(mode)
                stamps = [float(line[1:line.index("]")])
                          for line in logfile.read_text().splitlines()]
                got[mode].append(stamps[-1] - stamps[0])
        return {mode: statistics.median(v) * 1e3 for mode, v in got.items()}

    empty = gaps([])
    out: dict[str, dict[str, float]] = {
        mode: {"gap_between_two_timestamp_hooks_ms": empty[mode]} for mode in configs}
    for name in others:
        with_hook = gaps([name])
        for mode in configs:
            out[mode][name] = with_hook[mode] - empty[mode]
    cycles: dict[str, list[float]] = {f"{mode}/{what}": [] for mode in configs
                                      for what in ("none", "all")}
    for _ in range(runs):
        for what, between in (("none", []), ("all", others)):
            install(between, stamps=False)
            for mode in configs:
                cycles[f"{mode}/{what}"].append(run_once(mode))
    for mode in configs:
        none = statistics.median(cycles[f"{mode}/none"])
        full = statistics.median(cycles[f"{mode}/all"])
        out[mode][f"all_{len(others)}_hooks_per_hook"] = (full - none) / len(others) * 1e3
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--startup-runs", type=int, default=15)
    parser.add_argument("--container-runs", type=int, default=7,
                        help="runs per hook inside hpc-exec run on the testbed (0: skip)")
    parser.add_argument("--baseline-rank", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.baseline_rank:
        directory, rank, ntasks = args.baseline_rank
        return baseline_rank(directory, int(rank), int(ntasks))

    results: dict[str, object] = {"machine": {"cpus": os.cpu_count(),
                                              "loadavg": os.getloadavg()}}
    barrier: dict[str, dict[str, float | list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="hpc-exec-bench-hooks-") as tmp:
        work = Path(tmp)
        print(f"barrier release latency after the last arrival (median of {args.repeat})")
        for n in args.ranks:
            # interleaved, so both see the same background load
            runs: dict[str, list[tuple[float, float]]] = {"hook": [], "baseline": []}
            for _ in range(args.repeat):
                for kind, got in runs.items():
                    got.append(run_barrier(kind, n, work))
            hook, base = (statistics.median(r[0] for r in runs[k]) for k in ("hook", "baseline"))
            hook_exit, base_exit = (statistics.median(r[1] for r in runs[k])
                                    for k in ("hook", "baseline"))
            barrier[str(n)] = {
                "hook_release_ms": hook * 1e3, "baseline_release_ms": base * 1e3,
                "release_speedup": base / hook,
                "hook_all_exited_ms": hook_exit * 1e3, "baseline_all_exited_ms": base_exit * 1e3,
                "exit_speedup": base_exit / hook_exit,
                "hook_release_runs_ms": [r[0] * 1e3 for r in runs["hook"]],
                "baseline_release_runs_ms": [r[0] * 1e3 for r in runs["baseline"]]}
            print(f"  {n:3d} ranks: release: hook {hook * 1e3:6.1f} ms, baseline (0.1 s polling) "
                  f"{base * 1e3:6.1f} ms -> {base / hook:4.1f}x "
                  f"({'meets' if base / hook >= 5 else 'MISSES'} the 5x target); "
                  f"all exited: {hook_exit * 1e3:6.1f} vs {base_exit * 1e3:6.1f} ms "
                  f"-> {base_exit / hook_exit:4.1f}x")
        results["barrier_release_latency"] = barrier
        print(f"per-hook start-up latency, not-applicable path (median of {args.startup_runs})")
        start = startup(work, args.startup_runs)
        results["startup"] = start
        for name, row in start.items():
            cells = "   ".join(f"{k} {v:6.1f}" for k, v in row.items())
            print(f"  {name:24s} {cells}")
        print(f"per-hook added latency inside hpc-exec run (runc createContainer), "
              f"median of {args.container_runs}, not-applicable path")
        inside = in_containers(work, args.container_runs) if args.container_runs else {}
        results["in_containers_added_ms"] = inside
        if inside:
            modes = list(inside)
            print(f"  {'':36s} " + "  ".join(f"{m:>10s}" for m in modes))
            for name in inside[modes[0]]:
                cells = "  ".join(f"{inside[m][name]:7.1f} ms" for m in modes)
                verdict = ""
                if not name.startswith("gap"):
                    best = min(inside[m][name] for m in modes)
                    verdict = "  (meets the 15 ms target)" if best <= 15 else \
                        "  (MISSES the 15 ms target)"
                print(f"  {name:36s} {cells}{verdict}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
