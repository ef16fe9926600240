"""``hpc-exec pull | load | images | rmi``: the image commands, Sarus-compatible.

Contract:

* ``pull`` prints Sarus' header lines (``# image : ...``) on stdout, then progress on stderr:
  bytes per layer on one refreshed line when stderr is a terminal, plain ``>`` lines otherwise.
  Credentials come from ``--username`` with ``--password-stdin`` (first line of stdin),
  ``--login`` (prompts on the terminal), or the usual auth files; they never reach argv, logs or
  files.
* ``images`` prints REPOSITORY, TAG, IMAGE ID, CREATED, SIZE, SERVER (``--digests`` adds
  DIGEST; ``--json`` prints the entries as JSON), in pull order, as Sarus does: REPOSITORY is
  what ``run`` and ``rmi`` take (``server/namespace/image``, the server left out for
  ``docker.io``, and ``library/`` too), SIZE is 1024-based (``1.04MB``). ``--verify`` reads every squashfs and adds VERIFIED
  (``ok``: its sha256 is the one recorded when it was pulled; ``size only``: pulled before
  digests were recorded, its size matches; ``damaged``), prints one ``hpc-exec: error: image
  KEY is damaged: WHY`` line per damaged image and a hint, and then exits 117 (REPOSITORY); a
  later ``pull`` of it repairs it.
* ``rmi`` prints ``removed <key>``.
* Errors are one line with the exit code of their class (docs/exit-codes.md), by cli.main.

Heavy imports happen inside the handlers.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from hpc_exec.cli import Once, nonempty
from hpc_exec.errors import ExitCode, InvalidInput

if TYPE_CHECKING:
    from hpc_exec.engine import Credentials, ImageEntry

__all__ = ["add_parser", "display_name", "format_images", "human_size"]

CENTRAL_HELP = "use the site's centralized repository instead of your local one"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("pull", help="pull an image from a registry into the squashfs cache",
                       description="Pull an image once into the repository (any number of "
                       "concurrent pulls of one image do one download and one conversion).")
    auth = p.add_mutually_exclusive_group()
    auth.add_argument("--login", action="store_true",
                      help="prompt for username and password on the terminal")
    auth.add_argument("--username", metavar="USER", action=Once, type=nonempty, help="registry user name (with "
                      "--password-stdin)")
    p.add_argument("--password-stdin", action="store_true",
                   help="read the password from the first line of stdin")
    p.add_argument("--temp-dir", type=Path, metavar="DIR", action=Once,
                   help="an existing directory where layers are downloaded (default: the "
                   "site's tempDir)")
    p.add_argument("--platform", default="linux/amd64", help=argparse.SUPPRESS)
    p.add_argument("--centralized-repository", action="store_true", help=CENTRAL_HELP)
    p.add_argument("image", metavar="REF", help="[docker://][server/][namespace/]image[:tag]"
                   "[@digest]")
    p.set_defaults(handler=_pull)

    p = sub.add_parser("load", help="load a docker-save or OCI archive into the cache")
    p.add_argument("--temp-dir", type=Path, metavar="DIR", action=Once,
                   help="an existing scratch directory (default: the site's tempDir); the "
                   "archive is streamed into squashfs, never unpacked")
    p.add_argument("--centralized-repository", action="store_true", help=CENTRAL_HELP)
    p.add_argument("archive", type=Path, metavar="ARCHIVE")
    p.add_argument("image", metavar="REF", help="name[:tag] to store it under (without a "
                   "server: load/library/NAME; no @digest)")
    p.set_defaults(handler=_load)

    p = sub.add_parser("images", help="list the images in the cache")
    p.add_argument("--digests", action="store_true", help="show the registry digests")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--verify", action="store_true",
                   help="read every image file and check it against the sha256 recorded when "
                   "it was pulled; exit 117 if any is damaged (pull it again to repair it)")
    p.add_argument("--centralized-repository", action="store_true", help=CENTRAL_HELP)
    p.set_defaults(handler=_images)

    p = sub.add_parser("rmi", help="remove an image from the cache")
    p.add_argument("--centralized-repository", action="store_true", help=CENTRAL_HELP)
    p.add_argument("image", metavar="REF")
    p.set_defaults(handler=_rmi)


# -- pull ------------------------------------------------------------------------------------

def _credentials(args: argparse.Namespace) -> Credentials | None:
    from hpc_exec.engine import Credentials

    if args.password_stdin and not args.username:
        raise InvalidInput("--password-stdin needs --username")
    if args.username and not args.password_stdin:
        if not sys.stdin.isatty():
            raise InvalidInput("--username needs --password-stdin when stdin is not a terminal")
        import getpass

        return Credentials(args.username, getpass.getpass(f"password for {args.username}: "))
    if args.username:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise InvalidInput("--password-stdin: stdin gave an empty password")
        return Credentials(args.username, line)
    if args.login:
        if not sys.stdin.isatty():
            raise InvalidInput("--login needs a terminal; use --username with --password-stdin")
        import getpass

        user = input("username: ").strip()
        if not user:
            raise InvalidInput("--login: empty username")
        return Credentials(user, getpass.getpass("password: "))
    return None


class CliReporter:
    """Sarus-style header on stdout; per-layer progress on stderr (one live line on a tty)."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.out, self.err = out or sys.stdout, err or sys.stderr  # the streams of now
        self.tty = self.err.isatty()
        self.lock = threading.Lock()
        self.sizes: dict[str, int] = {}
        self.done: dict[str, int] = {}
        self.last = 0.0

    def header(self, fields: Sequence[tuple[str, str]]) -> None:
        width = max(len(n) for n, _ in fields)
        for name, value in fields:
            shown = f'"{value}"' if name.endswith("directory") else value
            print(f"# {name:<{width}} : {shown}", file=self.out, flush=True)

    def say(self, message: str) -> None:
        with self.lock:
            self._clear()
            print(f"> {message}", file=self.err, flush=True)

    def layer_start(self, digest: str, size: int) -> None:
        with self.lock:
            self.sizes[digest], self.done[digest] = size, 0
            if not self.tty:
                print(f"> pulling        : {digest} ({size / 1e6:.1f} MB)", file=self.err,
                      flush=True)

    def layer_progress(self, digest: str, nbytes: int) -> None:
        with self.lock:
            self.done[digest] = self.done.get(digest, 0) + nbytes
            now = time.monotonic()
            if self.tty and now - self.last > 0.1:
                self.last = now
                parts = [f"{d[7:19]} {self.done[d] / 1e6:.1f}/{s / 1e6:.1f} MB"
                         for d, s in self.sizes.items() if self.done.get(d, 0) < s]
                self.err.write("\r\x1b[K  " + " | ".join(parts))
                self.err.flush()

    def layer_done(self, digest: str) -> None:
        with self.lock:
            self._clear()
            print(f"> completed      : {digest}", file=self.err, flush=True)

    def _clear(self) -> None:
        if self.tty:
            self.err.write("\r\x1b[K")


