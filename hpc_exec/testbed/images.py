"""Test images built on this machine (no Docker) and pushed to the testbed registries.

* ``small``: one layer, Debian's static busybox plus applet symlinks and an /etc/os-release.
* ``mpich``: Debian with MPICH (``libmpich12``) and an ``mpi-hello`` built on this host, in
  two variants whose library file names carry an ABI-compatible (12.1.0) and an incompatible
  (13.0.0) version, for the MPI hook.
* ``python``: a realistic three-layer Debian image: (1) ``debootstrap --variant=minbase``,
  (2) the difference a second debootstrap with python3 makes, (3) a layer that deletes files
  (whiteouts, an opaque directory) and adds a hard link. It is pushed as a multi-platform
  index whose linux/amd64 entry is the real image; a linux/arm64 entry points at the small
  layer, so a client that picks the wrong platform is caught by tests.
* ``parsl``: the ``python`` image's linux/amd64 layers plus one layer with parsl (and its
  dependencies) installed from PyPI into ``/usr/local`` by this host's pip, at a given version:
  the submit side's for the Parsl front end's tests, another one for its version-mismatch test.

Builds are deterministic (fixed mtimes, sorted members, gzip mtime 0), so pushing again is a
no-op, and are cached under the state dir (``image-cache/``) by an atomic directory rename.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import re
import shutil
import stat
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpc_exec import process
from hpc_exec.errors import TestbedError
from hpc_exec.testbed.state import TestbedLayout

__all__ = ["BUILDER_VERSION", "MPICH_VARIANTS", "BuiltImage", "build_mpich", "build_parsl",
           "build_python", "build_small", "debian_mirror", "other_parsl_version", "push_image",
           "submit_parsl_version"]

log = logging.getLogger(__name__)

BUILDER_VERSION = 3  # bump to rebuild cached images after changing a recipe
EPOCH = 1_700_000_000  # fixed mtime of generated members: same input, same digests
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZ = "application/vnd.oci.image.layer.v1.tar+gzip"


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class BuiltImage:
    """An image in a directory: blobs/<hex> plus ``image.json`` naming the top manifest."""

    root: Path

    @property
    def meta(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.root / "image.json").read_text())
        return data

    def blob(self, digest: str) -> bytes:
        return (self.root / "blobs" / digest.split(":", 1)[1]).read_bytes()


class _ImageWriter:
    """Collects blobs and manifests for one image directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "blobs").mkdir(parents=True)
        self.manifests: list[tuple[str, str]] = []  # (digest, media type), children first

    def blob(self, data: bytes) -> str:
        digest = _sha(data)
        (self.root / "blobs" / digest.split(":", 1)[1]).write_bytes(data)
        return digest

    def manifest(self, layers_tar: list[bytes], config: dict[str, object], arch: str = "amd64"
                 ) -> dict[str, object]:
        layer_descs, diff_ids = [], []
        for tar in layers_tar:
            gz = gzip.compress(tar, compresslevel=6, mtime=0)
            layer_descs.append({"mediaType": OCI_LAYER_GZ, "digest": self.blob(gz),
                                "size": len(gz)})
            diff_ids.append(_sha(tar))
        cfg = {
            "architecture": arch, "os": "linux",
            "created": "2023-11-14T22:13:20Z",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created_by": "hpc-exec testbed"} for _ in layers_tar],
        }
        cfg_bytes = json.dumps(cfg, sort_keys=True).encode()
        manifest = {
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": self.blob(cfg_bytes),
                       "size": len(cfg_bytes)},
            "layers": layer_descs,
        }
        data = json.dumps(manifest, sort_keys=True).encode()
        digest = self.blob(data)
        self.manifests.append((digest, OCI_MANIFEST))
        return {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(data),
                "platform": {"architecture": arch, "os": "linux"}}

    def index(self, entries: list[dict[str, object]]) -> None:
        data = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries},
                          sort_keys=True).encode()
        self.manifests.append((self.blob(data), OCI_INDEX))

    def finish(self, variants: dict[str, str] | None = None) -> None:
        """Write image.json. ``variants`` names several top manifests (variant -> digest) of
        one image directory that share blobs; without it the last manifest is the top one."""
        if variants:
            meta: dict[str, object] = {"variants": variants,
                                       "children": [d for d, _ in self.manifests]}
        else:
            top_digest, top_type = self.manifests[-1]
            meta = {"manifest": top_digest, "mediaType": top_type,
                    "children": [d for d, _ in self.manifests[:-1]]}
        (self.root / "image.json").write_text(json.dumps(meta, indent=2) + "\n")


