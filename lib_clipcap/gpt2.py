"""A small, self-contained GPT-2 with a static KV cache, state-dict compatible with Hugging Face's ``GPT2LMHeadModel``.

Why our own and not ``transformers.GPT2LMHeadModel``: the WebUI hosts pin transformers anywhere from 4.30 to 4.46 and
users run 5.x standalone; the KV-cache API changed across those (tuples -> ``Cache`` objects), and decoding is where
our speed comes from. Owning ~150 lines of GPT-2 gives one fast path for every version, with a preallocated cache that
beam search can reorder in place. ``tests/test_gpt2_parity.py`` loads the same weights into transformers' model and
checks the logits agree, so the two cannot drift apart.

Parameter names match Hugging Face's (``transformer.h.0.attn.c_attn.weight`` ...) and so does the layout of saved
weights: GPT-2's checkpoints store its projections as ``Conv1D`` weights, ``[in, out]``. In memory they are plain
``nn.Linear`` layers (``[out, in]``): :class:`Linear` transposes once when a state dict is loaded and back when one
is saved, so checkpoints are unchanged while inference gets the standard layer that every backend optimises (and
that :mod:`lib_clipcap.quant` can turn into int8).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class GPT2Config:
    """Shape of a GPT-2 model. Defaults are GPT-2 small."""

    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    layer_norm_epsilon: float = 1e-5
    eos_token_id: int = 50256

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_hf_config(cls, cfg: dict) -> GPT2Config:
        """Build from a Hugging Face ``config.json`` dict (``n_ctx`` is the old name of ``n_positions``)."""
        return cls(
            vocab_size=int(cfg.get("vocab_size", 50257)),
            n_positions=int(cfg.get("n_positions", cfg.get("n_ctx", 1024))),
            n_embd=int(cfg.get("n_embd", 768)),
            n_layer=int(cfg.get("n_layer", 12)),
            n_head=int(cfg.get("n_head", 12)),
            layer_norm_epsilon=float(cfg.get("layer_norm_epsilon", 1e-5)),
            eos_token_id=int(cfg.get("eos_token_id", 50256) or 50256),
        )


class Linear(nn.Linear):
    """A GPT-2 projection: ``nn.Linear`` in memory (weight ``[out, in]``), Hugging Face's ``Conv1D`` layout
    (``[in, out]``) in state dicts, in both directions."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__(n_in, n_out)  # calls reset_parameters()

    def reset_parameters(self, std: float = 0.02) -> None:
        """GPT-2's init, N(0, std), drawn in the saved ``[in, out]`` order so that a seed gives the same weights as
        the Conv1D layout did (trained fixtures and tests depend on it)."""
        w = torch.empty(self.in_features, self.out_features, device=self.weight.device, dtype=self.weight.dtype)
        nn.init.normal_(w, std=std)
        with torch.no_grad():
            self.weight.copy_(w.t())
            self.bias.zero_()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001 - torch's hook signature
        key = prefix + "weight"
        w = state_dict.get(key)
        if w is not None and w.dim() == 2 and tuple(w.shape) == (self.in_features, self.out_features):
            state_dict[key] = w.t()  # a view: load_state_dict copies it into our parameter
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _save_to_state_dict(self, destination, prefix, keep_vars):  # noqa: ANN001
        super()._save_to_state_dict(destination, prefix, keep_vars)
        w = destination[prefix + "weight"]
        destination[prefix + "weight"] = w.t() if keep_vars else w.t().contiguous()


#: Hugging Face's name for the layer whose saved layout :class:`Linear` keeps.
Conv1D = Linear


