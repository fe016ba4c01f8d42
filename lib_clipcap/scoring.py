"""CLIP-S scoring and re-ranking: CLIPScore, RefCLIPScore and CLIP (+ grammar) re-ranking of candidate captions.

Definitions (Hessel et al. 2021, "CLIPScore"), for an image ``v``, a candidate ``c`` and references ``R``:

- ``CLIP-S(c, v) = w * max(cos(E_img(v), E_txt(c)), 0)`` with ``w = 2.5``;
- ``RefCLIP-S(c, R, v) = H-Mean(CLIP-S(c, v), max(max_{r in R} cos(E_txt(c), E_txt(r)), 0))``, the harmonic mean
  (0 when either side is 0).

Hessel's code prepends ``"A photo depicts "`` to every text before encoding; pass ``prefix=HESSEL_PREFIX`` to do the
same (our re-ranking uses the bare captions, as the SBG paper did). Everything is batched: all texts of a call are
encoded in one pass, and any open_clip backbone works (:class:`~lib_clipcap.clip.ClipBackbone`).

Re-ranking (:func:`rank_candidates`, :func:`rerank_results`) orders a captioner's candidates by
``CLIP-S + grammar_weight * P(grammatical)`` (``"clip+grammar"``) or by CLIP-S alone (``"clip"``), filling each
:class:`~lib_clipcap.results.Candidate`'s ``clip_score`` and ``grammar``; the result's text becomes the best one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from .errors import ClipCapError

if TYPE_CHECKING:  # pragma: no cover
    from .results import Candidate, CaptionResult
    from .grammar import GrammarScorer

log = logging.getLogger(__name__)

CLIP_S_WEIGHT = 2.5
HESSEL_PREFIX = "A photo depicts "
RERANK_MODES = ("none", "clip", "clip+grammar")
DEFAULT_GRAMMAR_WEIGHT = 1.0


def check_rerank_mode(mode: str | None) -> str:
    """Normalise a re-ranking mode (None -> "none").

    Raises:
        ClipCapError: ``mode`` is not one of :data:`RERANK_MODES`.
    """
    mode = "none" if mode in (None, "") else str(mode).strip().lower()
    if mode not in RERANK_MODES:
        raise ClipCapError(f"rerank must be one of {', '.join(RERANK_MODES)}; got {mode!r}")
    return mode


def _normalize(x: torch.Tensor) -> torch.Tensor:
    x = x.float()
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def image_features(clip, images: Any, *, batch_size: int = 32) -> torch.Tensor:
    """L2-normalised image features ``[n, D]`` from a features tensor, or from images (PIL/paths/bytes/arrays).

    Raises:
        ImageLoadError: an image cannot be loaded.
    """
    if torch.is_tensor(images):
        return _normalize(images.to(clip.device))
    from .images import load_image

    imgs = [load_image(x) for x in (images if isinstance(images, (list, tuple)) else [images])]
    out = [clip.encode_images(clip.preprocess_images(imgs[i:i + batch_size]), normalize=True)
           for i in range(0, len(imgs), batch_size)]
    return torch.cat(out) if out else torch.empty(0, clip.embed_dim, device=clip.device)


def text_features(clip, texts: Sequence[str], *, prefix: str = "", batch_size: int = 256) -> torch.Tensor:
    """L2-normalised text features ``[n, D]`` (``prefix`` prepended to each text)."""
    return clip.encode_texts([prefix + t for t in texts], normalize=True, batch_size=batch_size).float()


def clip_score_from_cosine(cos: torch.Tensor, w: float = CLIP_S_WEIGHT) -> torch.Tensor:
    """``w * max(cos, 0)``."""
    return w * cos.clamp_min(0.0)


def harmonic_mean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Element-wise ``2ab / (a + b)``, 0 where ``a + b`` is 0."""
    s = a + b
    return torch.where(s > 0, 2 * a * b / s.clamp_min(1e-12), torch.zeros_like(s))


