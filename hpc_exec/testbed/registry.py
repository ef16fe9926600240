"""Two local OCI registries (Debian's ``docker-registry``) on 127.0.0.1.

* ``plain``: http, no auth; the default registry for tests and examples (the site config marks
  it insecure).
* ``private``: https with a certificate from a self-signed CA under the state dir, and htpasswd
  (bcrypt) basic auth; the credentials live in a 0600 file, never on a command line or in a log.

Debian's default config demands htpasswd at a path under /etc, so we always write our own.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
from pathlib import Path

from hpc_exec import process
from hpc_exec.errors import TestbedError
from hpc_exec.files import replace_file
from hpc_exec.testbed import daemons
from hpc_exec.testbed.state import TestbedLayout, TestbedState

__all__ = ["USERNAME", "read_credentials", "registry_address", "render_registry_config",
           "render_site_config", "start_registries", "stop_registries", "write_site_config"]

USERNAME = "hpcexec"
VARIANTS = ("plain", "private")
START_TIMEOUT = 30.0


def render_registry_config(
    layout: TestbedLayout, variant: str, port: int, http_secret: str
) -> str:
    """docker-registry config (YAML is a superset of JSON, so we write JSON)."""
    cfg: dict[str, object] = {
        "version": 0.1,
        "log": {"level": "info", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(layout.registry_data(variant))},
            "delete": {"enabled": True},
        },
        "http": {"addr": f"127.0.0.1:{port}", "secret": http_secret},
    }
    if variant == "private":
        http = cfg["http"]
        assert isinstance(http, dict)
        http["tls"] = {
            "certificate": str(layout.tls_dir / "registry.pem"),
            "key": str(layout.tls_dir / "registry.key"),
        }
        cfg["auth"] = {"htpasswd": {"realm": "hpc-exec-testbed", "path": str(layout.htpasswd)}}
    return json.dumps(cfg, indent=2) + "\n"


def render_site_config(plain_registry: str, hosts_file: Path, hooks_dir: Path) -> str:
    """The hpc-exec site config ``testbed env`` points HPC_EXEC_CONFIG at (pure).

    It lists the plain (http) registry as insecure, gives containers a hosts file that names
    the nodes, and names the standard hooks.d (``--sync``, ``--mpi``, ``--ssh`` work as on a
    site set up with ``hpc-exec config init``). It is written in JSON syntax, which is YAML
    too, so that loading it skips the YAML parser on every hpc-exec start.
    """
    return json.dumps({"insecureRegistries": [plain_registry],
                       "hostsFile": str(hosts_file), "hooksDir": str(hooks_dir)},
                      indent=2) + "\n"


def write_site_config(state: TestbedState, layout: TestbedLayout) -> None:
    """Write the nodes' hosts file, the standard hooks.d (this installation's paths, written
    anew on every ``up``: what ``config init`` leaves out here is removed) and the site config
    that names them and the registry."""
    from hpc_exec.cli.config import standard_hook_values, write_hooks_dir
    from hpc_exec.testbed.slurm import render_hosts

    host_hosts = Path("/etc/hosts").read_text() if Path("/etc/hosts").exists() else ""
    replace_file(layout.hosts_file, render_hosts(host_hosts, state.nodes))
    layout.hook_base_dir.mkdir(mode=0o755, exist_ok=True)
    _, skipped = write_hooks_dir(layout.hooks_dir,
                                 standard_hook_values(str(layout.hook_base_dir)), force=True)
    for name in skipped:  # written by an earlier 'up' on a host that had it (or older code)
        (layout.hooks_dir / name).unlink(missing_ok=True)
    replace_file(layout.site_config,
                  render_site_config(registry_address(state, "plain"), layout.hosts_file,
                                     layout.hooks_dir))


def _write_private(path: Path, data: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(data)


def read_credentials(layout: TestbedLayout) -> tuple[str, str]:
    user, _, password = layout.credentials_file.read_text().strip().partition(":")
    return user, password


def _ensure_tls(layout: TestbedLayout) -> None:
    key, cert = layout.tls_dir / "registry.key", layout.tls_dir / "registry.pem"
    if layout.ca_cert.exists() and cert.exists() and key.exists():
        return
    ca_key = layout.tls_dir / "ca.key"
    csr = layout.tls_dir / "registry.csr"
    ext = layout.tls_dir / "registry.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                   "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
                   "extendedKeyUsage=serverAuth\n")
    tls = [
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
         "-subj", "/CN=hpc-exec testbed CA", "-keyout", ca_key, "-out", layout.ca_cert],
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
         "-keyout", key, "-out", csr],
        ["openssl", "x509", "-req", "-in", csr, "-CA", layout.ca_cert, "-CAkey", ca_key,
         "-CAcreateserial", "-days", "3650", "-extfile", ext, "-out", cert],
    ]
    for argv in tls:
        process.run([str(a) for a in argv], timeout=60, desc="creating testbed TLS certificates")
    os.chmod(ca_key, 0o600)
    os.chmod(key, 0o600)


def _ensure_auth(layout: TestbedLayout) -> None:
    if layout.credentials_file.exists() and layout.htpasswd.exists():
        return
    password = secrets.token_urlsafe(18)
    # htpasswd -i reads the password from stdin, so it never appears in argv or /proc.
    out = process.run(["htpasswd", "-niB", USERNAME], input=password + "\n", timeout=60,
                      desc="hashing the testbed registry password")
    _write_private(layout.htpasswd, out.stdout.strip() + "\n")
    _write_private(layout.credentials_file, f"{USERNAME}:{password}\n")


def _ready(port: int, tls: bool, ca: Path) -> bool:
    from hpc_exec.engine.image.registry import RegistryClient
    from hpc_exec.errors import AuthenticationFailed, RegistryError

    client = RegistryClient(f"127.0.0.1:{port}", insecure=not tls,
                            ca_file=str(ca) if tls else None, timeout=2)
    try:
        return client.ping() == 200
    except AuthenticationFailed:
        return True  # it answered with an auth challenge: it is up
    except RegistryError:
        return False
    finally:
        client.close()


def start_registries(state: TestbedState, layout: TestbedLayout) -> None:
    for variant in VARIANTS:
        layout.registry_data(variant).mkdir(parents=True, exist_ok=True)
    _ensure_tls(layout)
    _ensure_auth(layout)
    for variant in VARIANTS:
        name = f"registry-{variant}"
        port = state.ports[name]
        secret_file = layout.registry_dir(variant) / "http-secret"
        if not secret_file.exists():
            _write_private(secret_file, secrets.token_hex(16))
        _write_private(layout.registry_config(variant),
                       render_registry_config(layout, variant, port, secret_file.read_text()))
        rec0 = state.proc(name)
        if rec0 is not None and rec0.alive():
            continue
        rec = daemons.start(state, layout, name,
                            ["docker-registry", "serve", str(layout.registry_config(variant))])
        tls = variant == "private"
        daemons.wait_until(functools.partial(_ready, port, tls, layout.ca_cert),
                           timeout=START_TIMEOUT,
                           what=f"{variant} registry on 127.0.0.1:{port}",
                           log_path=layout.log_file(name), alive=rec.alive)


def stop_registries(state: TestbedState) -> None:
    for variant in VARIANTS:
        rec = state.proc(f"registry-{variant}")
        if rec is not None:
            daemons.stop(rec)


def registry_address(state: TestbedState, variant: str) -> str:
    try:
        return f"127.0.0.1:{state.ports[f'registry-{variant}']}"
    except KeyError as exc:
        raise TestbedError("the testbed has no registry; run 'hpc-exec testbed up'") from exc
