"""Zero-shot keywords for Selective Blind Guessing: CLIP scores an image against a vocabulary and a hierarchy.

Per image (the paper's steps 1-2, as the original extension ran them):

1. ``softmax(100 * cos(image, word))`` over the vocabulary; keywords are taken best first until their probability
   mass passes ``threshold`` (default 0.5; the keyword that crosses it is kept).
2. The hierarchy adds keywords: the best prime prompt ("picture of people and animal.") picks branches (plus the
   ``always`` ones); each branch's levels add their best label(s) and, under them, the best tertiary words; then the
   context levels (time of day; weather unless an indoor keyword was chosen; activity only with people or animals).
3. Keywords are ordered by CLIP similarity to the image and returned with the prompt ``"k1, k2, k3 ###"``.

Speed: every text the hierarchy can ever score (vocabulary, prime prompts, every level's labels and tertiary words,
and the bare keywords used for the final ordering) is encoded once per CLIP model and vocabulary, cached in memory
and on disk (:class:`TextFeatureCache`), and a batch of images is scored against all of them with one matrix product.
The original re-encoded the tertiary words, the final keywords and the candidates for every image.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..fileio import cache_file_name, read_keyed_tensors, write_keyed_tensors
from .vocabulary import Level, Vocabulary, load_vocabulary

log = logging.getLogger(__name__)

TEMPERATURE = 100.0  # CLIP's logit scale, as the original's softmax(100 * cos)
CACHE_FORMAT = 1


def clip_fingerprint(clip) -> str:
    """Identify a CLIP text encoder by name and weights: a hash of the last text-tower tensors (projection, final
    norm), cheap even for ViT-L-14, and different after any retraining or dtype change."""
    h = hashlib.sha256(f"{clip.name}|{clip.pretrained}".encode())
    params = [(n, p) for n, p in clip.model.named_parameters()
              if not n.startswith("visual.") and n not in ("logit_scale", "logit_bias")]
    for name, p in params[-3:]:
        h.update(name.encode())
        h.update(str(p.dtype).encode())
        h.update(p.detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class TextFeatureCache:
    """CLIP text features of a fixed list of texts, kept in memory and in ``folder`` as safetensors.

    The key is the CLIP fingerprint plus a hash of the texts in order, so a changed vocabulary, template or model
    never reads stale features. ``encode_calls`` counts real encodings (tests use it to prove cache hits).
    """

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder).expanduser() if folder else None
        self._memory: dict[str, torch.Tensor] = {}
        self._lock = threading.Lock()
        self.encode_calls = 0

    @staticmethod
    def key(clip, texts: Sequence[str]) -> str:
        h = hashlib.sha256(f"v{CACHE_FORMAT}|{clip_fingerprint(clip)}|{len(texts)}".encode())
        for t in texts:
            h.update(t.encode("utf-8") + b"\x00")
        return h.hexdigest()

    def path(self, clip, key: str) -> Path | None:
        return None if self.folder is None else self.folder / cache_file_name(clip.name, key, 20)

    def get(self, clip, texts: Sequence[str], *, batch_size: int = 256) -> torch.Tensor:
        """``[len(texts), embed_dim]`` L2-normalised float32 features on the CLIP's device."""
        key = self.key(clip, texts)
        with self._lock:
            feats = self._memory.get(key)
            if feats is None:
                feats = self._read(clip, key, len(texts))
            if feats is None:
                self.encode_calls += 1
                log.info("encoding %d SBG texts with CLIP %s (cached afterwards)", len(texts), clip.name)
                feats = clip.encode_texts(list(texts), normalize=True, batch_size=batch_size).float()
                self._write(clip, key, feats)
            feats = feats.to(clip.device)
            self._memory[key] = feats
            return feats

    def _read(self, clip, key: str, n: int) -> torch.Tensor | None:
        got = read_keyed_tensors(self.path(clip, key), key, ["features"])
        if got is None:
            return None
        feats = got["features"]
        if feats.ndim != 2 or feats.shape[0] != n or feats.shape[1] != clip.embed_dim:
            return None
        return feats.float()

    def _write(self, clip, key: str, feats: torch.Tensor) -> None:
        write_keyed_tensors(self.path(clip, key), key, {"features": feats}, {"clip": str(clip.name)})


@dataclass
class KeywordResult:
    """The keywords of one image, best first, with their cosine similarity to it, and the generator prompt."""

    keywords: list[str]
    similarities: list[float]
    subjects: list[str] = field(default_factory=list)
    vocabulary_keywords: list[str] = field(default_factory=list)

    def prompt(self, separator: str = "###") -> str:
        return ", ".join(self.keywords) + " " + separator


@dataclass
class _LevelTable:
    level: Level
    labels: list[str]
    label_idx: torch.Tensor  # indices into the text table
    tertiary: dict[str, tuple[list[str], torch.Tensor]]


