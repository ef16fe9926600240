"""Pull each distinct image of a run once, on the submit host, before its first job is submitted.

Contract of :class:`ImagePuller`:

* :meth:`request` starts the pull of an image URL the first time it is asked for and returns the
  same :class:`Pull` for every later request, so a run pulls each distinct
  ``container_img_url`` exactly once, whatever ``--jobs`` is. A failed pull stays failed for the
  run: every job needing that image fails at once with the engine's one-line message.
* Pulls run in daemon threads (at most ``parallel`` at a time) through the engine API
  (``hpc_exec.engine.pull``, which does not fork), so Ctrl-C never waits for a download.
* Local squashfs files (``/path``, ``./x``, ``*.sqfs``) and URLs of schemes the engine does not
  pull are not pre-pulled; the apptainer front end deals with them inside the job.
* Progress goes to the callbacks ``info`` and ``debug`` (Snakemake's logger in the executor).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["ImagePuller", "Pull", "pullable"]

Log = Callable[[str], None]


def pullable(url: str) -> bool:
    """True for registry references (``docker://...`` or bare), False for local image files:
    a path by the engine's rule, a SIF, or an existing file (Snakemake and the apptainer front
    end run a scheme-less name that is a file as that file)."""
    import os

    from hpc_exec import engine

    if engine.is_squashfs_path(url) or url.endswith((".sif", ".simg")):
        return False
    if "://" not in url:
        return not os.path.exists(url)
    return url.startswith(("docker://", "oras://"))


class Pull:
    """One image's pull: wait for it with :meth:`wait`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._done = threading.Event()
        self.error: str | None = None
        self.image_id: str | None = None

    def finish(self, *, error: str | None = None, image_id: str | None = None) -> None:
        self.error, self.image_id = error, image_id
        self._done.set()

    def wait(self, timeout: float) -> bool:
        """True once the pull has ended (either way) within ``timeout`` seconds."""
        return self._done.wait(timeout)


class _Reporter:
    """Forwards the engine's pull progress (engine/image/pull.py's Reporter interface); progress
    callbacks it does not know are ignored, so a new one never fails a pull."""

    def __init__(self, url: str, info: Log, debug: Log) -> None:
        self.url, self.info, self.debug = url, info, debug

    def header(self, fields: Any) -> None:
        for name, value in fields:
            self.debug(f"pull {self.url}: {name}: {value}")

    def say(self, message: str) -> None:
        self.info(f"pull {self.url}: {message}")

    def layer_start(self, digest: str, size: int) -> None:
        self.debug(f"pull {self.url}: downloading {digest[:19]} ({size} bytes)")

    def layer_progress(self, digest: str, nbytes: int) -> None:
        pass

    def layer_done(self, digest: str) -> None:
        pass

    def __getattr__(self, name: str) -> Callable[..., None]:
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args, **kwargs: None


def _engine_pull(url: str, reporter: _Reporter) -> str:
    from hpc_exec import engine

    entry = engine.pull(url, reporter=reporter)  # type: ignore[arg-type]  # duck-typed
    return str(getattr(entry, "short_id", "") or entry.digest)


class ImagePuller:
    def __init__(self, *, info: Log, debug: Log, parallel: int = 2,
                 pull: Callable[[str, _Reporter], str] = _engine_pull) -> None:
        self._info, self._debug = info, debug
        self._pull = pull
        self._slots = threading.BoundedSemaphore(parallel)
        self._lock = threading.Lock()
        self._pulls: dict[str, Pull] = {}

    def request(self, url: str) -> Pull:
        """The pull of ``url``, started now if nobody asked for it before."""
        with self._lock:
            pull = self._pulls.get(url)
            if pull is not None:
                return pull
            pull = self._pulls[url] = Pull(url)
        threading.Thread(target=self._run, args=(pull,), name=f"hpc-container-pull {url}",
                         daemon=True).start()
        return pull

    def requested(self) -> list[str]:
        with self._lock:
            return sorted(self._pulls)

    def _run(self, pull: Pull) -> None:
        with self._slots:
            self._info(f"Pulling image {pull.url} once for every job that needs it")
            start = time.monotonic()
            try:
                image_id = self._pull(pull.url, _Reporter(pull.url, self._info, self._debug))
            except Exception as exc:  # noqa: BLE001 - any failure fails the image's jobs
                message = " ".join(str(exc).split()) or type(exc).__name__
                hint = getattr(exc, "hint", None)
                if hint:
                    message += f" ({hint})"
                self._info(f"Pulling image {pull.url} failed: {message}")
                pull.finish(error=message)
                return
            self._info(f"Image {pull.url} is ready ({image_id}, "
                       f"{time.monotonic() - start:.1f} s)")
            pull.finish(image_id=image_id)