@torch.inference_mode()
def clip_score(clip, images: Any, captions: Sequence[str], *, w: float = CLIP_S_WEIGHT, prefix: str = "",
               batch_size: int = 256) -> torch.Tensor:
    """CLIPScore of each ``(image i, caption i)`` pair: ``[n]`` float32 on the CPU.

    Args:
        clip: any open_clip backbone (:class:`~lib_clipcap.clip.ClipBackbone`).
        images: ``[n, D]`` image features (raw or normalised), or n images (PIL, paths, bytes, arrays).
        captions: n captions.
        w: the CLIPScore weight (2.5).
        prefix: text prepended to captions before encoding (Hessel's code: :data:`HESSEL_PREFIX`).

    Raises:
        ValueError: different numbers of images and captions.
    """
    img = image_features(clip, images)
    if img.shape[0] != len(captions):
        raise ValueError(f"{img.shape[0]} images but {len(captions)} captions")
    txt = text_features(clip, captions, prefix=prefix, batch_size=batch_size)
    return clip_score_from_cosine((img * txt).sum(-1), w).cpu()


@torch.inference_mode()
def ref_clip_score(clip, images: Any, captions: Sequence[str], references: Sequence[Sequence[str]], *,
                   w: float = CLIP_S_WEIGHT, prefix: str = "", batch_size: int = 256) -> torch.Tensor:
    """RefCLIPScore of each ``(image i, caption i, references i)``: ``[n]`` float32 on the CPU.

    ``H-Mean(CLIP-S(c, v), max(max_r cos(c, r), 0))``; every text of the call is encoded in one batched pass.

    Raises:
        ValueError: the three inputs differ in length, or an image has no reference.
    """
    img = image_features(clip, images)
    n = len(captions)
    if img.shape[0] != n or len(references) != n:
        raise ValueError(f"{img.shape[0]} images, {n} captions and {len(references)} reference lists must agree")
    if any(len(r) == 0 for r in references):
        raise ValueError("every caption needs at least one reference")
    flat = [r for refs in references for r in refs]
    feats = text_features(clip, list(captions) + flat, prefix=prefix, batch_size=batch_size)
    cand, refs = feats[:n], feats[n:]
    clip_s = clip_score_from_cosine((img * cand).sum(-1), w)
    best = torch.empty(n, device=feats.device)
    start = 0
    for i, r in enumerate(references):
        best[i] = (refs[start:start + len(r)] @ cand[i]).max()
        start += len(r)
    return harmonic_mean(clip_s, best.clamp_min(0.0)).cpu()


# --------------------------------------------------------------------------------------------------- re-ranking
@torch.inference_mode()
def score_candidates(clip, image_feats: torch.Tensor, texts: Sequence[Sequence[str]], *,
                     grammar: GrammarScorer | None = None, w: float = CLIP_S_WEIGHT
                     ) -> tuple[list[list[float]], list[list[float]], list[list[float]] | None]:
    """Cosine, CLIP-S and (optionally) grammar probability of every candidate of every image, in one text batch.

    Args:
        image_feats: ``[batch, D]`` image features (raw or normalised).
        texts: per image, its candidate captions.

    Returns:
        ``(cosines, clip_scores, grammar_probs or None)``, each a list (per image) of lists (per candidate).
    """
    img = _normalize(image_feats.to(clip.device))
    flat = [t for row in texts for t in row]
    if not flat:
        empty = [[] for _ in texts]
        return empty, [list(r) for r in empty], ([list(r) for r in empty] if grammar is not None else None)
    txt = text_features(clip, flat)
    rows = torch.cat([torch.full((len(row),), i, dtype=torch.long) for i, row in enumerate(texts)]).to(img.device)
    cos = (img[rows] * txt).sum(-1).cpu()
    cs = clip_score_from_cosine(cos, w)
    probs = grammar.probability(flat).cpu() if grammar is not None else None

    def split(x: torch.Tensor) -> list[list[float]]:
        out, start = [], 0
        for row in texts:
            out.append(x[start:start + len(row)].tolist())
            start += len(row)
        return out

    return split(cos), split(cs), (split(probs) if probs is not None else None)


