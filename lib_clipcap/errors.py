"""Error hierarchy of lib_clipcap.

Every error the library raises on purpose derives from :class:`ClipCapError`, and also from the builtin exception a
caller would naturally catch (a missing file is a ``FileNotFoundError``, a bad value a ``ValueError``), so code that
does not know this library still handles them sensibly. Messages quote the offending value and say what to do next.
"""

from __future__ import annotations


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
