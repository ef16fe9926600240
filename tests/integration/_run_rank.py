"""One Slurm task of the container barrier test: wait, then ``hpc-exec run --sync``.

Usage (under srun): python _run_rank.py OUT_DIR DELAYS HPC_EXEC IMAGE

DELAYS is "rank:seconds,...". Records, in OUT_DIR/<rank>.json, the wall clock just before
``hpc-exec run`` starts (the rank cannot have arrived at the barrier before it), the wall clock
the container's own process printed when it started, the exit status and stderr.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time

from hpc_exec import process


def main() -> int:
    out_dir, delays_arg, hpc_exec, image = sys.argv[1:5]
    rank = int(os.environ["SLURM_PROCID"])
    delays = dict(item.split(":") for item in delays_arg.split(",") if item)
    time.sleep(float(delays.get(str(rank), 0)))
    start = time.time()
    done = process.run([hpc_exec, "run", "--sync", image, "python3", "-c",
                        "import time; print(repr(time.time()))"],
                       check=False, timeout=300, desc="hpc-exec run --sync")
    with open(os.path.join(out_dir, f"{rank}.json"), "w") as f:
        json.dump({"rank": rank, "start": start, "rc": done.returncode,
                   "container": float(done.stdout) if done.returncode == 0 else None,
                   "stderr": done.stderr, "host": socket.gethostname()}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
