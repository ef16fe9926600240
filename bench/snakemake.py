"""Benchmark ``snakemake --executor hpc-container`` against snakemake-executor-plugin-slurm 2.8.

Run: ``python bench/snakemake.py [--rounds 3] [--jobs 20] [--only ours|stock|container] [--keep]``
with the interpreter of a venv that has hpc-exec (editable, strict) and its Snakemake, and the
testbed up. All in one run, side by side, interleaved over ``--rounds`` rounds (the order rotates
each round, so that load from other users of the machine hits all three alike):

1. **ours**: ``snakemake --executor hpc-container -j N`` on N trivial one-rule jobs
   (``echo {i} > {output}``, plus a local ``all`` rule), from this interpreter's venv.
2. **stock**: the same workflow with ``snakemake --executor slurm -j N --slurm-status-command
   squeue --slurm-init-seconds-before-status-checks 1`` (snakemake-executor-plugin-slurm 2.8.0
   tuned; its defaults never finish here, as there is no accounting). That plugin lives in a
   separate venv that this bench creates (bench/results/stock-venv, from /usr/bin/python3 with
   snakemake==9.27.1), never in the users' venv. The testbed's slurm.conf is found only through
   SLURM_CONF and the stock jobstep plugin strips SLURM_CONF before its nested ``srun``, so the
   stock run gets an ``srun`` wrapper first on PATH that re-exports it.
3. **container**: as 1, with ``container: "docker://<the testbed's busybox image>"`` on the rule
   (pulled once before the first round, so every round sees a warm cache).

Targets: ours / stock <= 0.5 (median wall times); container / ours <= 1.15. Each run has its own
fresh temp dir under ``--base-dir`` (default /tmp, which the testbed's nodes share; removed
afterwards unless ``--keep``; a failed run's logs are copied to bench/results/snakemake-failed/).
After each run any Slurm job still queued from that dir is cancelled by id and reported, and
Slurm's own times split the wall time (to the first sbatch, first sbatch to last job end, last
job end to exit, one job's run time). A run that fails or exceeds ``--timeout`` ends that variant.
Prints the medians, per-round numbers and ratios and writes bench/results/snakemake.json
(git-ignored). Exit status: 0 targets met, 1 a target missed, 3 a variant failed (its error and
log tail are printed).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from hpc_exec import process
from hpc_exec.errors import CommandTimeout, HpcExecError

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "snakemake.json"
FAILED_LOGS = HERE / "results" / "snakemake-failed"
STOCK_VENV = HERE / "results" / "stock-venv"
STOCK_PINS = ("snakemake==9.27.1", "snakemake-executor-plugin-slurm==2.8.0")
VARIANTS = ("ours", "stock", "container")
TARGETS = {"ours/stock": 0.5, "container/ours": 1.15}

SNAKEFILE = """\
N = {n}

localrules: all

rule all:
    input: expand("out/t{{i}}.txt", i=range(N))

rule t:
    output: "out/t{{i}}.txt"
{container}    shell: "echo {{wildcards.i}} > {{output}}"
"""

SRUN_WRAPPER = """\
#!/bin/sh
# bench/snakemake.py: the stock jobstep plugin strips SLURM_CONF before its nested srun, and on
# the testbed slurm.conf is found only through it. Put it back and run the real srun.
export SLURM_CONF={conf}
exec {srun} "$@"
"""

ACTIVE = {"PENDING", "RUNNING", "SUSPENDED", "COMPLETING", "CONFIGURING", "REQUEUED",
          "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "REQUEUE_HOLD", "REQUEUE_FED"}


def _beside(name: str) -> str:
    """``name`` from this interpreter's venv, not a version-manager shim found first on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else (shutil.which(name) or name)


def _stock_venv(path: Path) -> Path:
    """The stock plugin's venv, created on first use; never the users' hpc-exec venv."""
    site = list(path.glob("lib/python3*/site-packages"))
    wanted = [pin.replace("-", "_").replace("==", "-") for pin in STOCK_PINS]
    if site and all((site[0] / f"{w}.dist-info").is_dir() for w in wanted):
        return path
    print(f"creating the stock plugin's venv {path} ({' '.join(STOCK_PINS)}), once",
          flush=True)
    shutil.rmtree(path, ignore_errors=True)
    process.run(["/usr/bin/python3", "-m", "venv", str(path)], timeout=300,
                desc="creating the stock venv")
    process.run([str(path / "bin" / "pip"), "install", "--quiet", *STOCK_PINS], timeout=1200,
                desc="installing the stock Slurm plugin into its venv")
    return path


