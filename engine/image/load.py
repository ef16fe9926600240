"""Load an image from a ``docker save`` tar or an OCI archive (``skopeo copy oci-archive:``).

Contract (:func:`load`): the archive (plain or gzip tar) is read in place, never unpacked; its
first image (or the linux/amd64 entry of an OCI index) is flattened into the repository like a
pulled image, under the pull lock of its config digest. A reference without a server is stored
under the server ``load`` (Sarus does the same): ``hpc-exec load x.tar myimg`` gives
``load/library/myimg:latest``. The entry's digest is the config digest. A malformed archive is an
ImageContentError naming the archive and what is missing.
"""

from __future__ import annotations

import gzip
import json
import posixpath
import tarfile
from pathlib import Path
from typing import IO

from hpc_exec.engine.image import manifest as mf
from hpc_exec.engine.image.layers import LayerSource
from hpc_exec.engine.image.pull import (
    PullLock,
    Reporter,
    Repository,
    convert_and_publish,
    entry_for,
    remove_damaged,
    temp_directory,
)
from hpc_exec.engine.image.reference import load_reference
from hpc_exec.engine.store.index import ImageEntry

from hpc_exec.errors import ImageContentError, InvalidInput

__all__ = ["load"]

class _Archive:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.tar = tarfile.open(path, "r:*")
            self.members = {posixpath.normpath(m.name.lstrip("/")): m
                            for m in self.tar.getmembers()}
        except (OSError, tarfile.TarError, EOFError) as exc:
            raise ImageContentError(f"cannot read image archive {path}: {exc}") from exc

    def read_bytes(self, name: str) -> bytes:
        with self.open(name) as f:
            return f.read()

    def open(self, name: str) -> IO[bytes]:
        member = self.members.get(posixpath.normpath(name))
        f = self.tar.extractfile(member) if member is not None else None
        if f is None:
            raise ImageContentError(f"image archive {self.path} has no file {name!r}")
        return f

    def has(self, name: str) -> bool:
        return posixpath.normpath(name) in self.members


def _layer_source(archive: _Archive, name: str, digest: str, compression: str | None
                  ) -> LayerSource:
    def opener() -> IO[bytes]:
        f = archive.open(name)
        if compression is None:  # docker save: sniff (newer dockers write gzip layers)
            head = f.read(2)
            f.seek(0)
            if head == b"\x1f\x8b":
                return gzip.GzipFile(fileobj=f, mode="rb")  # type: ignore[return-value]
        return f
    kind = "gzip" if compression == "gzip" else ""
    if compression == "zstd":
        raise ImageContentError(f"image archive {archive.path}: zstd layer {digest} is not "
                                "supported by load")
    return LayerSource(digest, opener, kind)


def _blob_name(digest: str) -> str:
    return "blobs/" + digest.replace(":", "/", 1)


def _read(archive: _Archive) -> tuple[bytes, list[LayerSource]]:
    """(config bytes, layer sources) of the archive's image."""
    if archive.has("oci-layout") and archive.has("index.json"):
        index = mf.parse(archive.read_bytes("index.json"), mf.OCI_INDEX, "index.json")
        assert isinstance(index, mf.Index)
        if not index.manifests:
            raise ImageContentError(f"OCI archive {archive.path} has an empty index.json")
        desc = index.manifests[0]
        image = mf.parse(archive.read_bytes(_blob_name(desc.digest)), desc.media_type, desc.digest)
        if isinstance(image, mf.Index):
            desc = mf.select_platform(image)
            image = mf.parse(archive.read_bytes(_blob_name(desc.digest)), desc.media_type,
                             desc.digest)
        assert isinstance(image, mf.Manifest)
        sources = [_layer_source(archive, _blob_name(d.digest), d.digest, mf.compression_of(d))
                   for d in image.layers]
        return archive.read_bytes(_blob_name(image.config.digest)), sources
    if archive.has("manifest.json"):
        try:
            data = json.loads(archive.read_bytes("manifest.json"))
            first = data[0]
            config_name, layers = str(first["Config"]), [str(x) for x in first["Layers"]]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ImageContentError(f"docker archive {archive.path}: malformed "
                                    "manifest.json") from exc
        sources = [_layer_source(archive, name, f"{archive.path.name}:{name}", None)
                   for name in layers]
        return archive.read_bytes(config_name), sources
    raise ImageContentError(f"{archive.path} is neither a docker-save tar (manifest.json) nor an "
                            "OCI archive (oci-layout, index.json)")


def load(archive_path: Path, ref: str, repo: Repository,
         reporter: Reporter | None = None, temp_dir: Path | None = None) -> ImageEntry:
    report = reporter or Reporter()
    reference = load_reference(ref)
    if reference.digest:  # a digest names an image in a registry (Sarus refuses it too)
        raise InvalidInput(f"invalid image reference {ref!r}: a loaded image is named by a tag, "
                           f"not a digest ({reference.digest})",
                           hint="give the name without '@...', e.g. "
                           f"{ref.partition('@')[0]}")
    temp_root = temp_directory(temp_dir, Path(repo.settings.temp_dir))
    if not archive_path.is_file():
        raise InvalidInput(f"image archive {archive_path} does not exist or is not a file")
    archive = _Archive(archive_path)
    try:
        config_bytes, sources = _read(archive)
        image_id = mf.digest_of(config_bytes)
        config = mf.parse_config(config_bytes, image_id)
        report.header([("image", reference.key), ("archive", str(archive_path)),
                       ("images directory", str(repo.layout.images_dir)),
                       ("image digest", image_id)])
        repo.layout.ensure()
        with PullLock(repo, image_id, reference, report, temp_root):
            remove_damaged(repo, image_id, report)
            sqfs_digest = None  # files already there: Index.add keeps what was recorded
            if not (repo.layout.squashfs(image_id).exists()
                    and repo.layout.image_metadata(image_id).exists()):
                sqfs_digest = convert_and_publish(sources, config, repo.layout, report,
                                                  image_id, repo.settings.squashfs)
            entry = entry_for(reference, image_id, image_id, repo.layout, sqfs_digest)
            repo.index.add(entry)
        report.say(f"loaded {reference.key} ({entry.short_id})")
        return entry
    finally:
        archive.tar.close()

