"""Error hierarchy of lib_clipcap.

Every error the library raises on purpose derives from :class:`ClipCapError`, and also from the builtin exception a
caller would naturally catch (a missing file is a ``FileNotFoundError``, a bad value a ``ValueError``), so code that
does not know this library still handles them sensibly. Messages quote the offending value and say what to do next.
"""

from __future__ import annotations

import logging


class ClipCapError(Exception):
    """Base class of every error raised by lib_clipcap."""


class UnknownModelError(ClipCapError, KeyError):
    """A model name is not in the registry. The message lists the valid names."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message with quotes
        return str(self.args[0]) if self.args else ""


class MissingFileError(ClipCapError, FileNotFoundError):
    """A required file (checkpoint, CLIP weights, tokenizer...) is not available locally and cannot be downloaded."""


class CheckpointError(ClipCapError, ValueError):
    """A checkpoint cannot be read or does not look like a CLIP-prefix captioning model."""


class IncompatibleCheckpointError(CheckpointError):
    """A checkpoint does not fit the chosen CLIP backbone or tokenizer (e.g. feature sizes differ)."""


class ImageLoadError(ClipCapError, ValueError):
    """An input could not be turned into an image (corrupt, truncated, too large, not an image...)."""


class DecodingError(ClipCapError, ValueError):
    """Invalid decoding options (e.g. a negative temperature)."""


def error_markdown(e: BaseException, *, expected: tuple[type[BaseException], ...] = (ClipCapError,),
                   log: logging.Logger | None = None) -> str:
    """How a UI handler shows an error it caught: ``**Error:** message`` for the ``expected`` kinds (the library's
    own errors, whose messages say what to do), otherwise ``**Unexpected error** (Type): message`` with the traceback
    logged to ``log`` (default: this module's), since a bug should leave a trace without taking the page down."""
    if isinstance(e, expected):
        return f"**Error:** {e}"
    (log or logging.getLogger(__name__)).error("clipcap UI: unexpected error", exc_info=e)
    return f"**Unexpected error** ({type(e).__name__}): {e}"