class KVCache:
    """Preallocated keys/values for every layer: ``k[l], v[l]`` have shape ``[batch, heads, max_len, head_dim]``.

    Writing the new step in place avoids the quadratic copying of ``torch.cat`` caches; beam search reorders rows
    with :meth:`reorder`.
    """

    def __init__(self, config: GPT2Config, batch: int, max_len: int, *, device, dtype) -> None:
        hd = config.n_embd // config.n_head
        shape = (batch, config.n_head, max_len, hd)
        self.k = [torch.empty(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.v = [torch.empty(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.length = 0
        self.max_len = max_len

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows ``index`` (a 1-D LongTensor of batch positions, as many as the cache has rows), e.g. the
        surviving beams. Only the filled part is gathered, and written back in place: no new cache is allocated."""
        n = self.length
        for cache in (self.k, self.v):
            for layer in cache:
                layer[:, :, :n] = layer[:, :, :n].index_select(0, index)

    def expand_rows(self, repeats: int) -> None:
        """Repeat every row ``repeats`` times (row-major), e.g. one prompt to many samples after the prefill."""
        for i in range(len(self.k)):
            self.k[i] = self.k[i].repeat_interleave(repeats, dim=0)
            self.v[i] = self.v[i].repeat_interleave(repeats, dim=0)


class Attention(nn.Module):
    # Training-only regularisation, set by GPT2LMHead.set_dropout (not part of GPT2Config: it changes nothing at
    # inference and must not change the saved configs that every loader reads).
    dropout: float = 0.0

    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = Linear(config.n_embd, config.n_embd)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, cache: KVCache | None, layer: int
    ) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        # [b, t, c] -> [b, heads, t, head_dim]
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        if cache is not None:
            start = cache.length
            cache.k[layer][:, :, start : start + t] = k
            cache.v[layer][:, :, start : start + t] = v
            k = cache.k[layer][:, :, : start + t]
            v = cache.v[layer][:, :, : start + t]
        drop = {"dropout_p": self.dropout} if self.training and self.dropout else {}  # eval: the same call as ever
        if mask is None:
            # No padding: plain causal attention (a single query attends to everything cached).
            y = F.scaled_dot_product_attention(q, k, v, is_causal=t > 1, **drop)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, **drop)
        return self.c_proj(y.transpose(1, 2).reshape(b, t, c))


class MLP(nn.Module):
    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.c_fc = Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = Linear(4 * config.n_embd, config.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))  # GPT-2's "gelu_new"


class Block(nn.Module):
    dropout: float = 0.0  # on both residual branches while training (GPT-2's resid_pdrop); see set_dropout

    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = Attention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)

    def forward(self, x, mask, cache, layer):
        if self.training and self.dropout:
            x = x + F.dropout(self.attn(self.ln_1(x), mask, cache, layer), self.dropout, True)
            return x + F.dropout(self.mlp(self.ln_2(x)), self.dropout, True)
        x = x + self.attn(self.ln_1(x), mask, cache, layer)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.n_positions, config.n_embd)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        nn.init.normal_(self.wte.weight, std=0.02)
        nn.init.normal_(self.wpe.weight, std=0.01)


class GPT2LMHead(nn.Module):
    """GPT-2 language model; ``lm_head`` is tied to the token embedding as in GPT-2."""

    # Buffers that old transformers versions saved in checkpoints; they hold no learned state.
    IGNORED_KEY_SUFFIXES = (".attn.bias", ".attn.masked_bias")
    dropout: float = 0.0  # on the input embeddings while training (GPT-2's embd_pdrop); see set_dropout

    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.config = config
        self.transformer = Transformer(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight
        # GPT-2's scaled init of residual projections (only matters when training from scratch).
        for name, m in self.named_modules():
            if name.endswith("c_proj") and isinstance(m, Linear):
                m.reset_parameters(std=0.02 / math.sqrt(2 * config.n_layer))

    def set_dropout(self, p: float) -> None:
        """Dropout ``p`` on the embeddings, the attention weights and both residual branches of every block while
        the model is in training mode, as Hugging Face's GPT-2 does with ``embd/attn/resid_pdrop`` (0.1 there).

        0 (the default) is no dropout. Only training mode reads it: eval-mode outputs, the state dict and the saved
        config are the same whatever ``p`` is, so checkpoints need no new field.
        """
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {p}")
        self.dropout = float(p)
        for m in self.modules():
            if isinstance(m, (Attention, Block)):
                m.dropout = float(p)

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.transformer.wte(tokens)

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: KVCache | None = None,
        last_only: bool = False,
    ) -> torch.Tensor:
        """Run GPT-2 on embeddings and return logits.

        Args:
            inputs_embeds: ``[batch, t, n_embd]`` new positions (token or prefix embeddings).
            attention_mask: optional ``[batch, past + t]`` with 1 for real tokens and 0 for (left) padding.
            position_ids: ``[batch, t]``; default ``past .. past+t-1``. Left-padded rows need their own.
            cache: a :class:`KVCache`; the new keys/values are written at ``cache.length`` and it advances by ``t``.
            last_only: return logits of the last position only (``[batch, vocab]``), skipping the big matmul elsewhere.

        Returns:
            logits ``[batch, t, vocab]`` (or ``[batch, vocab]`` with ``last_only``).
        """
        b, t, _ = inputs_embeds.shape
        past = cache.length if cache is not None else 0
        if cache is not None and past + t > cache.max_len:
            raise ValueError(f"KV cache of length {cache.max_len} is too short for {past + t} positions")
        if past + t > self.config.n_positions:
            raise ValueError(f"sequence of {past + t} positions exceeds GPT-2's n_positions={self.config.n_positions}")
        if position_ids is None:
            position_ids = torch.arange(past, past + t, device=inputs_embeds.device).unsqueeze(0)
        x = inputs_embeds + self.transformer.wpe(position_ids)
        if self.training and self.dropout:
            x = F.dropout(x, self.dropout, True)
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            keep = attention_mask[:, None, None, : past + t].bool()  # [b, 1, 1, past+t]
            causal = torch.ones(t, past + t, dtype=torch.bool, device=x.device).tril(diagonal=past)
            mask = keep & causal  # [b, 1, t, past+t]
            # A fully padded query row would give NaN; let it see itself (its output is never used).
            mask = mask | torch.eye(t, past + t, dtype=torch.bool, device=x.device).roll(past, dims=1)
        for i, block in enumerate(self.transformer.h):
            x = block(x, mask, cache, i)
        if cache is not None:
            cache.length = past + t
        if last_only:
            x = x[:, -1]
        return self.lm_head(self.transformer.ln_f(x))

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        p = self.transformer.wte.weight
        return KVCache(self.config, batch, max_len, device=p.device, dtype=p.dtype)