def _reason(log: Path) -> str:
    """The last error line of a Snakemake log (with the line after a bare ``WorkflowError:``),
    and the first failed job's ``message:``, if one was given."""
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    reason = lines[-1] if lines else "no output"
    for i in range(len(lines) - 1, -1, -1):
        # also a bare exception text, as the RemoteExecutor's status thread prints it when it
        # dies (Snakemake then waits forever)
        if re.match(r"^\w*(Error|Exception)\b", lines[i]) or "has no attribute" in lines[i]:
            reason = lines[i]
            if reason.endswith(":") and i + 1 < len(lines):
                reason = f"{reason} {lines[i + 1]}"
            break
    first_job = next((ln for ln in lines if ln.startswith("message:")), "")
    return f"{reason}; first failed job's {first_job}" if first_job else reason


def _version(site_glob: str, dist: str) -> str:
    for info in Path("/").glob(site_glob.lstrip("/") + f"/{dist}-*.dist-info"):
        return info.name[len(dist) + 1:-len(".dist-info")]
    return "?"


class Bench:
    def __init__(self, args: argparse.Namespace, tenv: dict[str, str]) -> None:
        self.args = args
        self.tenv = tenv
        self.image = "docker://" + tenv["HPC_EXEC_TESTBED_IMAGE_SMALL"]
        self.base_env = {**os.environ, **tenv}
        # PYTHONDONTWRITEBYTECODE: installed packages have their bytecode compiled; let the
        # first run write it for the editable install too, so no round compiles every import.
        for var in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONDONTWRITEBYTECODE"):
            self.base_env.pop(var, None)
        self.ours_snakemake = _beside("snakemake")
        self.stock_venv: Path | None = None
        self.real_srun = process.require("srun")
        self.logs: dict[str, list[str]] = {}
        self.leftovers: list[str] = []
        # per run, whole seconds by Slurm's clock: start -> first submit, first submit -> last
        # job end (the jobs' own span), last job end -> Snakemake exits (polling, shutdown),
        # and the median job's run time (start -> end in Slurm)
        self.phases: dict[str, list[dict[str, float]]] = {}

    def argv(self, variant: str) -> list[str]:
        j = str(self.args.jobs)
        if variant == "stock":
            assert self.stock_venv is not None
            return [str(self.stock_venv / "bin" / "snakemake"), "--executor", "slurm", "-j", j,
                    "--slurm-status-command", "squeue",
                    "--slurm-init-seconds-before-status-checks", "1"]
        return [self.ours_snakemake, "--executor", "hpc-container", "-j", j]

    def env(self, variant: str, run_dir: Path) -> dict[str, str]:
        env = dict(self.base_env)
        path = env.get("PATH", "/usr/bin:/bin")
        if variant == "stock":
            assert self.stock_venv is not None
            env["PATH"] = f"{run_dir / 'bin'}:{self.stock_venv / 'bin'}:{path}"
        else:
            env["PATH"] = f"{Path(self.ours_snakemake).parent}:{path}"
        return env

    def prepare(self, variant: str, run_dir: Path) -> None:
        container = f'    container: "{self.image}"\n' if variant == "container" else ""
        (run_dir / "Snakefile").write_text(SNAKEFILE.format(n=self.args.jobs,
                                                            container=container))
        if variant == "stock":
            (run_dir / "bin").mkdir()
            wrapper = run_dir / "bin" / "srun"
            wrapper.write_text(SRUN_WRAPPER.format(conf=self.tenv["SLURM_CONF"],
                                                   srun=self.real_srun))
            wrapper.chmod(0o755)

    def check_outputs(self, run_dir: Path) -> str:
        """'' when all N outputs hold their number, else what is wrong."""
        for i in range(self.args.jobs):
            out = run_dir / "out" / f"t{i}.txt"
            if not out.exists():
                return f"{out.relative_to(run_dir)} missing"
            if out.read_text().strip() != str(i):
                return f"{out.relative_to(run_dir)} holds {out.read_text()!r}"
        return ""

    def slurm_jobs(self, run_dir: Path) -> tuple[list[str], dict[str, object]]:
        """Cancel, by id, every job of this run still in the queue and return their ids; and,
        when all jobs ended, Slurm's first submit time, last end time and the median job run
        time (start to end) in seconds."""
        try:
            out = process.run(["squeue", "-h", "--states=all", "-o", "%i|%T|%V|%S|%e|%Z"],
                              timeout=30, desc="squeue", env=self.base_env).stdout
        except HpcExecError as exc:
            print(f"  warning: cannot list this run's jobs: {exc.message}", file=sys.stderr)
            return [], {}
        ids, submits, starts, ends = [], [], [], []
        for line in out.splitlines():
            job, state, submit, begin, end, workdir = (line.split("|", 5) + [""] * 6)[:6]
            if workdir != str(run_dir) and not workdir.startswith(f"{run_dir}/"):
                continue
            if state in ACTIVE:
                ids.append(job.strip())
                continue
            try:
                times = [datetime.fromisoformat(t) for t in (submit, begin, end)]
            except ValueError:
                continue
            submits.append(times[0])
            starts.append(times[1])
            ends.append(times[2])
        if ids:
            process.run(["scancel", *ids], timeout=30, desc="scancel", check=False,
                        env=self.base_env)
        if ids or not ends:
            return ids, {}
        return ids, {"first_submit": min(submits), "last_end": max(ends),
                     "job_run": statistics.median((e - b).total_seconds()
                                                  for b, e in zip(starts, ends))}

    @staticmethod
    def keep_logs(variant: str, rnd: int, run_dir: Path) -> Path:
        """Copy a failed run's logs (Snakemake's and the executor's job logs) to results/."""
        dest = FAILED_LOGS / f"{variant}-round{rnd}"
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        for name in ("snakemake.log", "Snakefile", ".snakemake/log",
                     ".snakemake/hpc-container/logs", ".snakemake/slurm_logs"):
            src = run_dir / name
            if src.is_dir():
                shutil.copytree(src, dest / name, symlinks=True)
            elif src.exists():
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / name)
        return dest

    def run(self, variant: str, rnd: int) -> tuple[float | None, str]:
        """(wall seconds or None, error) of one run in a fresh dir."""
        run_dir = Path(tempfile.mkdtemp(prefix=f"hpc-exec-bench-snakemake-{variant}-",
                                        dir=self.args.base_dir))
        log = run_dir / "snakemake.log"
        error = ""
        wall: float | None = None
        started = ended = datetime.now()
        try:
            self.prepare(variant, run_dir)
            argv = self.argv(variant)
            # stdout and stderr, interleaved, straight into the log file: a run that hangs
            # keeps all its output (Snakemake's executor thread prints its last error to stdout).
            merged = ["/bin/sh", "-c", 'exec "$0" "$@" 2>&1', *argv]
            with log.open("wb") as out:
                start, started = time.perf_counter(), datetime.now()
                try:
                    done = process.run(merged, timeout=self.args.timeout,
                                       desc=f"snakemake ({variant})", check=False,
                                       env=self.env(variant, run_dir), cwd=run_dir,
                                       capture=False, stdout=out)
                    took, ended = time.perf_counter() - start, datetime.now()
                    if done.returncode != 0:
                        error = f"snakemake exited {done.returncode}"
                    else:
                        error = self.check_outputs(run_dir)
                        wall = None if error else took
                except CommandTimeout:
                    error = f"timed out after {self.args.timeout:g} s (process group killed)"
            if error:
                error += f": {_reason(log)}"
        finally:
            left, slurm = self.slurm_jobs(run_dir)
            if slurm and wall is not None:
                first, last = slurm["first_submit"], slurm["last_end"]
                assert isinstance(first, datetime) and isinstance(last, datetime)
                self.phases.setdefault(variant, []).append({
                    "to_first_submit": (first - started).total_seconds(),
                    "slurm_span": (last - first).total_seconds(),
                    "after_last_end": (ended - last).total_seconds(),
                    "job_run_median": float(slurm["job_run"])})  # type: ignore[arg-type]
            if left:
                self.leftovers.append(f"{variant} round {rnd}: {' '.join(left)}")
                error = error or f"left {len(left)} job(s) in the queue: {' '.join(left)}"
            if error:
                tail = log.read_text(errors="replace").splitlines()[-25:] if log.exists() else []
                kept = self.keep_logs(variant, rnd, run_dir)
                self.logs[variant] = [f"$ {' '.join(self.argv(variant))}   (in {run_dir})",
                                      *tail, f"(logs copied to {kept})"]
            if self.args.keep:
                print(f"  kept {run_dir}")
            else:
                shutil.rmtree(run_dir, ignore_errors=True)
        return wall, error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each runs every variant")
    parser.add_argument("--jobs", type=int, default=20,
                        help="trivial jobs in the workflow, and snakemake -j")
    parser.add_argument("--only", action="append", choices=VARIANTS,
                        help="run only this variant (repeatable)")
    parser.add_argument("--keep", action="store_true", help="keep each run's temp dir")
    parser.add_argument("--base-dir", type=Path, default=Path(tempfile.gettempdir()),
                        help="where each run's temp dir goes; shared with the nodes (not under "
                        "/var: the default userMounts rules refuse binding the workdir there)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per snakemake run")
    parser.add_argument("--stock-venv", type=Path, default=STOCK_VENV,
                        help="venv for the stock plugin (created if missing)")
    args = parser.parse_args(argv)
    variants = [v for v in VARIANTS if not args.only or v in args.only]
    import hpc_exec.testbed as tb

    bench = Bench(args, tb.env(tb.default_state_dir()))
    if "stock" in variants:
        bench.stock_venv = _stock_venv(args.stock_venv.resolve())
        print(f"stock: snakemake-executor-plugin-slurm in {bench.stock_venv}; an srun wrapper "
              f"that re-exports SLURM_CONF={bench.tenv['SLURM_CONF']} is first on the stock "
              "run's PATH (the stock jobstep plugin strips SLURM_CONF before its nested srun)")
    if "container" in variants:
        ref = bench.image.removeprefix("docker://")
        print(f"container: pulling {ref} once before the rounds (warm cache in every round)")
        process.run([_beside("hpc-exec"), "pull", ref], timeout=600, desc="hpc-exec pull",
                    env=bench.base_env)
    runs: dict[str, list[float]] = {v: [] for v in variants}
    failed: dict[str, str] = {}
    load = [os.getloadavg()[0]]
    for rnd in range(args.rounds):
        order = variants[rnd % len(variants):] + variants[:rnd % len(variants)]
        for variant in order:
            if variant in failed:
                continue
            wall, error = bench.run(variant, rnd + 1)
            if wall is None:
                failed[variant] = error
                print(f"round {rnd + 1}: {variant:<9} FAILED: {error}", flush=True)
                continue
            runs[variant].append(wall)
            print(f"round {rnd + 1}: {variant:<9} {wall:7.1f} s", flush=True)
        load.append(os.getloadavg()[0])

    medians = {v: statistics.median(t) for v, t in runs.items() if t}
    ratios = {}
    if "ours" in medians and "stock" in medians:
        ratios["ours/stock"] = medians["ours"] / medians["stock"]
    if "container" in medians and "ours" in medians:
        ratios["container/ours"] = medians["container"] / medians["ours"]
    print(f"\n{args.jobs} one-rule jobs, -j {args.jobs}, {args.rounds} round(s) interleaved, "
          f"{os.cpu_count()} CPUs, load average {min(load):.2f}..{max(load):.2f}")
    for v in variants:
        if v in medians:
            print(f"  {v:<10} median {medians[v]:6.1f} s   (rounds: "
                  f"{', '.join(f'{t:.1f}' for t in runs[v])})"
                  + (f"; then a round FAILED: {failed[v]}" if v in failed else ""))
            if bench.phases.get(v):
                ph = {k: statistics.median(p[k] for p in bench.phases[v])
                      for k in bench.phases[v][0]}
                print(f"  {'':10} of which, medians: to first sbatch {ph['to_first_submit']:.0f} s"
                      f", first sbatch to last job end {ph['slurm_span']:.0f} s, "
                      f"last job end to exit {ph['after_last_end']:.0f} s; one job runs "
                      f"{ph['job_run_median']:.0f} s (Slurm's clock, whole seconds)")
        else:
            print(f"  {v:<10} FAILED: {failed.get(v, '')}")
    ok = True
    for name, value in ratios.items():
        partial = any(v in failed for v in name.split("/"))
        met = value <= TARGETS[name] and not partial
        ok &= met
        print(f"  {name:<15} {value:5.2f}   target <= {TARGETS[name]}   "
              + ("(from the rounds before a failure)" if partial
                 else "met" if met else "MISSED"))
    sys.stdout.flush()
    for variant, lines in bench.logs.items():
        print(f"\n{variant} failed; the last lines of its snakemake output:", file=sys.stderr)
        for line in lines:
            print(f"  | {line}", file=sys.stderr)
    if "ours" in failed or "container" in failed:
        print("\nour executor (snakemake --executor hpc-container) FAILED; see above",
              file=sys.stderr)
    if bench.leftovers:
        print(f"cancelled leftover jobs: {'; '.join(bench.leftovers)}", file=sys.stderr)
    stock_site = f"{args.stock_venv.resolve()}/lib/python3*/site-packages"
    result = {
        "jobs": args.jobs, "rounds": args.rounds, "runs_s": runs,
        "medians_s": {v: round(t, 2) for v, t in medians.items()},
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
        "targets": {k: f"<= {v}" for k, v in TARGETS.items()},
        "phases_s": bench.phases, "failed": failed, "leftover_jobs": bench.leftovers,
        "commands": {v: bench.argv(v) for v in variants if v != "stock" or bench.stock_venv},
        "image": bench.image if "container" in variants else None,
        "versions": {
            "snakemake (ours)": _version(str(Path(sys.executable).parent.parent)
                                         + "/lib/python3*/site-packages", "snakemake"),
            "snakemake (stock)": _version(stock_site, "snakemake"),
            "snakemake-executor-plugin-slurm": _version(stock_site,
                                                        "snakemake_executor_plugin_slurm"),
        },
        "cpus": os.cpu_count(), "load": [round(x, 2) for x in load],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    if failed:
        return 3
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
