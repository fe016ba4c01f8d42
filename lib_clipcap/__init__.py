"""lib_clipcap: CLIP-prefix image captioning (ClipCap), Selective Blind Guessing and CLIP-S scoring.

Host-independent: imports nothing from the Stable Diffusion WebUI, and nothing heavy at import time (torch,
open_clip and friends load on first use), so importing it from a WebUI script costs milliseconds.

    from lib_clipcap import Captioner, list_models
    cap = Captioner.from_pretrained("flickr8k")
    print(cap.caption("photo.jpg")[0].text)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_getattr as _lazy_getattr

__version__ = "0.1.0"

# name -> (module, attribute); resolved on first access (PEP 562) so `import lib_clipcap` stays cheap.
_LAZY = {
    "Captioner": ("captioner", "Captioner"),
    "CaptionResult": ("captioner", "CaptionResult"),
    "Candidate": ("captioner", "Candidate"),
    "DecodingOptions": ("decoding", "DecodingOptions"),
    "inspect_checkpoint": ("checkpoint", "inspect_checkpoint"),
    "convert_checkpoint": ("checkpoint", "convert_checkpoint"),
    "ClipCapConfig": ("model", "ClipCapConfig"),
    "list_models": ("registry", "list_models"),
    "get_model": ("registry", "get_model"),
    "load_image": ("images", "load_image"),
    "BlindGuesser": ("sbg.guesser", "BlindGuesser"),
}

from .errors import (  # noqa: E402  (errors are tiny and always needed)
    CheckpointError,
    ClipCapError,
    DecodingError,
    ImageLoadError,
    IncompatibleCheckpointError,
    MissingFileError,
    UnknownModelError,
)

__all__ = sorted([*_LAZY, "ClipCapError", "CheckpointError", "DecodingError", "ImageLoadError",
                  "IncompatibleCheckpointError", "MissingFileError", "UnknownModelError", "__version__"])


__getattr__ = _lazy_getattr(__name__, _LAZY)


if TYPE_CHECKING:  # pragma: no cover
    from .captioner import Candidate, CaptionResult, Captioner
    from .checkpoint import convert_checkpoint, inspect_checkpoint
    from .decoding import DecodingOptions
    from .images import load_image
    from .model import ClipCapConfig
    from .registry import get_model, list_models
