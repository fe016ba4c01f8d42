"""The SBG caption generator: a GPT-2 fine-tuned on ``"k1, k2, k3 ### caption"`` that writes after ``###``.

The published generator is a Hugging Face GPT-2 folder (``config.json`` + ``model.safetensors``) used with GPT-2's
tokenizer, ``###`` as separator (GPT-2 encodes ``" ###"`` as the single token 44386) and EOS as padding. We load it
into our KV-cached GPT-2 and decode every prompt's candidates in one batched call: prompts of different lengths are
left-padded with EOS and masked, each prompt is prefilled once and its cache forked into the candidates.

The original cut the generated text at its first ``"."`` and appended ``" ."``; we stop decoding at any token that
contains a ``"."`` (or at EOS), which yields the same caption without generating what would be thrown away.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import IncompatibleCheckpointError, MissingFileError

log = logging.getLogger(__name__)

SEPARATOR = "###"
CONFIG_NAME = "sbg.json"  # optional, beside config.json: {"separator": "###"}


@dataclass
class Generated:
    """One generated caption and its mean token log-probability."""

    text: str
    score: float


def clean_caption(text: str) -> str:
    """The caption part of generated text: up to the first ``"."``, stripped, ending with ``"."`` ("" if empty)."""
    text = text.split(".")[0].strip()
    return f"{text}." if text else ""


class SbgGenerator:
    """GPT-2 + tokenizer + separator; turns keyword prompts into captions.

    Args:
        gpt: our :class:`~lib_clipcap.gpt2.GPT2LMHead` with the generator's weights.
        tokenizer: the generator's :class:`~lib_clipcap.tokenizer.Tokenizer` (GPT-2's for the published model).
        separator: the text between keywords and caption.
    """

    def __init__(self, gpt, tokenizer, *, separator: str = SEPARATOR, name: str = "") -> None:
        self.gpt = gpt.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.separator = separator
        self.name = name
        if tokenizer.vocab_size > gpt.config.vocab_size:
            raise IncompatibleCheckpointError(
                f"the tokenizer has {tokenizer.vocab_size} tokens but the generator's GPT-2 has "
                f"{gpt.config.vocab_size}; use the tokenizer it was trained with")
        self.stop_ids = self._stop_ids()

    def _stop_ids(self) -> list[int]:
        """EOS and every token whose text contains a period (GPT-2: ".", " .", ".,", "..." and friends)."""
        vocab = self.tokenizer.backend.get_vocab()  # byte-level token strings; "." is itself in that alphabet
        ids = {i for tok, i in vocab.items() if "." in tok and i < self.gpt.config.vocab_size}
        return sorted(ids | {self.tokenizer.eos_token_id})

    # ----------------------------------------------------------------------------------------------- loading
    @classmethod
    def load(cls, folder: str | Path, *, tokenizer: str | Path | None = None, models_dir: str | Path | None = None,
             device=None, dtype=None) -> SbgGenerator:
        """Load an HF-format GPT-2 folder (``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``).

        Args:
            folder: the generator folder.
            tokenizer: ``"gpt2"``, a tokenizer file/folder or ``bundled:...``; default: the folder's own
                ``tokenizer.json`` / ``vocab.json`` + ``merges.txt`` if present, else GPT-2's.
            models_dir: where GPT-2's tokenizer is downloaded to when needed.

        Raises:
            MissingFileError: the folder or its weights are missing.
            IncompatibleCheckpointError: the tokenizer does not fit the model.
        """
        from ..captioner import resolve_tokenizer
        from ..devices import device_and_dtype, is_int8
        from ..checkpoint import load_gpt2_weights
        from ..gpt2 import GPT2LMHead

        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise MissingFileError(f"SBG generator folder not found: {folder} (it must hold config.json and "
                                   f"model.safetensors)")
        sd, cfg = load_gpt2_weights(folder)
        gpt = GPT2LMHead(cfg)
        sd = {k: v for k, v in sd.items() if not k.endswith(GPT2LMHead.IGNORED_KEY_SUFFIXES)}
        sd.setdefault("lm_head.weight", sd["transformer.wte.weight"])
        missing, unexpected = gpt.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise IncompatibleCheckpointError(f"{folder} is not a GPT-2 checkpoint: missing {missing[:5]}, "
                                              f"unexpected {unexpected[:5]}")
        dev, dt = device_and_dtype(device, dtype)
        gpt = gpt.to(device=dev, dtype=dt)
        if is_int8(dtype):  # CPU: int8 weights (lib_clipcap.quant)
            from ..quant import quantize_gpt2_

            quantize_gpt2_(gpt)
        if tokenizer is None:
            own = (folder / "tokenizer.json").is_file() or (folder / "vocab.json").is_file()
            tokenizer = str(folder) if own else "gpt2"
        tok = resolve_tokenizer(str(tokenizer), models_dir=Path(models_dir).expanduser() if models_dir else None)
        separator = SEPARATOR
        if (folder / CONFIG_NAME).is_file():
            separator = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8")).get("separator", SEPARATOR)
        return cls(gpt, tok, separator=separator, name=folder.name)

    def save(self, folder: str | Path) -> Path:
        """Write an HF-format folder: ``config.json``, ``model.safetensors``, ``tokenizer.json``, ``sbg.json``."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        c = self.gpt.config
        config = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": c.vocab_size,
                  "n_positions": c.n_positions, "n_ctx": c.n_positions, "n_embd": c.n_embd, "n_layer": c.n_layer,
                  "n_head": c.n_head, "layer_norm_epsilon": c.layer_norm_epsilon,
                  "bos_token_id": self.tokenizer.eos_token_id, "eos_token_id": self.tokenizer.eos_token_id,
                  "pad_token_id": self.tokenizer.eos_token_id}
        (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        sd = {k: v.detach().half().contiguous().cpu() for k, v in self.gpt.state_dict().items()
              if k != "lm_head.weight"}  # tied to wte; safetensors refuses shared storage
        save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})
        self.tokenizer.save(folder / "tokenizer.json")
        (folder / CONFIG_NAME).write_text(json.dumps({"separator": self.separator}) + "\n")
        return folder

    # ----------------------------------------------------------------------------------------------- prompts
    def prompt(self, keywords: Sequence[str]) -> str:
        """``"k1, k2, k3 ###"``: the training format's left side."""
        return ", ".join(keywords) + " " + self.separator

    def fit_keywords(self, keywords: Sequence[str], max_prompt_tokens: int) -> list[str]:
        """Drop the least similar (last) keywords until the prompt fits ``max_prompt_tokens``."""
        kws = list(keywords)
        while len(kws) > 1 and len(self.tokenizer.encode(self.prompt(kws))) > max_prompt_tokens:
            kws.pop()
        return kws

    def encode_prompts(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded token ids ``[batch, L]`` (EOS as padding) and the attention mask (0 on padding)."""
        ids = self.tokenizer.encode_batch(list(prompts))
        width = max(len(t) for t in ids)
        pad = self.tokenizer.eos_token_id
        tokens = torch.full((len(ids), width), pad, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for r, t in enumerate(ids):
            if t:
                tokens[r, width - len(t):] = torch.tensor(t)
                mask[r, width - len(t):] = 1
        return tokens, mask

    # --------------------------------------------------------------------------------------------- generation
    @property
    def device(self) -> torch.device:
        return self.gpt.transformer.wte.weight.device

    @torch.inference_mode()
    def generate(self, prompts: Sequence[str], options) -> list[list[Generated]]:
        """Candidates for every prompt (``options.num_candidates`` samples, or the best beams), in one call.

        Returns:
            Per prompt, the cleaned candidate captions with their mean token log-probabilities, best score first.
        """
        from ..decoding import decode

        if not prompts:
            return []
        tokens, mask = self.encode_prompts(prompts)
        tokens, mask = tokens.to(self.device), mask.to(self.device)
        embeds = self.gpt.embed_tokens(tokens)
        hyps = decode(self.gpt, embeds, options, stop_ids=self.stop_ids, pad_id=self.tokenizer.eos_token_id,
                      attention_mask=mask)
        return [[Generated(clean_caption(self.tokenizer.decode(h.tokens)), h.score) for h in row] for row in hyps]

    def to(self, device=None, dtype=None) -> SbgGenerator:
        self.gpt.to(device=device, dtype=dtype)
        return self

    def __repr__(self) -> str:
        c = self.gpt.config
        return f"SbgGenerator({self.name!r}, GPT-2 {c.n_layer}x{c.n_embd}, vocab {c.vocab_size})"
