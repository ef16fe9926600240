"""Benchmark Parsl HTEX workers in containers against plain HTEX workers, side by side.

Run: ``python bench/parsl.py [--rounds 1] [--tasks 2000] [--app-tasks 200]`` as root with the
testbed up (``eval "$(hpc-exec testbed env)"``; the testbed's variables are read from its state
dir when they are not set). Each round runs, one after the other and with the same settings
(``strategy_period=0.5``, one block of one node, ``SrunLauncher``, ``address=127.0.0.1``,
encrypted HTEX, walltime 10 min, ``exclusive=False``; the order rotates per round, and each run waits until the
previous run's block has left the queue):

* ``plain``: HTEX + Parsl's ``SlurmProvider``; the workers are this Python's;
* ``container``: the same, with ``ContainerLauncher(parsl image, inner=SrunLauncher())``;
* ``container-fast``: the same with ``FastSlurmProvider`` (exit markers, 2 s status
  interval, the image check started at ``parsl.load``).

and measures, in each: the time from ``parsl.load`` to the first result (target: container
overhead <= +1.0 s over plain; plain measured ~3.0 s in shared/notes/parsl-integration.md),
the throughput of ``--tasks`` trivial python_apps after 50 warm-up tasks (target: >= 0.9x
plain; plain ~700 tasks/s), and, in ``plain``, ``--app-tasks`` ``container_app`` tasks running
``true`` in the busybox image, one container per task (target: >= 10 tasks/s on 2 cores).
The image check and pull are memoised per process, so each round resets the memo: every
container run pays its pull (a registry round trip on a warm cache) and its check.

The first-result time is also given minus the block's wait in the Slurm queue (scontrol's
SubmitTime to StartTime), since other users' jobs hold the shared testbed's nodes at times.
Prints the medians, ratios and the load average, and writes bench/results/parsl.json
(git-ignored). The machine is shared: compare only numbers of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# This file is named parsl.py: its directory must not be on sys.path, or it shadows parsl.
sys.path[:] = [p for p in sys.path if Path(p or os.getcwd()).resolve() != HERE]
RESULTS = HERE / "results" / "parsl.json"
MODES = ("plain", "container", "container-fast")


def noop() -> int:
    return 0


def _environment() -> None:
    """Testbed variables and this Python's bin dir (interchange.py, process_worker_pool.py)."""
    if "HPC_EXEC_TESTBED_IMAGE_PARSL" not in os.environ:
        import hpc_exec.testbed as tb

        os.environ.update(tb.env())
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"


def _config(mode: str, run_dir: str, image: str) -> Any:
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor
    from parsl.launchers import SrunLauncher
    from parsl.providers import SlurmProvider

    from hpc_exec.parsl import ContainerLauncher, FastSlurmProvider

    launcher: Any = SrunLauncher() if mode == "plain" else \
        ContainerLauncher(image, inner=SrunLauncher())
    common = {"partition": "debug", "nodes_per_block": 1, "init_blocks": 1, "min_blocks": 0,
              "max_blocks": 1, "walltime": "00:10:00", "launcher": launcher,
              "exclusive": False}  # a free CPU is enough: less waiting behind others' jobs
    provider: Any = FastSlurmProvider(**common) if mode == "container-fast" \
        else SlurmProvider(**common)
    return Config(executors=[HighThroughputExecutor(label=mode.replace("-", "_"),
                                                    address="127.0.0.1", provider=provider)],
                  strategy_period=0.5, run_dir=run_dir)


def _one(mode: str, args: argparse.Namespace, image: str, small: str) -> dict[str, float]:
    import parsl
    from parsl.app.app import python_app

    from hpc_exec.parsl import _check, container_app

    _check._pulled.clear()  # every container run pays its pull and check
    label = mode.replace("-", "_")
    app = python_app(noop, executors=[label])
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-parsl-") as tmp:
        os.chdir(tmp)
        start = time.perf_counter()
        dfk = parsl.load(_config(mode, os.path.join(tmp, "runinfo"), image))
        try:
            app().result(timeout=600)
            out["first_result_s"] = time.perf_counter() - start
            wait = _queue_wait(dfk.executors[label].provider)
            if wait is not None:
                out["queue_wait_s"] = wait
                out["first_result_minus_queue_s"] = out["first_result_s"] - wait
            for f in [app() for _ in range(50)]:
                f.result(timeout=300)
            t = time.perf_counter()
            futures = [app() for _ in range(args.tasks)]
            for f in futures:
                f.result(timeout=600)
            out["python_apps_per_s"] = args.tasks / (time.perf_counter() - t)
            if mode == "plain" and args.app_tasks:
                @container_app(small, executors=[label])
                def true_app() -> list[str]:
                    return ["true"]

                true_app().result(timeout=300)  # pull + first container
                t = time.perf_counter()
                futures = [true_app() for _ in range(args.app_tasks)]
                for f in futures:
                    f.result(timeout=600)
                out["container_apps_per_s"] = args.app_tasks / (time.perf_counter() - t)
        finally:
            dfk.cleanup()
            parsl.clear()
            os.chdir("/")
    _wait_gone(label)
    return out


