"""hooks/amdgpu.py: GPU node discovery and ROCR_VISIBLE_DEVICES selection on a fake tree."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from hpc_exec.hooks import amdgpu
from hpc_exec.hooks._state import HookError


def fake_tree(tmp_path: Path) -> tuple[str, str]:
    dev, sys_root = tmp_path / "dev", tmp_path / "sys"
    (dev / "dri").mkdir(parents=True)
    for render, card in (("renderD128", "card0"), ("renderD129", "card1"),
                         ("renderD130", "card2")):
        (dev / "dri" / render).touch()
        (dev / "dri" / card).touch()
        (sys_root / "class/drm" / render / "device/drm" / card).mkdir(parents=True)
    (dev / "dri/by-path").mkdir()
    return str(dev), str(sys_root)


def test_gpu_nodes_in_render_order(tmp_path: Path) -> None:
    dev, sys_root = fake_tree(tmp_path)
    nodes = amdgpu.gpu_nodes(dev, sys_root)
    assert [(os.path.basename(r), os.path.basename(c or "")) for r, c in nodes] == [
        ("renderD128", "card0"), ("renderD129", "card1"), ("renderD130", "card2")]
    assert amdgpu.gpu_nodes(str(tmp_path / "none"), sys_root) == []


@pytest.mark.parametrize("visible, expected", [
    ("", ["card0", "renderD128", "card1", "renderD129", "card2", "renderD130"]),
    ("  ", ["card0", "renderD128", "card1", "renderD129", "card2", "renderD130"]),
    ("2", ["card2", "renderD130"]),
    ("1,0,1", ["card1", "renderD129", "card0", "renderD128"]),
])
def test_select_nodes(tmp_path: Path, visible: str, expected: list[str]) -> None:
    dev, sys_root = fake_tree(tmp_path)
    got = amdgpu.select_nodes(amdgpu.gpu_nodes(dev, sys_root), visible)
    assert [os.path.basename(p) for p in got] == expected


@pytest.mark.parametrize("visible, words", [
    ("3", "there is no GPU 3 (this node has 3)"),
    ("GPU-1234", "'GPU-1234' is not a GPU index"),
    ("0,,1", "'' is not a GPU index"),
])
def test_select_nodes_errors(tmp_path: Path, visible: str, words: str) -> None:
    dev, sys_root = fake_tree(tmp_path)
    with pytest.raises(HookError, match=words.replace("(", r"\(").replace(")", r"\)")):
        amdgpu.select_nodes(amdgpu.gpu_nodes(dev, sys_root), visible)


@pytest.mark.skipif(os.path.exists("/dev/kfd"), reason="this node has an AMD GPU driver")
def test_no_kfd_is_a_noop(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "config.json").write_text(json.dumps(
        {"process": {"env": ["ROCR_VISIBLE_DEVICES=0"]}}))
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps({"bundle": str(tmp_path)})))
    monkeypatch.setenv("HOOK_LOG_LEVEL", "debug")
    assert amdgpu.main() == 0
    assert "no /dev/kfd on this node" in capsys.readouterr().err
