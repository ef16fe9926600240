"""Property-based fuzzing of the parsers that take text from users and sites (issue 12): the
image reference grammar, the site config loader and the hooks.d loader. Any input gives a
value or the documented error (InvalidInput 110, ConfigError 111), never another exception
and never a hang; each runs at least 2,000 examples. (The --mount/--device grammar has its own
property tests in test_mountspec.py.)"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpc_exec.config import RUNTIME_KEYS, Settings, _load_file, parse_settings
from hpc_exec.engine.image.reference import ImageReference, load_reference, parse
from hpc_exec.engine.runtime.hookconfig import Hook, load_hooks, parse_hook
from hpc_exec.errors import ConfigError, InvalidInput

EXAMPLES = settings(max_examples=2000, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

# -- references ----------------------------------------------------------------------------------

_REF_ALPHABET = "abcXYZ019._-/:@[]ä \t" + "sha256" + "ef"
_parts = st.sampled_from(["docker://", "oras://", "localhost", "127.0.0.1", ":5000", ":0",
                          ":99999999999", "[::1]", "/", "//", "library", "busybox", ":latest",
                          ":lätest", "@sha256:", "a" * 64, "0" * 64, "..", ".", "-", "__",
                          "Upper", "x" * 130, "\u0130", "\x00", "é"])
references = st.one_of(st.text(max_size=80),
                       st.text(alphabet=_REF_ALPHABET, max_size=80),
                       st.lists(_parts, max_size=8).map("".join))


@EXAMPLES
@given(references)
def test_any_reference_parses_or_is_invalid_input(text: str) -> None:
    try:
        ref = parse(text)
    except InvalidInput as exc:
        assert "\n" not in str(exc)
        return
    assert isinstance(ref, ImageReference)
    assert ref.key.isascii()  # it goes into HTTP request lines and file names
    assert parse(ref.key).key == ref.key  # the key is a fixed point: one key per image


@EXAMPLES
@given(references)
def test_any_load_reference_parses_or_is_invalid_input(text: str) -> None:
    try:
        load_reference(text)
    except InvalidInput:
        pass


# -- site config ---------------------------------------------------------------------------------

_KEYS = sorted(RUNTIME_KEYS | {"localRepositoryBaseDir", "centralizedRepositoryDir",
                                "sharedRepositoryDir", "tempDir", "squashfs",
                                "registryTimeoutMs", "registryRetries",
                                "repositoryMetadataLockTimings", "insecureRegistries",
                                "compression", "level", "blockSize", "timeoutMs", "warningMs",
                                "set", "prepend", "append", "unset", "notAllowedPaths",
                                "notAllowedPrefixesOfPath", "type", "source", "destination",
                                "readonly", "bogus"})
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                     st.floats(allow_nan=True), st.text(max_size=30),
                     st.sampled_from(["/", "/tmp", "relative", "zstd", "gzip", "lz4", "tmpfs",
                                      "type=bind,src=/tmp,dst=/x", "/dev/null:/dev/x:rwm",
                                      "PATH", "1BAD"]))
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(st.sampled_from(_KEYS), st.text(max_size=8)), inner,
                    max_size=5)), max_leaves=20)
configs = st.dictionaries(st.sampled_from(_KEYS), _values, max_size=8)


@EXAMPLES
@given(configs)
def test_any_config_mapping_is_settings_or_config_error(data: dict[str, Any]) -> None:
    try:
        result = parse_settings(data, "/fuzz.yaml")
    except ConfigError as exc:
        assert "\n" not in str(exc)
        return
    assert isinstance(result, Settings)


_texts = st.one_of(
    configs.map(lambda d: json.dumps(d, default=str)),
    st.text(max_size=200),
    st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
    st.lists(st.sampled_from(["a:", " b", "- ", "[", "]", "{", "}", ": ", "\n", "'", '"', "&x",
                              "*x", "!!python/object:os.system", "tempDir: /tmp", "\t", "#",
                              "---", "...", "? ", "|", ">"]), max_size=30).map("".join))


@EXAMPLES
@given(_texts)
def test_any_config_file_loads_or_is_config_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "config.yaml"
        path.write_bytes(text.encode("utf-8", "surrogateescape"))
        try:
            result = _load_file(path)
        except ConfigError as exc:
            assert "\n" not in str(exc)
            return
        assert isinstance(result, Settings)


# -- hooks.d -------------------------------------------------------------------------------------

_hook_keys = st.sampled_from(["version", "hook", "when", "stages", "path", "args", "env",
                              "timeout", "always", "annotations", "commands", "hasBindMounts",
                              "x"])
_hook_scalars = st.one_of(_scalars, st.sampled_from(
    ["1.0.0", "/bin/true", "prestart", "createContainer", "poststop", "^a$", "(", "[",
     "(?P<x>", "a{99999999999}", "\\", 99999999999999999999, 0, -1, 2**63]))
_hook_values = st.recursive(_hook_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(_hook_keys, st.text(max_size=6)), inner, max_size=5)),
    max_leaves=20)
hook_documents = st.one_of(
    _hook_values,
    st.fixed_dictionaries({"version": st.just("1.0.0"),
                           "hook": st.fixed_dictionaries(
                               {"path": st.sampled_from(["/bin/true", "rel", 5])},
                               optional={"timeout": _hook_scalars,
                                         "args": _hook_values, "env": _hook_values}),
                           "when": st.dictionaries(_hook_keys, _hook_values, max_size=3),
                           "stages": st.lists(_hook_scalars, max_size=3)}))


@EXAMPLES
@given(hook_documents)
def test_any_hook_document_is_a_hook_or_config_error(data: Any) -> None:
    try:
        hook = parse_hook(Path("/hooks.d/10-fuzz.json"), data)
    except ConfigError as exc:
        assert "\n" not in str(exc)
        return
    assert isinstance(hook, Hook)


@EXAMPLES
@given(st.one_of(hook_documents.map(lambda d: json.dumps(d, default=str)),
                 st.binary(max_size=120).map(lambda b: b.decode("latin-1")),
                 st.text(max_size=120)))
def test_any_hook_file_loads_or_is_config_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "10-fuzz.json").write_bytes(text.encode("utf-8", "surrogateescape"))
        os.chmod(d, 0o755)
        try:
            hooks = load_hooks(Path(d))
        except ConfigError as exc:
            assert "\n" not in str(exc)
            return
        assert len(hooks) == 1
