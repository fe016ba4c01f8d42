"""Tags in review: kohya-style tag captions (``sks, red, triangle, white background``) read as tags, each scored
against its image with CLIP, filtered by, added and removed.

**Reading a caption.** The caption's trigger words (:mod:`.triggers`) are split off first and stay first; what
remains (the row's :attr:`~lib_clipcap.review.table.ReviewRow.body`) is read by :func:`split_tags`: its
comma-separated segments are tags, except a leading *sentence* (``tag --content caption+tags`` writes the sentence,
then the tags: ``a red triangle on a white background, red, triangle``). The first segment is the sentence when it
holds at least :data:`SENTENCE_MIN_WORDS` words or ends with a period; so a plain sentence caption has no tags, and
``a dog, outdoors`` is two tags. Tags are matched as ``tag`` matches them (:func:`tag_key`): case, underscores,
repeated spaces and a closing period do not count (``Blue_Sky`` is ``blue sky``).

**Scores.** A tag's score is the CLIP-S (``2.5 * max(cos, 0)``, :mod:`lib_clipcap.scoring`'s, the scale of the
caption's own CLIP-S) of its best prompt with the image, the prompts being those ``tag`` shows CLIP
(:mod:`lib_clipcap.tags.ranking`): a tag of the review's tag vocabulary is seen in every template of its category
(the vocabulary's text features, cached on disk per vocabulary and CLIP by :mod:`lib_clipcap.tags.cache`); any other
tag in the vocabulary's default templates. Every distinct tag text is encoded once per review session (kept in
memory, like the captions' text features); an image costs its cached image feature plus one matrix product. A
vocabulary tag also gets its *probability*, its share of its category as ``tag`` computes it: below the threshold
(the ``tag`` default, :data:`~lib_clipcap.tags.selection.DEFAULT_THRESHOLD`) it is *flagged*, ``tag`` would not have
written it, and ``better`` names the category's best tag for the image.

**Edits.** :func:`plan_tag_edit` (used through :func:`lib_clipcap.review.edits.plan_tags` and the service) adds tags
at the end (never one the caption already holds, nor a trigger) and removes tags (the others keep their order, the
triggers stay first, a sentence stays before the tags); the result is written kohya-style, joined with ``", "``.
Importing this module is cheap: torch loads when scoring.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["SENTENCE_MIN_WORDS", "ReviewTagScorer", "check_tags", "has_tags", "plan_tag_edit", "split_tags",
           "tag_counts", "tag_key"]

#: A caption's first segment with at least this many words (or a closing period) is its sentence, not a tag.
SENTENCE_MIN_WORDS = 5
SEPARATOR = ", "
#: Tag vocabulary of the review's tag scores unless told otherwise (the batch tagger's default).
DEFAULT_VOCABULARY = "general"


def tag_key(text: str) -> str:
    """How review matches tags: case, underscores, repeated spaces and a closing period do not count."""
    return " ".join(text.replace("_", " ").split()).casefold().strip(" .")


def split_tags(body: str | None) -> tuple[str | None, list[str]]:
    """``(sentence or None, tags as written)`` of a caption body (the caption without its trigger words).

    ``split_tags("red, triangle, white background") == (None, ["red", "triangle", "white background"])``;
    ``split_tags("a red triangle on a white background, red") == ("a red triangle on a white background", ["red"])``;
    a sentence alone has no tags. Empty segments (``"red,, blue"``) are skipped.
    """
    if body is None or not body.strip():
        return None, []
    segments = [s.strip() for s in body.split(",")]
    sentence = None
    first = segments[0]
    if first and (len(first.split()) >= SENTENCE_MIN_WORDS or first.endswith(".")):
        sentence, segments = first, segments[1:]
    return sentence, [s for s in segments if tag_key(s)]


def check_tags(field: str, value: Any) -> list[str]:
    """Tags given to an edit or a filter: a string (``"red, blue"``: comma-separated) or a list of strings, each
    non-empty, one line, without a comma; white space runs collapsed. ``None``: no tags.

    Raises:
        OptionError: naming ``field`` and the bad value.
    """
    from ..options_table import OptionError

    if value is None:
        return []
    if isinstance(value, str):
        items = value.split(",")
        items = [s for s in items if s.strip()] if value.strip() else []
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise OptionError(field, value, "must be a tag or a list of tags (strings)")
    out = []
    for v in items:
        if not isinstance(v, str) or not tag_key(v):
            raise OptionError(field, v, "is not a tag: give non-empty texts")
        if "," in v:
            raise OptionError(field, v, "contains ','; commas separate tags, give each tag on its own")
        if any(ord(c) < 32 or ord(c) == 127 or c in "\u2028\u2029" for c in v):
            raise OptionError(field, v, "holds a control character or line break; a tag is one line of text")
        out.append(" ".join(v.split()))
    return list(dict.fromkeys(out))


def has_tags(row: Any, wanted: Iterable[str]) -> bool:
    """``row`` holds every tag of ``wanted`` (matched by :func:`tag_key`)."""
    have = {tag_key(t) for t in getattr(row, "tags", None) or []}
    return all(tag_key(w) in have for w in wanted)


def tag_counts(rows: Iterable[Any]) -> dict[str, int]:
    """How many rows hold each tag (as first written), most frequent first: the filter's choices."""
    counts: dict[str, int] = {}
    shown: dict[str, str] = {}
    for r in rows:
        for k in dict.fromkeys(tag_key(t) for t in getattr(r, "tags", None) or []):
            counts[k] = counts.get(k, 0) + 1
        for t in getattr(r, "tags", None) or []:
            shown.setdefault(tag_key(t), t)
    return {shown[k]: n for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))}


