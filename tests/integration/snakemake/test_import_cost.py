"""Importing the plugin costs almost nothing (every Snakemake process imports every plugin): at
most 50 ms by ``python -X importtime``, and no engine, parsl or yaml.

Measured twice, best of three runs each: the bare ``import`` in a fresh interpreter, and what
the plugin adds, once Snakemake's registry reads ``Executor``, ``ExecutorSettings`` and
``common_settings``, to a process that has loaded the Snakemake plugin interfaces (every
Snakemake process has them before its registry imports the plugins, at ``import snakemake.cli``).
"""

from __future__ import annotations

import re
import sys

from hpc_exec import process

LIMIT_US = 50_000
HEAVY = ("parsl", "hpc_exec.engine", "hpc_exec.testbed", "yaml")
LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)$")


def _importtime(code: str) -> tuple[list[tuple[int, str]], str]:
    """(cumulative us, name) of the top-level imports, and stdout."""
    done = process.run([sys.executable, "-X", "importtime", "-c", code], timeout=120,
                       desc="python -X importtime", cwd="/")
    top = []
    for line in done.stderr.splitlines():
        m = LINE.match(line)
        if m and m[3] == " ":  # one space: a top-level import
            top.append((int(m[2]), m[4]))
    return top, done.stdout


def _best(costs: list[int]) -> int:
    return min(costs)


def test_bare_import_is_cheap_and_light() -> None:
    costs = []
    for _ in range(3):
        top, out = _importtime(
            "import sys, snakemake_executor_plugin_hpc_container; "
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
        assert out.strip() == "[]"
        costs.append(sum(us for us, name in top
                         if name == "snakemake_executor_plugin_hpc_container"))
    assert 0 < _best(costs) <= LIMIT_US, costs


def test_what_the_plugin_adds_to_snakemake() -> None:
    code = ("import sys, snakemake_interface_executor_plugins.executors.remote, "
            "snakemake_interface_executor_plugins.settings, "
            "snakemake_interface_common.exceptions; print('---', file=sys.stderr); "
            "import snakemake_executor_plugin_hpc_container as p; "
            "p.Executor, p.ExecutorSettings, p.common_settings; "
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    costs = []
    for _ in range(3):
        done = process.run([sys.executable, "-X", "importtime", "-c", code], timeout=120,
                           desc="python -X importtime", cwd="/")
        assert done.stdout.strip() == "[]"
        after = done.stderr.split("---\n", 1)[1]
        added = [(int(m[2]), m[4]) for m in map(LINE.match, after.splitlines())
                 if m and m[3] == " "]
        assert {name for _, name in added} >= {"snakemake_executor_plugin_hpc_container",
                                                "hpc_exec.snakemake.executor"}
        costs.append(sum(us for us, _ in added))
    assert _best(costs) <= LIMIT_US, costs
