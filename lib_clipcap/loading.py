"""Load the captioner a user asked for: a registry name, a checkpoint file, or the default with the demo fallback.

The one loading rule behind ``python -m lib_clipcap caption|tag|eval``, the distributed engine's actors and any
program that takes the same choices::

    cap = load_captioner(model="coco", device="cuda")
    cap = load_captioner(checkpoint="coco_weights.pt", clip_model="ViT-B-32", clip_pretrained="openai")
    cap = load_captioner(notify=print)    # the default model, or the bundled demo model (saying so) offline
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import ClipCapError, MissingFileError
from .options_table import DEMO_MODEL, demo_fallback_notice

__all__ = ["load_captioner"]


def load_captioner(*, model: str | None = None, checkpoint: str | Path | None = None,
                   clip_model: str | None = None, clip_pretrained: str | None = None,
                   tokenizer: str | None = None, gpt2: str | None = None, normalize: bool | None = None,
                   models_dir: str | Path | None = None, device: Any = None, dtype: Any = None,
                   offline: bool = False, allow_demo_fallback: bool = True,
                   notify: Callable[[str], None] | None = None) -> Any:
    """Build a :class:`~lib_clipcap.captioner.Captioner`.

    Args:
        model: A registry name (see ``python -m lib_clipcap models``).
        checkpoint: A checkpoint file instead (needs ``clip_model``; ``clip_pretrained``, ``tokenizer``, ``gpt2``,
            ``normalize`` as :meth:`Captioner.from_checkpoint <lib_clipcap.captioner.Captioner.from_checkpoint>`).
        models_dir, device, dtype: As for :meth:`Captioner.from_pretrained`.
        offline: Never download (sets ``HF_HUB_OFFLINE=1`` for this process).
        allow_demo_fallback: With neither ``model`` nor ``checkpoint``, the default model is tried for real (online,
            the first run downloads it); when its files cannot be had, the bundled demo model is loaded instead and
            ``notify`` is told why and how to get real weights. ``False``: the error is raised (batch tagging: never
            caption a training set with the toy model by accident).
        notify: Receives the notices (one line each); default: none are shown.

    Raises:
        ClipCapError: ``checkpoint`` without ``clip_model``.
        UnknownModelError, MissingFileError, CheckpointError: as the loaders do.
    """
    from .captioner import Captioner
    from .registry import DEFAULT_MODEL

    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
    common = dict(models_dir=models_dir, device=device, dtype=dtype)
    if checkpoint:
        if not clip_model:
            raise ClipCapError("a checkpoint needs its CLIP model (--clip-model: e.g. ViT-B-32 for COCO, ViT-L-14 "
                               "for Flickr)")
        return Captioner.from_checkpoint(checkpoint, clip_model=clip_model, clip_pretrained=clip_pretrained,
                                         tokenizer=tokenizer, gpt2=gpt2, normalize=normalize, **common)
    if model:
        return Captioner.from_pretrained(model, **common)
    try:
        return Captioner.from_pretrained(DEFAULT_MODEL, **common)
    except MissingFileError as e:
        if not allow_demo_fallback:
            raise
        if notify is not None:
            notify(f"the default model '{DEFAULT_MODEL}' is not available here: {e}")
            notify(demo_fallback_notice(DEFAULT_MODEL))
        return Captioner.from_pretrained(DEMO_MODEL, **common)
