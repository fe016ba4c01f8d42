"""Caption data shared by the trainers: (image, caption) pairs, token sequences, padding, batch order, tokenizers.

Padding is done right: every caption is followed by EOS, padded positions hold EOS as *input* (any id works, the
model is causal) and ``-100`` as *label*, so the loss never sees padding. The original ClipCap padded with token 0
and ignored token 0 in the loss, but 0 is GPT-2's ``"!"``, a real token.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

IGNORE_INDEX = -100


@dataclass
class CaptionPairs:
    """Training examples: ``tokens[j]`` (caption ids + EOS) describes image ``image_index[j]``."""

    image_index: torch.Tensor  # [M] long
    tokens: list[list[int]]

    def __len__(self) -> int:
        return len(self.tokens)


def normalize_caption(text: str, *, lowercase: bool) -> str:
    text = " ".join(text.strip().split())
    return text.lower() if lowercase else text


def make_pairs(captions: Sequence[Sequence[str]], tokenizer, *, max_tokens: int, lowercase: bool = True,
               prefix: Sequence[str] | None = None) -> CaptionPairs:
    """Tokenise every caption of every image (``captions[i]``: image i's references) and append EOS.

    Args:
        max_tokens: longest sequence kept (EOS included); longer captions are cut (EOS kept at the end).
        prefix: an optional text per image put before each caption (the SBG generator's ``"k1, k2 ###"``).
    """
    texts, index = [], []
    for i, caps in enumerate(captions):
        for c in caps:
            c = normalize_caption(c, lowercase=lowercase)
            if c:
                texts.append(c if prefix is None else f"{prefix[i]} {c}")
                index.append(i)
    import torch

    eos = tokenizer.eos_token_id
    tokens = [(ids[: max_tokens - 1] + [eos]) for ids in tokenizer.encode_batch(texts)]
    return CaptionPairs(torch.tensor(index, dtype=torch.long), tokens)


def collate(seqs: Sequence[Sequence[int]], *, pad_id: int, label_from: Sequence[int] | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad sequences: inputs ``[B, T]`` padded with ``pad_id``, labels ``[B, T]`` with ``-100`` on padding.

    Args:
        label_from: per sequence, the first position that counts in the loss (earlier labels are -100 too; the
            SBG generator learns only the caption after its keyword prompt).
    """
    import torch

    width = max(len(s) for s in seqs)
    tokens = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    labels = torch.full((len(seqs), width), IGNORE_INDEX, dtype=torch.long)
    for r, s in enumerate(seqs):
        t = torch.tensor(list(s), dtype=torch.long)
        tokens[r, : len(s)] = t
        labels[r, : len(s)] = t
        if label_from is not None:
            labels[r, : label_from[r]] = IGNORE_INDEX
    return tokens, labels


def epoch_batches(n: int, batch_size: int, *, seed: int, epoch: int, drop_last: bool = False) -> list[torch.Tensor]:
    """The batches of one epoch: a permutation that depends only on ``(seed, epoch)``, so a resumed run sees the
    same batches in the same order as an uninterrupted one."""
    import torch

    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g)
    batches = list(perm.split(batch_size))
    if drop_last and batches and len(batches[-1]) < batch_size and len(batches) > 1:
        batches.pop()
    return batches




# ------------------------------------------------------------------------------------------------- tokenizers
def write_legacy_tokenizer_json(path: Path) -> None:
    """Rewrite ``tokenizer.json`` in the format every ``tokenizers`` version reads (the WebUI's 0.13 included):
    BPE merges as ``"a b"`` strings and no ``ignore_merges`` key."""
    data = json.loads(path.read_text(encoding="utf-8"))
    model = data["model"]
    model["merges"] = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    model.pop("ignore_merges", None)
    from ..fileio import atomic_write_text

    atomic_write_text(path, json.dumps(data, ensure_ascii=False, indent=1) + "\n")


def train_bpe_tokenizer(captions: Sequence[str], path: str | Path, *, vocab_size: int = 50257,
                        min_frequency: int = 2, lowercase: bool = True):
    """Train a GPT-2-style byte-level BPE on the captions (the paper's "custom tokenizer" variant) and save it.

    GPT-2's vocabulary size by default (50257, the paper), ``<|endoftext|>`` as the only special token (it gets id 0
    here; :class:`~lib_clipcap.tokenizer.Tokenizer` finds EOS by its text). A small corpus yields fewer tokens than
    asked for. Returns the loaded :class:`~lib_clipcap.tokenizer.Tokenizer`.
    """
    from tokenizers import ByteLevelBPETokenizer

    from ..tokenizer import EOS_TEXT, Tokenizer

    corpus = sorted({normalize_caption(c, lowercase=lowercase) for c in captions if c.strip()})
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(corpus, vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[EOS_TEXT],
                            show_progress=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    write_legacy_tokenizer_json(path)
    return Tokenizer.from_path(path)


# ---------------------------------------------------------------------------------------- command-line helpers
def add_dataclass_arguments(p, cls, *, required: Sequence[str] = (), skip: Sequence[str] = (),
                            help: dict[str, str] | None = None) -> None:
    """One ``--option`` per field of the settings dataclass ``cls`` (types and defaults from the dataclass)."""
    import argparse
    import dataclasses

    help = help or {}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        ann = str(f.type)
        kw: dict[str, Any] = {"help": help.get(f.name, f"default: {default}")}
        if ann.startswith("bool"):
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default, **kw)
            continue
        typ = int if ann.startswith("int") else float if ann.startswith("float") else str
        if f.name in required:
            p.add_argument(flag, dest=f.name, type=typ, required=True, **kw)
        else:
            p.add_argument(flag, dest=f.name, type=typ, default=default, **kw)


def dataclass_from_args(cls, args) -> Any:
    """Build the settings dataclass ``cls`` from parsed arguments (fields absent from ``args`` keep defaults)."""
    import dataclasses

    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)})