def _pull(args: argparse.Namespace) -> int:
    from hpc_exec.engine import api as engine

    creds = _credentials(args)
    entry = engine.pull(args.image, credentials=creds, centralized=args.centralized_repository,
                        temp_dir=args.temp_dir, platform=args.platform,
                        reporter=CliReporter())  # type: ignore[arg-type]
    print(f'# {"squashfs image":<16} : "{entry.squashfs}"', flush=True)
    return 0


def _load(args: argparse.Namespace) -> int:
    from hpc_exec.engine import api as engine

    entry = engine.load(args.archive, args.image, centralized=args.centralized_repository,
                        temp_dir=args.temp_dir, reporter=CliReporter())  # type: ignore[arg-type]
    print(f'# {"squashfs image":<16} : "{entry.squashfs}"', flush=True)
    return 0


# -- images / rmi ----------------------------------------------------------------------------

def human_size(n: int) -> str:
    """Sarus' size text: 1024-based, two decimals (``1.04MB`` for 1,090,000 bytes)."""
    size, units = float(n), ("B", "KB", "MB", "GB", "TB")
    i = 0
    while size > 1024 and i < len(units) - 1:
        size /= 1024
        i += 1
    return f"{size:.2f}{units[i]}"


def display_name(entry: ImageEntry) -> str:
    """The REPOSITORY column: the name ``run`` and ``rmi`` find the entry by (as Sarus shows
    it: the server unless it is docker.io, then the namespace unless it is library)."""
    if entry.server != "docker.io":
        return f"{entry.server}/{entry.repository}"
    namespace, _, image = entry.repository.rpartition("/")
    return image if namespace == "library" else entry.repository


def format_images(entries: Sequence[ImageEntry], digests: bool = False,
                  verified: Sequence[str] | None = None) -> str:
    """The ``hpc-exec images`` table (pure); ``verified``: one status per entry."""
    head = ["REPOSITORY", "TAG", *(["DIGEST"] if digests else []), "IMAGE ID", "CREATED", "SIZE",
            "SERVER", *(["VERIFIED"] if verified is not None else [])]
    rows = [head]
    for i, e in enumerate(entries):
        tag = "<none>" if "@" in e.key else e.tag
        created = e.created.replace("+00:00", "")
        rows.append([display_name(e), tag, *([e.digest] if digests else []), e.short_id, created,
                     human_size(e.size), e.server,
                     *([verified[i]] if verified is not None else [])])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _images(args: argparse.Namespace) -> int:
    from hpc_exec.engine import api as engine

    if args.verify:
        checked = engine.verify(centralized=args.centralized_repository)
        entries = [v.entry for v in checked]
        statuses: list[str] | None = [v.status for v in checked]
    else:
        entries = engine.images(centralized=args.centralized_repository)
        statuses = None
    if args.json:
        import json

        rows = [{"key": e.key, "server": e.server, "repository": e.repository, "tag": e.tag,
                 "digest": e.digest, "image_id": e.image_id, "created": e.created,
                 "size": e.size, "squashfs": str(e.squashfs), "metadata": str(e.metadata),
                 "squashfs_digest": e.squashfs_digest} for e in entries]
        if args.verify:
            for row, v in zip(rows, checked):
                row.update(verified=v.status, problem=v.problem)
        print(json.dumps(rows, indent=2))
    else:
        print(format_images(entries, args.digests, statuses))
    if not args.verify:
        return 0
    damaged = [v for v in checked if v.status == "damaged"]
    sys.stdout.flush()
    for v in damaged:  # one line per damaged image
        print(f"hpc-exec: error: image {v.entry.key} is damaged: {v.problem}", file=sys.stderr)
    if damaged:
        flag = " --centralized-repository" if args.centralized_repository else ""
        print(f"hpc-exec: hint: {engine.repair_hint(damaged[0].entry, flag)}"
              + (" (and the others)" if len(damaged) > 1 else ""), file=sys.stderr)
        return int(ExitCode.REPOSITORY)
    return 0


def _rmi(args: argparse.Namespace) -> int:
    from hpc_exec.engine import api as engine

    entry = engine.remove(args.image, centralized=args.centralized_repository)
    print(f"removed {entry.key}")
    return 0
