"""What every CLIP backbone shares (:class:`lib_clipcap.clip.ClipBackbone` on open_clip,
:class:`lib_clipcap.clip_transformers.TransformersClipBackbone` on transformers): a model with open_clip's
``encode_image`` / ``encode_text``, its preprocessing and its tokenizer, and the batched encoding on top of them. Its
own module so that both backbones build on it without importing each other."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch


class BackboneBase:
    """A CLIP in eval mode with its preprocessing and tokenizer; encodes images and texts to features.

    Subclasses load the model (``load``) and say how wide its features are (``embed_dim``); ``backend`` names them.
    """

    backend = ""

    def __init__(self, model: Any, preprocess: Callable, tokenizer: Callable, *, name: str, pretrained: str) -> None:
        self.model = model.eval().requires_grad_(False)
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.name = name
        self.pretrained = pretrained

    @property
    def embed_dim(self) -> int:
        """Size of the image/text features."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        """Where the weights are."""
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The weights' precision."""
        return next(self.model.parameters()).dtype

    def to(self, device: Any = None, dtype: torch.dtype | None = None) -> BackboneBase:
        """Move / cast in place; returns self."""
        self.model.to(device=device, dtype=dtype)
        return self

    @torch.inference_mode()
    def encode_images(self, pixels: torch.Tensor, *, normalize: bool = False) -> torch.Tensor:
        """``[batch, 3, H, W]`` preprocessed pixels -> float32 features ``[batch, embed_dim]``."""
        feats = self.model.encode_image(pixels.to(self.device, self.dtype, non_blocking=True)).float()
        return feats / feats.norm(dim=-1, keepdim=True).clamp_min(1e-12) if normalize else feats

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str], *, normalize: bool = True, batch_size: int = 256) -> torch.Tensor:
        """Texts -> float32 features ``[len(texts), embed_dim]`` (L2-normalised by default)."""
        out = []
        for i in range(0, len(texts), batch_size):
            tokens = self.tokenizer(list(texts[i : i + batch_size])).to(self.device)
            out.append(self.model.encode_text(tokens).float())
        feats = torch.cat(out) if out else torch.empty(0, self.embed_dim, device=self.device)
        return feats / feats.norm(dim=-1, keepdim=True).clamp_min(1e-12) if normalize else feats

    def preprocess_images(self, images: Sequence) -> torch.Tensor:
        """PIL images -> ``[batch, 3, H, W]`` float tensor on the CPU."""
        return torch.stack([self.preprocess(im) for im in images])
