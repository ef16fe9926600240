"""Issue 13, "Command line": where a Sarus user relies on Sarus' command-line behaviour."""

from __future__ import annotations

import pytest

from hpc_exec.engine.runtime.options import ImageConfig, process_args


# -- item 11 -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("entrypoint", "expected"), [
    ("echo hello", ["echo", "hello", "x"]),
    ("  python3   -u\tmain.py ", ["python3", "-u", "main.py", "x"]),
    ("cat", ["cat", "x"]),
    ("", ["x"]),
])
def test_entrypoint_is_split_into_words_as_sarus_does(entrypoint: str,
                                                     expected: list[str]) -> None:
    image = ImageConfig(entrypoint=("/bin/echo",), cmd=("hi",))
    assert process_args(image, ["x"], entrypoint) == expected
