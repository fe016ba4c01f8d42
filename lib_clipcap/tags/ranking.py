"""Scoring a batch of images against a tag vocabulary, and choosing each image's tags.

**Scores.** For every tag, CLIP's cosine similarity between the image and each of the tag's prompts (every phrasing
in every template of its category); the tag keeps the *best* prompt's cosine. Then, within each category, a softmax
of ``logit_scale x cosine`` (``logit_scale``: the temperature the CLIP was trained with, 100 for OpenAI's) turns the
cosines into a probability that this tag, rather than another of its category, describes the image. The default
``scoring="probability"`` thresholds that probability; ``scoring="cosine"`` thresholds the raw cosine instead.

Why these, by measurement (``tools/bench_tags.py`` on its tuning seed of the shapes world -- never its evaluation
seed -- with the bundled tiny CLIP and the ``shapes`` vocabulary; each variant at its own best threshold):

* the best prompt rather than the mean of the prompts' features: the mean blurs prompts that describe different
  scenes ("a small red circle...", "a large red square...") into a feature close to none of them, while the best
  matches the one scene the image shows (shape tags' F1 0.60 with the mean, 0.98 with the best prompt);
* a probability within the category rather than a cosine threshold: both work at their best threshold (mean colour
  and shape F1 0.99 against 0.97), but the cosine's best threshold (0.9 here) belongs to one CLIP and one way of
  prompting -- OpenAI's CLIPs give matching prompts cosines near 0.3 -- while "its share of the category" means the
  same for any CLIP and any prompts, so one default can serve them all.

The probability has a known limit: a category always spends its whole mass, so on an image where no tag of a
category applies its best tag can still pass the threshold; trim such categories with ``category_limits`` or leave
them out of the vocabulary. And two tags of one category that both apply share its mass: a threshold of 0.5 or
more keeps at most one of them (on the tuning seed, where half the scenes show two shapes, shape F1 falls from 0.98
at 0.3 to 0.67 at 0.5).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .cache import TextFeatures
from .selection import SCORINGS, TagOptionError
from .vocabulary import TagVocabulary

_DEFAULT_LOGIT_SCALE = 100.0


def logit_scale_of(clip: Any) -> float:
    """The temperature a CLIP was trained with (``exp(logit_scale)``), or 100 (OpenAI's) when it has none."""
    ls = getattr(getattr(clip, "model", None), "logit_scale", None)
    if ls is None:
        return _DEFAULT_LOGIT_SCALE
    value = float(ls.detach().float().exp().cpu()) if torch.is_tensor(ls) else math.exp(float(ls))
    return value if math.isfinite(value) and value > 0 else _DEFAULT_LOGIT_SCALE


def category_index(vocabulary: TagVocabulary) -> torch.Tensor:
    """``[n_tags]``: each tag's category as an index into ``vocabulary.categories``."""
    cats = {c: i for i, c in enumerate(vocabulary.categories)}
    return torch.tensor([cats[e.category] for e in vocabulary.entries], dtype=torch.long)


def tag_cosines(image_features: torch.Tensor, text: TextFeatures, n_tags: int) -> torch.Tensor:
    """``[batch, n_tags]``: each tag's best prompt cosine with each image (raw or normalised image features)."""
    img = image_features.to(text.prompts.device, torch.float32)
    img = img / img.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    cos = img @ text.prompts.T  # [batch, n_prompts]: the one matrix product
    out = torch.full((cos.shape[0], n_tags), -2.0, device=cos.device)
    return out.scatter_reduce(1, text.owner.unsqueeze(0).expand_as(cos), cos, reduce="amax", include_self=True)


def score_tags(image_features: torch.Tensor, text: TextFeatures, vocabulary: TagVocabulary, *,
               scoring: str = "probability", logit_scale: float = _DEFAULT_LOGIT_SCALE) -> torch.Tensor:
    """``[batch, n_tags]`` scores on the CPU: a probability within each category, or the cosine (see above)."""
    cos = tag_cosines(image_features, text, len(vocabulary.entries))
    if scoring == "cosine":
        return cos.cpu()
    if scoring != "probability":
        raise TagOptionError("scoring", f"use one of {', '.join(SCORINGS)}", scoring)
    cat = category_index(vocabulary).to(cos.device)
    logits = logit_scale * cos
    # Softmax per category in one pass: subtract each category's max, exponentiate, divide by its sum.
    idx = cat.unsqueeze(0).expand_as(logits)
    n_cat = len(vocabulary.categories)
    cmax = torch.full((logits.shape[0], n_cat), -math.inf, device=logits.device).scatter_reduce(
        1, idx, logits, reduce="amax", include_self=True)
    e = (logits - cmax.gather(1, idx)).exp()
    total = torch.zeros(logits.shape[0], n_cat, device=logits.device).scatter_add(1, idx, e)
    return (e / total.gather(1, idx)).cpu()
