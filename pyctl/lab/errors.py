"""Errors the local lab reports. Each is one line naming the problem, plus a hint saying what to do."""

from __future__ import annotations

from pyctl.errors import ExitCode, PrerequisiteError, PyctlError, UsageError


class NotRoot(PrerequisiteError):
    """The lab creates network namespaces, bridges and mounts: only root can."""


class MissingTools(PrerequisiteError):
    """Programs the lab runs are missing and could not be installed."""


class LabNameClash(PrerequisiteError):
    """The name is taken: by a lab of another shape, or by a namespace pyctl did not make."""


class LabNotFound(UsageError):
    """No lab of that name exists."""


class LabSetupFailed(PyctlError):
    """A tool the lab runs on this machine failed (ip, debootstrap, qemu, ...)."""

    exit_code = ExitCode.HOST_FAILED


class LabBootTimeout(PyctlError):
    """A lab host did not become reachable in time."""

    exit_code = ExitCode.UNREACHABLE
