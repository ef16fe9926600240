"""Pull once under concurrency: 16 pulls over 3 Slurm nodes, 64 processes on one index, and
pullers killed with SIGKILL at random points."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from hpc_exec import engine, process

pytestmark = pytest.mark.requires("squashfs")


@pytest.mark.requires("slurm")
def test_16_pulls_on_3_nodes_download_and_convert_once(testbed: Any, proxy: Any,
                                                       site: Any) -> None:
    ref = f"{proxy.address}/testbed/debian-python:bookworm"
    out = process.run(
        ["srun", "-N3", "-n16", "--label", "bash", "-c",
         'echo "host $(hostname)"; exec hpc-exec pull "$0"', ref],
        env=site.env, timeout=900, desc="16 concurrent pulls over 3 nodes")
    lines = (out.stdout + out.stderr).splitlines()
    hosts = {line.split()[-1] for line in lines if line.split()[1:2] == ["host"]}
    assert hosts == {"node1", "node2", "node3"}
    assert sum("# image digest" in line for line in lines) == 16

    # Exactly one download per blob and one conversion, by our log and by the registry's view.
    downloads = Counter(site.events("download"))
    assert len(downloads) == 4 and set(downloads.values()) == {1}  # config + 3 layers
    assert len(site.events("convert")) == 1
    gets = proxy.blob_gets()
    assert set(gets) == set(downloads) and set(gets.values()) == {1}
    waited = [line for line in lines if "waiting for another process pulling" in line
              or "reusing" in line or "up to date" in line]
    assert len(waited) >= 15 - 1  # everyone but the downloader waited or found it done
    entries = engine.images()
    assert [e.key for e in entries] == [ref]


def _index_worker(args: tuple[str, int, int, int]) -> list[str]:
    from hpc_exec.engine.store.index import ImageEntry, Index
    from hpc_exec.engine.store.layout import Layout

    root, wid, nops, seed = args
    layout = Layout(Path(root))
    index = Index(layout)
    image_id = "sha256:" + hashlib.sha256(f"worker {wid}".encode()).hexdigest()
    rng = random.Random(seed)
    present: set[str] = set()

    def entry(key: str) -> ImageEntry:
        sqfs, meta = layout.squashfs(image_id), layout.image_metadata(image_id)
        if not sqfs.exists():
            sqfs.write_bytes(b"squashfs")
        if not meta.exists():
            meta.write_text("{}")
        return ImageEntry(key=key, server="s", repository=f"w{wid}", tag=key, digest=image_id,
                          image_id=image_id, squashfs=sqfs, metadata=meta, created="now",
                          size=8)

    for _ in range(nops):
        op = rng.choice(("add", "add", "remove", "lookup"))
        if op == "add" or not present:
            key = f"w{wid}/k{rng.randrange(6)}"
            index.add(entry(key))
            present.add(key)
        elif op == "remove":
            key = rng.choice(sorted(present))
            assert index.remove(key) is not None
            present.discard(key)
        else:
            key = rng.choice(sorted(present))
            assert index.get(key) is not None, f"{key} lost"
    return sorted(present)


def test_64_processes_1000_index_operations_lose_nothing(tmp_path: Path) -> None:
    from hpc_exec.engine.store.layout import Layout

    Layout(tmp_path).ensure()
    workers, total = 64, 1000
    jobs = [(str(tmp_path), w, total // workers + (1 if w < total % workers else 0), w)
            for w in range(workers)]
    assert sum(j[2] for j in jobs) == total
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers) as pool:
        results = pool.map(_index_worker, jobs, chunksize=1)
    expected = {key for keys in results for key in keys}
    data = json.loads((tmp_path / "metadata.json").read_text())
    assert data["version"] == 1
    assert set(data["images"]) == expected
    assert list((tmp_path / "tmp").iterdir()) == []


def _visible_is_whole(site: Any) -> None:
    """Whatever a reader can see is complete: the index parses and names whole squashfs."""
    meta = site.home / "metadata.json"
    if meta.exists():
        json.loads(meta.read_text())
    for sqfs in (site.home / "images").glob("*.squashfs") if (site.home / "images").exists() \
            else []:
        process.run(["unsquashfs", "-s", str(sqfs)], timeout=60, desc="reading a superblock")
    for entry in engine.images():
        assert entry.squashfs.exists() and entry.metadata.exists()
        json.loads(entry.metadata.read_text())


def test_sigkilled_puller_never_leaves_a_partial_image(testbed: Any, proxy: Any, site: Any,
                                                       helpers: Any) -> None:
    ref = f"{proxy.address}/testbed/debian-python:bookworm"
    rng = random.Random(20)
    log = site.root / "killed-pullers.log"
    for _ in range(20):
        proc = process.spawn(["hpc-exec", "pull", ref], desc="a puller to kill", log_path=log,
                             env=site.env)
        try:
            time.sleep(rng.uniform(0.1, 3.0))
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
        _visible_is_whole(site)
        if any(e.key == ref for e in engine.images()):
            engine.remove(ref)  # finished before the kill: make the next one pull again
    entry = engine.pull(ref)
    assert helpers.squashfs_members(entry.squashfs)["usr/local/bin/hpc-exec-hello"].isreg()
    assert helpers.no_leftovers(site) == []
