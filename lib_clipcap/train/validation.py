"""Validation during training: a held-out part of the training split, its loss and a caption metric every N steps,
the best checkpoint so far, and early stopping.

Why a caption metric and not only the loss: with several paraphrased references per image the loss keeps falling
while the model memorises which paraphrase goes with which training image, and the captions of unseen images stop
improving (or get worse) long before. The metric (CIDEr by default, computed by pycocoevalcap on simply tokenised
text, so no Java runs inside training) is what the final evaluation measures, so it is what selects the model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ClipCapError

if TYPE_CHECKING:  # pragma: no cover
    import torch

# What can select the best checkpoint: metrics written to the log as "val_<name>", and whether higher is better.
SELECT_METRICS = {"cider": ("val_CIDEr", True), "bleu4": ("val_BLEU-4", True), "loss": ("val_loss", False)}


def split_off_validation(fs, count: int):
    """``(train, validation)``: the last ``count`` images of a training FeatureSet become the validation set.

    The last images, not a random draw, so the split is the same on every run and a resumed run trains on exactly
    the images it trained on before.

    Raises:
        ClipCapError: ``count`` leaves no training image.
    """
    import torch

    n = len(fs)
    if count <= 0:
        return fs, None
    if count >= n:
        raise ClipCapError(f"val_images={count} leaves no training image (the training split has {n}); use fewer")
    return fs.take(torch.arange(0, n - count)), fs.take(torch.arange(n - count, n))


def greedy_captions(model, tokenizer, features: torch.Tensor, *, stop_token: str | None = ".",
                    max_new_tokens: int = 40, batch_size: int = 256) -> list[str]:
    """Greedy captions of CLIP features with a model being trained (its train/eval mode and gradients untouched)."""
    import torch

    from ..decoding import DecodingOptions, decode

    opts = DecodingOptions(mode="greedy", max_new_tokens=max_new_tokens)
    stop = tokenizer.token_id(stop_token) if stop_token else None
    stop_ids = sorted({tokenizer.eos_token_id} | ({stop} if stop is not None else set()))
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    out: list[str] = []
    try:
        with torch.no_grad():
            for start in range(0, features.shape[0], batch_size):
                prefix = model.prefix_embeddings(features[start:start + batch_size].to(dev))
                hyps = decode(model.gpt, prefix, opts, stop_ids=stop_ids, pad_id=tokenizer.eos_token_id)
                out += [tokenizer.decode(c[0].tokens).strip() for c in hyps]
    finally:
        model.train(was_training)
    return out


def caption_scores(captions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """``{"BLEU-4", "CIDEr"}`` of captions against references (pycocoevalcap, simple tokenizer: no Java)."""
    from ..eval.metrics import compute_metrics

    ids = [str(i) for i in range(len(captions))]
    r = compute_metrics(dict(zip(ids, [list(x) for x in references])), dict(zip(ids, captions)),
                        metrics=("bleu", "cider"), tokenizer="simple")
    return {"BLEU-4": r.scores["BLEU-4"], "CIDEr": r.scores["CIDEr"]}


@dataclass
class BestTracker:
    """Best-checkpoint selection and early stopping on one validation value.

    Args:
        key: the logged value that decides (``val_CIDEr``, ``val_BLEU-4``, ``val_loss``).
        higher_is_better: True for caption metrics, False for the loss.
        patience: stop after this many evaluations without improvement (0: never stop early).
        min_delta: an improvement must exceed this.
    """

    key: str
    higher_is_better: bool = True
    patience: int = 0
    min_delta: float = 0.0
    best: float | None = None
    best_step: int | None = None
    bad_evals: int = 0

    @classmethod
    def for_metric(cls, name: str, *, patience: int = 0, min_delta: float = 0.0) -> BestTracker:
        """A tracker for a :data:`SELECT_METRICS` name (``cider``, ``bleu4``, ``loss``)."""
        if name not in SELECT_METRICS:
            raise ClipCapError(f"select_by must be one of {', '.join(SELECT_METRICS)}; got {name!r}")
        key, higher = SELECT_METRICS[name]
        return cls(key, higher, patience, min_delta)

    def update(self, step: int, record: dict[str, Any]) -> bool:
        """Take one validation record; True when it is the best so far (the caller saves the checkpoint)."""
        value = record.get(self.key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            raise ClipCapError(f"the validation record of step {step} has no {self.key!r}: {sorted(record)}")
        better = self.best is None or (value > self.best + self.min_delta if self.higher_is_better
                                       else value < self.best - self.min_delta)
        if better:
            self.best, self.best_step, self.bad_evals = float(value), step, 0
        else:
            self.bad_evals += 1
        return better

    @property
    def should_stop(self) -> bool:
        """Whether ``patience`` evaluations in a row brought no improvement."""
        return self.patience > 0 and self.bad_evals >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step, "bad_evals": self.bad_evals}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_step, self.bad_evals = state.get("best"), state.get("best_step"), state.get(
            "bad_evals", 0)