def _queue_wait(provider: Any) -> float | None:
    """Seconds the run's first block waited in the Slurm queue (scontrol's SubmitTime to
    StartTime, 1 s resolution): other users' jobs on the shared testbed are not ours."""
    import datetime

    from hpc_exec import process

    jobs = sorted(provider.resources)
    if not jobs:
        return None
    out = process.run(["scontrol", "show", "job", str(jobs[0])], timeout=30, check=False,
                      desc="reading the block's queue times").stdout
    times = dict(w.split("=", 1) for w in out.split() if w.startswith(("SubmitTime=",
                                                                         "StartTime=")))
    try:
        submit, begin = (datetime.datetime.fromisoformat(times[k])
                         for k in ("SubmitTime", "StartTime"))
    except (KeyError, ValueError):
        return None
    return (begin - submit).total_seconds()


def _wait_gone(label: str, timeout: float = 90.0) -> None:
    """Wait until the run's block left the queue: a cancelled job's pool may still be
    shutting down (CG, up to KillWait) and would take CPU from the next run."""
    from hpc_exec import process

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = process.run(["squeue", "--noheader", "--format=%j"], timeout=30,
                          desc="listing Slurm jobs").stdout
        if not any(name.startswith(f"parsl.{label}.") for name in out.split()):
            return
        time.sleep(1)
    print(f"warning: the {label} block was still queued after {timeout:.0f} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--app-tasks", type=int, default=200)
    parser.add_argument("--modes", default=",".join(MODES),
                        help=f"comma-separated subset of {', '.join(MODES)}")
    args = parser.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    bad = [m for m in modes if m not in MODES]
    if bad or args.rounds < 1 or args.tasks < 1:
        parser.error(f"bad --modes {bad} / --rounds {args.rounds} / --tasks {args.tasks}")
    _environment()
    image = os.environ["HPC_EXEC_TESTBED_IMAGE_PARSL"]
    small = os.environ["HPC_EXEC_TESTBED_IMAGE_SMALL"]
    from hpc_exec import engine

    engine.pull(image)  # warm cache: the rounds measure start-up, not the first download
    engine.pull(small)
    runs: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    load = [os.getloadavg()[0]]
    for r in range(args.rounds):
        for mode in modes[r % len(modes):] + modes[:r % len(modes)]:  # rotate the order
            result = _one(mode, args, image, small)
            runs[mode].append(result)
            print(f"round {r + 1} {mode:15s} " + "  ".join(
                f"{k}={v:.2f}" for k, v in result.items()), flush=True)
            load.append(os.getloadavg()[0])

    def med(mode: str, key: str) -> float:
        values = [run[key] for run in runs.get(mode, []) if key in run]
        return statistics.median(values) if values else float("nan")

    summary: dict[str, Any] = {"load_avg_1min": load, "runs": runs, "ratios": {}}
    print(f"\nload average (1 min) during the run: {min(load):.1f}-{max(load):.1f}")
    base_first, base_tput = med("plain", "first_result_s"), med("plain", "python_apps_per_s")
    print(f"plain: first result {base_first:.2f} s (anchor ~3.0), {base_tput:.0f} python "
          f"apps/s (anchor ~700), {med('plain', 'container_apps_per_s'):.1f} container_app "
          "tasks/s (target >= 10)")
    for mode in modes:
        if mode == "plain":
            continue
        first, tput = med(mode, "first_result_s"), med(mode, "python_apps_per_s")
        extra, ratio = first - base_first, tput / base_tput
        net = med(mode, "first_result_minus_queue_s") - \
            med("plain", "first_result_minus_queue_s")
        summary["ratios"][mode] = {"first_result_overhead_s": extra,
                                   "first_result_overhead_minus_queue_s": net,
                                   "throughput_ratio": ratio}
        print(f"{mode}: first result {first:.2f} s ({extra:+.2f} s vs plain; {net:+.2f} s "
              f"without the queue waits; target <= +1.0), {tput:.0f} python apps/s "
              f"({ratio:.2f}x plain, target >= 0.9)")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
