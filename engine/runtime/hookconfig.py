"""Read ``hooks.d/*.json`` (OCI hook schema 1.0.0) and select the hooks for one container.

Reading and validating are separate from selecting (containers/common does the same):
:func:`load_hooks` reads every ``*.json`` in the directory in lexicographic file-name order and
validates it, raising :class:`~hpc_exec.errors.ConfigError` naming the file for anything
malformed; :func:`select_hooks` keeps the hooks whose ``when`` conditions all hold and
:func:`hooks_by_stage` groups them for config.json, keeping file order within each stage.

A hook file::

    {"version": "1.0.0",
     "hook": {"path": "/usr/bin/x", "args": ["x", "--flag"], "env": ["A=b"], "timeout": 10},
     "when": {"always": true, "annotations": {"^com.hooks.mpi.enabled$": "^true$"},
              "commands": ["^/bin/sh$"], "hasBindMounts": true},
     "stages": ["prestart", "createContainer"]}

``when`` semantics (OCI hooks 1.0.0): every condition given must hold; ``annotations`` needs,
for each (key regex, value regex) pair, some annotation whose key and value both match;
``commands`` needs the container's argv[0] to match one of the regexes.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from hpc_exec.errors import ConfigError

__all__ = ["STAGES", "Hook", "chain_key", "hooks_by_stage", "load_hooks", "merge_python_hooks", "mpi_types",
           "select_hooks"]

STAGES = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
          "poststop")


# Seconds. runc turns the timeout into a Go time.Duration (int64 nanoseconds): anything near
# 9.2e9 s overflows inside runc (issue 12, item 11). A year is far beyond any real hook.
MAX_TIMEOUT = 365 * 86400


class Hook(NamedTuple):
    name: str  # file name without .json
    file: Path
    path: str
    args: tuple[str, ...]
    env: tuple[str, ...]
    timeout: int | None
    always: bool | None
    annotations: tuple[tuple[str, str], ...]
    commands: tuple[str, ...]
    has_bind_mounts: bool | None
    stages: tuple[str, ...]

    def oci(self) -> dict[str, Any]:
        """The hook entry of config.json."""
        out: dict[str, Any] = {"path": self.path}
        if self.args:
            out["args"] = list(self.args)
        if self.env:
            out["env"] = list(self.env)
        if self.timeout is not None:
            out["timeout"] = self.timeout
        return out


def _bad(file: Path, what: str) -> ConfigError:
    # one line whatever the file holds (a key may contain a newline)
    return ConfigError(f"hook file {file}: {what}".replace("\n", "\\n").replace("\r", "\\r"))


def _names(keys: set[Any]) -> str:
    return ", ".join(sorted(k if isinstance(k, str) and k.isprintable() else repr(k)
                            for k in keys))


def _regex(file: Path, text: Any, where: str) -> str:
    if not isinstance(text, str):
        raise _bad(file, f"{where}: expected a regular expression string, got {text!r}")
    try:
        re.compile(text)
    except (re.error, RecursionError, OverflowError) as exc:
        raise _bad(file, f"{where}: invalid regular expression {text!r}: {exc}") from None
    return text


def _strings(file: Path, value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _bad(file, f"{where}: expected a list of strings, got {value!r}")
    return tuple(value)


def parse_hook(file: Path, data: Any) -> Hook:
    """Validate one parsed hook file."""
    if not isinstance(data, dict):
        raise _bad(file, "expected a JSON object")
    unknown = set(data) - {"version", "hook", "when", "stages"}
    if unknown:
        raise _bad(file, f"unknown key(s) {_names(unknown)}")
    if data.get("version") != "1.0.0":
        raise _bad(file, f"unsupported version {data.get('version')!r} (expected '1.0.0')")
    hook = data.get("hook")
    if not isinstance(hook, dict):
        raise _bad(file, "missing 'hook' object")
    unknown = set(hook) - {"path", "args", "env", "timeout"}
    if unknown:
        raise _bad(file, f"hook: unknown key(s) {_names(unknown)}")
    path = hook.get("path")
    if not isinstance(path, str) or not path.startswith("/"):
        raise _bad(file, f"hook.path: expected an absolute path, got {path!r}")
    timeout = hook.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int)
                                or timeout <= 0):
        raise _bad(file, f"hook.timeout: expected a positive integer, got {timeout!r}")
    if timeout is not None and timeout > MAX_TIMEOUT:
        raise _bad(file, f"hook.timeout: {timeout} s is more than the {MAX_TIMEOUT} s (a year) "
                   "runc can take")
    when = data.get("when")
    if not isinstance(when, dict) or not when:
        raise _bad(file, "missing 'when' object (at least one condition)")
    unknown = set(when) - {"always", "annotations", "commands", "hasBindMounts"}
    if unknown:
        raise _bad(file, f"when: unknown key(s) {_names(unknown)}")
    for key in ("always", "hasBindMounts"):
        if key in when and not isinstance(when[key], bool):
            raise _bad(file, f"when.{key}: expected true or false, got {when[key]!r}")
    ann = when.get("annotations", {})
    if not isinstance(ann, dict):
        raise _bad(file, f"when.annotations: expected an object, got {ann!r}")
    stages = data.get("stages")
    stage_list = _strings(file, stages, "stages")
    if not stage_list:
        raise _bad(file, "stages: at least one stage is required")
    for stage in stage_list:
        if stage not in STAGES:
            raise _bad(file, f"stages: unknown stage {stage!r} (known: {', '.join(STAGES)})")
    return Hook(
        name=file.name.removesuffix(".json"),
        file=file,
        path=path,
        args=_strings(file, hook.get("args", []), "hook.args"),
        env=_strings(file, hook.get("env", []), "hook.env"),
        timeout=timeout,
        always=when.get("always"),
        annotations=tuple((_regex(file, k, "when.annotations key"),
                           _regex(file, v, f"when.annotations[{k!r}]")) for k, v in ann.items()),
        commands=tuple(_regex(file, c, "when.commands")
                       for c in _strings(file, when.get("commands", []), "when.commands")),
        has_bind_mounts=when.get("hasBindMounts"),
        stages=stage_list,
    )


def hook_files(directory: Path) -> list[Path]:
    """``directory/*.json`` in lexicographic order; none if the directory does not exist."""
    try:
        return sorted((p for p in directory.iterdir() if p.name.endswith(".json")),
                      key=lambda p: p.name)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConfigError(f"cannot read hooks directory {directory}: {exc.strerror}") from exc


def load_hooks(directory: Path) -> list[Hook]:
    """Read and validate every hook file of ``directory`` (see the module docstring)."""
    hooks = []
    from hpc_exec.config import read_config_text

    for file in hook_files(directory):
        text = read_config_text(file, "hook file")  # a FIFO, a device or binary: ConfigError
        try:
            data = json.loads(text)
            hooks.append(parse_hook(file, data))
        except ValueError as exc:
            if isinstance(exc, ConfigError):
                raise
            raise _bad(file, f"not valid JSON: {exc}") from exc
        except RecursionError:
            raise _bad(file, "nested too deeply") from None
    return hooks


def _when_holds(hook: Hook, annotations: Mapping[str, str], argv0: str,
                has_bind_mounts: bool) -> bool:
    if hook.always is not None and not hook.always:
        return False
    # Each regex must match the whole value (boost::regex_match in Sarus, as the OCI hooks
    # schema means it): 'com.acc' does not select 'com.acc.a', 'ech' not '/bin/echo'.
    for key_re, value_re in hook.annotations:
        if not any(re.fullmatch(key_re, k) and re.fullmatch(value_re, v)
                   for k, v in annotations.items()):
            return False
    if hook.commands and not any(re.fullmatch(c, argv0) for c in hook.commands):
        return False
    if hook.has_bind_mounts is not None and hook.has_bind_mounts != has_bind_mounts:
        return False
    return True


def select_hooks(hooks: Sequence[Hook], *, annotations: Mapping[str, str], argv0: str,
                 has_bind_mounts: bool) -> list[Hook]:
    """The hooks whose ``when`` conditions all hold, in file order."""
    return [h for h in hooks if _when_holds(h, annotations, argv0, has_bind_mounts)]


def hooks_by_stage(hooks: Sequence[Hook], merge: bool = True) -> dict[str, list[dict[str, Any]]]:
    """config.json's ``hooks`` object: stage -> hook entries, in file order.

    With ``merge`` (``mergeHooks``, default on), consecutive entries of a stage that run our
    own hook modules with the same interpreter become one entry running them all in one
    interpreter (hooks/_chain.py): the ~10 ms interpreter start is paid once per stage.
    """
    out: dict[str, list[dict[str, Any]]] = {}
    for stage in STAGES:
        entries = [h.oci() for h in hooks if stage in h.stages]
        if merge:
            entries = merge_python_hooks(entries)
        if entries:
            out[stage] = entries
    return out


def chain_key(entry: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """(interpreter, argv0, hooks dir) if ``entry`` runs one of our hook modules the way
    hooks.d does (``python -I -S <hooks dir>/<module>.py [ARG...]``), else None."""
    from hpc_exec.hooks import HOOKS

    args = entry.get("args") or []
    if len(args) < 4 or list(args[1:3]) != ["-I", "-S"] or not args[3].startswith("/"):
        return None
    directory, _, file = args[3].rpartition("/")
    if not file.endswith(".py") or file[:-3] not in HOOKS.values():
        return None
    if not _holds_chain(directory):
        return None
    return (entry["path"], args[0], directory)


@functools.lru_cache(maxsize=8)
def _holds_chain(directory: str) -> bool:
    """Whether ``directory`` is a hooks dir of ours (has _chain.py); one stat per dir and
    process, although plan() asks for every selected hook and every stage."""
    return Path(directory, "_chain.py").is_file()


def merge_python_hooks(entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Replace each run of two or more consecutive chainable entries (see chain_key) by one
    hooks/_chain.py entry; everything else, and the order, stays as it is."""
    out: list[dict[str, Any]] = []
    run: list[dict[str, Any]] = []
    key: tuple[str, str, str] | None = None

    def flush() -> None:
        if len(run) == 1:
            out.append(run[0])
        elif run and key is not None:
            chain = [{"module": e["args"][3].rpartition("/")[2][:-3], "args": e["args"][4:],
                      "env": e.get("env", []), "timeout": e.get("timeout")} for e in run]
            merged: dict[str, Any] = {
                "path": key[0], "args": [key[1], "-I", "-S", f"{key[2]}/_chain.py"],
                "env": ["HPC_EXEC_HOOK_CHAIN=" + json.dumps(chain, separators=(",", ":"))]}
            if all(e.get("timeout") for e in run):
                # the chain enforces each hook's own timeout; one more second per hook keeps
                # runc's kill of the whole chain (which would orphan a running hook) for last
                merged["timeout"] = sum(int(e["timeout"]) + 1 for e in run)
            out.append(merged)
        run.clear()

    for entry in entries:
        this = chain_key(entry)
        if this is None or this != key:
            flush()
        key = this
        if this is None:
            out.append(entry)
        else:
            run.append(entry)
    flush()
    return out


def mpi_types(hooks: Sequence[Hook]) -> list[tuple[Hook, str]]:
    """(hook, MPI type regex) for hooks selected by a ``com.hooks.mpi.type`` annotation (the
    regex as written, which Sarus' ``hooks --mpi`` prints)."""
    out = []
    for hook in hooks:
        for key_re, value_re in hook.annotations:
            if re.fullmatch(key_re, "com.hooks.mpi.type"):
                out.append((hook, value_re))
    return out
