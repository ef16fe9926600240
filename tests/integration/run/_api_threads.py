"""Run by test_engine_api.py: four threads each run a container that sleeps for a day, then
wait. A terminal's Ctrl-C (SIGINT to our process group) must end all four containers.

The main thread waits on the results, not with Thread.join: a join that a KeyboardInterrupt
interrupts can report a thread finished before it has stored its result (Python 3.11)."""

from __future__ import annotations

import sys
import threading
import time

from hpc_exec import engine

statuses: list[str] = []
changed = threading.Condition()


def one() -> None:
    try:
        result = str(engine.run(sys.argv[1], ["sleep", sys.argv[2]]))
    except Exception as exc:  # noqa: BLE001 - reported to the test, which shows it
        result = f"{type(exc).__name__}:{exc}".replace(" ", "_")
    with changed:
        statuses.append(result)
        changed.notify_all()


for _ in range(4):
    threading.Thread(target=one, daemon=True).start()
deadline = time.monotonic() + 600
while time.monotonic() < deadline:
    try:
        with changed:
            if len(statuses) == 4:
                break
            changed.wait(0.5)
    except KeyboardInterrupt:  # the Ctrl-C under test: keep waiting for the four results
        deadline = min(deadline, time.monotonic() + 60)
with changed:
    missing = 4 - len(statuses)
    print(" ".join(sorted(statuses) + ["missing"] * missing), flush=True)
