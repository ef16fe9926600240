"""``hpc-exec ssh-keygen``: create the user's keys for the SSH hook.

The keys live where the SSH hook reads them, ``<HOOK_BASE_DIR>/<user>/.oci-hooks/ssh/keys``,
so the command takes ``HOOK_BASE_DIR`` (and ``PASSWD_FILE``, ``DROPBEAR_DIR``) from the SSH
hook's entry in the site's hooks.d, and runs that hook program with ``keygen`` (hooks/ssh.py).
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser", "find_ssh_hook", "ssh_keygen_command"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "ssh-keygen", help="create your keys for the SSH hook (--ssh)",
        description="Create the host and user keys the SSH hook needs, under the SSH hook's "
        "HOOK_BASE_DIR/<user>/.oci-hooks/ssh/keys. Existing keys are kept unless --overwrite.")
    p.add_argument("--overwrite", action="store_true", help="replace existing keys")
    p.set_defaults(handler=ssh_keygen_command)


def find_ssh_hook(hooks_dir: Any) -> Any:
    """The hooks.d entry that runs the SSH hook (ConfigError when there is none)."""
    from hpc_exec.engine.runtime.api import site_hooks
    from hpc_exec.errors import ConfigError

    for hook in site_hooks(hooks_dir):
        program = [hook.path, *hook.args]
        if any(p.endswith(("/ssh.py", "/hpc-hook-ssh")) for p in program):
            return hook
    raise ConfigError(f"no SSH hook in the hooks directory {hooks_dir}",
                      hint="the site needs an SSH hook entry (hpc-exec config init writes "
                      "08-ssh-hook.json)")


def ssh_keygen_command(args: argparse.Namespace) -> int:
    from hpc_exec import process
    from hpc_exec.config import load_settings

    hook = find_ssh_hook(load_settings().hooks_dir)
    argv = list(hook.args) if hook.args else [hook.path]
    argv[0] = hook.path
    argv.append("keygen")
    if args.overwrite:
        argv.append("--overwrite")
    env = dict(e.split("=", 1) for e in hook.env if "=" in e)
    done = process.run(argv, env=env, timeout=120, desc="creating SSH keys")
    print(done.stdout.strip())
    return 0