def plan_tag_edit(caption: str | None, triggers: Sequence[str], *, add: Sequence[str] = (),
                  remove: Sequence[str] = (), separator: str = SEPARATOR) -> str | None:
    """A caption with ``add`` tags added (at the end) and ``remove`` tags removed; ``None`` when nothing changes.

    Args:
        caption: The caption as it is (``None``: no caption file; adding creates one).
        triggers: The trigger words the caption keeps first (the row's, :meth:`ReviewTable.row_triggers`): never
            removed nor added as tags, always written first.

    A tag already held (or a trigger) is not added again; removing keeps the other tags in their order and a leading
    sentence before them. The new text joins triggers, sentence and tags with ``separator``.
    """
    from ..phrases import join_phrases
    from .triggers import split_triggers

    text = caption or ""
    trig = [t.strip() for t in triggers if t.strip()]
    head, body = split_triggers(text, trig) if trig else ([], text)
    sentence, tags = split_tags(body)
    drop = {tag_key(t) for t in remove}
    kept = [t for t in tags if tag_key(t) not in drop]
    held = {tag_key(t) for t in kept} | {tag_key(t) for t in trig} | {tag_key(t) for t in head}
    if sentence is not None:
        held.add(tag_key(sentence))
    for t in add:
        k = tag_key(t)
        if k and k not in held:
            kept.append(" ".join(t.split()))
            held.add(k)
    if kept == tags:
        return None
    lead = list(head) + [t for t in trig if tag_key(t) not in {tag_key(h) for h in head}]
    new = join_phrases(tuple(lead) + ((sentence,) if sentence else ()) + tuple(kept), separator)
    return None if new == caption else new


