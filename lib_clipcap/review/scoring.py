"""Scoring a review table: CLIP-S, RefCLIP-S and the grammar head, with cached image features.

The scores are :mod:`lib_clipcap.scoring`'s own (same normalisation, same ``2.5 * max(cos, 0)``, same harmonic mean
for RefCLIP-S; a test checks they agree pair by pair); what this module adds is throughput for whole datasets:

- image features come from the on-disk :class:`~lib_clipcap.review.cache.FeatureCache` when the image is unchanged;
  the others are decoded by batch tagging's loader (a background thread or worker processes, ahead of the model) and
  encoded in batches;
- text features and grammar probabilities are kept in memory per caption text, so re-scoring after an edit encodes
  only the edited captions.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..scoring import clip_score_from_cosine, harmonic_mean, text_features
from .cache import FeatureCache, cache_key
from .table import ReviewRow, ReviewTable

log = logging.getLogger(__name__)

__all__ = ["ReviewScorer", "load_review_clip"]

ProgressFn = Callable[[int, int], None]


def _inference():
    import torch

    return torch.inference_mode()


def load_review_clip(*, model: str | None = None, clip_model: str | None = None,
                     clip_pretrained: str | None = None, device: Any = None, dtype: Any = None,
                     models_dir: str | None = None) -> Any:
    """Load only the CLIP backbone a review needs: a registry model's CLIP (``model``), or any open_clip model.

    Captioning models are not loaded: scoring needs CLIP alone.

    Raises:
        UnknownModelError: ``model`` is not in the registry.
        MissingFileError: the CLIP weights are not available (offline, not downloaded).
        ClipCapError: neither or both of ``model`` and ``clip_model`` given.
    """
    from .. import hub
    from ..captioner import registry_clip
    from ..devices import device_and_dtype
    from ..clip import ClipBackbone
    from ..errors import ClipCapError

    if (model is None) == (clip_model is None):
        raise ClipCapError("give a model name (e.g. flickr8k, shapes-demo) or a CLIP model (--clip-model), not "
                           f"{'both' if model else 'neither'}")
    if model is not None:
        from ..registry import get_model

        clip_model, clip_pretrained = registry_clip(get_model(model))
    dev, dt = device_and_dtype(device, dtype)
    folder = Path(models_dir).expanduser() if models_dir else hub.default_models_dir()
    return ClipBackbone.load(clip_model, clip_pretrained, device=dev, dtype=dt, cache_dir=folder / "clip")


class ReviewScorer:
    """Scores review tables with one CLIP backbone (and optionally a grammar head).

    Args:
        clip: A :class:`~lib_clipcap.clip.ClipBackbone`.
        grammar: A :class:`~lib_clipcap.grammar.GrammarScorer` bound to ``clip``, or ``None`` (no grammar column).
        prefix: Text put before each caption for CLIP (Hessel's CLIPScore code uses ``"A photo depicts "``; the
            default is the bare caption, which is what re-ranking scores).
        batch_size: Images per CLIP batch.
        workers: Image-decoding processes (``None``: as batch tagging decides for the device).
        use_cache: Read and write the on-disk feature cache.
        memo: ``(text features, grammar probabilities)`` dicts to reuse across scorers of the same CLIP, prefix and
            grammar head (see :class:`~lib_clipcap.review.service.ReviewService`).
        tags: A :class:`~lib_clipcap.review.tags.ReviewTagScorer` for the same CLIP: each row's tags are scored
            too, from the same image features (``None``: no tag scores).
    """

    def __init__(self, clip: Any, grammar: Any = None, *, prefix: str = "", batch_size: int = 64,
                 workers: int | None = None, use_cache: bool = True,
                 memo: tuple[dict[str, Any], dict[str, float]] | None = None, tags: Any = None) -> None:
        self.clip = clip
        self.tags = tags
        self.grammar = grammar
        self.prefix = prefix
        self.batch_size = batch_size
        self.workers = workers
        self.use_cache = use_cache
        self.key = cache_key(clip)
        # Text features and grammar probabilities per caption; a server passes the same dicts to every scorer of
        # one model (``memo``) so that it need not keep the scorer, and with it the model, alive between requests.
        self._text, self._gram = memo if memo is not None else ({}, {})
        self.stats: dict[str, int] = {"images_encoded": 0, "images_cached": 0, "texts_encoded": 0}

    # -------------------------------------------------------------------------------------------------- images
    def image_features(self, rows: Sequence[ReviewRow], progress: ProgressFn | None = None, *,
                       prune: bool = False) -> dict[int, Any]:
        """Row index -> normalised image feature (1-D, CPU) for every image that loads; failures set ``row.error``.

        Args:
            prune: ``rows`` are a whole folder: drop cached features of images no longer in it (a subset, e.g. the
                rows just edited, must leave the rest of the cache alone).
        """
        from ..batch.loader import default_workers, iterate_batches

        caches: dict[str, FeatureCache] = {}
        out: dict[int, Any] = {}
        todo: list[int] = []
        shas: dict[int, str | None] = {}
        for i, r in enumerate(rows):
            sha = None
            if self.use_cache:
                cache = caches.get(r.journal_root)
                if cache is None:
                    cache = caches[r.journal_root] = FeatureCache(Path(r.journal_root), self.key, self.clip.embed_dim)
                try:
                    sha = cache.digest(r.image)
                except OSError as e:
                    r.error = f"cannot read the image: {e.strerror or e}"
                    continue
                feat = cache.get(sha)
                if feat is not None:
                    out[i] = feat
                    continue
            shas[i] = sha
            todo.append(i)
        self.stats["images_cached"] += len(out)
        device_type = self.clip.device.type
        workers = self.workers if self.workers is not None else default_workers(device_type, len(todo),
                                                                               self.batch_size)
        done = len(out)
        if progress is not None:
            progress(done, len(rows))
        if todo:
            batches = iterate_batches([rows[i].image for i in todo], self.clip.preprocess, batch_size=self.batch_size,
                                      workers=workers, pin_memory=device_type == "cuda")
            try:
                for batch in batches:
                    for pos, err in batch.errors.items():
                        rows[todo[pos]].error = err
                    if batch.ok:
                        feats = self.clip.encode_images(batch.pixels, normalize=True).float().cpu()
                        for row_i, pos in enumerate(batch.ok):
                            i = todo[pos]
                            out[i] = feats[row_i]
                            rows[i].error = None
                            sha = shas.get(i)
                            if sha is not None:
                                caches[rows[i].journal_root].put(sha, feats[row_i])
                        self.stats["images_encoded"] += len(batch.ok)
                    done += len(batch.indices)
                    if progress is not None:
                        progress(done, len(rows))
            finally:
                batches.close()
        by_root: dict[str, list[str]] = defaultdict(list)
        for r in rows:
            by_root[r.journal_root].append(r.image)
        for root, cache in caches.items():
            cache.save(keep_paths=by_root[root] if prune else None)
        return out

    # --------------------------------------------------------------------------------------------------- texts
    def text_features(self, texts: Sequence[str]) -> Any:
        """``[n, D]`` normalised text features (prefix applied), encoding only texts not seen before."""
        import torch

        new = list(dict.fromkeys(t for t in texts if t not in self._text))
        if new:
            feats = text_features(self.clip, new, prefix=self.prefix).cpu()
            self._text.update(zip(new, feats))
            self.stats["texts_encoded"] += len(new)
        if not texts:
            return torch.empty(0, self.clip.embed_dim)
        return torch.stack([self._text[t] for t in texts])

    def grammar_probs(self, texts: Sequence[str]) -> list[float]:
        """P(grammatical) per text (memoised per text)."""
        new = list(dict.fromkeys(t for t in texts if t not in self._gram))
        if new:
            g = self.grammar
            if getattr(g, "text_model", None) is None and not self.prefix and getattr(g, "clip", None) is self.clip:
                # The head reads CLIP's own normalised text features: the very ones CLIP-S just encoded, so the
                # text tower (most of the cost once images are cached) runs once per caption, not twice.
                head = g.head
                p = next(head.parameters())
                with _inference():
                    probs = head(self.text_features(new).to(p.device, p.dtype)).float().softmax(-1)[:, 1]
            else:
                probs = g.probability(new)
            self._gram.update(zip(new, probs.cpu().tolist()))
        return [self._gram[t] for t in texts]

    # --------------------------------------------------------------------------------------------------- rows
    def score(self, table: ReviewTable | Sequence[ReviewRow], *, progress: ProgressFn | None = None) -> None:
        """Fill ``clip_score``, ``grammar`` and ``ref_clip_score`` of every row that has a caption and an image (and,
        with a tag scorer, ``tag_scores`` / ``tag_min`` of every row with tags).

        The caption's body is scored (its trigger words left out: :attr:`ReviewRow.body`). Rows whose caption is
        missing, blank or nothing but triggers keep ``None`` (they are flagged instead); an image that cannot be
        loaded sets the row's ``error`` and leaves its scores ``None``. One bad file never stops the scan.
        """
        whole = isinstance(table, ReviewTable)
        rows = list(table.rows if whole else table)
        feats = self.image_features(rows, progress, prune=whole)
        if self.tags is not None:
            self.tags.score(rows, feats)  # the same image features: one matrix product more
            self.stats["tag_texts_encoded"] = self.tags.stats["tag_texts_encoded"]
        else:
            for r in rows:
                r.tag_scores, r.tag_min = None, None
        # The body is scored, never the trigger words (``sks, ...``): they mean nothing to CLIP or the grammar head
        # (see :mod:`.triggers`). A caption that is nothing but triggers has nothing to score (it is flagged).
        idx = [i for i, r in enumerate(rows) if i in feats and r.scored_text is not None and r.scored_text.strip()]
        for r in rows:
            r.clip_score = r.grammar = r.ref_clip_score = None
        if not idx:
            return
        import torch

        img = torch.stack([feats[i] for i in idx])
        caps = [rows[i].scored_text for i in idx]
        txt = self.text_features(caps)
        clip_s = clip_score_from_cosine((img * txt).sum(-1))
        gram = self.grammar_probs(caps) if self.grammar is not None else None
        with_ref = [k for k, i in enumerate(idx) if rows[i].ref_caption]
        ref_s = None
        if with_ref:
            ref_txt = self.text_features([rows[idx[k]].ref_caption for k in with_ref])
            sim = (txt[with_ref] * ref_txt).sum(-1).clamp_min(0.0)
            ref_s = harmonic_mean(clip_s[with_ref], sim)
        for k, i in enumerate(idx):
            rows[i].clip_score = float(clip_s[k])
            if gram is not None:
                rows[i].grammar = float(gram[k])
        for j, k in enumerate(with_ref):
            rows[idx[k]].ref_clip_score = float(ref_s[j])


def default_grammar(clip: Any, spec: str | None = "bundled") -> Any:
    """The grammar head for ``clip``: ``"bundled"`` (the head shipped for this CLIP, ``None`` when there is none),
    ``None``/``"none"`` (no grammar column), or a folder / ``grammar.safetensors`` path.

    Raises:
        MissingFileError, IncompatibleCheckpointError: a given head cannot be used with ``clip``.
    """
    if spec is None or spec == "none":
        return None
    from ..grammar import GrammarScorer, bundled_grammar_for

    if spec == "bundled":
        return bundled_grammar_for(clip)
    return GrammarScorer.load(os.path.expanduser(spec), clip)
