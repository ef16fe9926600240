"""Manifests, indexes and image configs: parse, check and select a platform (pure, no I/O).

Contract:

* :func:`parse` turns a manifest body into an :class:`Index` (OCI index or Docker manifest list)
  or a :class:`Manifest` (OCI or Docker schema 2). Schema 1 and unknown types are refused with
  :class:`~hpc_exec.errors.RegistryError`; a malformed body is
  :class:`~hpc_exec.errors.ImageContentError`.
* :func:`select_platform` picks the entry for ``os/architecture[/variant]`` (linux/amd64 by
  default) and names the available platforms when none matches.
* :class:`ImageConfig` keeps what the run side needs from the image config: entrypoint, cmd,
  env (a list of ``NAME=value``), workdir, labels, user; :meth:`ImageConfig.metadata` is the
  small JSON stored next to each squashfs (docs/cache-layout.md).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from hpc_exec.errors import ImageContentError, ImageNotFound, RegistryError

__all__ = ["ACCEPT", "Descriptor", "ImageConfig", "Index", "Manifest", "compression_of",
           "digest_of", "parse", "parse_config", "select_platform"]

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v1+prettyjws")
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
ACCEPT = ", ".join((*INDEX_TYPES, *MANIFEST_TYPES))

# Layer media types -> compression ("gzip", "zstd" or "" for a plain tar).
_LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar": "",
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar": "",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": "zstd",
    "application/vnd.docker.image.rootfs.diff.tar": "",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "gzip",
}


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: dict[str, str] = field(default_factory=dict)

    @property
    def hex(self) -> str:
        return self.digest.partition(":")[2]


@dataclass(frozen=True)
class Index:
    digest: str
    media_type: str
    manifests: tuple[Descriptor, ...]


@dataclass(frozen=True)
class Manifest:
    digest: str
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]


def compression_of(desc: Descriptor) -> str:
    """'gzip', 'zstd' or '' for a layer descriptor; ImageContentError for anything else."""
    try:
        return _LAYER_TYPES[desc.media_type]
    except KeyError as exc:
        raise ImageContentError(f"layer {desc.digest} has unsupported media type "
                                f"{desc.media_type!r}") from exc


def _descriptor(obj: Any, where: str) -> Descriptor:
    if not isinstance(obj, dict):
        raise ImageContentError(f"{where}: descriptor is not an object")
    digest, size = obj.get("digest"), obj.get("size")
    if not isinstance(digest, str) or not digest.startswith("sha256:") or len(digest) != 71:
        raise ImageContentError(f"{where}: bad or unsupported digest {digest!r}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ImageContentError(f"{where}: bad size {size!r} for {digest}")
    platform = obj.get("platform") or {}
    plat = {k: str(v) for k, v in platform.items() if isinstance(v, str)} \
        if isinstance(platform, dict) else {}
    return Descriptor(str(obj.get("mediaType", "")), digest, size, plat)


def parse(body: bytes, content_type: str, digest: str) -> Index | Manifest:
    """Parse a manifest or index whose (already verified) digest is ``digest``."""
    ctype = content_type.split(";")[0].strip()
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ImageContentError(f"manifest {digest} is not valid JSON") from exc
    if not isinstance(data, dict):
        raise ImageContentError(f"manifest {digest} is not a JSON object")
    media = data.get("mediaType") or ctype
    if media in DOCKER_SCHEMA1 or data.get("schemaVersion") == 1:
        raise RegistryError(f"manifest {digest} uses Docker schema 1, which is not supported",
                            hint="re-push the image with a current docker, podman or skopeo")
    if media not in INDEX_TYPES and media not in MANIFEST_TYPES:
        # OCI allows omitting mediaType: tell by shape.
        if "manifests" in data:
            media = OCI_INDEX
        elif "layers" in data:
            media = OCI_MANIFEST
        else:
            raise RegistryError(f"manifest {digest} has unsupported media type {media!r}")
    if media in INDEX_TYPES:
        entries = data.get("manifests")
        if not isinstance(entries, list):
            raise ImageContentError(f"index {digest} has no 'manifests' list")
        return Index(digest, media, tuple(_descriptor(e, f"index {digest}") for e in entries))
    layers = data.get("layers")
    if not isinstance(layers, list):
        raise ImageContentError(f"manifest {digest} has no 'layers' list")
    config = _descriptor(data.get("config"), f"manifest {digest} config")
    return Manifest(digest, media, config,
                    tuple(_descriptor(x, f"manifest {digest} layer") for x in layers))


def select_platform(index: Index, platform: str = "linux/amd64") -> Descriptor:
    """The entry of ``index`` for ``os/arch[/variant]``; ImageNotFound naming the others."""
    want = platform.split("/")
    if len(want) not in (2, 3):
        raise RegistryError(f"bad platform {platform!r} (expected os/arch[/variant])")
    seen: list[str] = []
    for desc in index.manifests:
        plat = desc.platform
        if desc.media_type not in (*MANIFEST_TYPES, ""):
            continue  # nested indexes, attestations
        os_, arch, variant = plat.get("os", ""), plat.get("architecture", ""), \
            plat.get("variant", "")
        if os_ == "unknown" or arch == "unknown":
            continue  # buildkit attestation manifests
        seen.append("/".join(x for x in (os_, arch, variant) if x))
        if os_ == want[0] and arch == want[1] and (len(want) == 2 or variant == want[2]):
            return desc
    raise ImageNotFound(f"index {index.digest} has no {platform} image (it has: "
                        f"{', '.join(seen) or 'none'})")


@dataclass(frozen=True)
class ImageConfig:
    digest: str
    architecture: str
    os: str
    entrypoint: list[str] | None
    cmd: list[str] | None
    env: list[str]
    workdir: str
    user: str
    labels: dict[str, str]
    diff_ids: tuple[str, ...]

    def metadata(self) -> dict[str, Any]:
        """The JSON kept next to the squashfs (what ``hpc-exec run`` reads)."""
        return {"version": 1, "image_id": self.digest, "architecture": self.architecture,
                "os": self.os, "entrypoint": self.entrypoint, "cmd": self.cmd, "env": self.env,
                "workdir": self.workdir, "user": self.user, "labels": self.labels}


def _strings(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(v) for v in value]
    return None


def parse_config(body: bytes, digest: str) -> ImageConfig:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ImageContentError(f"image config {digest} is not valid JSON") from exc
    if not isinstance(data, dict):
        raise ImageContentError(f"image config {digest} is not a JSON object")
    cfg = data.get("config") or {}
    if not isinstance(cfg, dict):
        cfg = {}
    labels = cfg.get("Labels") or {}
    rootfs = data.get("rootfs") or {}
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    return ImageConfig(
        digest=digest,
        architecture=str(data.get("architecture", "")),
        os=str(data.get("os", "")),
        entrypoint=_strings(cfg.get("Entrypoint")),
        cmd=_strings(cfg.get("Cmd")),
        env=_strings(cfg.get("Env")) or [],
        workdir=str(cfg.get("WorkingDir") or "/"),
        user=str(cfg.get("User") or ""),
        labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
        diff_ids=tuple(str(d) for d in diff_ids) if isinstance(diff_ids, list) else (),
    )
