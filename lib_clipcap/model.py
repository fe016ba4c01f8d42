"""The ClipCap model: a mapping network from a CLIP image embedding to GPT-2 prefix embeddings, plus GPT-2.

One definition serves inference, training and evaluation. Module and parameter names follow the original
rmokady/CLIP_prefix_caption code (``clip_project.model.0``, ``clip_project.linear``, ``clip_project.prefix_const``,
``clip_project.transformer.layers.N...``, ``gpt.transformer...``), so the published checkpoints load with strict key
matching. The architecture is described by :class:`ClipCapConfig`, saved next to our own weights and inferred from
tensor shapes for legacy files (see :mod:`lib_clipcap.checkpoint`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .gpt2 import GPT2Config, GPT2LMHead

MAPPINGS = ("mlp", "transformer")


@dataclass(frozen=True)
class ClipCapConfig:
    """Everything needed to rebuild a ClipCap model and use it correctly.

    Attributes:
        mapping: ``"mlp"`` or ``"transformer"``.
        prefix_length: number of GPT-2 prefix embeddings the mapper produces.
        prefix_size: CLIP embedding size the mapper expects (512 for ViT-B/32, 768 for ViT-L/14).
        mlp_hidden: hidden sizes of the MLP mapper (``[n_embd * prefix_length // 2]`` in the original).
        clip_length: tokens the transformer mapper makes from the CLIP vector (transformer only).
        mapper_layers: linear layers of the MLP, or transformer layers of the transformer mapper.
        mapper_heads: attention heads of the transformer mapper (8 in the original; not visible in weights).
        mapper_mlp_ratio: hidden/width ratio of the transformer mapper's MLPs (2.0 in the original).
        gpt2: the GPT-2 shape.
        has_gpt_weights: whether the checkpoint carries GPT-2 weights (else ``gpt2_base`` supplies them).
        gpt2_base: registry name or folder of the GPT-2 used when the checkpoint has no GPT-2 weights.
        normalize: L2-normalise CLIP image features before the mapper (the Flickr models do; COCO does not).
        clip_model / clip_pretrained: the open_clip backbone the model was trained with, when known.
        tokenizer: ``"gpt2"``, a folder, a ``tokenizer.json`` path or ``bundled:...``.
        stop_token: text of the token that ends a caption (``"."`` as in the original decoders).
    """

    mapping: str = "mlp"
    prefix_length: int = 10
    prefix_size: int = 512
    mlp_hidden: tuple[int, ...] = (3840,)
    clip_length: int | None = None
    mapper_layers: int = 2
    mapper_heads: int = 8
    mapper_mlp_ratio: float = 2.0
    gpt2: GPT2Config = field(default_factory=GPT2Config)
    has_gpt_weights: bool = True
    gpt2_base: str = "gpt2"
    normalize: bool = False
    clip_model: str | None = None
    clip_pretrained: str | None = None
    tokenizer: str | None = "gpt2"
    stop_token: str | None = "."

    def __post_init__(self) -> None:
        if self.mapping not in MAPPINGS:
            raise ValueError(f"mapping must be one of {MAPPINGS}, got {self.mapping!r}")
        if self.mapping == "transformer" and not self.clip_length:
            raise ValueError("a transformer mapper needs clip_length")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mlp_hidden"] = list(self.mlp_hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClipCapConfig:
        d = dict(d)
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown ClipCap config keys: {sorted(unknown)}")
        if isinstance(d.get("gpt2"), dict):
            d["gpt2"] = GPT2Config(**d["gpt2"])
        if "mlp_hidden" in d:
            d["mlp_hidden"] = tuple(d["mlp_hidden"])
        return cls(**d)

    def replace(self, **changes: Any) -> ClipCapConfig:
        return replace(self, **changes)

    def summary(self) -> dict[str, Any]:
        """The inferred architecture in the flat form ``inspect --json`` prints."""
        return {
            "mapping": self.mapping,
            "prefix_length": self.prefix_length,
            "clip_length": self.clip_length,
            "prefix_size": self.prefix_size,
            "mapper_layers": self.mapper_layers,
            "gpt2_layers": self.gpt2.n_layer,
            "gpt2_width": self.gpt2.n_embd,
            "gpt2_vocab_size": self.gpt2.vocab_size,
            "has_gpt_weights": self.has_gpt_weights,
            "normalize": self.normalize,
            "clip_model": self.clip_model,
            "clip_pretrained": self.clip_pretrained,
            "tokenizer": self.tokenizer,
        }


class MLPMapper(nn.Module):
    """``Linear -> Tanh -> Linear (-> Tanh -> Linear ...)``, registered as ``model`` like the original ``MLP``."""

    # Dropout after each Tanh while training (ClipCapModel.set_dropout). Applied in forward rather than as
    # nn.Dropout layers in ``model``, which would renumber ``model.N`` and break the published checkpoints' keys.
    dropout: float = 0.0

    def __init__(self, sizes: list[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(len(sizes) - 1):
            layers.append(nn.Linear(sizes[i], sizes[i + 1]))
            if i < len(sizes) - 2:
                layers.append(nn.Tanh())
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.dropout):
            return self.model(x)
        for layer in self.model:
            x = layer(x)
            if isinstance(layer, nn.Tanh):
                x = F.dropout(x, self.dropout, True)
        return x


class _MapperAttention(nn.Module):
    """The original's ``MultiHeadAttention`` (self-attention only), computed with SDPA."""

    def __init__(self, dim: int, heads: int, bias: bool) -> None:
        super().__init__()
        self.heads = heads
        self.to_queries = nn.Linear(dim, dim, bias=bias)
        self.to_keys_values = nn.Linear(dim, dim * 2, bias=bias)
        self.project = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        h = self.heads
        q = self.to_queries(x).view(b, n, h, c // h).transpose(1, 2)
        kv = self.to_keys_values(x).view(b, n, 2, h, c // h)
        k, v = kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v)  # no mask: every token sees every token
        return self.project(y.transpose(1, 2).reshape(b, n, c))


class _MapperMLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))


class _MapperLayer(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _MapperAttention(dim, heads, bias=False)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = _MapperMLP(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _MapperTransformer(nn.Module):
    def __init__(self, dim: int, heads: int, layers: int, mlp_ratio: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_MapperLayer(dim, heads, mlp_ratio) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class TransformerMapper(nn.Module):
    """CLIP vector -> ``clip_length`` tokens + ``prefix_length`` learned constants -> transformer -> the constants' outputs."""

    dropout: float = 0.0  # on the CLIP tokens while training (ClipCapModel.set_dropout)

    def __init__(self, config: ClipCapConfig) -> None:
        super().__init__()
        dim = config.gpt2.n_embd
        assert config.clip_length is not None
        self.clip_length = config.clip_length
        self.linear = nn.Linear(config.prefix_size, config.clip_length * dim)
        self.prefix_const = nn.Parameter(torch.randn(config.prefix_length, dim))
        self.transformer = _MapperTransformer(dim, config.mapper_heads, config.mapper_layers, config.mapper_mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear(x).view(x.shape[0], self.clip_length, -1)
        if self.training and self.dropout:
            x = F.dropout(x, self.dropout, True)
        const = self.prefix_const.unsqueeze(0).expand(x.shape[0], -1, -1)
        return self.transformer(torch.cat((x, const), dim=1))[:, self.clip_length :]


class ClipCapModel(nn.Module):
    """Mapper (``clip_project``) + GPT-2 (``gpt``)."""

    def __init__(self, config: ClipCapConfig) -> None:
        super().__init__()
        self.config = config
        n_embd = config.gpt2.n_embd
        if config.mapping == "mlp":
            sizes = [config.prefix_size, *config.mlp_hidden, n_embd * config.prefix_length]
            self.clip_project: nn.Module = MLPMapper(sizes)
        else:
            self.clip_project = TransformerMapper(config)
        self.gpt = GPT2LMHead(config.gpt2)

    def set_dropout(self, *, mapper: float = 0.0, gpt: float = 0.0) -> None:
        """Training-time dropout: ``mapper`` inside the mapping network (after each hidden Tanh of the MLP, on the
        CLIP tokens of the transformer mapper), ``gpt`` in GPT-2 (:meth:`GPT2LMHead.set_dropout`).

        Not a :class:`ClipCapConfig` field on purpose: dropout does nothing in eval mode, so the saved config, the
        state dict and inference stay exactly as they were, and old checkpoints and old readers are unaffected.
        """
        if not 0.0 <= mapper < 1.0:
            raise ValueError(f"mapper dropout must be in [0, 1); got {mapper}")
        self.clip_project.dropout = float(mapper)
        self.gpt.set_dropout(gpt)

    def prefix_embeddings(self, features: torch.Tensor) -> torch.Tensor:
        """CLIP features ``[batch, prefix_size]`` -> prefix embeddings ``[batch, prefix_length, n_embd]``.

        Normalisation (when the config asks for it) happens here so no caller can forget it.
        """
        features = features.to(self.gpt.transformer.wte.weight.dtype)
        if self.config.normalize:
            features = features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        out = self.clip_project(features)
        return out.view(features.shape[0], self.config.prefix_length, self.config.gpt2.n_embd)

    def forward(self, tokens: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Training forward: logits ``[batch, prefix_length + t, vocab]`` for ``tokens`` ``[batch, t]``."""
        emb = torch.cat((self.prefix_embeddings(features), self.gpt.embed_tokens(tokens)), dim=1)
        return self.gpt(emb)
