"""Registry credentials from the usual auth files, and the CA files trusted per registry.

Contract:

* :func:`from_auth_files` looks ``server`` up in, in order: ``$REGISTRY_AUTH_FILE``,
  ``${XDG_RUNTIME_DIR}/containers/auth.json``, ``~/.config/containers/auth.json``,
  ``$DOCKER_CONFIG/config.json`` (default ``~/.docker/config.json``). The first file with an
  ``auths`` entry for the server wins. Docker Hub also matches its historical keys
  (``https://index.docker.io/v1/``). Credential helpers (``credHelpers``/``credsStore``) are not
  run: they are programs, and we only read files.
* An unreadable or malformed file is skipped with a DEBUG line that never shows its content.
* :func:`ca_files` lists ``*.crt`` files under ``/etc/containers/certs.d/<server>/`` and
  ``/etc/docker/certs.d/<server>/`` (the podman/docker convention) for a private CA.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from pathlib import Path

from hpc_exec.engine.image.registry import Credentials

__all__ = ["auth_files", "ca_files", "from_auth_files", "lookup_in"]

log = logging.getLogger(__name__)

_DOCKER_HUB_KEYS = ("docker.io", "index.docker.io", "registry-1.docker.io",
                    "https://index.docker.io/v1/", "https://index.docker.io/v1",
                    "https://registry-1.docker.io")
CERTS_DIRS = (Path("/etc/containers/certs.d"), Path("/etc/docker/certs.d"))


def auth_files() -> list[Path]:
    """The auth files to look in, most specific first."""
    out: list[Path] = []
    if os.environ.get("REGISTRY_AUTH_FILE"):
        out.append(Path(os.environ["REGISTRY_AUTH_FILE"]))
    if os.environ.get("XDG_RUNTIME_DIR"):
        out.append(Path(os.environ["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    home = Path(os.path.expanduser("~"))
    out.append(home / ".config" / "containers" / "auth.json")
    docker = Path(os.environ["DOCKER_CONFIG"]) if os.environ.get("DOCKER_CONFIG") \
        else home / ".docker"
    out.append(docker / "config.json")
    return out


def _keys_for(server: str) -> tuple[str, ...]:
    if server in _DOCKER_HUB_KEYS:
        return _DOCKER_HUB_KEYS
    return (server, f"https://{server}", f"http://{server}", f"https://{server}/v2/",
            f"https://{server}/v1/")


def lookup_in(data: object, server: str) -> Credentials | None:
    """Credentials for ``server`` from a parsed auth file (pure)."""
    if not isinstance(data, dict) or not isinstance(data.get("auths"), dict):
        return None
    auths = data["auths"]
    for key in _keys_for(server):
        entry = auths.get(key)
        if not isinstance(entry, dict):
            continue
        if isinstance(entry.get("auth"), str) and entry["auth"]:
            try:
                user, sep, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                continue
            if sep and user:
                return Credentials(user, password)
        if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
            return Credentials(entry["username"], entry["password"])
    return None


def from_auth_files(server: str) -> Credentials | None:
    for path in auth_files():
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as exc:
            log.debug("skipping auth file %s: %s", path, type(exc).__name__)
            continue
        creds = lookup_in(data, server)
        if creds is not None:
            log.debug("using credentials for %s from %s", server, path)
            return creds
    return None


def ca_files(server: str) -> list[Path]:
    found: list[Path] = []
    for base in CERTS_DIRS:
        d = base / server
        if d.is_dir():
            found += sorted(p for p in d.iterdir() if p.suffix == ".crt")
    return found
