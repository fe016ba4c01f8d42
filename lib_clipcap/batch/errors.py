"""Errors of batch tagging. Each derives from :class:`~lib_clipcap.errors.ClipCapError` and the builtin a caller
would naturally catch, so host code (the HTTP API maps ``PermissionError`` to 403) handles them without knowing us."""

from __future__ import annotations

from ..errors import ClipCapError


class BatchError(ClipCapError):
    """Base class of batch-tagging errors that stop a whole run (not one file)."""


class BatchLockedError(BatchError, RuntimeError):
    """Another run is tagging the same output folder. The message names the lock file and the PID holding it."""


class PathNotAllowedError(BatchError, PermissionError):
    """A path resolves outside the folders a job manager was allowed to touch (traversal or symlink escape)."""


class BatchInputError(BatchError, FileNotFoundError):
    """An input folder, file or list file given to a run does not exist."""