def rank_candidates(candidates: list[Candidate], cosines: Sequence[float], clip_scores: Sequence[float],
                    grammar_probs: Sequence[float] | None = None, *,
                    grammar_weight: float = DEFAULT_GRAMMAR_WEIGHT) -> list[Candidate]:
    """Fill ``clip_score``/``grammar`` and return the candidates best first.

    The key is ``CLIP-S + grammar_weight * P(grammatical)`` (grammar term only when probabilities are given); ties
    (e.g. several negative cosines, all CLIP-S 0) fall back to the raw cosine, then the decoder score. Empty
    captions always rank last.
    """
    keyed = []
    for i, c in enumerate(candidates):
        c.clip_score = float(clip_scores[i])
        g = float(grammar_probs[i]) if grammar_probs is not None else None
        c.grammar = g
        total = c.clip_score + (grammar_weight * g if g is not None else 0.0)
        keyed.append(((bool(c.text.strip()), total, float(cosines[i]), c.score), i, c))
    keyed.sort(key=lambda x: x[0], reverse=True)
    return [c for _, _, c in keyed]


def resolve_grammar(owner: Any, clip) -> GrammarScorer:
    """The grammar head to use for ``owner`` (a captioner): ``owner.grammar`` if set, else the bundled head trained
    for this CLIP backbone (loaded once and kept on ``owner``).

    Raises:
        ClipCapError: no grammar head is attached and none is bundled for this CLIP; the message says how to get one.
    """
    scorer = getattr(owner, "grammar", None) if owner is not None else None
    if scorer is not None:
        return scorer
    from .grammar import bundled_grammar_for

    scorer = bundled_grammar_for(clip)
    if scorer is None:
        raise ClipCapError(
            f"rerank='clip+grammar' needs a grammar head for CLIP {clip.name!r}, and none is attached or bundled. "
            f"Train one (`python -m lib_clipcap train grammar --clip-model ... --captions captions.txt --out DIR`) "
            f"and attach it with lib_clipcap.scoring.attach_grammar(captioner, DIR), or use rerank='clip'")
    if owner is not None:
        owner.grammar = scorer
    return scorer


def attach_grammar(owner: Any, grammar: GrammarScorer | str, *, weight: float | None = None) -> GrammarScorer:
    """Attach a grammar head (a :class:`~lib_clipcap.grammar.GrammarScorer` or its saved folder/file) to a captioner
    or blind guesser, for ``rerank="clip+grammar"``; ``weight`` sets its ``grammar_weight``."""
    from .grammar import GrammarScorer

    if not isinstance(grammar, GrammarScorer):
        grammar = GrammarScorer.load(grammar, owner.clip)
    owner.grammar = grammar
    if weight is not None:
        owner.grammar_weight = float(weight)
    return grammar


def rerank_results(results: list[CaptionResult], image_feats: torch.Tensor, clip, *, mode: str,
                   grammar: GrammarScorer | None = None, grammar_weight: float | None = None,
                   owner: Any = None) -> list[CaptionResult]:
    """Re-rank every result's candidates in place (``mode`` "clip" or "clip+grammar"; "none" does nothing).

    ``results[i]`` belongs to ``image_feats[i]``. All candidates of all results are scored in one CLIP text pass;
    each result's ``text`` and ``score`` become those of its new best candidate.
    """
    mode = check_rerank_mode(mode)
    if mode == "none" or not results:
        return results
    if mode == "clip+grammar" and grammar is None:
        grammar = resolve_grammar(owner, clip)
    if grammar_weight is None:
        grammar_weight = float(getattr(owner, "grammar_weight", DEFAULT_GRAMMAR_WEIGHT))
    texts = [[c.text for c in r.candidates] for r in results]
    cos, cs, gp = score_candidates(clip, image_feats, texts, grammar=grammar if mode == "clip+grammar" else None)
    for i, r in enumerate(results):
        if not r.candidates:
            continue
        r.candidates = rank_candidates(r.candidates, cos[i], cs[i], gp[i] if gp is not None else None,
                                       grammar_weight=grammar_weight)
        r.text, r.score = r.candidates[0].text, r.candidates[0].score
    return results