class KeywordExtractor:
    """Zero-shot keyword extraction for one CLIP backbone and one vocabulary (see the module docstring).

    Args:
        clip: a :class:`~lib_clipcap.clip.ClipBackbone`.
        vocabulary: a :class:`Vocabulary`, a built-in name (``"natural"``, ``"shapes"``) or a JSON path.
        cache: where text features are cached (a :class:`TextFeatureCache`, or a folder for one; None: memory only).
    """

    def __init__(self, clip, vocabulary: Vocabulary | str | Path = "natural", *,
                 cache: TextFeatureCache | str | Path | None = None) -> None:
        self.clip = clip
        self.vocabulary = load_vocabulary(vocabulary)
        self.cache = cache if isinstance(cache, TextFeatureCache) else TextFeatureCache(cache)
        texts: list[str] = []
        index: dict[str, int] = {}

        def add(text: str) -> int:
            if text not in index:
                index[text] = len(texts)
                texts.append(text)
            return index[text]

        def idx(items: Sequence[str]) -> torch.Tensor:
            return torch.tensor([add(t) for t in items], dtype=torch.long)

        v = self.vocabulary
        self.words = list(v.words)
        self._word_idx = idx([v.keyword_template.format(w) for w in self.words])
        h = v.hierarchy
        self._prime: list[tuple[str, ...]] = []
        self._prime_idx = torch.empty(0, dtype=torch.long)
        self._levels: dict[str, list[_LevelTable]] = {}
        self._context: list[_LevelTable] = []
        if h is not None:
            if h.prime is not None:
                self._prime = h.prime.combinations()
                self._prime_idx = idx([h.prime.prompt(c) for c in self._prime])

            def table(level: Level) -> _LevelTable:
                labels = list(level.labels)
                ter = {}
                if level.tertiary_top:
                    for lab, words in level.labels.items():
                        if words:
                            ter[lab] = (list(words), idx([level.tertiary_prompt.format(w) for w in words]))
                return _LevelTable(level, labels, idx([level.template.format(l) for l in labels]), ter)

            self._levels = {b: [table(lv) for lv in levels] for b, levels in h.branches.items()}
            self._context = [table(lv) for lv in h.context]
            self._indoor = set(h.indoor)
        else:
            self._indoor = set()
        # The bare form of every possible keyword: the final ordering compares the image with these.
        for w in self.words:
            add(w)
        for tables in [*self._levels.values(), self._context]:
            for t in tables:
                for lab in t.labels:
                    add(lab)
                for words, _ in t.tertiary.values():
                    for w in words:
                        add(w)
        self.texts = texts
        self._index = index
        self.features = self.cache.get(clip, texts)  # [n_texts, D]

    # -------------------------------------------------------------------------------------------------- extract
    def similarities(self, image_features: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of each image with every text of the table: ``[batch, n_texts]`` on the CPU."""
        img = image_features.to(self.features.device, torch.float32)
        img = img / img.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return (img @ self.features.T).cpu()

    def extract(self, image_features: torch.Tensor, *, threshold: float = 0.5,
                max_keywords: int | None = 16) -> list[KeywordResult]:
        """Keywords for each image of ``image_features`` ``[batch, D]`` (raw or normalised CLIP image features).

        Args:
            threshold: vocabulary keywords are taken until their softmax mass exceeds this (0..1).
            max_keywords: at most this many vocabulary keywords (None: no cap). A trained CLIP rarely needs more
                than a handful; the cap keeps the prompt short when the distribution is flat (e.g. random weights).

        Raises:
            ValueError: ``threshold`` outside [0, 1] or ``max_keywords`` < 1.
        """
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be between 0 and 1; got {threshold}")
        if max_keywords is not None and max_keywords < 1:
            raise ValueError(f"max_keywords must be >= 1 or None; got {max_keywords}")
        sims = self.similarities(image_features)
        return [self._one(row, threshold, max_keywords) for row in sims]

    def _one(self, sims: torch.Tensor, threshold: float, max_keywords: int | None) -> KeywordResult:
        chosen: list[str] = []

        def keep(word: str) -> None:
            if word not in chosen:
                chosen.append(word)

        probs = (TEMPERATURE * sims[self._word_idx]).softmax(-1)
        order = probs.argsort(descending=True).tolist()
        mass = 0.0
        for j in order:
            keep(self.words[j])
            mass += float(probs[j])
            if mass > threshold or (max_keywords is not None and len(chosen) >= max_keywords):
                break
        vocab_keywords = list(chosen)
        subjects: list[str] = []
        h = self.vocabulary.hierarchy
        if h is not None:
            if self._prime:
                best = self._prime[int(sims[self._prime_idx].argmax())]
                subjects = [s for s in h.prime.subjects if s in best or s in h.prime.always]
            for s in subjects:
                for t in self._levels.get(s, ()):
                    self._apply(t, sims, keep, chosen, subjects)
            for t in self._context:
                self._apply(t, sims, keep, chosen, subjects)
        # Step 3: order by similarity of the bare keyword to the image.
        scored = sorted(((float(sims[self._index[w]]), w) for w in chosen), key=lambda x: -x[0])
        return KeywordResult(keywords=[w for _, w in scored], similarities=[s for s, _ in scored],
                             subjects=subjects, vocabulary_keywords=vocab_keywords)

    def _apply(self, t: _LevelTable, sims: torch.Tensor, keep, chosen: list[str], subjects: list[str]) -> None:
        lv = t.level
        if lv.requires and not any(r in subjects for r in lv.requires):
            return
        if lv.skip_when_indoor and any(w in self._indoor for w in chosen):
            return
        best = sims[t.label_idx].topk(lv.top).indices.tolist()
        for b in best:
            label = t.labels[b]
            if lv.add_label:
                keep(label)
            if lv.tertiary_top and label in t.tertiary:
                words, tidx = t.tertiary[label]
                for j in sims[tidx].topk(min(lv.tertiary_top, len(words))).indices.tolist():
                    keep(words[j])

    def __repr__(self) -> str:
        return f"KeywordExtractor({self.vocabulary!r}, CLIP {self.clip.name}, {len(self.texts)} cached texts)"
