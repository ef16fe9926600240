"""Image references: parse ``[[server/]namespace/]image[:tag][@digest]`` into one storage key.

Contract:

* :func:`parse` accepts the Docker/OCI reference grammar (distribution/reference), optionally
  prefixed by ``docker://`` or ``oras://`` as Snakemake and Apptainer users write it.
* The first path component is a server when it contains ``.`` or ``:``, is ``localhost``, or
  has an uppercase letter (a repository name cannot: ``MyReg/alpine`` is server ``MyReg``, as
  in Docker's and Sarus' grammar); otherwise the server is ``docker.io`` and a one-component
  path gets the ``library/`` namespace. The server is lowercased unless that would make it
  look like a namespace (``MyReg`` stays); ``index.docker.io`` and ``registry-1.docker.io``
  mean ``docker.io``.
* The tag defaults to ``latest``. A digest wins over a tag: the tag is kept for display only.
* :attr:`ImageReference.key` is the one normalised storage key:
  ``server/repository@digest`` when a digest is given, else ``server/repository:tag``.
* Anything else raises :class:`~hpc_exec.errors.InvalidInput` with a one-line reason naming the
  reference and the offending part (uppercase, ``..``, an empty component, a bad digest, ...).

Pure: no I/O.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from hpc_exec.errors import InvalidInput

__all__ = ["DEFAULT_SERVER", "LOAD_SERVER", "ImageReference", "api_host", "load_reference", "parse"]

DEFAULT_SERVER = "docker.io"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
_DOCKER_ALIASES = {"index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
_PREFIXES = ("docker://", "oras://")
_FOREIGN = ("shub://", "library://", "oci-archive:", "docker-archive:", "http://", "https://")

_HOST_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST_RE = re.compile(rf"(?:{_HOST_LABEL}(?:\.{_HOST_LABEL})*|\[[0-9a-fA-F:.]+\])(?::([0-9]+))?",
                      re.ASCII)
_COMPONENT_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)  # ASCII: 'lätest' is no tag
_DIGEST_RE = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_MAX_NAME = 255


class ImageReference(NamedTuple):
    """A parsed, normalised image reference (a NamedTuple: no dataclass on the run path)."""

    server: str  # e.g. docker.io, 127.0.0.1:5000
    repository: str  # namespace/image, e.g. library/busybox
    tag: str  # display only when a digest is set
    digest: str | None = None  # e.g. sha256:<64 hex>

    @property
    def name(self) -> str:
        """``server/repository`` (no tag or digest)."""
        return f"{self.server}/{self.repository}"

    @property
    def key(self) -> str:
        """The one storage key of this reference."""
        return f"{self.name}@{self.digest}" if self.digest else f"{self.name}:{self.tag}"

    @property
    def manifest_reference(self) -> str:
        """What to ask the registry for: the digest if given, else the tag."""
        return self.digest or self.tag

    def __str__(self) -> str:
        return self.key


def _domain_like(component: str) -> bool:
    return "." in component or ":" in component or component == "localhost"


def _fail(text: str, reason: str) -> InvalidInput:
    return InvalidInput(f"invalid image reference {text!r}: {reason}")


def api_host(server: str) -> str:
    """The host that serves the registry API for ``server`` (Docker Hub's differs)."""
    return "registry-1.docker.io" if server == DEFAULT_SERVER else server


def parse(text: str) -> ImageReference:
    """Parse and normalise ``text``; raise InvalidInput naming the reason."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput(f"invalid image reference {text!r}: it is empty")
    original = text
    text = text.strip()
    for prefix in _PREFIXES:
        if text.startswith(prefix):
            text = text[len(prefix):]
            break
    else:
        for foreign in _FOREIGN:
            if text.startswith(foreign):
                raise _fail(original, f"the {foreign!r} scheme is not supported "
                            "(use docker://server/name:tag)")
        if "://" in text:
            raise _fail(original, f"unknown scheme {text.split('://', 1)[0]!r}://")
    if any(c.isspace() for c in text):
        raise _fail(original, "it contains whitespace")

    digest: str | None = None
    if "@" in text:
        text, _, digest = text.partition("@")
        if "@" in digest:
            raise _fail(original, "more than one '@'")
        _check_digest(original, digest)

    # A tag is after the last ':' that follows the last '/' (a ':' before it is a port).
    tag = DEFAULT_TAG
    last_slash = text.rfind("/")
    colon = text.rfind(":")
    if colon > last_slash:
        text, tag = text[:colon], text[colon + 1:]
        if not tag:
            raise _fail(original, "the tag after ':' is empty")
        if not _TAG_RE.fullmatch(tag):
            raise _fail(original, f"bad tag {tag!r} (letters, digits, '_', '.', '-'; at most "
                        "128, not starting with '.' or '-')")

    parts = text.split("/")
    server = DEFAULT_SERVER
    if len(parts) > 1 and (_domain_like(parts[0]) or parts[0] != parts[0].lower()):
        server = parts.pop(0)
        host = _HOST_RE.fullmatch(server)
        if not host:
            raise _fail(original, f"bad registry server {server!r}")
        port = host.group(1)
        if port is not None and (len(port) > 5 or not 0 < int(port) < 65536):
            raise _fail(original, f"bad port {port!r} in {server!r} (1 to 65535)")
        if _domain_like(server.lower()):  # host names are case-insensitive: one key per
            server = server.lower()  # registry; 'MyReg' would then read as a namespace
        if server in _DOCKER_ALIASES:
            server = DEFAULT_SERVER
    for part in parts:
        if part == "":
            raise _fail(original, "empty path component (check for '//' or a leading or "
                        "trailing '/')")
        if part in (".", ".."):
            raise _fail(original, f"path component {part!r} is not allowed")
        if part != part.lower() and _COMPONENT_RE.fullmatch(part.lower()):
            raise _fail(original, f"repository name must be lowercase (found {part!r})")
        if not _COMPONENT_RE.fullmatch(part):
            raise _fail(original, f"bad path component {part!r} (lowercase letters, digits and "
                        "single '.', '_', '__' or '-' separators between them)")
    if server == DEFAULT_SERVER and len(parts) == 1:
        parts.insert(0, DEFAULT_NAMESPACE)
    repository = "/".join(parts)
    if len(server) + 1 + len(repository) > _MAX_NAME:
        raise _fail(original, f"the name is longer than {_MAX_NAME} characters")
    return ImageReference(server, repository, tag, digest)


def _check_digest(original: str, digest: str) -> None:
    if not digest:
        raise _fail(original, "the digest after '@' is empty")
    algorithm, _, value = digest.partition(":")
    if algorithm == "sha256":
        if not _HEX64.fullmatch(value):
            raise _fail(original, f"bad digest {digest!r} (sha256 needs 64 lowercase hex "
                        "digits)")
        return
    if not _DIGEST_RE.fullmatch(digest):
        raise _fail(original, f"bad digest {digest!r} (expected algorithm:hex)")
    raise _fail(original, f"unsupported digest algorithm {algorithm!r} (use sha256)")


LOAD_SERVER = "load"  # the pseudo server of images loaded from archives (hpc-exec load)


def load_reference(text: str) -> ImageReference:
    """``text`` parsed for a loaded image; without an explicit server it goes under ``load/``."""
    bare = text.removeprefix("docker://")
    if bare.startswith(f"{LOAD_SERVER}/"):  # load/library/name: as listed by images
        ref = parse(bare[len(LOAD_SERVER) + 1:])
        if ref.server != DEFAULT_SERVER:
            raise InvalidInput(f"invalid image reference {text!r}: a loaded image has no "
                               "other server")
        return ref._replace(server=LOAD_SERVER)
    ref = parse(text)
    explicit = bare.split("/")[0] in ("docker.io", "index.docker.io", "registry-1.docker.io")
    if ref.server == DEFAULT_SERVER and not explicit:
        ref = ref._replace(server=LOAD_SERVER)
    return ref
