"""The apptainer-compatible front end (hpc_exec/cli/apptainer.py), pure parts: the command
line Snakemake 9.27 produces (pinned by calling Snakemake's own builder), option parsing and
its errors, the engine options each exec asks for, image recognition, descriptors, pull and
the srun path with fakes for the engine."""

from __future__ import annotations

import ast
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest

from hpc_exec import engine, process
from hpc_exec.cli import apptainer as ap
from hpc_exec.errors import ExitCode, ImageNotFound, InvalidInput
from hpc_exec.mountspec import Mount

SOURCE = Path(ap.__file__)


def request(argv: list[str]) -> Any:
    return ap.parse_argv(argv).request


def plan(argv: list[str], *, cwd: str = "/work/wf", environ: dict[str, str] | None = None,
         dirs: tuple[str, ...] = ("/home/u", "/tmp"), **kw: Any) -> ap.ExecPlan:
    env = {"HOME": "/home/u"} if environ is None else environ
    return ap.exec_plan(request(argv), cwd=cwd, environ=env,
                        is_dir=lambda p: p in dirs, **kw)


# -- what Snakemake 9.27 runs -----------------------------------------------------------------

@pytest.fixture
def snakemake_shellcmd(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """Snakemake's own ``singularity.shellcmd``, as a job runs it (binary 'apptainer')."""
    import snakemake  # a dependency of hpc-exec: never skipped
    from snakemake.deployment import singularity

    assert snakemake.__version__.startswith("9.27."), (
        f"snakemake {snakemake.__version__}: re-check the apptainer argv this test pins")
    monkeypatch.setattr(singularity.Singularity(), "binary", "apptainer")
    monkeypatch.chdir(tmp_path)
    return singularity.shellcmd


def test_snakemake_shell_command_line_is_pinned(snakemake_shellcmd: Any,
                                                tmp_path: Path) -> None:
    from snakemake.shell import shell

    cache = tmp_path / "cache" / "snakemake" / "source-cache"
    cache.mkdir(parents=True)
    image = f"{tmp_path}/.snakemake/hpc-container/images/0123abcd.simg"
    # as snakemake.shell.shell.__new__ builds it: prefix, command and suffix joined by spaces
    cmd = " ".join((shell._get_process_prefix("bash"), "echo it's {here} > out.txt",
                    shell._process_suffix)).strip()
    text = snakemake_shellcmd(image, cmd, bind=[cache, tmp_path / "missing"],
                              args="", shell_executable="/bin/bash")
    argv = shlex.split(text)
    assert argv == ["apptainer", "exec", "--home", str(tmp_path), "--bind", str(cache), image,
                    "bash", "-c", "set -euo pipefail;  echo it's {here} > out.txt"]
    req = request(argv[1:])
    assert req == ap.ExecRequest(image=image, command=(
        "bash", "-c", "set -euo pipefail;  echo it's {here} > out.txt"),
        binds=(str(cache),), home=str(tmp_path))


def test_snakemake_script_shadow_and_apptainer_args(snakemake_shellcmd: Any,
                                                    tmp_path: Path) -> None:
    """A script: rule (search-path binds), a shadow dir (--pwd), --apptainer-args, and
    conda-in-container (global --quiet --silent, SINGULARITYENV_ variables)."""
    from snakemake.common import get_snakemake_searchpaths
    from snakemake.deployment.singularity import get_snakemake_searchpath_mountpoints

    text = snakemake_shellcmd("img.simg", "python x.py", args="--nv --cleanenv",
                              shell_executable="bash", container_workdir=".snakemake/shadow/t1",
                              is_python_script=True, quiet=True,
                              envvars={"CONDA_PKGS_DIRS": "/p/pkgs"})
    argv = shlex.split(text)
    assert argv[:5] == ["SINGULARITYENV_CONDA_PKGS_DIRS=/p/pkgs", "apptainer", "--quiet",
                        "--silent", "exec"]
    binds = [f"{s}:{m}" for s, m in zip(get_snakemake_searchpaths(),
                                        get_snakemake_searchpath_mountpoints())]
    expected = ["--home", str(tmp_path), "--nv", "--cleanenv"]
    for b in binds:
        expected += ["--bind", b]
    expected += ["--pwd", ".snakemake/shadow/t1", "img.simg", "bash", "-c", "python x.py"]
    assert argv[5:] == expected
    inv = ap.parse_argv(argv[2:])
    assert inv.options == ap.GlobalOptions(quiet=True, silent=True)
    p = ap.exec_plan(inv.request, cwd=str(tmp_path),
                     environ={"HOME": "/root", "SINGULARITYENV_CONDA_PKGS_DIRS": "/p/pkgs"},
                     is_dir=lambda _p: False, exists=lambda _p: False)
    assert ("CONDA_PKGS_DIRS", "/p/pkgs") in p.env
    assert p.workdir == f"{tmp_path}/.snakemake/shadow/t1"
    assert p.clean_env
    assert [m.destination for m in p.mounts if m.destination.startswith("/mnt/")] == \
        get_snakemake_searchpath_mountpoints()


def test_snakemake_accepts_the_version(snakemake_shellcmd: Any,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    from packaging.version import parse
    from snakemake.deployment.singularity import Singularity

    assert ap.main(["--version"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("apptainer")  # Snakemake's test for the apptainer branch
    assert Singularity().parseversion(out.strip()) >= parse("1.0.0")
    assert ap.main(["version"]) == 0
    assert capsys.readouterr().out == "1.3.6-hpc-exec\n"


# -- option parsing -----------------------------------------------------------------------------

def test_pflag_spellings() -> None:
    inv = ap.parse_argv(["-q", "-s", "exec", "-B/a,/b:/c", "-B=/d", "--bind=/e:/f:ro",
                         "--bind", "/g", "-ce", "--home=/h", "--pwd", "/p", "--env", "A=1",
                         "--env=B=2,C=3", "--nv=true", "--no-home", "--writable-tmpfs",
                         "--containall=false", "img", "cmd", "--bind", "-x"])
    assert inv.options == ap.GlobalOptions(quiet=True, silent=True)
    assert inv.request == ap.ExecRequest(
        image="img", command=("cmd", "--bind", "-x"),
        binds=("/a,/b:/c", "/d", "/e:/f:ro", "/g"), home="/h", no_home=True, pwd="/p",
        env=("A=1", "B=2,C=3"), cleanenv=True, contain=True, containall=False, nv=True,
        writable_tmpfs=True)
    assert request(["exec", "--", "img", "ls"]) == ap.ExecRequest(image="img",
                                                                  command=("ls",))


def test_pull_forms() -> None:
    assert request(["pull", "--name", "x.simg", "docker://a/b:1"]) == \
        ap.PullRequest(uri="docker://a/b:1", name="x.simg")
    assert request(["pull", "out.sif", "docker://a/b"]) == \
        ap.PullRequest(uri="docker://a/b", name="out.sif")
    assert request(["pull", "-F", "--dir", "/d", "docker://a/b"]) == \
        ap.PullRequest(uri="docker://a/b", dir="/d", force=True)


@pytest.mark.parametrize(("argv", "message"), [
    (["--foo", "exec", "i", "c"], "unsupported option --foo"),
    (["exec", "--foo", "i", "c"], "unsupported option --foo"),
    (["exec", "--foo=1", "i", "c"], "unsupported option --foo"),
    (["exec", "-x", "i", "c"], "unsupported option -x"),
    (["exec", "-cx", "i", "c"], "unsupported option -x"),
    (["exec", "--writable", "i", "c"], "unsupported option --writable"),
    (["exec", "--fakeroot", "i", "c"], "unsupported option --fakeroot"),
    (["pull", "--disable-cache", "docker://a"], "unsupported option --disable-cache"),
    (["exec", "--bind"], "option --bind needs a value"),
    (["exec", "--nv=maybe", "i", "c"], "invalid value 'maybe' for --nv (true or false)"),
    (["exec", "img"], "exec needs IMAGE and a command"),
    (["pull"], "pull needs one URI"),
    (["shell", "img"], "unsupported command 'shell'"),
    (["build", "x.sif", "def"], "unsupported command 'build'"),
])
def test_usage_errors_are_one_loud_line(argv: list[str], message: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert ap.main(argv) == ExitCode.INVALID_INPUT == 110
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"hpc-exec apptainer: {message}")
    assert captured.err.count("\n") == 1


def test_unsupported_option_message_is_exact(capsys: pytest.CaptureFixture[str]) -> None:
    assert ap.main(["exec", "--foo", "img", "true"]) == 110
    assert capsys.readouterr().err == "hpc-exec apptainer: unsupported option --foo\n"


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["--help"], ["exec", "-h"], ["pull", "--help"]):
        assert ap.main(argv) == 0
        assert "exec [options] IMAGE CMD" in capsys.readouterr().out


@pytest.mark.parametrize(("text", "expected"), [
    ("/a", [("/a", "/a", False)]),
    ("/a:/b", [("/a", "/b", False)]),
    ("/a:/b:ro,/c::rw", [("/a", "/b", True), ("/c", "/c", False)]),
    ("rel/dir:/x", [("/w/rel/dir", "/x", False)]),
    ("/a/,/b//c/", [("/a", "/a", False), ("/b/c", "/b/c", False)]),
])
def test_parse_bind(text: str, expected: list[tuple[str, str, bool]]) -> None:
    assert ap.parse_bind(text, "/w") == expected


@pytest.mark.parametrize(("text", "message"), [
    ("/a:/b:nosuid", "unsupported bind option 'nosuid'"),
    ("/a:b", "bind destination 'b'"),
    (":/b", "invalid bind ':/b'"),
    ("/a:/b:ro:x", "invalid bind '/a:/b:ro:x'"),
])
def test_parse_bind_errors(text: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        ap.parse_bind(text, "/w")


@pytest.mark.parametrize(("text", "expected"), [
    ("A=1", [("A", "1")]),
    ("A=x,y", [("A", "x,y")]),  # one '=': the whole text is one pair (pflag)
    ("A=1,B=2", [("A", "1"), ("B", "2")]),
    ('"A=x,y",B=', [("A", "x,y"), ("B", "")]),
    ("A=a=b", [("A", "a=b")]),
])
def test_parse_env(text: str, expected: list[tuple[str, str]]) -> None:
    assert ap.parse_env(text) == expected


@pytest.mark.parametrize("text", ["A", "=1", "1A=2", "A B=1", "A=1,junk,B=2"])
def test_parse_env_errors(text: str) -> None:
    with pytest.raises(InvalidInput, match="--env"):
        ap.parse_env(text)


# -- what an exec asks of the engine ----------------------------------------------------------

def test_plan_as_snakemake_asks() -> None:
    p = plan(["exec", "--home", "/work/wf", "--bind", "/c/source-cache", "i.simg", "bash",
              "-c", "set -euo pipefail; echo hi"])
    assert p.mounts == (Mount("/tmp", "/tmp"), Mount("/work/wf", "/work/wf"),
                        Mount("/c/source-cache", "/c/source-cache"))
    assert p.env == (("HOME", "/work/wf"),)
    assert p.workdir == "/work/wf" and not p.clean_env and p.pid is None
    assert p.command == ("/bin/sh", "-c", ap.BASH_FALLBACK, "sh", "-c",
                         "set -euo pipefail; echo hi")
    assert p.notes == ()


def test_plan_defaults_home_tmpdir_and_user_binds_win() -> None:
    p = plan(["exec", "-B", "/data:/work/wf:ro", "img", "ls"],
             environ={"HOME": "/home/u", "TMPDIR": "/scratch/j1"},
             dirs=("/home/u", "/scratch/j1"))
    assert p.mounts == (Mount("/home/u", "/home/u"), Mount("/data", "/work/wf", True),
                        Mount("/scratch/j1", "/scratch/j1"))
    assert p.env == (("HOME", "/home/u"),) and p.command == ("ls",)
    # a missing temp dir or home is not bound; system dirs never are
    p = plan(["exec", "img", "ls"], cwd="/", environ={"HOME": "/", "TMPDIR": "/gone"})
    assert p.mounts == () and p.workdir == "/"
    p = plan(["exec", "img", "ls"], cwd="/usr/bin", environ={"HOME": "/home/u"}, dirs=())
    assert p.mounts == () and p.workdir == "/usr/bin"


def test_plan_home_forms_and_no_home() -> None:
    p = plan(["exec", "--home", "/h/src:/home/me", "img", "ls"])
    assert Mount("/h/src", "/home/me") in p.mounts and ("HOME", "/home/me") in p.env
    p = plan(["exec", "--home", "hh", "img", "ls"])
    assert Mount("/work/wf/hh", "/work/wf/hh") in p.mounts
    p = plan(["exec", "--no-home", "img", "ls"])
    assert all(m.destination != "/home/u" for m in p.mounts) and ("HOME", "/home/u") in p.env
    with pytest.raises(InvalidInput, match="--home destination 'rel'"):
        plan(["exec", "--home", "/a:rel", "img", "ls"])


def test_plan_contain() -> None:
    p = plan(["exec", "--contain", "img", "ls"])
    assert p.mounts == () and p.workdir == "/home/u" and p.env == (("HOME", "/home/u"),)
    # an explicit --home is bound even with --contain; the cwd then is the workdir if covered
    p = plan(["exec", "-c", "--home", "/work/wf", "img", "ls"])
    assert p.mounts == (Mount("/work/wf", "/work/wf"),) and p.workdir == "/work/wf"
    p = plan(["exec", "-c", "--pwd", "/x", "img", "ls"])
    assert p.workdir == "/x"
    p = plan(["exec", "--containall", "img", "ls"])
    assert p.mounts == () and p.clean_env and p.pid == "private"


def test_plan_environment() -> None:
    environ = {"HOME": "/home/u", "APPTAINERENV_A": "from-apptainerenv",
               "SINGULARITYENV_A": "older", "SINGULARITYENV_B": "b", "APPTAINERENV_": "x"}
    p = plan(["exec", "--env", "C=3,A=flag", "--env", "HOME=/nope", "img", "env"],
             environ=environ)
    assert p.env == (("A", "flag"), ("B", "b"), ("C", "3"), ("HOME", "/home/u"))
    p = plan(["exec", "--cleanenv", "img", "env"], environ=environ)
    assert p.clean_env
    assert p.env == (("PATH", ap.DEFAULT_PATH), ("A", "from-apptainerenv"), ("B", "b"),
                     ("HOME", "/home/u"))


def test_plan_nv() -> None:
    p = plan(["exec", "--nv", "--cleanenv", "img", "nvidia-smi"],
             environ={"HOME": "/home/u", "CUDA_VISIBLE_DEVICES": "2,5",
                      "NVIDIA_DRIVER_CAPABILITIES": "compute"})
    # the engine renumbers the host's CUDA_VISIBLE_DEVICES itself: a copy would undo that
    assert p.env[:2] == (("PATH", ap.DEFAULT_PATH), ("NVIDIA_DRIVER_CAPABILITIES", None))
    assert not any(name == "CUDA_VISIBLE_DEVICES" for name, _ in p.env)
    p = plan(["exec", "--nv", "img", "x"], exists=lambda path: path == "/dev/nvidiactl")
    assert ("NVIDIA_VISIBLE_DEVICES", "all") in p.env and p.notes == ()
    p = plan(["exec", "--nv", "img", "x"], exists=lambda path: False)
    assert not any(name.startswith(("NVIDIA", "CUDA")) for name, _ in p.env)
    assert p.notes == ("--nv: no NVIDIA GPU on this host (no /dev/nvidiactl), continuing "
                       + "without",)


def test_plan_leaves_out_a_forbidden_temp_dir() -> None:
    p = plan(["exec", "img", "x"], environ={"HOME": "/home/u", "TMPDIR": "/var/tmp/j"},
             dirs=("/var/tmp/j",), forbidden=lambda path: path.startswith("/var/"))
    assert [m.destination for m in p.mounts] == ["/work/wf"]
    assert p.notes == ("not binding the temp dir /var/tmp/j: the site's userMounts rules "
                       + "forbid it as a mount destination",)


def test_wrap_command_only_wraps_bash_dash_c() -> None:
    assert ap.wrap_command(["bash", "-c", "x", "a0", "a1"]) == (
        "/bin/sh", "-c", ap.BASH_FALLBACK, "sh", "-c", "x", "a0", "a1")
    assert ap.wrap_command(["bash", "-c", "x"], quiet=True)[2] == ap.BASH_FALLBACK_QUIET
    assert "echo" not in ap.BASH_FALLBACK_QUIET
    for cmd in (["sh", "-c", "x"], ["bash", "script.sh"], ["/bin/bash", "-c", "x"], ["ls"]):
        assert ap.wrap_command(cmd) == tuple(cmd)


# -- images -------------------------------------------------------------------------------------

DIGEST = "sha256:" + "ab" * 32


def _entry() -> Any:
    """A real index entry (the front end reads its name, digest and pinned reference)."""
    from hpc_exec.engine import ImageEntry

    return ImageEntry(key="127.0.0.1:5000/busybox:latest", server="127.0.0.1:5000",
                      repository="busybox", tag="latest", digest=DIGEST,
                      image_id="sha256:" + "cd" * 32, squashfs=Path("/r/i.sqfs"),
                      metadata=Path("/r/i.json"), created="", size=0)


def test_image_kind() -> None:
    assert ap.image_kind(b"hsqs\x00\x01") == "squashfs"
    assert ap.image_kind(b"#!/usr/bin/env run-singularity\n\x00SIF_MAGIC\x0001") == "sif"
    assert ap.image_kind(b"#!/usr/bin/env run-singularity\nhsqs") == "sif"
    assert ap.image_kind(ap.descriptor_text("docker://x", _entry()).encode()) == "descriptor"
    assert ap.image_kind(b'{"format": "other"}') == "unknown"
    assert ap.image_kind(b"") == "unknown"


def test_descriptor_round_trip_and_damage(tmp_path: Path) -> None:
    text = ap.descriptor_text("docker://127.0.0.1:5000/busybox", _entry())
    data = json.loads(text)
    assert data == {"format": "hpc-exec-apptainer-image", "version": 1,
                    "url": "docker://127.0.0.1:5000/busybox",
                    "reference": "127.0.0.1:5000/busybox:latest", "digest": DIGEST,
                    "pinned": f"127.0.0.1:5000/busybox@{DIGEST}"}
    assert ap._read_descriptor("d", text.encode()) == data["pinned"]
    bad = text.replace('"version": 1', '"version": 2').encode()
    with pytest.raises(InvalidInput, match="image descriptor d is damaged"):
        ap._read_descriptor("d", bad)


@pytest.fixture
def fake_engine(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    """engine.pull/resolve/execute record their calls; resolve knows pulled references."""
    calls: dict[str, list[Any]] = {"pull": [], "resolve": [], "execute": []}
    pulled: set[str] = set()

    class Config:
        env = (("PATH", "/bin"),)

    class Image:
        squashfs = Path("/cache/images/ab.squashfs")
        config = Config()

    def pull(ref: str) -> Any:
        calls["pull"].append(ref)
        pulled.add(ref)
        return _entry()

    def resolve(image: Any) -> Image:
        calls["resolve"].append(image)
        if isinstance(image, str) and image not in pulled:
            raise ImageNotFound(f"image {image} is not in the local repository")
        return Image()

    def execute(image: Any, options: Any) -> int:
        calls["execute"].append((image, options))
        return 7

    monkeypatch.setattr(engine, "pull", pull, raising=False)
    monkeypatch.setattr(engine, "resolve", resolve, raising=False)
    monkeypatch.setattr(engine, "execute", execute, raising=False)
    monkeypatch.setattr(ap, "_site_forbids", lambda: lambda path: False)
    return calls


def test_pull_writes_a_descriptor(fake_engine: dict[str, list[Any]], tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    url = "docker://127.0.0.1:5000/busybox:latest"
    assert ap.main(["pull", "--name", "abc.simg", url]) == 0
    assert fake_engine["pull"] == ["127.0.0.1:5000/busybox:latest"]
    assert json.loads((tmp_path / "abc.simg").read_text())["url"] == url
    assert "abc.simg" in capsys.readouterr().err
    # a second (concurrent) pull of the same NAME replaces the descriptor, without --force
    assert ap.main(["-q", "pull", "--name", "abc.simg", url]) == 0
    assert capsys.readouterr().err == ""
    assert [p.name for p in tmp_path.iterdir()] == ["abc.simg"]  # no temp file left
    # apptainer's default name
    assert ap.main(["pull", "--dir", str(tmp_path), "docker://a/b/tool:1.2"]) == 0
    assert (tmp_path / "tool_1.2.sif").exists()


def test_pull_inside_a_job_uses_the_cache(fake_engine: dict[str, list[Any]], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Compute nodes may not reach the registry: in a job, a cached image is not pulled."""
    looked: list[str] = []

    def lookup(ref: str) -> Any:
        looked.append(ref)
        if ref != "cached/x:1":
            raise ImageNotFound(f"image {ref} is not in the local repository")
        return _entry()

    monkeypatch.setattr(engine, "lookup", lookup, raising=False)
    monkeypatch.chdir(tmp_path)
    assert ap.main(["pull", "--name", "a.simg", "docker://cached/x:1"]) == 0
    assert fake_engine["pull"] == ["cached/x:1"] and looked == []  # not in a job: pulled
    monkeypatch.setenv("SLURM_JOB_ID", "12")
    fake_engine["pull"].clear()
    assert ap.main(["pull", "--name", "a.simg", "docker://cached/x:1"]) == 0
    assert ap.main(["pull", "--name", "b.simg", "docker://other/y:2"]) == 0
    assert looked == ["cached/x:1", "other/y:2"] and fake_engine["pull"] == ["other/y:2"]
    assert ap.image_kind((tmp_path / "a.simg").read_bytes()) == "descriptor"


def test_pull_refuses_to_overwrite_another_file(fake_engine: dict[str, list[Any]],
                                                tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.sif").write_bytes(b"hsqs....")
    assert ap.main(["pull", "--name", "x.sif", "docker://a"]) == 110
    assert "already exists (use --force" in capsys.readouterr().err
    assert fake_engine["pull"] == []
    assert ap.main(["pull", "--force", "--name", "x.sif", "docker://a"]) == 0
    assert ap.image_kind((tmp_path / "x.sif").read_bytes()) == "descriptor"
    assert ap.main(["pull", "--name", "y", "library://a/b"]) == 110
    assert "unsupported image URI 'library://a/b'" in capsys.readouterr().err


def test_exec_runs_in_process(fake_engine: dict[str, list[Any]], tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    (tmp_path / "d.simg").write_text(ap.descriptor_text("docker://x", _entry()))
    assert ap.main(["exec", "--cleanenv", "d.simg", "bash", "-c", "true"]) == 7
    pinned = f"127.0.0.1:5000/busybox@{DIGEST}"
    assert fake_engine["pull"] == [pinned]  # not in the cache: pulled by digest
    ((image, options),) = fake_engine["execute"]
    assert image.squashfs == Path("/cache/images/ab.squashfs")
    assert options == engine.run_options(
        ap.wrap_command(["bash", "-c", "true"]), mounts=[Mount(str(tmp_path), str(tmp_path))],
        env={"HOME": str(tmp_path)}, clean_env=True, workdir=str(tmp_path), entrypoint="")
    # the image's PATH wins over apptainer's default PATH under --cleanenv (no PATH entry)


def test_exec_images_by_content(fake_engine: dict[str, list[Any]], tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "img.simg").write_bytes(b"hsqs" + bytes(100))
    assert ap.main(["exec", "img.simg", "true"]) == 7
    assert fake_engine["resolve"] == [tmp_path / "img.simg"]
    (tmp_path / "real.sif").write_bytes(b"#!/usr/bin/env run-singularity\n\x00SIF_MAGIC01")
    assert ap.main(["exec", "real.sif", "true"]) == 110
    assert "is a SIF file: real SIF files need real apptainer" in capsys.readouterr().err
    (tmp_path / "junk").write_text("hello")
    assert ap.main(["exec", "junk", "true"]) == 110
    assert "neither a squashfs file nor an image descriptor" in capsys.readouterr().err
    assert ap.main(["exec", "nope.simg", "true"]) == ExitCode.IMAGE_NOT_FOUND
    assert "image file 'nope.simg' not found" in capsys.readouterr().err
    assert ap.main(["exec", str(tmp_path), "true"]) == 110
    assert "sandbox images need real apptainer" in capsys.readouterr().err
    assert ap.main(["exec", "shub://r/x:1", "true"]) == 110
    assert "unsupported image URI 'shub://r/x:1'" in capsys.readouterr().err
    fake_engine["pull"].clear()
    assert ap.main(["exec", "docker://r/x:1", "true"]) == 7
    assert ap.main(["exec", "oras://r/y:1", "true"]) == 7  # the engine's grammar has oras://
    assert fake_engine["pull"] == ["r/x:1", "oras://r/y:1"]


def test_multi_task_runs_srun_with_the_barrier(fake_engine: dict[str, list[Any]],
                                               tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from hpc_exec.cli import run as run_cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv(ap.NTASKS_VARIABLE, "4")
    (tmp_path / "img.sqfs").write_bytes(b"hsqs" + bytes(100))
    seen: list[list[str]] = []
    env_files: list[tuple[str, int, str]] = []

    def foreground(argv: list[str], **kw: Any) -> process.Completed:
        seen.append(list(argv))
        assert kw["timeout"] is None
        (path,) = [a.partition("=")[2] for a in argv if a.startswith("--env-file=")]
        env_files.append((path, os.stat(path).st_mode & 0o777, Path(path).read_text()))
        return process.Completed(argv, 3, "", "")

    monkeypatch.setattr(process, "foreground", foreground)
    assert ap.main(["exec", "--env", "A=1", "img.sqfs", "mpi-prog", "-n"]) == 3
    assert fake_engine["execute"] == []
    (argv,) = seen
    (path, mode, text) = env_files[0]
    assert mode == 0o600 and not Path(path).exists()  # private while srun ran, gone after
    assert not any("A=1" in a for a in argv)  # values stay off the command line
    assert argv[:6] == ["srun", "--ntasks=4", "--kill-on-bad-exit=1", sys.executable, "-P",
                        "-m"]
    assert argv[6:8] == ["hpc_exec", "run"]
    # hpc-exec run reads back exactly the options of an in-process exec, plus --sync
    import argparse

    parser = argparse.ArgumentParser()
    run_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(argv[7:])
    assert args.image == "/cache/images/ab.squashfs"
    expected = engine.run_options(
        ("mpi-prog", "-n"), mounts=[Mount(str(tmp_path), str(tmp_path))],
        env={"A": "1", "HOME": str(tmp_path)}, workdir=str(tmp_path), entrypoint="", sync=True)
    Path(path).write_text(text)  # what each task read while srun ran
    assert run_cli.options_from_args(args, argv[7:]) == expected

    monkeypatch.setenv(ap.NTASKS_VARIABLE, "many")
    assert ap.main(["exec", "img.sqfs", "x"]) == 110


def test_hpc_exec_apptainer_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="hpc-exec")
    parser.add_argument("--debug", action="store_true")
    ap.add_parser(parser.add_subparsers(dest="command"))
    for argv, out in ((["apptainer", "--version"], "apptainer version 1.3.6-hpc-exec\n"),
                      (["apptainer", "-q", "exec", "--foo", "i", "x"], "")):
        args = parser.parse_args(argv)
        code = args.handler(args)
        captured = capsys.readouterr()
        assert captured.out == out
        if out:
            assert code == 0
        else:
            assert code == 110
            assert captured.err == "hpc-exec apptainer: unsupported option --foo\n"


def _top_imports(path: Path) -> set[str]:
    top: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            top |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            top.add(node.module)
    return top


def test_module_imports_are_cheap() -> None:
    """Only the standard library (and the front end's own pure half) at import time: the
    engine loads inside the handlers."""
    assert _top_imports(SOURCE) == {"__future__", "argparse", "os", "sys", "collections.abc",
                                    "typing", "hpc_exec.cli._apptainer_args"}
    assert _top_imports(SOURCE.with_name("_apptainer_args.py")) == {
        "__future__", "os", "collections.abc", "typing"}


def test_plan_bind_variables_and_ignored_settings() -> None:
    environ = {"HOME": "/home/u", "APPTAINER_BIND": "/b1,/b2:/x:ro",
               "SINGULARITY_BINDPATH": "/b0", "APPTAINER_CACHEDIR": "/c",
               "SINGULARITY_CONTAIN": "1", "APPTAINER_NV": "true"}
    p = plan(["exec", "-B", "/b3:/x", "img", "x"], environ=environ)
    # one mount per destination (the --bind flag wins over APPTAINER_BIND for /x), parents
    # before children
    assert [(m.source, m.destination, m.readonly) for m in p.mounts] == [
        ("/tmp", "/tmp", False), ("/b0", "/b0", False), ("/b1", "/b1", False),
        ("/b3", "/x", False), ("/home/u", "/home/u", False), ("/work/wf", "/work/wf", False)]
    assert p.notes == ("ignoring APPTAINER_NV: hpc-exec apptainer does not implement it",
                       "ignoring SINGULARITY_CONTAIN: hpc-exec apptainer does not implement it")
