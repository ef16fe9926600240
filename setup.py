"""Build step of the distribution: compile the rootless idmap helper (issue 12, item 15).

Everything else about the package is in pyproject.toml. This file only adds one ``build``
sub-command, ``build_idmap``, which compiles ``engine/runtime/idmap.c`` into a static
executable ``hpc_exec/engine/runtime/hpc-exec-idmap`` beside the engine's modules, where
:func:`hpc_exec.engine.runtime.run.find_idmap_helper` looks for it. So every installation
(``pip install``, ``pip install --user``, ``--target``, a wheel, an editable install) carries
the helper, not only the one scripts/install-deps.sh made. The helper runs inside images that
may have no C library, hence ``-static``.

The only need is a C compiler that can link statically (``$CC``, else ``cc``, ``gcc`` or
``clang``; on Debian the packages gcc and libc6-dev). Without one the build fails with one
line saying so. The wheel holds an ELF executable, so it is tagged for the platform
(``py3-none-linux_<arch>``), not ``any``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess  # build time: hpc_exec.process is not installed yet
import sysconfig
from pathlib import Path
from typing import ClassVar

from setuptools import Command, Distribution, setup
from setuptools.command.build import build
from setuptools.errors import CompileError

try:  # setuptools >= 70.1 has its own; older ones use the wheel package's
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # pragma: no cover
    from wheel.bdist_wheel import bdist_wheel

HERE = Path(__file__).resolve().parent
SOURCE = "engine/runtime/idmap.c"
NAME = "hpc-exec-idmap"
PACKAGE_DIR = "hpc_exec/engine/runtime"  # where engine/runtime is installed
FLAGS = ["-static", "-Os", "-s", "-Wall", "-Wextra"]


def find_compiler() -> list[str]:
    """argv of the C compiler: ``$CC`` (may hold flags), else cc, gcc, clang on PATH."""
    if os.environ.get("CC"):
        argv = shlex.split(os.environ["CC"])
        if argv and shutil.which(argv[0]):
            return argv
        raise CompileError(f"hpc-exec: building {NAME} needs a C compiler: CC={os.environ['CC']!r}"
                           " is not on PATH")
    for name in ("cc", "gcc", "clang"):
        found = shutil.which(name)
        if found:
            return [found]
    raise CompileError(f"hpc-exec: building {NAME} needs a C compiler: none of cc, gcc, clang "
                       "is on PATH (install one, e.g. Debian's gcc and libc6-dev, or set CC)")


def compile_helper(out: Path) -> None:
    """Compile the helper to ``out`` (via a temporary name, so a half file never shows)."""
    compiler = find_compiler()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    argv = [*compiler, *FLAGS, "-o", str(tmp), str(HERE / SOURCE)]
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        tmp.unlink(missing_ok=True)
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        # the linker's "cannot find -lc" says more than its closing "ld returned 1"
        named = [line for line in lines if "cannot find" in line or "No such file" in line]
        why = (named or lines or [f"exit {done.returncode}"])[0 if named else -1]
        raise CompileError(f"hpc-exec: building {NAME} with {shlex.join(argv)} failed: {why} "
                           "(it needs a C compiler that links statically: the C library's "
                           "static files, e.g. Debian's libc6-dev or Fedora's glibc-static)")
    os.chmod(tmp, 0o755)
    os.replace(tmp, out)


class build_idmap(Command):  # setuptools command names are lower case
    """Compile the rootless idmap helper into the package (a ``build`` sub-command)."""

    description = f"compile {NAME} (engine/runtime/idmap.c), static"
    user_options: ClassVar[list[tuple[str, str | None, str]]] = []
    editable_mode = False

    def initialize_options(self) -> None:
        self.build_lib: str | None = None

    def finalize_options(self) -> None:
        self.set_undefined_options("build_py", ("build_lib", "build_lib"))

    def _target(self) -> str:
        assert self.build_lib is not None
        return os.path.join(self.build_lib, PACKAGE_DIR, NAME)

    def _in_place(self) -> str:  # an editable install links the source tree: build there
        return str(Path(SOURCE).with_name(NAME))

    def run(self) -> None:
        compile_helper(HERE / self._in_place() if self.editable_mode else Path(self._target()))

    def get_source_files(self) -> list[str]:
        return [SOURCE]

    def get_outputs(self) -> list[str]:
        return [self._target()]

    def get_output_mapping(self) -> dict[str, str]:
        return {self._target(): self._in_place()} if self.editable_mode else {}


class build_with_idmap(build):
    sub_commands: ClassVar[list[tuple[str, object]]] = [*build.sub_commands,
                                                         ("build_idmap", None)]


class PlatformDistribution(Distribution):
    """Platform-specific (an ELF executable), so the build goes to build/lib.<plat> and the
    wheel's root is platlib, as for a C extension; no extension module is built."""

    def has_ext_modules(self) -> bool:
        return True


class bdist_wheel_platform(bdist_wheel):
    """A wheel with an ELF executable in it is for one platform, whatever the Python."""

    def get_tag(self) -> tuple[str, str, str]:
        _, _, plat = super().get_tag()
        return "py3", "none", plat


if __name__ == "__main__" and sysconfig.get_platform().startswith("linux"):
    setup(distclass=PlatformDistribution,
          cmdclass={"build": build_with_idmap, "build_idmap": build_idmap,
                    "bdist_wheel": bdist_wheel_platform})
elif __name__ == "__main__":  # the engine needs Linux namespaces; no helper elsewhere
    setup()
