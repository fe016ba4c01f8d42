"""Which model to caption with, as a small picklable recipe that every actor turns into its own loaded model.

A loaded :class:`~lib_clipcap.captioner.Captioner` is hundreds of megabytes and holds a lock, so it is not what we
ship to a cluster; a :class:`ModelSpec` is a few strings, and each actor calls :meth:`ModelSpec.load` once, on its
own GPU. Loading follows the ``tag`` command's rules exactly (:func:`lib_clipcap.loading.load_captioner`: registry name
or checkpoint, models folder, offline mode, no silent fallback to the demo model), so a Ray run and a local run of
the same command line use the same model. The model files must be available on every node: a shared models folder
(``models_dir``), or the hub reachable from each node.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, fields
from typing import Any

_ARG_FIELDS = ("model", "checkpoint", "clip_model", "clip_pretrained", "tokenizer", "gpt2", "normalize", "models_dir",
               "device", "dtype", "offline")


@dataclass(frozen=True)
class ModelSpec:
    """A captioning model to load, the ``tag`` command's ``--model`` / ``--checkpoint`` options as data.

    Attributes:
        model: Registry name (``flickr8k``, ``shapes-demo``...).
        checkpoint, clip_model, clip_pretrained, tokenizer, gpt2, normalize: A local checkpoint instead (as
            :meth:`Captioner.from_checkpoint <lib_clipcap.captioner.Captioner.from_checkpoint>`).
        models_dir: The models folder (must exist on every node; default ``$CLIPCAP_MODELS_DIR`` or
            ``~/.cache/clipcap`` of each node).
        device, dtype: Where the actors run the model; default: the GPU Ray gives the actor (fp16), else CPU (fp32).
        offline: Never download (``HF_HUB_OFFLINE=1`` in the actors too).
    """

    model: str | None = None
    checkpoint: str | None = None
    clip_model: str | None = None
    clip_pretrained: str | None = None
    tokenizer: str | None = None
    gpt2: str | None = None
    normalize: bool | None = None
    models_dir: str | None = None
    device: str | None = None
    dtype: str | None = None
    offline: bool = False

    @classmethod
    def coerce(cls, value: Any) -> ModelSpec:
        """A spec from a spec or a registry name."""
        if isinstance(value, ModelSpec):
            return value
        if isinstance(value, str):
            return cls(model=value)
        raise TypeError(f"model must be a registry name or a ModelSpec, not {type(value).__name__}; a loaded "
                        f"Captioner cannot be shipped to a cluster (each actor loads its own copy)")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ModelSpec:
        """The spec of parsed ``tag`` arguments (``--model``, ``--checkpoint``, ``--device``...)."""
        kw = {name: getattr(args, name, None) for name in _ARG_FIELDS}
        kw["offline"] = bool(kw["offline"])
        if kw["models_dir"] is not None:
            kw["models_dir"] = os.fspath(kw["models_dir"])
        return cls(**kw)

    def load(self, *, device: str | None = None, dtype: str | None = None) -> Any:
        """Load the model (``device`` / ``dtype`` override the spec's).

        Raises:
            UnknownModelError, MissingFileError, CheckpointError, ClipCapError: as ``python -m lib_clipcap tag``.
        """
        from ..loading import load_captioner

        values = {f.name: getattr(self, f.name) for f in fields(ModelSpec)}  # a subclass may add its own fields
        values["device"] = device or self.device
        values["dtype"] = dtype or self.dtype
        return load_captioner(**values, allow_demo_fallback=False)

    def describe(self) -> str:
        """Short human-readable form for logs."""
        shown = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) not in (None, False)}
        return ", ".join(f"{k}={v}" for k, v in shown.items()) or "default model"
