"""Benchmark the per-task cycle of ``hpc-exec run`` against bare ``runc run``.

Run: ``python bench/run.py [--n 40] [--tasks 60]`` as root with the testbed up. All in one run,
side by side, on the testbed's busybox image pulled into a scratch repository (warm cache):

1. **Per task**: ``hpc-exec run IMG true`` (reference lookup, config, namespace, squashfs
   loop mount, overlay, config.json, hooks.d, runc, teardown) against ``runc run`` of a bundle
   prepared once by hand (squashfs + overlay already mounted, the same config.json). The two
   are interleaved so that load from other users of the machine hits both alike. Target: p50
   overhead <= 100 ms over runc.
2. **Throughput**: ``--tasks`` tasks of ``hpc-exec run IMG true``, two at a time (the 2-core
   node). Target: >= 12 tasks/s.
3. **Against another version** (``--against DIR``): DIR holds another hpc-exec, e.g. an older
   commit's (``git worktree add /tmp/old <commit> && pip install --no-deps --target
   /tmp/old-py /tmp/old``). It runs under Debian's python3 with ``PYTHONPATH=DIR``, interleaved
   with this version run the same way, and the ratio of their p50 overheads over runc is
   printed (issue 9's target: within 5%).

Prints percentiles and ratios and writes bench/results/run.json (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from hpc_exec import process
from hpc_exec.errors import HpcExecError

RESULTS = Path(__file__).resolve().parent / "results" / "run.json"


def _exe() -> str:
    beside = Path(sys.executable).parent / "hpc-exec"  # not a pyenv shim (a bash script)
    return str(beside) if beside.exists() else (shutil.which("hpc-exec") or "hpc-exec")


CPU: dict[str, list[float]] = {}  # CPU seconds (user + system) of each program's runs


def _timed(argv: list[str], env: dict[str, str], name: str = "") -> float:
    """Wall seconds of one run; its CPU time (all descendants it reaped) goes to CPU[name]."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    # cwd "/": "python3 -m hpc_exec" puts its cwd first on sys.path, and a source checkout's
    # hpc_exec/ (no engine/ inside) would shadow the copy on PYTHONPATH
    process.run(argv, timeout=120, env=env, desc=argv[0], check=True, cwd="/")
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if name:
        CPU.setdefault(name, []).append(after.ru_utime - before.ru_utime
                                        + after.ru_stime - before.ru_stime)
    return wall


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _hand_bundle(root: Path, squashfs: Path, config: dict[str, object]) -> Path:
    """A bundle prepared once, by hand, in this process's private mount namespace."""
    from hpc_exec.engine.runtime import _linux

    _linux.unshare(_linux.CLONE_NEWNS)
    _linux.mount(None, "/", None, _linux.MS_REC | _linux.MS_PRIVATE)
    bundle = root / "bundle"
    for d in ("lower", "upper", "work", "rootfs", "state"):
        (bundle / d).mkdir(parents=True)
    flags = _linux.MS_NOSUID | _linux.MS_NODEV
    _linux.mount_loop(str(squashfs), str(bundle / "lower"), "squashfs",
                      _linux.MS_RDONLY | flags)
    _linux.mount("overlay", str(bundle / "rootfs"), "overlay", flags,
                 f"lowerdir={bundle / 'lower'},upperdir={bundle / 'upper'},"
                 f"workdir={bundle / 'work'}")
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=40, help="runs of each, interleaved")
    parser.add_argument("--tasks", type=int, default=60, help="tasks for the throughput")
    parser.add_argument("--against", type=Path, default=None, metavar="DIR",
                        help="another hpc-exec (a --target install) to compare per task")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/run.py needs root (it prepares the runc bundle by hand)", file=sys.stderr)
        return 2
    import hpc_exec.testbed as tb
    from hpc_exec.engine.runtime.spec import build_config

    tenv = tb.env(tb.default_state_dir())
    image = tenv["HPC_EXEC_TESTBED_IMAGE_SMALL"]
    root = Path(tempfile.mkdtemp(prefix="hpc-exec-bench-run-", dir="/var/tmp"))
    try:
        config = root / "config.yaml"
        # JSON syntax (still YAML): the loader then skips importing the YAML parser.
        config.write_text(json.dumps({"insecureRegistries": [tenv["HPC_EXEC_TESTBED_REGISTRY"]]}))
        env = {**os.environ, **tenv, "HPC_EXEC_CONFIG": str(config),
               "HPC_EXEC_HOME": str(root / "home")}
        # An installed hpc-exec has its bytecode compiled; let the warm-up runs write it.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        exe = _exe()
        process.run([exe, "pull", image], timeout=600, env=env, desc="pull", check=True)
        os.environ.update(HPC_EXEC_CONFIG=str(config), HPC_EXEC_HOME=str(root / "home"))
        from hpc_exec.engine import lookup

        squashfs = Path(lookup(image).squashfs)
        spec = build_config(args=["true"], env={"PATH": "/bin"}, cwd="/", uid=0, gid=0,
                            groups=[], rootfs="rootfs")
        bundle = _hand_bundle(root, squashfs, spec)
        runc = shutil.which("runc") or "/usr/sbin/runc"
        ours_argv = [exe, "run", image, "true"]
        # The same code under Debian's python3, which starts without this machine's
        # site-packages start-up hooks (*.pth: an editable-install finder, a CA injector that
        # imports certifi): what a node with hpc-exec installed for the system Python pays.
        system_python = Path("/usr/bin/python3")
        sys_argv: list[str] = []
        if system_python.exists():
            import hpc_exec

            shutil.copytree(Path(hpc_exec.__file__).parent, root / "py" / "hpc_exec",
                            symlinks=False, ignore=shutil.ignore_patterns("__pycache__"))
            sys_argv = [str(system_python), "-m", "hpc_exec", "run", image, "true"]
        sys_env = {**env, "PYTHONPATH": str(root / "py")}
        against_env = {**env, "PYTHONPATH": str(args.against)} if args.against else {}
        if args.against and not sys_argv:
            print("--against needs Debian's /usr/bin/python3", file=sys.stderr)
            return 2
        for _ in range(3):  # warm up (page cache, pyc files)
            _timed(ours_argv, env)
            if sys_argv:
                _timed(sys_argv, sys_env)
            if against_env:
                _timed(sys_argv, against_env)
        ours: list[float] = []
        bare: list[float] = []
        python: list[float] = []  # the interpreter's own start-up, which we cannot cut
        system: list[float] = []
        system_py: list[float] = []
        against: list[float] = []
        for i in range(args.n):
            runc_argv = [runc, "--root", str(bundle / "state"), "run", "--bundle", str(bundle),
                         f"bench-{i}"]
            bare.append(_timed(runc_argv, env, "bare runc run"))
            ours.append(_timed(ours_argv, env, "hpc-exec run"))
            python.append(_timed([sys.executable, "-c", "pass"], env, "python -c pass"))
            if sys_argv:
                system.append(_timed(sys_argv, sys_env, "hpc-exec run, sys py"))
                system_py.append(_timed([str(system_python), "-c", "pass"], sys_env,
                                        "sys python -c pass"))
            if against_env:
                against.append(_timed(sys_argv, against_env, "against, sys py"))

        failed: list[str] = []

        def throughput_of(argv: list[str], run_env: dict[str, str]) -> float:
            done = 0
            lock = threading.Lock()
            failures_before = len(failed)

            def worker() -> None:
                nonlocal done
                while True:
                    with lock:
                        if done >= args.tasks:
                            return
                        done += 1
                    try:
                        _timed(argv, run_env)
                    except HpcExecError as exc:  # counted, not fatal: the figure says so
                        failed.append(exc.message)

            start = time.perf_counter()
            threads = [threading.Thread(target=worker) for _ in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return (args.tasks - (len(failed) - failures_before)) / (time.perf_counter() - start)

        throughput = throughput_of(ours_argv, env)
        throughput_sys = throughput_of(sys_argv, sys_env) if sys_argv else 0.0
    finally:
        from hpc_exec.engine.runtime import _linux
        from hpc_exec.errors import RuntimeFailure

        for target in (root / "bundle" / "rootfs", root / "bundle" / "lower"):
            try:  # mounted in this process's namespace: unmount, or rmtree cannot clean up
                _linux.umount(str(target))
            except RuntimeFailure:
                pass
        shutil.rmtree(root, ignore_errors=True)

    def ms(v: float) -> float:
        return round(v * 1000, 1)

    rows = {name: {"p10": ms(_pct(v, 0.1)), "p50": ms(statistics.median(v)),
                   "p90": ms(_pct(v, 0.9)), "mean": ms(statistics.mean(v)),
                   "cpu_p50": ms(statistics.median(CPU[name]))}
            for name, v in (("hpc-exec run", ours), ("bare runc run", bare),
                            ("python -c pass", python), ("hpc-exec run, sys py", system),
                            ("sys python -c pass", system_py),
                            ("against, sys py", against)) if v}
    overhead = rows["hpc-exec run"]["p50"] - rows["bare runc run"]["p50"]
    result = {"n": args.n, "per_task_ms": rows, "p50_overhead_ms": round(overhead, 1),
              "p50_ratio": round(rows["hpc-exec run"]["p50"] / rows["bare runc run"]["p50"], 2),
              "throughput_tasks_per_s": round(throughput, 2), "throughput_tasks": args.tasks,
              "throughput_failed": len(failed),
              "throughput_system_python_tasks_per_s": round(throughput_sys, 2),
              "targets": {"p50_overhead_ms": 100, "throughput_tasks_per_s": 12},
              "cpus": os.cpu_count(), "load": os.getloadavg()[0]}
    print(f"{'':22}{'p10':>8}{'p50':>8}{'p90':>8}{'mean':>8}{'CPU p50':>9}"
          f"   (ms, n={args.n}, interleaved; CPU = user + system of the run)")
    for name, r in rows.items():
        print(f"{name:22}{r['p10']:8}{r['p50']:8}{r['p90']:8}{r['mean']:8}{r['cpu_p50']:9}")
    cpu_overhead = rows["hpc-exec run"]["cpu_p50"] - rows["bare runc run"]["cpu_p50"]
    result["p50_cpu_overhead_ms"] = round(cpu_overhead, 1)
    print(f"p50 CPU overhead over runc: {cpu_overhead:.1f} ms (wall time stretches it when "
          "the node's cores are shared)")
    print(f"p50 overhead over runc: {overhead:.1f} ms (target <= 100), "
          f"ratio {result['p50_ratio']}x; of which interpreter start-up "
          f"{rows['python -c pass']['p50']:.1f} ms")
    if system:
        sys_overhead = rows["hpc-exec run, sys py"]["p50"] - rows["bare runc run"]["p50"]
        result["p50_overhead_system_python_ms"] = round(sys_overhead, 1)
        print(f"p50 overhead over runc under Debian's python3 (no site start-up hooks): "
              f"{sys_overhead:.1f} ms; its own start-up {rows['sys python -c pass']['p50']} ms")
    if against:
        this = rows["hpc-exec run, sys py"]["p50"] - rows["bare runc run"]["p50"]
        other = rows["against, sys py"]["p50"] - rows["bare runc run"]["p50"]
        result["against"] = {"dir": str(args.against), "p50_overhead_ms": round(other, 1),
                             "this_p50_overhead_ms": round(this, 1),
                             "overhead_ratio": round(this / other, 3) if other > 0 else None}
        print(f"against {args.against}: p50 overhead over runc {other:.1f} ms there, "
              f"{this:.1f} ms here (both Debian's python3): ratio {this / other:.3f} "
              "(target <= 1.05)")
    print(f"throughput, 2 at a time: {throughput:.1f} tasks/s (target >= 12), "
          f"load average {result['load']:.2f}"
          + (f"; {len(failed)} task(s) FAILED: {failed[0]}" if failed else ""))
    if throughput_sys:
        print(f"throughput, 2 at a time, Debian's python3: {throughput_sys:.1f} tasks/s")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