def _cached(layout: TestbedLayout, name: str, build: Callable[[Path], None]) -> BuiltImage:
    """Return the cached image ``name``, building it first (to a temp dir, then rename)."""
    from filelock import FileLock

    final = layout.image_cache / f"{name}-v{BUILDER_VERSION}"
    if (final / "image.json").exists():
        return BuiltImage(final)
    layout.image_cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(layout.image_cache / f"{name}.lock"), timeout=900):
        if (final / "image.json").exists():
            return BuiltImage(final)
        tmp = Path(tempfile.mkdtemp(dir=layout.image_cache, prefix=f".{name}-"))
        try:
            build(tmp / "image")
            os.rename(tmp / "image", final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        for old in layout.image_cache.glob(f"{name}-v*"):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    return BuiltImage(final)


# -- tar helpers ---------------------------------------------------------------------------

def _tar(members: Iterable[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _info(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, *,
          size: int = 0, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.linkname = kind, mode, size, linkname
    info.mtime, info.uid, info.gid, info.uname, info.gname = EPOCH, 0, 0, "root", "root"
    return info


def _file(name: str, data: bytes, mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    return _info(name, mode=mode, size=len(data)), data


def _dir(name: str, mode: int = 0o755) -> tuple[tarfile.TarInfo, None]:
    return _info(name, tarfile.DIRTYPE, mode), None


def _symlink(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    return _info(name, tarfile.SYMTYPE, 0o777, linkname=target), None


def _hardlink(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    return _info(name, tarfile.LNKTYPE, 0o755, linkname=target), None


# -- small: busybox-static -----------------------------------------------------------------

def _busybox_layer() -> bytes:
    busybox = Path(process.require("busybox"))
    out = process.run([str(busybox), "--list"], timeout=30, desc="listing busybox applets")
    applets = sorted({a for a in out.stdout.split() if re.fullmatch(r"[\w.\-\[]+", a)}
                     - {"busybox"})
    members: list[tuple[tarfile.TarInfo, bytes | None]] = [
        _dir("bin"), _dir("dev"), _dir("etc"), _dir("home"), _dir("proc"), _dir("root", 0o700),
        _dir("sys"), _dir("tmp", 0o1777), _dir("usr"), _dir("usr/bin"), _dir("var"),
        _dir("var/tmp", 0o1777),
        _file("bin/busybox", busybox.read_bytes(), 0o755),
        _file("etc/os-release", b'NAME="hpc-exec testbed busybox"\nID=busybox\n'
              b'PRETTY_NAME="hpc-exec testbed busybox"\n'),
    ]
    members += [_symlink(f"bin/{a}", "busybox") for a in applets]
    members.append(_symlink("usr/bin/env", "../../bin/busybox"))
    return _tar(members)


SMALL_CONFIG: dict[str, object] = {
    "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
    "Cmd": ["/bin/sh"],
    "WorkingDir": "/",
    "Labels": {"org.opencontainers.image.title": "hpc-exec testbed busybox"},
}


def build_small(layout: TestbedLayout) -> BuiltImage:
    def build(dest: Path) -> None:
        w = _ImageWriter(dest)
        w.manifest([_busybox_layer()], SMALL_CONFIG)
        w.finish()
    return _cached(layout, "small", build)


# -- python: Debian minbase + python3 + deletions ------------------------------------------

def debian_mirror(etc: Path = Path("/etc")) -> tuple[str, str]:
    """(mirror URL, codename) for debootstrap, read from this host's apt sources under ``etc``.

    ``HPC_EXEC_TESTBED_DEBIAN_MIRROR`` overrides the mirror. The host's sources are what the
    site already trusts and can reach.
    """
    codename = ""
    for line in (etc / "os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            codename = line.split("=", 1)[1].strip('"')
    if not codename:
        raise TestbedError("cannot tell this host's Debian codename from /etc/os-release")
    override = os.environ.get("HPC_EXEC_TESTBED_DEBIAN_MIRROR")
    if override:
        return override, codename
    for uri, suites in _apt_sources(etc / "apt"):
        if codename in suites:
            return uri, codename
    raise TestbedError(
        f"no apt source for Debian '{codename}' found in /etc/apt/sources.list(.d)",
        hint="set HPC_EXEC_TESTBED_DEBIAN_MIRROR to a Debian mirror URL")


def _apt_sources(apt: Path) -> list[tuple[str, list[str]]]:
    found: list[tuple[str, list[str]]] = []
    d = apt / "sources.list.d"
    for f in sorted(d.glob("*.sources")) if d.is_dir() else []:
        for stanza in f.read_text().split("\n\n"):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if ":" in line and not line.startswith(("#", " ")):
                    k, v = line.split(":", 1)
                    fields[k.strip().lower()] = v.strip()
            if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes") != "no":
                for uri in fields.get("uris", "").split():
                    found.append((uri, fields.get("suites", "").split()))
    lists = [apt / "sources.list", *(sorted(d.glob("*.list")) if d.is_dir() else [])]
    for f in lists:
        if not f.exists():
            continue
        for line in f.read_text().splitlines():
            m = re.match(r"\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
            if m:
                found.append((m.group(1), [m.group(2)]))
    return found


def _debootstrap(target: Path, layout: TestbedLayout, include: str | None) -> None:
    """debootstrap minbase (+ ``include``) into ``target``; .debs are cached for later builds."""
    cache = layout.image_cache / "debootstrap-debs"
    cache.mkdir(parents=True, exist_ok=True)
    mirror, codename = debian_mirror()
    argv = ["debootstrap", "--variant=minbase", f"--cache-dir={cache}"]
    if include:
        argv.append(f"--include={include}")
    argv += [codename, str(target), mirror]
    log.warning("building the Debian test image (%s%s): about a minute, once",
                codename, f" + {include}" if include else "")
    process.run(argv, timeout=1200, desc=f"debootstrap {codename}")
    # As Debian's official images do: no apt lists or package caches in the image.
    for sub in ("var/lib/apt/lists", "var/cache/apt", "var/cache/apt/archives"):
        for entry in (target / sub).glob("*"):
            if entry.is_file() and entry.name != "lock":
                entry.unlink()


def _signature(path: Path, st: os.stat_result) -> tuple[object, ...]:
    mode = st.st_mode
    if stat.S_ISREG(mode):
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        extra: object = h.hexdigest()
    elif stat.S_ISLNK(mode):
        extra = os.readlink(path)
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        extra = st.st_rdev
    else:
        extra = None
    return (stat.S_IFMT(mode), stat.S_IMODE(mode), st.st_uid, st.st_gid, extra)


def _walk(root: Path) -> dict[str, tuple[object, ...]]:
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            out[rel] = _signature(p, os.lstat(p))
    return out


def _rootfs_tar(root: Path, only: set[str] | None = None,
                whiteouts: Iterable[str] = ()) -> bytes:
    """Tar ``root`` (or only the relative paths in ``only``), plus whiteout files."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        paths = sorted(_walk(root)) if only is None else sorted(only)
        for rel in paths:
            p = root / rel
            if stat.S_ISSOCK(os.lstat(p).st_mode):
                continue
            info = tar.gettarinfo(str(p), arcname=rel)
            if info.isreg():
                with open(p, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
        for wh in sorted(whiteouts):
            parent, _, base = wh.rpartition("/")
            tar.addfile(_info(f"{parent}/.wh.{base}" if parent else f".wh.{base}"))
    return buf.getvalue()


PYTHON_CONFIG: dict[str, object] = {
    "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG=C.UTF-8"],
    "Cmd": ["python3"],
    "WorkingDir": "/",
    "Labels": {"org.opencontainers.image.title": "hpc-exec testbed debian-python"},
}

HELLO = b"#!/usr/bin/python3\nprint('hello from the hpc-exec testbed image')\n"


def _deletion_layer(rootfs: Path) -> bytes:
    """Layer 3: whiteouts for a file and a directory, an opaque dir, a hard link."""
    members: list[tuple[tarfile.TarInfo, bytes | None]] = []
    if (rootfs / "etc/motd").exists():
        members.append(_file("etc/.wh.motd", b""))
    if (rootfs / "usr/share/info").exists():
        members.append(_file("usr/share/.wh.info", b""))
    members += [
        _dir("usr/share/doc"),
        _file("usr/share/doc/.wh..wh..opq", b""),
        _file("usr/share/doc/README.hpc-exec", b"Docs were removed by an opaque whiteout.\n"),
        _dir("usr/local/bin"),
        _file("usr/local/bin/hpc-exec-hello", HELLO, 0o755),
        _hardlink("usr/local/bin/hpc-exec-hello-link", "usr/local/bin/hpc-exec-hello"),
    ]
    return _tar(members)


def build_python(layout: TestbedLayout) -> BuiltImage:
    def build(dest: Path) -> None:
        base, full = dest.parent / "base", dest.parent / "full"
        _debootstrap(base, layout, None)
        _debootstrap(full, layout, "python3")
        before, after = _walk(base), _walk(full)
        layer1 = _rootfs_tar(base)
        changed = {p for p, sig in after.items() if before.get(p) != sig}
        removed = {p for p in before if p not in after
                   and p.rpartition("/")[0] not in before.keys() - after.keys()}
        layer2 = _rootfs_tar(full, only=changed, whiteouts=removed)
        layer3 = _deletion_layer(full)
        w = _ImageWriter(dest)
        amd64 = w.manifest([layer1, layer2, layer3], PYTHON_CONFIG, "amd64")
        # A decoy arm64 entry made of the busybox layer: picking it would be a client bug.
        small_layer = _busybox_layer()
        arm64 = w.manifest([small_layer], SMALL_CONFIG, "arm64")
        w.index([amd64, arm64])
        w.finish()
    return _cached(layout, "python", build)


def push_image(image: BuiltImage, client: object, repo: str, tag: str,
               variant: str | None = None) -> None:
    """Push every blob, then the child manifests by digest, then the top manifest (or the one
    of ``variant``) by tag."""
    from hpc_exec.engine.image.registry import RegistryClient

    assert isinstance(client, RegistryClient)
    meta = image.meta
    top = meta["variants"][variant] if variant else meta["manifest"]
    manifests = [d for d in meta.get("children", []) if d != top] + [top]
    blob_dir = image.root / "blobs"
    manifest_hexes = {d.split(":", 1)[1] for d in manifests}
    for f in sorted(blob_dir.iterdir()):
        if f.name not in manifest_hexes:
            client.push_blob(repo, f"sha256:{f.name}", f.read_bytes())
    for digest in manifests:
        data = image.blob(digest)
        media = json.loads(data).get("mediaType", OCI_MANIFEST)
        client.put_manifest(repo, tag if digest == top else digest, data, media)


# -- mpich: an MPICH-ABI image in two variants, for the MPI hook -----------------------------

MPI_HELLO_C = b"""\
#include <mpi.h>
#include <stdio.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int rank, size, sum = 0, len;
    char host[256], version[MPI_MAX_LIBRARY_VERSION_STRING];
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Get_library_version(version, &len);
    gethostname(host, sizeof host);
    MPI_Allreduce(&rank, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    printf("mpi-hello rank %d of %d on %s sum %d\\n", rank, size, host, sum);
    MPI_Finalize();
    return 0;
}
"""
MPICH_LIBS = ("libmpich", "libmpichcxx", "libmpichfort")
MPICH_VARIANTS = {"compatible": "12.1.0", "incompatible": "13.0.0"}
LIBDIR = "usr/lib/x86_64-linux-gnu"

MPICH_CONFIG: dict[str, object] = {
    "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
    "Cmd": ["mpi-hello"],
    "WorkingDir": "/",
    "Labels": {"org.opencontainers.image.title": "hpc-exec testbed mpich",
               "com.hooks.mpi.type": "mpich"},
}


def _mpi_hello(work: Path) -> bytes:
    src, exe = work / "mpi-hello.c", work / "mpi-hello"
    src.write_bytes(MPI_HELLO_C)
    process.run(["mpicc", "-O2", "-o", str(exe), str(src)], timeout=300,
                desc="compiling the MPI hello program")
    return exe.read_bytes()


def _mpich_layer(rootfs: Path, version: str, hello: bytes) -> bytes:
    """Re-version the image's MPICH libraries to ``version`` and add mpi-hello.

    The libraries' content stays Debian's; only the file names (which the MPI hook reads the
    ABI version from) change: 12.1.0 is older than the host's 12.x.y but ABI-compatible,
    13.0.0 is a different major and must be refused.
    """
    major = version.split(".")[0]
    members: list[tuple[tarfile.TarInfo, bytes | None]] = []
    for lib in MPICH_LIBS:
        found = sorted((rootfs / LIBDIR).glob(f"{lib}.so.*.*.*"))
        if not found:
            raise TestbedError(f"the mpich image build found no {lib}.so.X.Y.Z in {LIBDIR}")
        real = found[0]
        old_major = real.name.split(".so.", 1)[1].split(".")[0]
        members.append(_file(f"{LIBDIR}/.wh.{real.name}", b""))
        if old_major != major:
            members.append(_file(f"{LIBDIR}/.wh.{lib}.so.{old_major}", b""))
        members.append(_file(f"{LIBDIR}/{lib}.so.{version}", real.read_bytes()))
        members.append(_symlink(f"{LIBDIR}/{lib}.so.{major}", f"{lib}.so.{version}"))
    members += [_dir("usr/local/bin"), _file("usr/local/bin/mpi-hello", hello, 0o755)]
    return _tar(members)


def build_mpich(layout: TestbedLayout) -> BuiltImage:
    """One image dir, two variants ('compatible', 'incompatible') sharing the base layer."""
    def build(dest: Path) -> None:
        rootfs = dest.parent / "rootfs"
        _debootstrap(rootfs, layout, "libmpich12")
        base = _rootfs_tar(rootfs)
        hello = _mpi_hello(dest.parent)
        w = _ImageWriter(dest)
        variants = {}
        for variant, version in MPICH_VARIANTS.items():
            desc = w.manifest([base, _mpich_layer(rootfs, version, hello)], MPICH_CONFIG)
            variants[variant] = str(desc["digest"])
        w.finish(variants)
    return _cached(layout, "mpich", build)


# -- parsl: the python image plus parsl from PyPI, for the Parsl front end -------------------

PARSL_DEPS = ("dill", "filelock", "psutil", "pyzmq", "requests", "setproctitle",
              "sortedcontainers", "tblib", "typeguard", "typing-extensions")
PARSL_OTHER_VERSIONS = ("2026.10.19", "2026.10.12")  # known-good releases for the mismatch


def submit_parsl_version() -> str:
    """The parsl version of this Python (the submit side of the Parsl tests)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("parsl")
    except PackageNotFoundError as exc:
        raise TestbedError("parsl is not installed in this Python; the parsl test images "
                           "copy its version", hint="pip install parsl") from exc


def other_parsl_version(submit: str) -> str:
    """A released parsl version other than ``submit``, for the mismatch test."""
    return next(v for v in PARSL_OTHER_VERSIONS if v != submit)


def _pins(parsl_version: str, same_deps: bool) -> list[str]:
    """``parsl==V`` plus, for the submit side's version, its dependencies at the versions
    installed here (a worker then deserialises with the same dill, zmq, tblib)."""
    from importlib.metadata import PackageNotFoundError, version

    pins = [f"parsl=={parsl_version}"]
    for dep in PARSL_DEPS if same_deps else ():
        try:
            pins.append(f"{dep}=={version(dep)}")
        except PackageNotFoundError:
            pass
    return pins


def _pip_layer(stage: Path, layout: TestbedLayout, pins: list[str]) -> bytes:
    """Install ``pins`` into ``stage/usr/local`` as Debian's python3 reads it, and tar it.

    ``pip install --target`` with this host's pip (binary wheels only; the image's python3 is
    this host's Debian python3, so cp3XX wheels fit); downloads are cached in the state dir.
    Console scripts get ``#!/usr/bin/python3``; mtimes are fixed, then the .pyc files are
    compiled against those mtimes, so they stay valid in the image.
    """
    pyver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = stage / "usr/local/lib" / pyver / "dist-packages"
    target = stage / "pip-target"
    cache = layout.image_cache / "pip-cache"
    cache.mkdir(parents=True, exist_ok=True)
    log.warning("building a parsl test image (%s): pip install, once", " ".join(pins))
    process.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-compile",
                 "--only-binary=:all:", "--no-warn-script-location", f"--cache-dir={cache}",
                 f"--target={target}", *pins], timeout=900, desc="pip install parsl")
    site.parent.mkdir(parents=True)
    bin_dir = stage / "usr/local/bin"
    bin_dir.mkdir(parents=True)
    if (target / "bin").is_dir():
        for script in sorted((target / "bin").iterdir()):
            data = script.read_bytes()
            if data.startswith(b"#!") and b"python" in data.split(b"\n", 1)[0]:
                data = b"#!/usr/bin/python3\n" + data.split(b"\n", 1)[1]
            (bin_dir / script.name).write_bytes(data)
            (bin_dir / script.name).chmod(0o755)
        shutil.rmtree(target / "bin")
    os.rename(target, site)
    shutil.rmtree(stage / "usr/local/lib" / pyver / "dist-packages" / "__pycache__",
                  ignore_errors=True)

    def fix_mtimes() -> None:
        for dirpath, dirnames, filenames in os.walk(stage):
            for name in dirnames + filenames:
                os.utime(Path(dirpath) / name, (EPOCH, EPOCH), follow_symlinks=False)
        os.utime(stage, (EPOCH, EPOCH))

    fix_mtimes()
    process.run([sys.executable, "-m", "compileall", "-q", "-j0", str(site)], timeout=600,
                desc="compiling the parsl image's modules", check=False)
    fix_mtimes()
    return _rootfs_tar(stage)


def _base_amd64(base: BuiltImage) -> tuple[dict[str, Any], dict[str, Any]]:
    """(manifest, config) of ``base``'s linux/amd64 image."""
    meta = base.meta
    top = json.loads(base.blob(meta["manifest"]))
    if "manifests" in top:
        entry = next(m for m in top["manifests"]
                     if m.get("platform", {}).get("architecture") == "amd64")
        top = json.loads(base.blob(entry["digest"]))
    return top, json.loads(base.blob(top["config"]["digest"]))


def build_parsl(layout: TestbedLayout, parsl_version: str, *, same_deps: bool = True
                ) -> BuiltImage:
    """The ``python`` image plus one layer with parsl ``parsl_version`` (one manifest)."""
    base = build_python(layout)

    def build(dest: Path) -> None:
        layer = _pip_layer(dest.parent / "stage", layout, _pins(parsl_version, same_deps))
        manifest, config = _base_amd64(base)
        w = _ImageWriter(dest)
        descs, diff_ids = [], list(config["rootfs"]["diff_ids"])
        for desc in manifest["layers"]:
            src = base.root / "blobs" / desc["digest"].split(":", 1)[1]
            os.link(src, dest / "blobs" / src.name)
            descs.append(desc)
        gz = gzip.compress(layer, compresslevel=6, mtime=0)
        descs.append({"mediaType": OCI_LAYER_GZ, "digest": w.blob(gz), "size": len(gz)})
        diff_ids.append(_sha(layer))
        image_config = dict(config["config"])
        image_config["Labels"] = {"org.opencontainers.image.title":
                                  f"hpc-exec testbed debian-python parsl {parsl_version}"}
        cfg = {**config, "config": image_config,
               "rootfs": {"type": "layers", "diff_ids": diff_ids},
               "history": [*config.get("history", []), {"created_by": "pip install parsl"}]}
        cfg_bytes = json.dumps(cfg, sort_keys=True).encode()
        data = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": OCI_CONFIG, "digest": w.blob(cfg_bytes),
                                      "size": len(cfg_bytes)},
                           "layers": descs}, sort_keys=True).encode()
        w.manifests.append((w.blob(data), OCI_MANIFEST))
        w.finish()
    return _cached(layout, f"parsl-{parsl_version}", build)
