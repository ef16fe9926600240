"""Each distinct image URL is pulled once per run, whatever asks for it; failures stay failed and
carry the engine's one-line message (a fake pull function stands in for the engine)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from hpc_exec.errors import ImageNotFound
from hpc_exec.snakemake.prepull import ImagePuller, pullable


class FakeEngine:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.release = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, url: str, reporter: Any) -> str:
        with self.lock:
            self.calls.append(url)
        assert self.release.wait(30)
        reporter.say("pulled")
        if "missing" in url:
            raise ImageNotFound("manifest unknown: registry/missing:1",
                                hint="check the name")
        return "abc123"


def test_each_url_is_pulled_once() -> None:
    engine, lines = FakeEngine(), []
    puller = ImagePuller(info=lines.append, debug=lines.append, pull=engine)
    first = [puller.request("docker://r/a:1") for _ in range(5)]
    puller.request("docker://r/b:1")
    assert all(p is first[0] for p in first)
    assert not first[0].wait(0.01)  # still pulling
    engine.release.set()
    assert first[0].wait(30) and puller.request("docker://r/b:1").wait(30)
    assert first[0].error is None
    assert sorted(engine.calls) == ["docker://r/a:1", "docker://r/b:1"]
    assert first[0].image_id == "abc123"
    assert "pull docker://r/a:1: pulled" in lines
    assert puller.requested() == ["docker://r/a:1", "docker://r/b:1"]


def test_a_failed_pull_stays_failed_with_the_message() -> None:
    engine = FakeEngine()
    engine.release.set()
    puller = ImagePuller(info=lambda m: None, debug=lambda m: None, pull=engine)
    pull = puller.request("docker://r/missing:1")
    assert pull.wait(30)
    assert pull.error == "manifest unknown: registry/missing:1 (check the name)"
    assert puller.request("docker://r/missing:1") is pull
    assert engine.calls == ["docker://r/missing:1"]


@pytest.mark.parametrize(("url", "expected"), [
    ("docker://127.0.0.1:5000/x:1", True), ("busybox", True), ("oras://r/x", True),
    ("/images/x.sqfs", False), ("./x.sif", False), ("shub://x/y", False),
    ("library://x/y", False), ("img.squashfs", False),
])
def test_pullable(url: str, expected: bool) -> None:
    assert pullable(url) is expected


def test_a_scheme_less_file_is_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "tool.img").write_bytes(b"hsqs")
    assert pullable("images/tool.img") is False  # Snakemake runs the file itself
    assert pullable("images/other.img") is True  # no such file: a registry reference
