"""The one error hierarchy of hpc-exec and its exit-code table.

Every error a user can cause or meet derives from :class:`HpcExecError`. Each class carries a
one-line message (it names the offending value), an optional ``hint`` and the exit code the CLI
returns for it. The table is API: docs/exit-codes.md documents it and tests pin it.

``hpc-exec run`` passes the container's own exit status through unchanged, so the engine's codes
live in a block (110-125) that ordinary programs rarely use, following podman's 125 convention.
"""

from __future__ import annotations

import enum

__all__ = [
    "AuthenticationFailed",
    "CommandFailed",
    "CommandTimeout",
    "ConfigError",
    "ExitCode",
    "HpcExecError",
    "ImageContentError",
    "ImageNotFound",
    "InvalidInput",
    "LockTimeout",
    "MissingDependency",
    "RegistryError",
    "RepositoryError",
    "RuntimeFailure",
    "SecurityError",
    "SlurmOutputError",
    "TestbedError",
]


class ExitCode(enum.IntEnum):
    """Exit codes of the ``hpc-exec`` command (docs/exit-codes.md)."""

    OK = 0
    FAILURE = 1  # a command that ran and failed in an ordinary way (e.g. testbed status: down)
    USAGE = 2  # bad command line (argparse's convention)
    INVALID_INPUT = 110  # a bad value: reference, mount spec, port, path
    CONFIG = 111  # site configuration invalid
    IMAGE_NOT_FOUND = 112
    AUTH = 113  # registry authentication failed
    REGISTRY = 114  # registry unreachable or protocol error
    IMAGE_CONTENT = 115  # digest mismatch, malicious or unreadable layer
    LOCK_TIMEOUT = 116
    REPOSITORY = 117  # cache/repository unreadable, unwritable or corrupt
    COMMAND_FAILED = 118  # an external program failed or timed out
    MISSING_DEPENDENCY = 119  # an external program is not installed
    TESTBED = 120
    RUNTIME = 121  # the container could not be set up or started
    SECURITY = 122  # a security check refused a file or request
    INTERNAL = 125  # a bug: an unexpected exception
    INTERRUPTED = 130  # SIGINT (128 + 2)


class HpcExecError(Exception):
    """Root of every error hpc-exec raises on purpose.

    ``str(err)`` is the one-line message; ``hint`` says what to do about it, when we know.
    """

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class InvalidInput(HpcExecError, ValueError):
    exit_code = ExitCode.INVALID_INPUT


class ConfigError(HpcExecError, ValueError):
    exit_code = ExitCode.CONFIG


class ImageNotFound(HpcExecError, LookupError):
    exit_code = ExitCode.IMAGE_NOT_FOUND


class AuthenticationFailed(HpcExecError):
    exit_code = ExitCode.AUTH


class RegistryError(HpcExecError):
    exit_code = ExitCode.REGISTRY


class ImageContentError(HpcExecError):
    exit_code = ExitCode.IMAGE_CONTENT


class LockTimeout(HpcExecError, TimeoutError):
    exit_code = ExitCode.LOCK_TIMEOUT

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__(
            f"timed out after {timeout:g} s waiting for lock {path}",
            hint="another hpc-exec process holds it; raise timeoutMs in the site config if it is "
            "just slow",
        )
        self.path = path
        self.timeout = timeout


class RepositoryError(HpcExecError):
    exit_code = ExitCode.REPOSITORY


class CommandFailed(HpcExecError):
    """An external program exited non-zero. Keeps the tail of its stderr for the message."""

    exit_code = ExitCode.COMMAND_FAILED

    def __init__(
        self, desc: str, argv: list[str], returncode: int, stderr_tail: str = ""
    ) -> None:
        detail = stderr_tail.strip().splitlines()[-1] if stderr_tail.strip() else "no stderr"
        super().__init__(f"{desc} failed (exit {returncode}): {detail}")
        self.desc = desc
        self.argv = argv
        self.returncode = returncode
        self.stderr_tail = stderr_tail


class CommandTimeout(CommandFailed, TimeoutError):
    def __init__(self, desc: str, argv: list[str], timeout: float, stderr_tail: str = "") -> None:
        HpcExecError.__init__(self, f"{desc} timed out after {timeout:g} s")
        self.desc = desc
        self.argv = argv
        self.returncode = -9
        self.stderr_tail = stderr_tail
        self.timeout = timeout


class SlurmOutputError(HpcExecError):
    """A Slurm command printed something its parser cannot read (hpc_exec/slurm/parse.py)."""

    exit_code = ExitCode.COMMAND_FAILED


class MissingDependency(HpcExecError, FileNotFoundError):
    exit_code = ExitCode.MISSING_DEPENDENCY

    def __init__(self, program: str, package: str | None) -> None:
        where = f" (Debian package '{package}')" if package else ""
        super().__init__(
            f"required program '{program}' not found{where}",
            hint=f"install it: apt-get install {package}" if package else None,
        )
        self.program = program
        self.package = package


class TestbedError(HpcExecError):
    exit_code = ExitCode.TESTBED
    __test__ = False  # not a pytest test class, despite the name


class RuntimeFailure(HpcExecError):
    exit_code = ExitCode.RUNTIME


class SecurityError(HpcExecError, PermissionError):
    exit_code = ExitCode.SECURITY
