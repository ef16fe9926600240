"""The image side's Python API, re-exported by :mod:`hpc_exec.engine`.

Contract:

* :func:`pull`, :func:`load`, :func:`images`, :func:`verify`, :func:`lookup` and :func:`remove`
  work on one repository: the per-user local one (``$HPC_EXEC_HOME``, else the site's
  ``sharedRepositoryDir`` -- one group-writable repository for everyone in its group -- else
  ``localRepositoryBaseDir/<user>/.hpc-exec``, else ``~/.hpc-exec``) or, with
  ``centralized=True``, the site's ``centralizedRepositoryDir``, which only its owners can write.
* :func:`lookup` with ``centralized=None`` looks in the local repository, then the centralized
  one; it raises :class:`~hpc_exec.errors.ImageNotFound` naming where it looked, and
  :class:`~hpc_exec.errors.RepositoryError` for an image whose squashfs is damaged (its size
  is not the one recorded at pull time, or :func:`verify` found its sha256 changed); pulling
  it again repairs it.
* They all return or list :class:`~hpc_exec.engine.store.index.ImageEntry` (``key``, ``digest``,
  ``image_id``, ``squashfs``, ``metadata``, ``created``, ``size``, ``server``, ``repository``,
  ``tag``). The run side mounts ``entry.squashfs`` and reads its config from
  ``entry.metadata`` (:func:`hpc_exec.engine.inspect`).

Importing this module is cheap: the registry client and the converter load on first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from hpc_exec.engine.store.index import ImageEntry, Index, Verification

from hpc_exec.config import Settings, load_settings
from hpc_exec.errors import ImageNotFound, InvalidInput, RepositoryError

if TYPE_CHECKING:
    from hpc_exec.engine.image.pull import Reporter, Repository
    from hpc_exec.engine.image.reference import ImageReference
    from hpc_exec.engine.image.registry import Credentials
    from hpc_exec.engine.store.layout import Layout

__all__ = ["ImageEntry", "Verification", "images", "load", "lookup", "pull", "remove",
           "repository", "verify"]


def repository(centralized: bool = False, *, settings: Settings | None = None,
               writable: bool = False) -> Repository:
    """The local (default) or centralized repository of this user and site."""
    from hpc_exec.engine.image.pull import Repository

    settings = settings or load_settings()
    layout, kind = _layout(centralized, settings, writable=writable)
    return Repository(layout, Index(layout, settings.repository_metadata_lock_timings),
                      settings, kind)


def pull(ref: str, *, credentials: Credentials | None = None, centralized: bool = False,
         temp_dir: Path | None = None, platform: str = "linux/amd64",
         reporter: Reporter | None = None, settings: Settings | None = None) -> ImageEntry:
    """Pull ``ref`` once into the repository (engine/image/pull.py) and return its entry."""
    from hpc_exec.engine.image import pull as _pull

    repo = repository(centralized, settings=settings, writable=True)
    return _pull.pull(ref, repo, credentials=credentials, platform=platform,
                      temp_dir=temp_dir, reporter=reporter)


def load(archive: Path, ref: str, *, centralized: bool = False,
         reporter: Reporter | None = None, settings: Settings | None = None,
         temp_dir: Path | None = None) -> ImageEntry:
    """Load a docker-save or OCI archive as ``ref`` (engine/image/load.py); ``ref`` takes a
    tag, not a digest."""
    from hpc_exec.engine.image import load as _load

    repo = repository(centralized, settings=settings, writable=True)
    return _load.load(Path(archive), ref, repo, reporter, temp_dir=temp_dir)


def images(*, centralized: bool = False, settings: Settings | None = None) -> list[ImageEntry]:
    """The entries of one repository, in the order they were pulled or loaded (as Sarus lists
    them; a pull that stores the image anew, or moves its tag, puts it last; one that finds
    it up to date leaves it where it is)."""
    repo = repository(centralized, settings=settings)
    return list(repo.index.read().values())


def repair_hint(entry: ImageEntry, flags: str = "") -> str:
    """How a user repairs a damaged image: a loaded one is loaded again (its server is no
    registry), a pulled one pulled again."""
    from hpc_exec.engine.image.reference import LOAD_SERVER

    if entry.server == LOAD_SERVER:
        return (f"load its archive again to repair it: hpc-exec load{flags} ARCHIVE "
                f"{entry.repository.removeprefix('library/')}:{entry.tag}")
    return f"pull it again to repair it: hpc-exec pull{flags} {entry.key}"


def verify(*, centralized: bool = False, settings: Settings | None = None
           ) -> list[Verification]:
    """Every entry of one repository checked (sorted by key): the size, then the sha256 of
    its squashfs against the one recorded when it was published (each file read once). The
    entries of an image found damaged by its hash are marked so in the index (when it can be
    written): lookups then refuse them and ``pull`` repairs them."""
    repo = repository(centralized, settings=settings)
    return repo.index.verify()


def _layout(centralized: bool, settings: Settings, *,
            writable: bool = False) -> tuple[Layout, str]:
    """The layout and kind of the local or centralized repository, its version checked (cheap:
    nothing of the image side's converters or registry client is imported)."""
    from hpc_exec.engine.store.layout import Layout, user_layout

    if centralized:
        if settings.centralized_repository_dir is None:
            raise InvalidInput("no centralized repository: the site config sets no "
                               "centralizedRepositoryDir")
        layout = Layout(settings.centralized_repository_dir)
        if writable and not layout.writable():
            raise RepositoryError(f"the centralized repository {layout.root} is read-only for "
                                  "you", hint="ask the site administrators to pull the image")
        kind = "centralized"
    else:
        layout, kind = user_layout(settings)
    layout.check_version()
    return layout, kind


def _references(ref: str) -> tuple[ImageReference, ImageReference]:
    """``ref`` as pulled and as loaded (InvalidInput when malformed), parsed once."""
    from hpc_exec.engine.image.reference import load_reference, parse

    return parse(ref), load_reference(ref)


def _find(index: Index, references: tuple[ImageReference, ...]) -> ImageEntry | None:
    """The entry of ``references`` in ``index``: by key, as a loaded image's key, or by
    digest."""
    entries = index.read()
    for reference in references:
        if reference.key in entries:
            return entries[reference.key]
        if reference.digest:  # name@digest also matches an entry pulled by tag
            for entry in entries.values():
                if entry.server == reference.server and \
                        entry.repository == reference.repository and \
                        reference.digest in (entry.digest, entry.image_id):
                    return entry
    return None


def lookup(ref: str, *, centralized: bool | None = None,
           settings: Settings | None = None) -> ImageEntry:
    """The entry for ``ref``; ImageNotFound if it was never pulled (or loaded).

    This is on every task's path (``hpc-exec run IMAGE``): it reads only the index, under its
    shared lock, and imports nothing of the registry client or the converters."""
    settings = settings or load_settings()
    references = _references(ref)  # InvalidInput when malformed, before any file is read
    key = references[0].key
    where: list[str] = []
    choices = [centralized] if centralized is not None else \
        [False] + ([True] if settings.centralized_repository_dir is not None else [])
    for central in choices:
        layout, kind = _layout(central, settings)
        where.append(f"{kind} repository {layout.root}")
        entry = _find(Index(layout, settings.repository_metadata_lock_timings), references)
        if entry is not None:
            damage = entry.damage()
            if damage is not None:
                raise RepositoryError(f"image {entry.key} in the {kind} repository is damaged: "
                                      f"{damage}", hint=repair_hint(entry))
            return entry
    raise ImageNotFound(f"image {key} is not in the {' or '.join(where)}",
                        hint=f"pull it first: hpc-exec pull {ref}")


def remove(ref: str, *, centralized: bool = False,
           settings: Settings | None = None) -> ImageEntry:
    """Remove ``ref`` from the repository (its files too, unless another tag uses them)."""
    repo = repository(centralized, settings=settings, writable=True)
    references = _references(ref)
    entry = _find(repo.index, references)
    if entry is None:
        raise ImageNotFound(f"image {references[0].key} is not in the {repo.kind} repository "
                            f"{repo.layout.root}")
    removed = repo.index.remove(entry.key)
    if removed is None:
        raise ImageNotFound(f"image {entry.key} was removed meanwhile")
    return removed
