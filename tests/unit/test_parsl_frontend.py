"""hpc_exec.parsl without programs: the launcher's text, the image check's messages, the
provider's exit markers and status mapping, container_app's command line."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import parsl
import pytest
from parsl.jobs.states import JobState, JobStatus
from parsl.launchers import SingleNodeLauncher, SrunLauncher

import hpc_exec.parsl as hp
from hpc_exec.errors import InvalidInput
from hpc_exec.parsl import _check, _launcher, _provider

IMAGE = "registry.example:5000/ns/img:1.0"
LOCAL = _check.ImageFacts("3.11", "2026.10.26", "")


def test_public_surface_is_complete() -> None:
    assert sorted(hp.__all__) == sorted(n for n in dir(hp) if not n.startswith("_")
                                        and n not in ("annotations",))


# -- the check ------------------------------------------------------------------------------

def test_parse_probe_reads_the_last_json_line() -> None:
    out = 'noise\n{"python": "3.11", "parsl": "2026.10.19", "pool": "/usr/local/bin/p.py"}\n'
    assert _check.parse_probe(IMAGE, out) == _check.ImageFacts("3.11", "2026.10.19",
                                                               "/usr/local/bin/p.py")


def test_parse_probe_without_a_result_names_the_image() -> None:
    with pytest.raises(_check.ImageCheckFailed, match=r"ns/img:1\.0 printed no result"):
        _check.parse_probe(IMAGE, "Traceback ...")


def test_matching_image_passes() -> None:
    _check.compare(IMAGE, LOCAL, _check.ImageFacts("3.11", "2026.10.26", "/x"))


def test_parsl_mismatch_states_both_versions_and_the_fix() -> None:
    with pytest.raises(_check.ImageCheckFailed) as info:
        _check.compare(IMAGE, LOCAL, _check.ImageFacts("3.11", "2026.10.19", "/x"))
    text = str(info.value)
    assert f"image {IMAGE} has parsl 2026.10.19, the submit side parsl 2026.10.26" in text
    assert "pip install parsl==2026.10.26" in text
    assert "\n" not in text  # Parsl shows str(): one line
    assert isinstance(info.value, parsl.providers.errors.ExecutionProviderException)


def test_python_mismatch_states_both_versions() -> None:
    with pytest.raises(_check.ImageCheckFailed, match=r"runs Python 3\.12, the submit side "
                                                      r"Python 3\.11"):
        _check.compare(IMAGE, LOCAL, _check.ImageFacts("3.12", "2026.10.26", "/x"))


def test_image_without_parsl_gets_the_pip_line() -> None:
    with pytest.raises(_check.ImageCheckFailed, match=r"has no parsl.*pip install "
                                                      r"parsl==2026\.10\.26"):
        _check.compare(IMAGE, LOCAL, _check.ImageFacts("3.11", None, None))


def test_image_without_the_pool_script_is_refused() -> None:
    with pytest.raises(_check.ImageCheckFailed, match="no process_worker_pool.py"):
        _check.compare(IMAGE, LOCAL, _check.ImageFacts("3.11", "2026.10.26", None))


def test_local_facts_are_this_python() -> None:
    import sys

    facts = _check.local_facts()
    assert facts.python == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert facts.parsl == parsl.__version__


# -- the launcher -----------------------------------------------------------------------------

@pytest.fixture
def prepared(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make the pull+check a recorded no-op (unit tests run no programs)."""
    calls: list[str] = []

    def fake_prepare(self: Any, options: Any, future: Any) -> None:
        calls.append(self.image)
        future.set_result(None)

    monkeypatch.setattr(hp.ContainerLauncher, "_prepare", fake_prepare)
    monkeypatch.setattr(_launcher, "hpc_exec_program", lambda: ["/opt/venv/bin/hpc-exec"])
    return calls


