"""Caption metrics: pycocoevalcap's reference implementations, plus CLIP-S / RefCLIP-S from :mod:`lib_clipcap.scoring`.

What the papers report, computed the way they computed it:

- BLEU-1..4, METEOR, ROUGE-L, CIDEr (and SPICE when its models are installed) from ``pycocoevalcap`` on captions
  tokenised by its Stanford PTB tokenizer (lower-case, punctuation removed). No metric is re-implemented here, so a
  score equals a direct pycocoevalcap call (``tests/test_eval_metrics.py`` checks it to 1e-6).
- CLIP-S = ``2.5 * max(cos(image, caption), 0)`` and RefCLIP-S (Hessel et al. 2021), by default with Hessel's
  ``"A photo depicts "`` text prefix, with any open_clip backbone.
- FineCapEval's criteria (background / object / relation): the share of each reference phrase's words found in the
  caption, averaged over phrases and images, as Cho et al.'s ``eval_finecapeval.py`` computes it (its Porter stemming
  is applied when ``nltk`` is installed).

The PTB tokenizer, METEOR and SPICE run Java (``java`` on the PATH; any JRE >= 8). SPICE also needs Stanford
CoreNLP 3.6.0, which pycocoevalcap downloads on first use into its own folder; without it (offline) SPICE is skipped
and :attr:`MetricResult.skipped` says why and how to get it.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ClipCapError

log = logging.getLogger(__name__)

TEXT_METRICS = ("bleu", "meteor", "rouge", "cider", "spice")
ALL_METRICS = (*TEXT_METRICS, "clip")
# Score names as reported (pycocoevalcap's Bleu_1/ROUGE_L renamed to the papers' spelling).
SCORE_NAMES = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "SPICE", "CLIP-S", "RefCLIP-S")


class MetricsError(ClipCapError, RuntimeError):
    """A metric cannot run (no Java runtime, a scorer crashed); the message says what to install or change."""


@dataclass
class MetricResult:
    """Corpus scores, per-image scores and the metrics that were skipped (with the reason)."""

    scores: dict[str, float] = field(default_factory=dict)
    per_image: dict[str, dict[str, float]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    tokenizer: str = "ptb"

    def merge(self, other: MetricResult) -> MetricResult:
        self.scores.update(other.scores)
        for k, v in other.per_image.items():
            self.per_image.setdefault(k, {}).update(v)
        self.skipped.update(other.skipped)
        return self


# ---------------------------------------------------------------------------------------------- environment
def java_path() -> str | None:
    """The ``java`` executable pycocoevalcap will run, or None."""
    return shutil.which("java")


def _require_java(what: str) -> None:
    if java_path() is None:
        raise MetricsError(f"{what} needs a Java runtime (pycocoevalcap runs Stanford's tools): install one "
                           f"(Debian/Ubuntu: apt-get install default-jre-headless; macOS: brew install openjdk) "
                           f"and make sure `java` is on the PATH")


def spice_unavailable() -> str | None:
    """Why SPICE cannot run here (None when it can)."""
    if java_path() is None:
        return "no Java runtime on the PATH"
    try:
        import pycocoevalcap.spice.spice as spice_mod
    except ImportError as e:
        return f"pycocoevalcap is not installed ({e})"
    lib = Path(spice_mod.__file__).parent / "lib"
    jar = lib / "stanford-corenlp-3.6.0.jar"
    models = lib / "stanford-corenlp-3.6.0-models.jar"
    missing = [p.name for p in (jar, models) if not p.is_file()]
    if missing:
        return (f"Stanford CoreNLP 3.6.0 is not installed ({', '.join(missing)} missing in {lib}); pycocoevalcap "
                f"downloads it on first use of SPICE with network access (`python -c \"from pycocoevalcap.spice."
                f"spice import Spice; Spice()\"`), or copy both jars there by hand")
    return None


def _import_pycocoevalcap():
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.meteor.meteor import Meteor
        from pycocoevalcap.rouge.rouge import Rouge
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    except ImportError as e:
        raise MetricsError(f"caption metrics need pycocoevalcap: pip install pycocoevalcap ({e})") from e
    return Bleu, Meteor, Rouge, Cider, PTBTokenizer


# ----------------------------------------------------------------------------------------------- tokenizing
_PUNCT = re.compile(r"[^\w\s']|(?<!\w)'|'(?!\w)")


def simple_tokenize(captions: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """A Java-free approximation of the PTB tokenizer (lower-case, punctuation removed). Scores computed on it are
    NOT comparable with published numbers; it exists for machines without Java and is labelled in every report."""
    return {k: [" ".join(_PUNCT.sub(" ", c.lower()).split()) for c in v] for k, v in captions.items()}


def ptb_tokenize(captions: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """pycocoevalcap's PTB tokenizer: ``{id: [caption, ...]}`` -> ``{id: [tokenised caption, ...]}``.

    Raises:
        MetricsError: no Java runtime.
    """
    _require_java("the PTB tokenizer")
    *_, PTBTokenizer = _import_pycocoevalcap()
    data = {k: [{"caption": c} for c in v] for k, v in captions.items()}
    return PTBTokenizer().tokenize(data)


# -------------------------------------------------------------------------------------------------- scoring
def compute_metrics(references: Mapping[str, Sequence[str]], candidates: Mapping[str, str], *,
                    metrics: Sequence[str] = TEXT_METRICS, tokenizer: str = "ptb") -> MetricResult:
    """Score ``candidates`` against ``references`` with pycocoevalcap.

    Args:
        references: ``{image_id: [reference captions]}``.
        candidates: ``{image_id: caption}``; must have exactly the same ids.
        metrics: any of ``bleu``, ``meteor``, ``rouge``, ``cider``, ``spice`` (``clip`` is :func:`clip_metrics`).
        tokenizer: ``"ptb"`` (pycocoevalcap's, as the papers), ``"simple"`` (no Java; not comparable with papers)
            or ``"none"`` (captions are already tokenised).

    Returns:
        A :class:`MetricResult` with ``BLEU-1..4``, ``METEOR``, ``ROUGE-L``, ``CIDEr``, ``SPICE`` as fractions
        (multiply by 100 for the COCO tables), per-image scores, and skipped metrics with their reason.

    Raises:
        ValueError: ids differ, or an unknown metric/tokenizer is asked for.
        MetricsError: Java is needed (PTB tokenizer, METEOR) and missing.
    """
    ids = list(references)
    if set(ids) != set(candidates):
        missing = sorted(set(ids) - set(candidates))[:3]
        extra = sorted(set(candidates) - set(ids))[:3]
        raise ValueError(f"candidates and references must have the same image ids (missing {missing}, extra {extra})")
    if not ids:
        raise ValueError("nothing to score: no images")
    if any(len(references[k]) == 0 for k in ids):
        raise ValueError("every image needs at least one reference caption")
    unknown = [m for m in metrics if m not in TEXT_METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; use {', '.join(TEXT_METRICS)} (and 'clip' via clip_metrics)")
    result = MetricResult(tokenizer=tokenizer)
    if tokenizer == "ptb":
        gts = ptb_tokenize({k: list(references[k]) for k in ids})
        res = ptb_tokenize({k: [candidates[k]] for k in ids})
    elif tokenizer == "simple":
        gts = simple_tokenize({k: list(references[k]) for k in ids})
        res = simple_tokenize({k: [candidates[k]] for k in ids})
    elif tokenizer == "none":
        gts = {k: list(references[k]) for k in ids}
        res = {k: [candidates[k]] for k in ids}
    else:
        raise ValueError(f"tokenizer must be ptb, simple or none; got {tokenizer!r}")
    Bleu, Meteor, Rouge, Cider, _ = _import_pycocoevalcap()

    def per_image(name: str, values: Sequence[float], order: Sequence[str]) -> None:
        for k, v in zip(order, values):
            result.per_image.setdefault(k, {})[name] = float(v)

    keys = list(gts.keys())
    if "bleu" in metrics:
        score, scores = Bleu(4).compute_score(gts, res, verbose=0)
        for n in range(4):
            result.scores[f"BLEU-{n + 1}"] = float(score[n])
            per_image(f"BLEU-{n + 1}", scores[n], keys)
    if "meteor" in metrics:
        if java_path() is None:
            result.skipped["METEOR"] = "no Java runtime on the PATH (METEOR 1.5 is a Java program)"
        else:
            scorer = Meteor()
            try:
                score, scores = scorer.compute_score(gts, res)
            finally:
                _close_meteor(scorer)
            result.scores["METEOR"] = float(score)
            per_image("METEOR", scores, keys)
    if "rouge" in metrics:
        score, scores = Rouge().compute_score(gts, res)
        result.scores["ROUGE-L"] = float(score)
        per_image("ROUGE-L", scores, keys)
    if "cider" in metrics:
        score, scores = Cider().compute_score(gts, res)
        result.scores["CIDEr"] = float(score)
        per_image("CIDEr", scores, keys)
    if "spice" in metrics:
        why = spice_unavailable()
        if why:
            result.skipped["SPICE"] = why
        else:
            from pycocoevalcap.spice.spice import Spice

            score, scores = Spice().compute_score(gts, res)
            result.scores["SPICE"] = float(score)
            per_image("SPICE", [s["All"]["f"] for s in scores], sorted(keys))
    return result


def _close_meteor(scorer) -> None:
    """Stop METEOR's Java process now rather than whenever the garbage collector runs ``__del__``."""
    proc = getattr(scorer, "meteor_p", None)
    if proc is None:
        return
    try:
        proc.stdin.close()
        proc.kill()
        proc.wait(timeout=10)
    except (OSError, ValueError):
        pass
    scorer.meteor_p = _Closed()


class _Closed:
    """Stands in for the finished METEOR process so pycocoevalcap's ``__del__`` has nothing left to do."""

    class _In:
        def close(self) -> None:
            pass

    stdin = _In()

    def kill(self) -> None:
        pass

    def wait(self, timeout: float | None = None) -> int:
        return 0


def clip_metrics(clip, image_features, candidates: Sequence[str], references: Sequence[Sequence[str]] | None = None,
                 *, prefix: str = "A photo depicts ", ids: Sequence[str] | None = None) -> MetricResult:
    """CLIP-S (and RefCLIP-S when references are given) of each caption with its image, and their means.

    Args:
        clip: an open_clip backbone (:class:`~lib_clipcap.clip.ClipBackbone`); Hessel et al. used ViT-B/32.
        image_features: ``[n, D]`` image features of that backbone (raw or normalised), or n images.
        candidates: n captions.
        references: per image, its references (RefCLIP-S).
        prefix: text put before every caption and reference (Hessel's code uses ``"A photo depicts "``).
        ids: image ids for the per-image scores (default ``"0".."n-1"``).
    """
    from ..scoring import clip_score, ref_clip_score

    ids = list(ids) if ids is not None else [str(i) for i in range(len(candidates))]
    result = MetricResult(tokenizer="clip")
    cs = clip_score(clip, image_features, list(candidates), prefix=prefix)
    result.scores["CLIP-S"] = float(cs.mean()) if len(cs) else 0.0
    for k, v in zip(ids, cs.tolist()):
        result.per_image.setdefault(k, {})["CLIP-S"] = v
    if references is not None:
        rs = ref_clip_score(clip, image_features, list(candidates), [list(r) for r in references], prefix=prefix)
        result.scores["RefCLIP-S"] = float(rs.mean()) if len(rs) else 0.0
        for k, v in zip(ids, rs.tolist()):
            result.per_image[k]["RefCLIP-S"] = v
    return result


# ---------------------------------------------------------------------------------------------- FineCapEval
def _stemmer():
    try:
        from nltk.stem.porter import PorterStemmer
    except ImportError:
        return None
    return PorterStemmer()


def finecap_scores(candidates: Mapping[str, str], criteria: Mapping[str, Mapping[str, Sequence[str]]]
                   ) -> MetricResult:
    """FineCapEval's fine-grained criteria: for each image and criterion, the mean over reference phrases of the share
    of the phrase's words that occur in the caption; averaged over images (as ``eval_finecapeval.py``).

    Args:
        candidates: ``{image_id: caption}``.
        criteria: ``{image_id: {"background": [phrases], "object": [...], "relation": [...]}}``.
    """
    stem = _stemmer()
    result = MetricResult(tokenizer="finecap")
    if stem is None:
        result.skipped["FineCap-stemming"] = "nltk is not installed: phrases are matched without Porter stemming"
    names = sorted({c for v in criteria.values() for c in v})
    for crit in names:
        total, n = 0.0, 0
        for k, groups in criteria.items():
            phrases = groups.get(crit, [])
            pred = candidates.get(k, "").lower()
            score = 0.0
            for ph in phrases:
                words = [re.sub(r"[^a-zA-Z0-9]", "", stem.stem(w) if stem else w) for w in ph.split()]
                words = [w for w in words if w]
                if words:
                    score += sum(w in pred for w in words) / len(words)
            score = score / len(phrases) if phrases else 0.0
            result.per_image.setdefault(k, {})[f"FineCap-{crit}"] = score
            total += score
            n += 1
        result.scores[f"FineCap-{crit}"] = total / n if n else 0.0
    return result