class ReviewTagScorer:
    """Scores each row's tags against its image with one CLIP (see the module docstring).

    Args:
        clip: The :class:`~lib_clipcap.clip.ClipBackbone` the review scores with.
        vocabulary: A :class:`~lib_clipcap.tags.vocabulary.TagVocabulary` (or anything
            :func:`~lib_clipcap.tags.vocabulary.load_tag_vocabulary` takes): its tags' prompts and categories; other
            tags get its default templates.
        cache: The vocabulary's text-feature cache (:class:`~lib_clipcap.tags.cache.TagTextCache`); ``None``: one in
            memory only.
        memo: Text features of tags outside the vocabulary, by prompt text: a service passes the same dict to every
            scorer of one CLIP and vocabulary, so each distinct tag is encoded once per session.
        threshold: A vocabulary tag whose probability is below it is flagged.
    """

    def __init__(self, clip: Any, vocabulary: Any = DEFAULT_VOCABULARY, *, cache: Any = None,
                 memo: dict[str, Any] | None = None, threshold: float | None = None) -> None:
        from ..tags.selection import DEFAULT_THRESHOLD
        from ..tags.vocabulary import load_tag_vocabulary

        self.clip = clip
        self.vocabulary = load_tag_vocabulary(vocabulary)
        self.cache = cache
        self.memo = memo if memo is not None else {}
        self.threshold = DEFAULT_THRESHOLD if threshold is None else float(threshold)
        self._index: dict[str, int] = {}
        for i, e in enumerate(self.vocabulary.entries):
            for p in e.phrasings:
                self._index.setdefault(tag_key(p), i)
        # Other tags' prompts: the vocabulary's default templates that need no other category's tags.
        self.templates = [t for t in self.vocabulary.template if "{}" in t and t.count("{") == 1] or ["{}"]
        self.stats: dict[str, int] = {"tag_texts_encoded": 0}

    def _vocabulary_features(self) -> Any:
        from ..tags.cache import TagTextCache

        if self.cache is None:
            self.cache = TagTextCache(None)
        return self.cache.get(self.clip, self.vocabulary).to("cpu")

    def _prompt_features(self, prompts: Sequence[str]) -> Any:
        """``[n, D]`` normalised text features of prompts of tags outside the vocabulary (memoised per prompt)."""
        import torch

        new = [p for p in dict.fromkeys(prompts) if p not in self.memo]
        if new:
            feats = self.clip.encode_texts(new, normalize=True).float().cpu()
            self.memo.update(zip(new, feats))
            self.stats["tag_texts_encoded"] += len(new)
        if not prompts:
            return torch.empty(0, self.clip.embed_dim)
        return torch.stack([self.memo[p] for p in prompts])

    def score(self, rows: Sequence[Any], features: dict[int, Any]) -> None:
        """Fill ``tag_scores`` (lowest score first) and ``tag_min`` of every row of ``rows`` that has tags and an
        image feature (``features``: row index -> normalised image feature, as
        :meth:`~lib_clipcap.review.scoring.ReviewScorer.image_features` gives); the others get ``None``."""
        import torch

        from ..scoring import clip_score_from_cosine
        from ..tags.cache import TextFeatures
        from ..tags.ranking import category_index, logit_scale_of, tag_cosines

        for r in rows:
            r.tag_scores, r.tag_min = None, None
        idx = [i for i, r in enumerate(rows) if r.tags and i in features]
        if not idx:
            return
        keys = list(dict.fromkeys(tag_key(t) for i in idx for t in rows[i].tags))
        in_vocab = any(k in self._index for k in keys)
        extra = [k for k in keys if k not in self._index]
        n_vocab = len(self.vocabulary.entries) if in_vocab else 0
        parts, owners = [], []
        if in_vocab:
            vt = self._vocabulary_features()
            parts.append(vt.prompts.float())
            owners.append(vt.owner.long())
        prompts = [t.replace("{}", k) for k in extra for t in self.templates]
        if prompts:
            parts.append(self._prompt_features(prompts))
            owners.append(torch.tensor([n_vocab + j for j in range(len(extra)) for _ in self.templates]))
        column = {k: self._index[k] for k in keys if k in self._index} if in_vocab else {}
        column.update({k: n_vocab + j for j, k in enumerate(extra)})
        text = TextFeatures(torch.cat(parts), torch.cat(owners), "")
        img = torch.stack([features[i] for i in idx]).float()
        cos = tag_cosines(img, text, n_vocab + len(extra)).cpu()  # the one matrix product
        probs = None
        if in_vocab:
            cat = category_index(self.vocabulary)
            logits = logit_scale_of(self.clip) * cos[:, :n_vocab]
            probs = torch.empty_like(logits)
            for c in range(len(self.vocabulary.categories)):
                m = cat == c
                probs[:, m] = logits[:, m].softmax(-1)
        clip_s = clip_score_from_cosine(cos)
        for k, i in enumerate(idx):
            out = []
            for key in dict.fromkeys(tag_key(t) for t in rows[i].tags):
                col = column[key]
                shown = next(t for t in rows[i].tags if tag_key(t) == key)
                d: dict[str, Any] = {"tag": shown, "score": float(clip_s[k, col]), "category": None,
                                     "probability": None, "flagged": False, "better": None}
                if col < n_vocab and probs is not None:
                    entry = self.vocabulary.entries[col]
                    p = float(probs[k, col])
                    d.update(category=entry.category or None, probability=p, flagged=p < self.threshold)
                    if d["flagged"]:
                        same = (cat == cat[col]).nonzero().flatten()
                        best = int(same[probs[k, same].argmax()])
                        if best != col:
                            d["better"] = self.vocabulary.entries[best].tag
                out.append(d)
            out.sort(key=lambda d: d["score"])  # stable: equal scores keep the caption's order
            rows[i].tag_scores = out
            rows[i].tag_min = out[0]["score"] if out else None
