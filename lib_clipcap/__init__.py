"""lib_clipcap: CLIP-prefix image captioning (ClipCap), Selective Blind Guessing and CLIP-S scoring.

Host-independent: imports nothing from the Stable Diffusion WebUI, and nothing heavy at import time (torch,
open_clip and friends load on first use), so importing it from a WebUI script costs milliseconds.

    from lib_clipcap import Captioner, list_models
    cap = Captioner.from_pretrained("flickr8k")
    print(cap.caption("photo.jpg")[0].text)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_exports as _lazy_exports

__version__ = "0.1.0"

# Resolved on first access (PEP 562) so `import lib_clipcap` stays cheap.
__getattr__, _LAZY_NAMES = _lazy_exports(__name__, {
    "captioner": ("Captioner",),
    "results": ("CaptionResult", "Candidate"),
    "decoding": ("DecodingOptions",),
    "checkpoint": ("inspect_checkpoint", "convert_checkpoint"),
    "model": ("ClipCapConfig",),
    "registry": ("list_models", "get_model"),
    "images": ("load_image",),
    "sbg.guesser": ("BlindGuesser",),
})

from .errors import (  # noqa: E402  (errors are tiny and always needed)
    CheckpointError,
    ClipCapError,
    DecodingError,
    ImageLoadError,
    IncompatibleCheckpointError,
    MissingFileError,
    UnknownModelError,
)

__all__ = sorted([*_LAZY_NAMES, "ClipCapError", "CheckpointError", "DecodingError", "ImageLoadError",
                  "IncompatibleCheckpointError", "MissingFileError", "UnknownModelError", "__version__"])


if TYPE_CHECKING:  # pragma: no cover
    from .captioner import Captioner
    from .checkpoint import convert_checkpoint, inspect_checkpoint
    from .decoding import DecodingOptions
    from .images import load_image
    from .model import ClipCapConfig
    from .registry import get_model, list_models
    from .results import Candidate, CaptionResult
