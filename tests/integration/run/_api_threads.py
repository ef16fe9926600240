"""Run by test_engine_api.py: four threads each run a container that sleeps for a day, then
wait. A terminal's Ctrl-C (SIGINT to our process group) must end all four containers."""

from __future__ import annotations

import sys
import threading

from hpc_exec import engine

statuses: list[int] = []


def one() -> None:
    statuses.append(int(engine.run(sys.argv[1], ["sleep", sys.argv[2]])))


threads = [threading.Thread(target=one) for _ in range(4)]
for t in threads:
    t.start()
try:
    for t in threads:
        t.join()
except KeyboardInterrupt:
    for t in threads:
        t.join(60)
print(" ".join(map(str, sorted(statuses))), flush=True)
