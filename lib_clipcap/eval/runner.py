"""Caption a dataset with a model and score the captions: the code behind ``python -m lib_clipcap eval``.

``model`` is anything with the captioner interface: a :class:`~lib_clipcap.captioner.Captioner` (ClipCap, any
registry model or local checkpoint, any decoding setting) or a :class:`~lib_clipcap.sbg.BlindGuesser` (SBG with
``top_k_candidates`` = 1, 2, 5 for the paper's rows). Images are decoded in a background thread while the model runs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .datasets import EvalDataset
from .metrics import TEXT_METRICS, MetricResult, clip_metrics, compute_metrics, finecap_scores

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    """Everything one evaluation produced: corpus scores, skipped metrics, settings and per-image captions."""

    name: str
    dataset: str
    split: str
    images: int
    scores: dict[str, float]
    skipped: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    per_image: list[dict[str, Any]] = field(default_factory=list)
    failed: int = 0
    seconds: float = 0.0
    tokenizer: str = "ptb"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvalResult:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def _load_batch(paths: Sequence[Path]):
    from ..images import try_load_image

    return [try_load_image(str(p)) for p in paths]


def generate_captions(model, dataset: EvalDataset, *, batch_size: int = 16, progress: bool = False,
                      **caption_kwargs: Any) -> list:
    """Caption every item of ``dataset``; returns one :class:`~lib_clipcap.results.CaptionResult` per item.

    Images of the next batch are decoded in a background thread while the model captions the current one. An image
    that cannot be read yields a result with ``error`` set (and an empty caption).
    """
    from ..results import CaptionResult

    items = dataset.items
    batches = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
    out: list = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(items), desc=f"captioning {dataset.name}", unit="img")
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(_load_batch, [it.path for it in batches[0]]) if batches else None
        for b, batch in enumerate(batches):
            loaded = pending.result()
            if b + 1 < len(batches):
                pending = pool.submit(_load_batch, [it.path for it in batches[b + 1]])
            good = [(i, img) for i, (img, err) in enumerate(loaded) if err is None]
            results: list = [None] * len(batch)
            for i, (img, err) in enumerate(loaded):
                if err is not None:
                    results[i] = CaptionResult(text="", score=None, source=str(batch[i].path), error=err)
            if good:
                caps = model.caption([img for _, img in good], batch_size=len(good), **caption_kwargs)
                for (i, _), r in zip(good, caps):
                    r.source = str(batch[i].path)
                    results[i] = r
            out.extend(results)
            if bar is not None:
                bar.update(len(batch))
    if bar is not None:
        bar.close()
    return out


def evaluate(model, dataset: EvalDataset, *, metrics: Sequence[str] = (*TEXT_METRICS, "clip"),
             tokenizer: str = "ptb", score_clip=None, clip_prefix: str = "A photo depicts ", batch_size: int = 16,
             name: str | None = None, lowercase: bool = False, progress: bool = False,
             settings: dict[str, Any] | None = None, **caption_kwargs: Any) -> EvalResult:
    """Caption ``dataset`` with ``model`` and score the captions.

    Args:
        model: a Captioner or BlindGuesser (anything with ``.caption(images, batch_size=..., **kwargs)``).
        dataset: from :func:`~lib_clipcap.eval.datasets.load_dataset`.
        metrics: ``bleu``, ``meteor``, ``rouge``, ``cider``, ``spice``, ``clip`` (CLIP-S + RefCLIP-S).
        tokenizer: ``"ptb"`` (the papers'), ``"simple"`` (no Java; not comparable with published numbers).
        score_clip: the CLIP backbone for CLIP-S (default: the model's own; Hessel et al. used ViT-B/32).
        clip_prefix: text put before captions for CLIP-S (Hessel's ``"A photo depicts "``; ``""`` for none).
        batch_size: images per model call.
        name: the row's name in tables (default: the model's name).
        lowercase: lower-case generated captions before scoring (the PTB tokenizer does it anyway).
        settings: extra settings to record (decoding, checkpoint...).
        caption_kwargs: passed to ``model.caption`` (``decoding``, ``beam_size``, ``top_k_candidates``, ``seed``...).

    Returns:
        An :class:`EvalResult`; ``per_image`` holds each image's caption, candidates, references and scores.
    """
    t0 = time.perf_counter()
    results = generate_captions(model, dataset, batch_size=batch_size, progress=progress, **caption_kwargs)
    clip = score_clip if score_clip is not None else model.clip
    return score_results(dataset, results, metrics=metrics, tokenizer=tokenizer, clip=clip, clip_prefix=clip_prefix,
                         batch_size=batch_size,
                         name=name or getattr(model, "name", "") or type(model).__name__, lowercase=lowercase,
                         settings={**(settings or {}),
                                   **{k: v for k, v in caption_kwargs.items() if _jsonable(v)}}, started=t0)


def score_results(dataset: EvalDataset, results: Sequence, *, metrics: Sequence[str] = (*TEXT_METRICS, "clip"),
                  tokenizer: str = "ptb", clip=None, clip_prefix: str = "A photo depicts ", batch_size: int = 16,
                  name: str = "", lowercase: bool = False, settings: dict[str, Any] | None = None,
                  extra: Sequence[dict[str, Any]] | None = None, started: float | None = None) -> EvalResult:
    """Score one caption per dataset item (CaptionResults, in the dataset's order) and build the :class:`EvalResult`.

    ``clip`` is the backbone for CLIP-S / RefCLIP-S; without one those two are skipped (with the reason).
    ``extra``: per item, more fields for its ``per_image`` row (e.g. the training images a baseline copied from).
    """
    t0 = time.perf_counter() if started is None else started
    ids = [it.image_id for it in dataset.items]
    texts = [r.text.lower() if lowercase else r.text for r in results]
    refs = dataset.references()
    text_metrics = [m for m in metrics if m in TEXT_METRICS]
    scored = MetricResult(tokenizer=tokenizer)
    if text_metrics:
        scored = compute_metrics(refs, dict(zip(ids, texts)), metrics=text_metrics, tokenizer=tokenizer)
    if "clip" in metrics and clip is None:
        why = "no CLIP model to score with (give --clip-model/--clip-pretrained or --score-clip-model)"
        scored.skipped.update({"CLIP-S": why, "RefCLIP-S": why})
    elif "clip" in metrics:
        ok = [i for i, r in enumerate(results) if r.ok]
        if ok:
            from ..scoring import image_features

            feats = image_features(clip, [str(dataset.items[i].path) for i in ok], batch_size=batch_size)
            cm = clip_metrics(clip, feats, [texts[i] for i in ok], [dataset.items[i].references for i in ok],
                              prefix=clip_prefix, ids=[ids[i] for i in ok])
            # Unreadable images score 0 (as an empty caption would), so failures cannot raise the mean.
            n = len(results)
            for key in ("CLIP-S", "RefCLIP-S"):
                cm.scores[key] = cm.scores[key] * len(ok) / n
            scored.merge(cm)
    if any(it.criteria for it in dataset.items):
        scored.merge(finecap_scores(dict(zip(ids, texts)), {it.image_id: it.criteria for it in dataset.items}))
    per_image = []
    for j, (it, r, text) in enumerate(zip(dataset.items, results, texts)):
        row: dict[str, Any] = {"image_id": it.image_id, "file": str(it.path), "caption": text,
                               "references": it.references, "scores": scored.per_image.get(it.image_id, {})}
        if len(r.candidates) > 1:
            row["candidates"] = [{"text": c.text, "score": c.score, "clip_score": c.clip_score}
                                 for c in r.candidates]
        if r.keywords:
            row["keywords"] = r.keywords
        if r.error:
            row["error"] = r.error
        if extra is not None:
            row.update(extra[j])
        per_image.append(row)
    failed = sum(1 for r in results if not r.ok)
    if failed:
        log.warning("%d of %d images could not be captioned (scored as empty captions)", failed, len(results))
    return EvalResult(
        name=name, dataset=dataset.name, split=dataset.split, images=len(dataset), scores=scored.scores,
        skipped=scored.skipped, settings={**(settings or {}), "clip_prefix": clip_prefix, "tokenizer": tokenizer},
        per_image=per_image, failed=failed, seconds=time.perf_counter() - t0, tokenizer=tokenizer,
    )


def evaluate_baseline(dataset: EvalDataset, method: str, *, train_features, train_captions: Sequence[Sequence[str]],
                      query_features, valid=None, k: int | None = None, train_ids: Sequence[str] | None = None,
                      metrics: Sequence[str] = (*TEXT_METRICS, "clip"), tokenizer: str = "ptb", clip=None,
                      clip_prefix: str = "A photo depicts ", batch_size: int = 16, name: str | None = None,
                      settings: dict[str, Any] | None = None) -> EvalResult:
    """Caption ``dataset`` by retrieval from the training images (:mod:`.baselines`) and score it like a model.

    Args:
        method: ``"nearest"`` or ``"consensus"``.
        train_features: ``[N, D]`` features of the training images; ``train_captions`` their references.
        query_features: ``[len(dataset), D]`` features of the dataset's images, same backbone and order.
        valid: optional ``[len(dataset)]`` bools; an image whose features could not be computed (False) is scored
            as an empty caption, as a model's unreadable image is.
        k: neighbours of the consensus baseline (default :data:`~.baselines.DEFAULT_K`).
        train_ids: the training images' ids, to record which image each caption was copied from.
        clip: backbone for CLIP-S / RefCLIP-S (None: skipped).
    """
    from ..results import CaptionResult
    from .baselines import DEFAULT_K, baseline_name, retrieve_captions

    t0 = time.perf_counter()
    k = DEFAULT_K if k is None else k
    picks = retrieve_captions(train_features, train_captions, query_features, method=method, k=k)
    results, extra = [], []
    for j, (it, p) in enumerate(zip(dataset.items, picks)):
        if valid is not None and not bool(valid[j]):
            results.append(CaptionResult(text="", score=None, source=str(it.path), error="image could not be read"))
            extra.append({})
            continue
        results.append(CaptionResult(text=p.caption, score=None, source=str(it.path)))
        extra.append({"copied_from": train_ids[p.source] if train_ids is not None else p.source})
    run_settings = {**(settings or {}), "baseline": method, "train_images": len(train_captions)}
    if method == "consensus":
        run_settings.update(k=k, similarity="CIDEr-style TF-IDF n-gram cosine, n=1..4")
    return score_results(dataset, results, metrics=metrics, tokenizer=tokenizer, clip=clip, clip_prefix=clip_prefix,
                         batch_size=batch_size, name=name or baseline_name(method, k), settings=run_settings,
                         extra=extra, started=t0)


def _jsonable(v: Any) -> bool:
    return isinstance(v, (str, int, float, bool, type(None), list, tuple))

