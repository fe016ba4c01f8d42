"""Retrieval baselines: captions copied from the training split, so every table can answer "did training beat
copying?".

Both baselines compare images by the cosine similarity of their CLIP image features (the same features a ClipCap
model is trained on; L2-normalised here whatever the features folder stores):

``nearest``
    The first reference caption of the most similar training image.
``consensus``
    Devlin et al. 2015 ("Exploring Nearest Neighbor Approaches for Image Captioning"): pool the references of the
    ``k`` most similar training images and return the pooled caption with the highest mean similarity to the other
    pooled captions. Similarity is CIDEr's: the mean over n = 1..4 of the cosine between TF-IDF n-gram vectors, with
    document frequencies counted over the training images' reference sets (one document per image). ``k`` defaults to
    :data:`DEFAULT_K`; Devlin et al. tuned k on validation data (k = 90 on COCO's 80k images, with 5 captions each).
    A smaller k suits smaller training sets: on a few thousand images, 90 neighbours reach images with other content.

The consensus caption is "the caption most of the neighbours agree with", which is what n-gram metrics reward; it is
the stronger of the two and the one a trained captioner should beat.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import ClipCapError

if TYPE_CHECKING:  # pragma: no cover
    import torch

METHODS = ("nearest", "consensus")
DEFAULT_K = 10
MAX_N = 4  # n-gram orders 1..4, as CIDEr
_WORD = re.compile(r"[a-z0-9]+")


@dataclass
class RetrievalPick:
    """One query's retrieved caption, and the training images it came from (most similar first)."""

    caption: str
    neighbours: list[int]
    source: int  # index of the training image whose reference was picked


def words(text: str) -> list[str]:
    """Lower-cased words without punctuation (close to what the PTB tokenizer leaves for n-gram metrics)."""
    return _WORD.findall(text.lower())


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


class NgramSimilarity:
    """CIDEr-style caption similarity: TF-IDF n-gram vectors (n = 1..4), cosine per n, averaged over n.

    Args:
        documents: one list of captions per training image; an n-gram's document frequency is the number of images
            whose references contain it (as CIDEr counts it).
    """

    def __init__(self, documents: Sequence[Sequence[str]]) -> None:
        self.num_docs = max(1, len(documents))
        df: Counter = Counter()
        for refs in documents:
            seen = set()
            for c in refs:
                t = words(c)
                for n in range(1, MAX_N + 1):
                    seen.update(_ngrams(t, n))
            df.update(seen)
        self._log_n = math.log(float(self.num_docs))
        self._df = df

    def vector(self, caption: str) -> list[dict[tuple[str, ...], float]]:
        """Unit-length TF-IDF vectors of ``caption``, one per n-gram order (empty when it has no such n-gram)."""
        t = words(caption)
        out = []
        for n in range(1, MAX_N + 1):
            counts = _ngrams(t, n)
            total = max(1, sum(counts.values()))
            v = {g: (c / total) * (self._log_n - math.log(max(1.0, float(self._df.get(g, 0)))))
                 for g, c in counts.items()}
            norm = math.sqrt(sum(x * x for x in v.values()))
            out.append({g: x / norm for g, x in v.items()} if norm > 0 else {})
        return out

    def similarity(self, a: str, b: str) -> float:
        """Mean over n of the cosine between the two captions' TF-IDF n-gram vectors (0..1)."""
        va, vb = self.vector(a), self.vector(b)
        return sum(sum(x * vb[n].get(g, 0.0) for g, x in va[n].items()) for n in range(MAX_N)) / MAX_N


def consensus_index(vectors: Sequence[list[dict]]) -> int:
    """Index of the caption with the highest mean similarity to the others (ties: the first).

    With unit vectors the sum of similarities of caption i to all others is ``v_i . (S - v_i)`` where S is the sum
    of all vectors, so the whole pool costs one pass instead of all pairs.
    """
    if len(vectors) == 1:
        return 0
    sums: list[dict] = [{} for _ in range(MAX_N)]
    for v in vectors:
        for n in range(MAX_N):
            s = sums[n]
            for g, x in v[n].items():
                s[g] = s.get(g, 0.0) + x
    best, best_score = 0, -math.inf
    for i, v in enumerate(vectors):
        score = 0.0
        for n in range(MAX_N):
            s = sums[n]
            score += sum(x * (s[g] - x) for g, x in v[n].items())
        if score > best_score + 1e-12:
            best, best_score = i, score
    return best


def _unit(x: torch.Tensor) -> torch.Tensor:
    x = x.float()
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def nearest_images(train_features: torch.Tensor, query_features: torch.Tensor, k: int, *,
                   chunk: int = 1024) -> torch.Tensor:
    """Indices ``[M, k]`` of the ``k`` training images most similar (cosine) to each query, most similar first."""
    import torch

    train = _unit(train_features)
    k = min(k, train.shape[0])
    out = []
    for start in range(0, query_features.shape[0], chunk):
        sims = _unit(query_features[start:start + chunk]).to(train.device) @ train.T
        out.append(sims.topk(k, dim=1).indices.cpu())
    return torch.cat(out) if out else torch.empty(0, k, dtype=torch.long)


