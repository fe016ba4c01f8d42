"""The GPT-2 a training run starts from, shared by the ClipCap and SBG trainers: its tokenizer (GPT-2's, a file, or
a custom BPE trained on the captions), its shape and weights (pretrained or from scratch), and how file names are
recorded in the saved config.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ClipCapError
from .data import train_bpe_tokenizer

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .loop import GPT2Settings

__all__ = ["CUSTOM_VOCAB_CAP", "gpt2_base", "load_gpt_weights", "path_or_name", "resolve_train_tokenizer"]

log = logging.getLogger(__name__)

CUSTOM_VOCAB_CAP = 50257  # custom_vocab_size=0: as many tokens as the captions need, at most GPT-2's count


def resolve_train_tokenizer(spec: str, captions: list[str], out: Path, *, vocab_size: int, lowercase: bool,
                            models_dir: Path | None):
    """``(Tokenizer, spec to record in the config)``: GPT-2's, a file/folder, or ``"custom"`` (trained and saved)."""
    from ..captioner import resolve_tokenizer

    if spec == "custom":
        path = out / "tokenizer.json"
        if path.is_file():  # resuming: the tokenizer must not change under the checkpoint
            from ..tokenizer import Tokenizer

            return Tokenizer.from_path(path), path_or_name(str(path))
        tok = train_bpe_tokenizer(captions, path, vocab_size=vocab_size or CUSTOM_VOCAB_CAP, lowercase=lowercase)
        log.info("trained a custom BPE tokenizer: %d tokens -> %s", tok.vocab_size, path)
        return tok, path_or_name(str(path))
    return resolve_tokenizer(spec, models_dir=models_dir), path_or_name(spec)


def gpt2_base(cfg: GPT2Settings, tok, models_dir: Path | None):
    """``(GPT2Config, weights or None)`` for the configured GPT-2 (``"scratch"``: random, sized by the config).

    ``cfg`` is a trainer's config; only its :class:`~lib_clipcap.train.loop.GPT2Settings` are read.
    """
    from ..gpt2 import GPT2Config

    if cfg.gpt2 == "scratch":
        return GPT2Config(vocab_size=tok.vocab_size, n_positions=cfg.gpt2_positions, n_embd=cfg.gpt2_width,
                          n_layer=cfg.gpt2_layers, n_head=cfg.gpt2_heads, eos_token_id=tok.eos_token_id), None
    from .. import hub
    from ..checkpoint import load_gpt2_weights

    folder = hub.resolve_local_or_hub(cfg.gpt2, models_dir=models_dir)
    sd, gcfg = load_gpt2_weights(folder)
    if tok.vocab_size > gcfg.vocab_size:
        raise ClipCapError(f"the tokenizer has {tok.vocab_size} tokens but GPT-2 {cfg.gpt2!r} has {gcfg.vocab_size}; "
                           f"train the custom tokenizer with --custom-vocab-size {gcfg.vocab_size} or less")
    return GPT2Config(**{**gcfg.to_dict(), "eos_token_id": tok.eos_token_id}), sd


def load_gpt_weights(gpt, sd: dict[str, torch.Tensor]) -> None:
    """Load pretrained GPT-2 tensors (any key layout) into a :class:`~lib_clipcap.gpt2.GPT2LMHead`, strictly."""
    from ..checkpoint import normalize_gpt2_keys
    from ..gpt2 import GPT2LMHead

    sd = {k: v for k, v in normalize_gpt2_keys(sd).items() if not k.endswith(GPT2LMHead.IGNORED_KEY_SUFFIXES)}
    sd.setdefault("lm_head.weight", sd["transformer.wte.weight"])
    gpt.load_state_dict(sd, strict=True)


def path_or_name(spec: str) -> str:
    """An existing file/folder as an absolute path (saved relative to the checkpoint when near it), else the name."""
    p = Path(spec).expanduser()
    return str(p.resolve()) if p.exists() else spec