def test_srun_text_wraps_the_pool_command(prepared: list[str], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    script_dir = tmp_path / "runinfo" / "000" / "submit_scripts"
    launcher = hp.ContainerLauncher(IMAGE, inner=SrunLauncher(), binds=["/scratch:/data:ro"])
    text = launcher("process_worker_pool.py -a 127.0.0.1 --block_id=0", 1, 2, str(script_dir))
    assert "srun --ntasks 2" in text
    line = next(x for x in text.splitlines() if "process_worker_pool.py" in x)
    argv = shlex.split(line)
    assert argv[:2] == ["/opt/venv/bin/hpc-exec", "run"]
    # cwd bound (and the run dir under it, so not twice), the user's bind, workdir = cwd
    assert f"--mount=type=bind,source={tmp_path},destination={tmp_path}" in argv
    assert not any("runinfo" in a for a in argv if a.startswith("--mount"))
    assert "--mount=type=bind,source=/scratch,destination=/data,readonly" in argv
    assert f"--workdir={tmp_path}" in argv
    assert "--env=SLURM_JOB_ID" in argv and "--env=PARSL_CORES" in argv
    i = argv.index(IMAGE)
    assert argv[i + 1:] == ["--", "process_worker_pool.py", "-a", "127.0.0.1", "--block_id=0"]
    assert prepared == [IMAGE]


def test_run_dir_outside_cwd_is_bound_too(prepared: list[str], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    launcher = hp.ContainerLauncher(IMAGE, inner=SingleNodeLauncher())
    text = launcher("pool.py", 1, 1, str(tmp_path / "run" / "submit_scripts"))
    assert f"source={tmp_path / 'run'},destination={tmp_path / 'run'}" in text
    assert "CMD()" in text  # SingleNodeLauncher's loop


def test_compound_command_runs_under_sh(prepared: list[str], tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    launcher = hp.ContainerLauncher(IMAGE, inner=SingleNodeLauncher())
    text = launcher("cd /x && pool.py", 1, 1, "")
    assert f"{IMAGE} -- /bin/sh -c 'cd /x && pool.py'" in text


def test_check_happens_once_for_all_blocks(prepared: list[str], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    launcher = hp.ContainerLauncher(IMAGE)
    launcher.prepare_in_background(str(tmp_path / "submit_scripts"))
    for block in range(3):
        launcher(f"pool.py --block_id={block}", 1, 1, str(tmp_path / "submit_scripts"))
    assert prepared == [IMAGE]


def test_a_failed_check_fails_every_block(monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(_check, "ensure_pulled", lambda image: "sha256:x")
    monkeypatch.setattr(_check, "probe", lambda image, options, timeout:
                        _check.ImageFacts("3.11", "2026.1.5", "/p"))
    monkeypatch.setattr(_check, "local_facts", lambda: LOCAL)
    launcher = hp.ContainerLauncher(IMAGE)
    for _ in range(2):
        with pytest.raises(_check.ImageCheckFailed, match="has parsl 2026.1.5"):
            launcher("pool.py", 1, 1, "")


def test_pull_errors_become_check_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    from hpc_exec import engine
    from hpc_exec.errors import RegistryError

    def refuse(ref: str) -> None:
        raise RegistryError("registry said 404", hint="check the tag")

    monkeypatch.setattr(engine, "pull", refuse)
    monkeypatch.setattr(_check, "_pulled", {})
    with pytest.raises(_check.ImageCheckFailed, match=r"cannot pull image .*404 \(fix: "
                                                      r"check the tag\)"):
        _check.ensure_pulled(IMAGE)


DIGEST = "sha256:" + "ab" * 32


def test_pull_pins_the_image_to_its_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    from hpc_exec import engine

    pulls: list[str] = []

    def pull(ref: str) -> Any:
        pulls.append(ref)
        return engine.ImageEntry(
            key=IMAGE, server="registry.example:5000", repository="ns/img", tag="1.0",
            digest=DIGEST, image_id="sha256:" + "cd" * 32, squashfs=Path("/r/i.sqfs"),
            metadata=Path("/r/i.json"), created="", size=0)

    monkeypatch.setattr(engine, "pull", pull)
    monkeypatch.setattr(_check, "_pulled", {})
    pinned = f"registry.example:5000/ns/img@{DIGEST}"
    assert _check.ensure_pulled(IMAGE) == pinned
    assert _check.ensure_pulled(IMAGE) == pinned and pulls == [IMAGE]  # once per process
    assert _check.ensure_pulled("/data/img.sqfs") == "/data/img.sqfs"  # a file: as it is


def test_jobs_run_the_image_that_was_checked(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    pinned = f"registry.example:5000/ns/img@{DIGEST}"
    probed: list[str] = []
    monkeypatch.setattr(_check, "ensure_pulled", lambda image: pinned)
    monkeypatch.setattr(_check, "probe", lambda image, options, timeout:
                        probed.append(image) or _check.ImageFacts(LOCAL.python, LOCAL.parsl, "/p"))
    monkeypatch.setattr(_check, "local_facts", lambda: LOCAL)
    monkeypatch.setattr(_launcher, "hpc_exec_program", lambda: ["/opt/venv/bin/hpc-exec"])
    text = hp.ContainerLauncher(IMAGE, inner=SingleNodeLauncher())("pool.py", 1, 1, "")
    assert probed == [pinned]
    assert f" {pinned} -- pool.py" in text and f"{IMAGE} " not in text


def test_container_app_tasks_get_the_pinned_image(monkeypatch: pytest.MonkeyPatch) -> None:
    pinned = f"registry.example:5000/ns/img@{DIGEST}"
    monkeypatch.setattr(_check, "ensure_pulled", lambda image: pinned)
    seen: dict[str, Any] = {}

    @hp.container_app(IMAGE)
    def echo(word: str) -> list[str]:
        return ["echo", word]

    monkeypatch.setattr(echo, "app", lambda *args, **kwargs: seen.update(kwargs) or "future")
    assert echo("hi") == "future"
    from hpc_exec.parsl import _apps

    assert seen == {_apps.PINNED: pinned}


@pytest.mark.parametrize("kwargs, match", [
    ({"image": " "}, "image must not be empty"),
    ({"image": IMAGE, "binds": ["relative:/x"]}, "relative"),
    ({"image": IMAGE, "run_options": {"workdir": "/x"}}, "'workdir' is set by the launcher"),
    ({"image": IMAGE, "env": {"BAD=NAME": "1"}}, "BAD=NAME"),
])
def test_bad_input_is_refused_when_the_config_is_built(kwargs: dict[str, Any],
                                                       match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        hp.ContainerLauncher(**kwargs)


def test_heredoc_unsafe_paths_are_refused(prepared: list[str], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    launcher = hp.ContainerLauncher(IMAGE, binds=["/data/$USER:/d"])
    with pytest.raises(InvalidInput, match=r"\$USER"):
        launcher("pool.py", 1, 1, "")


def test_repr_is_the_constructor_call() -> None:
    text = repr(hp.ContainerLauncher(IMAGE, inner=SingleNodeLauncher()))
    assert text.startswith("ContainerLauncher(") and IMAGE in text
    assert "inner=SingleNodeLauncher(" in text


# -- the provider -----------------------------------------------------------------------------

def test_marker_path_sits_next_to_the_job_output() -> None:
    assert _provider.marker_path("/r/submit_scripts/parsl.x.block-0.1.5.stdout") == \
        "/r/submit_scripts/parsl.x.block-0.1.5.exit"


def test_trap_lines_record_the_status_atomically(tmp_path: Path) -> None:
    text = _provider.trap_lines(str(tmp_path / "it's.exit"))
    assert "trap '" in text and "mv -f" in text
    assert shlex.quote(str(tmp_path / "it's.exit")) in text


def test_read_marker(tmp_path: Path) -> None:
    marker = tmp_path / "m.exit"
    assert _provider.read_marker(str(marker)) is None
    marker.write_text("")
    assert _provider.read_marker(str(marker)) is None
    marker.write_text("121\n")
    assert _provider.read_marker(str(marker)) == 121


class _FakeSlurm(_provider.FastSlurmProvider):
    """FastSlurmProvider whose shell seam answers like squeue/scancel would."""

    def __init__(self, queue: str) -> None:
        self.queue = queue
        self.commands: list[str] = []
        super().__init__(status_interval=1.0, partition="debug")

    def execute_wait(self, cmd: str, timeout: Any = None) -> tuple[int, str, str]:
        self.commands.append(cmd)
        if cmd.startswith("sacct"):
            return 1, "", "Slurm accounting storage is disabled"
        if cmd.startswith("squeue"):
            return 0, self.queue, ""
        return 0, "", ""


def _job(provider: _FakeSlurm, jid: str, tmp_path: Path) -> str:
    base = tmp_path / f"parsl.b.block-{jid}"
    provider.resources[jid] = {"job_id": jid, "status": JobStatus(JobState.RUNNING),
                               "job_stdout_path": f"{base}.stdout",
                               "job_stderr_path": f"{base}.stderr"}
    return f"{base}.exit"


def test_nonzero_marker_fails_the_block_and_cancels_what_is_left(tmp_path: Path) -> None:
    provider = _FakeSlurm(queue="7 R\n8 R\n")
    Path(_job(provider, "7", tmp_path)).write_text("110\n")
    _job(provider, "8", tmp_path)
    status = provider.status(["7", "8"])
    assert status[0].state == JobState.FAILED and status[0].exit_code == 110
    assert "exited with status 110" in (status[0].message or "")
    assert status[1].state == JobState.RUNNING
    assert provider.commands[-1] == "scancel 7"


def test_zero_marker_completes_and_gone_job_is_not_cancelled(tmp_path: Path) -> None:
    provider = _FakeSlurm(queue="")
    Path(_job(provider, "9", tmp_path)).write_text("0\n")
    assert provider.status(["9"])[0].state == JobState.COMPLETED
    assert not any(c.startswith("scancel") for c in provider.commands)


def test_status_interval_is_short_and_validated() -> None:
    assert _FakeSlurm(queue="").status_polling_interval == 1.0
    with pytest.raises(InvalidInput, match="status_interval"):
        _provider.FastSlurmProvider(status_interval=0)


def test_submit_script_gets_the_exit_trap(tmp_path: Path) -> None:
    provider = _FakeSlurm(queue="")
    script = tmp_path / "job.sh"
    configs = {"job_stdout_path": str(tmp_path / "j.stdout"),
               "job_stderr_path": str(tmp_path / "j.stderr"), "nodes": 1, "walltime": 5,
               "tasks_per_node": 1, "scheduler_options": "", "worker_init": "",
               "user_script": "srun pool.py", "submit_script_dir": str(tmp_path)}
    from parsl.providers.slurm.template import template_string

    provider._write_submit_script(template_string, str(script), "j", configs)
    text = script.read_text()
    assert "trap '" in text and str(tmp_path / "j.exit") in text
    assert text.index("trap '") < text.index("srun pool.py")


def test_jobs_left_at_exit_are_cancelled(tmp_path: Path) -> None:
    import os
    import weakref

    provider = _FakeSlurm(queue="")
    _job(provider, "11", tmp_path)
    _provider._cancel_at_exit(weakref.ref(provider), os.getpid() + 1)  # another process
    assert not any(c.startswith("scancel") for c in provider.commands)
    _provider._cancel_at_exit(weakref.ref(provider), os.getpid())
    assert provider.commands[-1] == "scancel 11"


# -- container_app ----------------------------------------------------------------------------

def test_container_command_string_runs_under_the_images_sh(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    monkeypatch.chdir(tmp_path)
    line = hp.container_command(IMAGE, "echo $HOME > out", program=["/v/hpc-exec"])
    argv = shlex.split(line)
    assert argv[:2] == ["/v/hpc-exec", "run"]
    assert argv[argv.index(IMAGE):] == [IMAGE, "--", "/bin/sh", "-c", "echo $HOME > out"]
    assert f"--workdir={tmp_path}" in argv


def test_container_command_list_needs_no_shell(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    argv = shlex.split(hp.container_command(IMAGE, ["echo", "a b", 3]))
    assert argv[argv.index(IMAGE):] == [IMAGE, "--", "echo", "a b", "3"]


@pytest.mark.parametrize("command", ["", "  ", []])
def test_empty_container_command_is_refused(command: Any) -> None:
    with pytest.raises(InvalidInput, match="empty command"):
        hp.container_command(IMAGE, command)


def test_container_app_keeps_the_bash_app_signature() -> None:
    import inspect

    @hp.container_app(IMAGE)
    def app(x: int, stdout: str | None = None) -> str:
        return f"echo {x}"

    assert list(inspect.signature(app.app.func).parameters) == ["x", "stdout"]
    assert app.app.kwargs == {"stdout": None}  # bash_app sees the stdout= default
    assert app.__name__ == "app"


def test_container_app_refuses_bad_input_at_decoration() -> None:
    with pytest.raises(InvalidInput, match="non-empty"):
        hp.container_app("")
    with pytest.raises(InvalidInput, match="BAD=NAME"):
        hp.container_app(IMAGE, env={"BAD=NAME": "x"})


def test_a_killed_script_leaves_no_marker() -> None:
    # SIGTERM (time limit, scancel) ends the script without the EXIT trap's marker, so the
    # provider takes Slurm's TIMEOUT/CANCELLED instead of "exited with status 143"
    text = _provider.trap_lines("/m.exit")
    assert "trap 'trap - EXIT; exit 143' TERM" in text
    assert "trap 'trap - EXIT; exit 130' INT" in text