def retrieve_captions(train_features: torch.Tensor, train_captions: Sequence[Sequence[str]],
                      query_features: torch.Tensor, *, method: str = "consensus", k: int = DEFAULT_K
                      ) -> list[RetrievalPick]:
    """Caption each query image by retrieval from the training images.

    Args:
        train_features: ``[N, D]`` CLIP features of the training images (raw or normalised).
        train_captions: the N training images' references.
        query_features: ``[M, D]`` features of the images to caption (same backbone).
        method: ``"nearest"`` or ``"consensus"`` (see the module docstring).
        k: neighbours pooled by ``consensus`` (ignored by ``nearest``).

    Raises:
        ClipCapError: an unknown method, k < 1, no training images, or features of different sizes.
    """
    if method not in METHODS:
        raise ClipCapError(f"unknown retrieval baseline {method!r}; use one of {', '.join(METHODS)}")
    if k < 1:
        raise ClipCapError(f"the consensus baseline needs k >= 1 neighbours; got {k}")
    if len(train_captions) == 0 or train_features.shape[0] == 0:
        raise ClipCapError("retrieval baselines need training images; the training split is empty")
    if train_features.shape[0] != len(train_captions):
        raise ClipCapError(f"{train_features.shape[0]} training features but {len(train_captions)} caption lists")
    if query_features.shape[-1] != train_features.shape[-1]:
        raise ClipCapError(f"query features have size {query_features.shape[-1]} but training features "
                           f"{train_features.shape[-1]}: they must come from the same CLIP backbone")
    if method == "nearest":
        nn = nearest_images(train_features, query_features, 1)
        return [RetrievalPick(train_captions[int(row[0])][0], [int(row[0])], int(row[0])) for row in nn]
    sim = NgramSimilarity(train_captions)
    cache: dict[str, list[dict]] = {}
    picks = []
    for row in nearest_images(train_features, query_features, k).tolist():
        pool = [(i, c) for i in row for c in train_captions[i]]
        vecs = []
        for _, c in pool:
            if c not in cache:
                cache[c] = sim.vector(c)
            vecs.append(cache[c])
        j = consensus_index(vecs)
        picks.append(RetrievalPick(pool[j][1], row, pool[j][0]))
    return picks


def baseline_name(method: str, k: int = DEFAULT_K) -> str:
    """The table row name of a baseline."""
    return "baseline: nearest neighbour" if method == "nearest" else f"baseline: consensus (k={k})"


@dataclass
class RetrievalInputs:
    """What a retrieval baseline needs: the training gallery and the query images' features."""

    train_features: torch.Tensor
    train_captions: list[list[str]]
    train_ids: list[str]
    query_features: torch.Tensor
    query_valid: torch.Tensor  # [M] bool: False where the image could not be read


def encode_images(clip, paths: Sequence[str], *, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features [n, D], valid [n])`` of image files; an unreadable image gets zeros and ``valid=False``."""
    import torch

    from ..images import try_load_image

    feats = torch.zeros(len(paths), clip.embed_dim)
    valid = torch.zeros(len(paths), dtype=torch.bool)
    for start in range(0, len(paths), batch_size):
        loaded = [(start + i, try_load_image(str(p))) for i, p in enumerate(paths[start:start + batch_size])]
        good = [(i, img) for i, (img, err) in loaded if err is None]
        if good:
            with torch.no_grad():
                f = clip.encode_images(clip.preprocess_images([img for _, img in good]), normalize=True)
            for (i, _), row in zip(good, f.float().cpu()):
                feats[i], valid[i] = row, True
    return feats, valid


def retrieval_inputs(dataset, *, features=None, train_dataset=None, clip=None,
                     batch_size: int = 64) -> RetrievalInputs:
    """The training gallery and the features of ``dataset``'s images, from a features folder or computed.

    Args:
        dataset: the :class:`~lib_clipcap.eval.datasets.EvalDataset` being evaluated.
        features: a features folder from ``train features`` (or a loaded FeatureSet) holding both the training
            split and ``dataset``'s images; reused as is, so the baseline sees exactly what training saw.
        train_dataset: without ``features``: the training split, whose images are encoded with ``clip``.
        clip: the backbone to encode images with when no features folder is given.

    Raises:
        ClipCapError: neither features nor (train_dataset and clip) given, or an image has no stored features.
    """
    import torch

    if features is not None:
        from ..train.features import FeatureSet, load_features

        fs = features if isinstance(features, FeatureSet) else load_features(features)
        gallery = fs.select("train")
        if len(gallery) == 0:
            raise ClipCapError(f"the features folder {fs.meta.get('source', '')!r} has no training split to retrieve "
                               f"from; extract features of the whole dataset (`train features ... --split all`)")
        where = {iid: i for i, iid in enumerate(fs.image_ids)}
        missing = [it.image_id for it in dataset.items if it.image_id not in where]
        if missing:
            raise ClipCapError(f"the features folder has no features for {len(missing)} evaluated image(s), e.g. "
                               f"{missing[0]!r}: extract features of the whole dataset (`train features ... --split "
                               f"all`) or leave out --features to compute them")
        idx = torch.tensor([where[it.image_id] for it in dataset.items], dtype=torch.long)
        valid = fs.valid[idx] if fs.valid is not None else torch.ones(len(idx), dtype=torch.bool)
        return RetrievalInputs(gallery.features, [list(c) for c in gallery.captions], list(gallery.image_ids),
                               fs.features[idx], valid)
    if train_dataset is None or clip is None:
        raise ClipCapError("retrieval baselines need the training images' features: give a features folder "
                           "(--features, from `train features`) or a CLIP (--clip-model/--clip-pretrained) to "
                           "compute them")
    train_feats, train_ok = encode_images(clip, [str(it.path) for it in train_dataset.items], batch_size=batch_size)
    keep = [i for i in range(len(train_dataset)) if bool(train_ok[i])]
    query, ok = encode_images(clip, [str(it.path) for it in dataset.items], batch_size=batch_size)
    return RetrievalInputs(train_feats[keep], [list(train_dataset.items[i].references) for i in keep],
                           [train_dataset.items[i].image_id for i in keep], query, ok)
