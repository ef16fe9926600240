"""Parsl on Slurm with containers: python_apps in container workers, container_apps per task.

On the testbed, one command (as root, from any directory):

    eval "$(hpc-exec testbed env)" && python3 workflows/parsl/containers.py

(``python3`` is the one hpc-exec is installed in, e.g. /opt/hpc-exec/venv/bin/python3.)
Elsewhere: ``--worker-image`` must hold python3 and this Python's exact parsl version (the
launcher checks it before the first block and says how to fix it), ``--tool-image`` anything
with /bin/sh, and ``--partition`` your Slurm partition.

Two executors, two images:

* ``workers``: an HTEX whose worker pools run inside ``--worker-image``, one block of two
  nodes started by srun, so each node runs its pool in its own container
  (``ContainerLauncher(image, inner=SrunLauncher())`` in a ``FastSlurmProvider``);
* ``tools``: a plain HTEX (no container; SingleNodeLauncher) that runs ``container_app``
  tasks, each in a fresh container of ``--tool-image``.

It prints what ran where, in which image, and exits 1 if anything failed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import parsl
from parsl.app.app import python_app
from parsl.config import Config
from parsl.executors import HighThroughputExecutor
from parsl.launchers import SingleNodeLauncher, SrunLauncher

from hpc_exec.parsl import ContainerLauncher, FastSlurmProvider, container_app


def config(worker_image: str, partition: str, run_dir: str) -> Config:
    workers = HighThroughputExecutor(
        label="workers",
        provider=FastSlurmProvider(
            partition=partition, nodes_per_block=2, init_blocks=1, max_blocks=1,
            walltime="00:10:00",
            launcher=ContainerLauncher(worker_image, inner=SrunLauncher())))
    tools = HighThroughputExecutor(
        label="tools",
        provider=FastSlurmProvider(
            partition=partition, nodes_per_block=1, init_blocks=1, max_blocks=1,
            walltime="00:10:00", exclusive=False, launcher=SingleNodeLauncher()))
    return Config(executors=[workers, tools], strategy_period=0.5, run_dir=run_dir)


@python_app(executors=["workers"])
def where(i: int) -> dict[str, Any]:
    """Runs in a worker inside the worker image."""
    import os
    import socket
    import sys
    import time

    import parsl

    time.sleep(0.5)  # so that both nodes' pools get some
    with open("/etc/os-release") as f:
        pretty = next((line.split("=", 1)[1].strip().strip('"') for line in f
                       if line.startswith("PRETTY_NAME=")), "?")
    return {"task": f"python_app {i}", "host": socket.gethostname(), "os": pretty,
            "detail": f"python {sys.executable}, parsl {parsl.__version__}, "
                      f"job {os.environ.get('SLURM_JOB_ID')}, uid {os.getuid()}"}


def tool_app(tool_image: str) -> Any:
    @container_app(tool_image, executors=["tools"])
    def tool(i: int, stdout: Any = None, stderr: Any = None) -> str:
        """Runs ``/bin/sh -c`` in a fresh container of the tool image."""
        return (f"echo \"container_app {i}|$(hostname)|$(grep ^PRETTY_NAME= /etc/os-release "
                f"| cut -d= -f2 | tr -d '\\\"')|sh $(readlink /bin/sh), job $SLURM_JOB_ID, "
                f"uid $(id -u)\"")
    return tool


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker-image", default=os.environ.get("HPC_EXEC_TESTBED_IMAGE_PARSL"))
    parser.add_argument("--tool-image", default=os.environ.get("HPC_EXEC_TESTBED_IMAGE_SMALL"))
    parser.add_argument("--partition", default="debug")
    parser.add_argument("--tasks", type=int, default=6)
    parser.add_argument("--run-dir", default=str(Path.cwd() / "runinfo"))
    args = parser.parse_args(argv)
    if not args.worker_image or not args.tool_image:
        parser.error("give --worker-image and --tool-image (or run in the testbed's env: "
                     "eval \"$(hpc-exec testbed env)\")")
    # Parsl starts interchange.py (and plain pools start process_worker_pool.py) from PATH.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    tool = tool_app(args.tool_image)
    rows: list[dict[str, Any]] = []
    failed = 0
    with parsl.load(config(args.worker_image, args.partition, args.run_dir)):
        py = [where(i) for i in range(args.tasks)]
        out_dir = Path(args.run_dir) / "tool-output"
        out_dir.mkdir(parents=True, exist_ok=True)
        outs = [out_dir / f"tool-{i}.out" for i in range(args.tasks)]
        tools = [tool(i, stdout=str(o), stderr=str(o.with_suffix(".err")))
                 for i, o in enumerate(outs)]
        for f in py:
            try:
                rows.append({**f.result(timeout=600), "image": args.worker_image})
            except Exception as exc:  # noqa: BLE001 - reported below
                failed += 1
                print(f"python_app failed: {exc}", file=sys.stderr)
        for f, o in zip(tools, outs):
            try:
                f.result(timeout=600)
                task, host, pretty, detail = o.read_text().strip().split("|")
                rows.append({"task": task, "host": host, "os": pretty, "detail": detail,
                             "image": args.tool_image})
            except Exception as exc:  # noqa: BLE001 - reported below
                failed += 1
                print(f"container_app failed: {exc}", file=sys.stderr)
    width = max((len(r["task"]) for r in rows), default=10)
    print(f"{'task':{width}}  {'node':6}  {'image':45}  os-release / details")
    for r in rows:
        print(f"{r['task']:{width}}  {r['host']:6}  {r['image']:45}  {r['os']}; {r['detail']}")
    hosts = {r["host"] for r in rows if r["task"].startswith("python_app")}
    print(f"python_apps ran on {len(hosts)} node(s): {', '.join(sorted(hosts))}; "
          f"{failed} task(s) failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
