"""One Slurm task of a hook test: craft this rank's bundle and OCI state, run a hook, record.

Usage (under srun): python _hook_rank.py HOOK OUT_DIR DELAYS HOOK_ENV_JSON

DELAYS is "rank:seconds,..." (ranks not named start at once). The bundle's config.json gets the
task's SLURM_* variables as the container process env, as the engine would. The result
(start/end wall clock around the hook, exit status, stderr, host) goes to OUT_DIR/<rank>.json.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time

from hpc_exec.hooks import command

from hpc_exec import process


def main() -> int:
    hook, out_dir, delays_arg, hook_env_json = sys.argv[1:5]
    rank = int(os.environ["SLURM_PROCID"])
    delays = dict(item.split(":") for item in delays_arg.split(",") if item)
    bundle = os.path.join(out_dir, "bundles", str(rank))
    os.makedirs(os.path.join(bundle, "rootfs"), exist_ok=True)
    env = [f"{k}={v}" for k, v in os.environ.items() if k.startswith("SLURM_")]
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump({"ociVersion": "1.0.2", "root": {"path": "rootfs"},
                   "process": {"user": {"uid": os.getuid(), "gid": os.getgid()}, "env": env}}, f)
    state = json.dumps({"ociVersion": "1.0.2", "id": f"rank{rank}", "status": "creating",
                        "pid": os.getpid(), "bundle": bundle})
    time.sleep(float(delays.get(str(rank), 0)))
    start = time.time()
    done = process.run(command(hook), input=state, env=json.loads(hook_env_json), check=False,
                       timeout=120, desc=f"running the {hook} hook")
    end = time.time()
    with open(os.path.join(out_dir, f"{rank}.json"), "w") as f:
        json.dump({"rank": rank, "start": start, "end": end, "rc": done.returncode,
                   "stderr": done.stderr, "host": socket.gethostname()}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
