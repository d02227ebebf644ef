"""The PyctlError tree and the exit codes pyctl returns.

Every error a user can cause or meet is a PyctlError with a one-line message that names the problem
and, where there is one, a hint that says what to do. `pyctl.cli.main` prints it and exits with its
code; the Python traceback is shown only with `--traceback`.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    HOST_FAILED = 1  # a task failed on at least one host
    USAGE = 2  # bad input or usage: nothing was touched
    UNREACHABLE = 3  # at least one host could not be reached
    INTERRUPTED = 130  # Ctrl-C


class PyctlError(Exception):
    """Base of every error pyctl reports to a user."""

    exit_code: ExitCode = ExitCode.USAGE

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class UsageError(PyctlError):
    """Bad input: a flag, a file or a value the user gave. Nothing was touched."""


class InventoryError(UsageError):
    """The inventory failed validation; `problems` holds every problem found."""

    def __init__(self, path: str, problems: list) -> None:
        count = len(problems)
        if count == 1:  # the problem itself, on the one line
            super().__init__(f"inventory {path}: {problems[0]}", hint=f"fix it, or run 'pyctl inventory check {path}'")
        else:
            super().__init__(
                f"inventory {path} has {count} problems",
                hint=f"run 'pyctl inventory check {path}' to see them",
            )
        self.path = path
        self.problems = problems


class PrerequisiteError(UsageError):
    """Something this machine needs is missing (a tool, root, a free name)."""


class RunFailed(PyctlError):
    """An Ansible run ended with failed hosts."""

    exit_code = ExitCode.HOST_FAILED


class HostsUnreachable(RunFailed):
    """An Ansible run ended with at least one unreachable host."""

    exit_code = ExitCode.UNREACHABLE


class Interrupted(PyctlError):
    """The user pressed Ctrl-C; whatever ran was cancelled."""

    exit_code = ExitCode.INTERRUPTED
