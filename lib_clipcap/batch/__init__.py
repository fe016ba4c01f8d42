"""Batch tagging: caption whole folders of images into sidecar files, fast, resumable and safe for the user's files.

One implementation behind three faces, all of them in this package: the CLI (``python -m lib_clipcap tag``,
:mod:`~lib_clipcap.batch.cli`), the UI's batch section (:mod:`~lib_clipcap.batch.ui`) and the HTTP API's jobs
(:mod:`~lib_clipcap.batch.routes` over :mod:`~lib_clipcap.batch.jobs`)::

    from lib_clipcap import Captioner
    from lib_clipcap.batch import TagOptions, run_tagging

    cap = Captioner.from_pretrained("flickr8k")
    summary = run_tagging(TagOptions(inputs=["dataset/"], prefix="sks"), cap)
    print(summary.line())          # written 120, skipped 0, failed 1

Importing this package is cheap (no torch); :func:`run_tagging` loads the pipeline on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import BatchError, BatchInputError, BatchLockedError, PathNotAllowedError
from .options import EXISTING_POLICIES, FileOutcome, TagFailure, TagOptions, TagSummary

__all__ = ["EXISTING_POLICIES", "BatchError", "BatchInputError", "BatchLockedError", "FileOutcome",
           "PathNotAllowedError", "TagFailure", "TagOptions", "TagSummary", "run_tagging"]


def __getattr__(name: str) -> Any:
    if name == "run_tagging":
        from .runner import run_tagging

        return run_tagging
    raise AttributeError(f"module 'lib_clipcap.batch' has no attribute {name!r}")


if TYPE_CHECKING:  # pragma: no cover
    from .runner import run_tagging
