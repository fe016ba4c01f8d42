"""Evaluation: caption a dataset with any model and score it the way the papers did.

    from lib_clipcap.eval import load_dataset, evaluate, compute_metrics
    data = load_dataset("flickr8k/captions.txt", split="test")       # the paper's split: last 1000 images
    result = evaluate(captioner, data, decoding="beam", beam_size=5)
    print(result.scores["BLEU-4"], result.scores["METEOR"])

Modules: :mod:`.datasets` (readers for the formats datasets are distributed in), :mod:`.metrics` (pycocoevalcap's
BLEU/METEOR/ROUGE-L/CIDEr/SPICE with its PTB tokenizer, plus CLIP-S/RefCLIP-S), :mod:`.runner` (caption + score),
:mod:`.report` (tables in the papers' format, JSON), :mod:`.baselines` (retrieval baselines: nearest neighbour and
consensus captions copied from the training split), :mod:`.cli` (``python -m lib_clipcap eval``).
Importing this package is cheap: torch and pycocoevalcap load only when a function needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

__getattr__, _LAZY_NAMES = lazy_exports(__name__, {
    "datasets": ("EvalDataset", "EvalItem", "DatasetError", "load_dataset"),
    "metrics": ("compute_metrics", "clip_metrics", "MetricResult"),
    "runner": ("evaluate", "EvalResult", "evaluate_baseline"),
    "report": ("format_table",),
    "baselines": ("retrieve_captions",),
})
__all__ = sorted(_LAZY_NAMES)


if TYPE_CHECKING:  # pragma: no cover
    from .datasets import DatasetError, EvalDataset, EvalItem, load_dataset
    from .metrics import MetricResult, clip_metrics, compute_metrics
    from .report import format_table
    from .baselines import retrieve_captions
    from .runner import EvalResult, evaluate, evaluate_baseline
