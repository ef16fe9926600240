"""The run and hooks command lines: what belongs to the container, and the hooks listing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpc_exec.cli import build_parser, main


def test_everything_after_image_belongs_to_the_container() -> None:
    args = build_parser().parse_args(
        ["run", "--mount", "type=bind,src=/a,dst=/b", "-e", "X=1", "--pid", "private",
         "--init", "img:tag", "ls", "-e", "--init", "-w", "/x"])
    assert args.image == "img:tag"
    assert args.command == ["ls", "-e", "--init", "-w", "/x"]
    assert args.mount == ["type=bind,src=/a,dst=/b"] and args.env == ["X=1"]
    assert args.pid == "private" and args.init and args.workdir is None


def test_hooks_listing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                       capsys: pytest.CaptureFixture[str]) -> None:
    hooks = tmp_path / "hooks.d"
    hooks.mkdir()
    for name, kind in (("10-mpich", "mpich"), ("20-openmpi", "openmpi")):
        (hooks / f"{name}.json").write_text(json.dumps({
            "version": "1.0.0", "hook": {"path": f"/usr/bin/{name}"},
            "when": {"annotations": {"^com.hooks.mpi.enabled$": "^true$",
                                     "^com.hooks.mpi.type$": f"^{kind}$"}},
            "stages": ["prestart", "poststop"]}))
    (hooks / "30-glibc.json").write_text(json.dumps({
        "version": "1.0.0", "hook": {"path": "/usr/bin/glibc"},
        "when": {"annotations": {"^com.hooks.glibc.enabled$": "^true$"}},
        "stages": ["createContainer"]}))
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"hooksDir: {hooks}\ndefaultMPIType: openmpi\n")
    monkeypatch.setenv("HPC_EXEC_CONFIG", str(cfg))
    assert main(["hooks"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "PATH", "STAGES"]
    # issue 13, item 19: stages joined with ',' and the MPI type as its regex, as Sarus prints
    assert lines[1].split() == ["10-mpich", "/usr/bin/10-mpich", "prestart,poststop"]
    assert lines[3].split() == ["30-glibc", "/usr/bin/glibc", "createContainer"]
    assert main(["hooks", "--mpi"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "MPI", "TYPE"]
    assert lines[1].split() == ["10-mpich", "^mpich$"]
    assert lines[2].split() == ["20-openmpi", "^openmpi$", "(default)"]
    assert len(lines) == 3


def test_malformed_hook_is_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.json").write_text("[]")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"hooksDir: {tmp_path}\n")
    monkeypatch.setenv("HPC_EXEC_CONFIG", str(cfg))
    assert main(["hooks"]) == 111
    err = capsys.readouterr().err
    assert f"hook file {tmp_path / 'bad.json'}: expected a JSON object" in err
