"""Choosing an image's tags from its scores, and writing them as kohya-style text. Torch-free: the batch options,
the command line and the HTTP API check tag settings with :class:`TagSelection` without loading a model.

**Selection** (:func:`select_tags`), in this order: tags scoring at least ``threshold``; minus ``exclude``; at most
``category_limits[c]`` per category and ``max_tags`` in all, best first; ordered by score or by category (the
vocabulary's category order, best first within one); ``always_first`` tags (when chosen) moved to the front in their
given order; ``replacements`` applied (``a -> b``; ``a -> ""`` drops ``a``); the underscore/space ``style``; the
``trigger`` words first of all, as given (issue 16's trigger; never twice). Tags are matched by name or alias,
ignoring case and underscore/space differences, as a user types them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..errors import ClipCapError
from .vocabulary import TagVocabulary

#: Default ``threshold`` of ``scoring="probability"``: the best mean F1 of the colour and shape tags on the tuning
#: seed of ``tools/bench_tags.py`` (never its evaluation seed); see :mod:`lib_clipcap.tags.ranking` for the scores.
DEFAULT_THRESHOLD = 0.3
SCORINGS = ("probability", "cosine")
ORDERS = ("score", "category")
STYLES = ("space", "underscore")
TRIGGER_CATEGORY = "trigger"


_UNSET = object()


class TagOptionError(ClipCapError, ValueError):
    """A tag-selection setting is invalid; the message names the setting and the value as given.

    ``setting`` is the :class:`TagSelection` argument at fault and ``reason`` the message without it, so a face that
    spells the setting another way (``tag_threshold``, ``--tag-threshold``) can report it under its own name.
    """

    def __init__(self, setting: str, reason: str, value: Any = _UNSET, *, where: str | None = None) -> None:
        self.setting = setting
        self.reason = reason
        self.value = value
        where = where or setting  # e.g. "category_limits['colour']": the entry at fault
        super().__init__(f"{where}={value!r} is invalid: {reason}" if value is not _UNSET else f"{where}: {reason}")


class Tag(NamedTuple):
    """One chosen tag: its text as written to a caption, its category, and its score (None for a trigger word)."""

    tag: str
    category: str
    score: float | None


def _key(text: str) -> str:
    """How tags are matched: case, underscores and repeated spaces do not count."""
    return " ".join(text.replace("_", " ").split()).casefold()


def _words(name: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    try:
        items = list(value)
    except TypeError:
        raise TagOptionError(name, "give a list of tags", value) from None
    out = []
    for v in items:
        if not isinstance(v, str) or not v.strip():
            raise TagOptionError(name, f"{v!r} is not a tag; give non-empty texts")
        if "," in v:
            raise TagOptionError(name, f"{v!r} contains ','; commas separate tags, give each tag on its own")
        out.append(" ".join(v.split()))
    return tuple(out)


@dataclass(frozen=True)
class TagSelection:
    """How an image's tags are chosen and written (see the module docstring for the order of the steps).

    Args:
        threshold: the least score a tag needs (``scoring="probability"``: 0..1, default :data:`DEFAULT_THRESHOLD`;
            ``"cosine"``: -1..1, and then it must be given).
        scoring: ``"probability"`` (share of its category, the default) or ``"cosine"``.
        max_tags: at most this many tags (triggers not counted); None: no limit.
        category_limits: at most ``n`` tags of category ``c``: ``{"colour": 2}``.
        exclude: tags never written (by name or alias).
        always_first: tags moved to the front, in this order, when chosen (kohya's ``--always_first_tags``).
        trigger: trigger word(s) written first of all, whatever the image (score None, category ``"trigger"``).
        replacements: ``{"a": "b"}`` writes ``b`` instead of ``a``; ``{"a": ""}`` drops ``a``.
        style: ``"space"`` (``blue sky``) or ``"underscore"`` (``blue_sky``, booru style).
        order: ``"score"`` (best first) or ``"category"`` (the vocabulary's category order, best first within one).

    Raises:
        TagOptionError: a bad value; the message names the setting and the value.
    """

    threshold: float | None = None
    scoring: str = "probability"
    max_tags: int | None = None
    category_limits: Mapping[str, int] = field(default_factory=dict)
    exclude: Sequence[str] = ()
    always_first: Sequence[str] = ()
    trigger: str | Sequence[str] = ()
    replacements: Mapping[str, str] = field(default_factory=dict)
    style: str = "space"
    order: str = "score"

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.scoring not in SCORINGS:
            raise TagOptionError("scoring", f"use one of {', '.join(SCORINGS)}", self.scoring)
        thr = self.threshold
        if thr is None:
            if self.scoring == "cosine":
                raise TagOptionError("threshold", "scoring='cosine' needs a threshold (a cosine between -1 and 1, "
                                                  "e.g. 0.25)", None)
            thr = DEFAULT_THRESHOLD
        lo = 0.0 if self.scoring == "probability" else -1.0
        if isinstance(thr, bool) or not isinstance(thr, (int, float)) or not lo <= float(thr) <= 1.0:
            raise TagOptionError("threshold", f"must be between {lo:g} and 1 for scoring={self.scoring!r}",
                                 self.threshold)
        set_(self, "threshold", float(thr))
        if self.max_tags is not None and (isinstance(self.max_tags, bool) or not isinstance(self.max_tags, int)
                                          or self.max_tags < 1):
            raise TagOptionError("max_tags", "must be an integer >= 1, or None for no limit", self.max_tags)
        limits = {}
        for c, n in dict(self.category_limits or {}).items():
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise TagOptionError("category_limits", "must be an integer >= 0", n,
                                     where=f"category_limits[{c!r}]")
            limits[str(c)] = n
        set_(self, "category_limits", limits)
        set_(self, "exclude", _words("exclude", self.exclude))
        set_(self, "always_first", _words("always_first", self.always_first))
        set_(self, "trigger", _words("trigger", self.trigger))
        reps = {}
        for a, b in dict(self.replacements or {}).items():
            if not isinstance(a, str) or not a.strip() or not isinstance(b, str) or "," in a or "," in b:
                raise TagOptionError("replacements", "map a tag to a tag (or to '' to drop it), without commas", b,
                                     where=f"replacements[{a!r}]")
            reps[_key(a)] = " ".join(b.split())
        set_(self, "replacements", reps)
        if self.style not in STYLES:
            raise TagOptionError("style", f"use one of {', '.join(STYLES)}", self.style)
        if self.order not in ORDERS:
            raise TagOptionError("order", f"use one of {', '.join(ORDERS)}", self.order)

    def check_categories(self, vocabulary: TagVocabulary) -> None:
        """Refuse ``category_limits`` naming a category the vocabulary lacks (a typo would silently do nothing).

        Raises:
            TagOptionError: the message names the category and lists the vocabulary's.
        """
        unknown = sorted(set(self.category_limits) - set(vocabulary.categories))
        if unknown:
            known = ", ".join(repr(c) for c in vocabulary.categories)
            raise TagOptionError("category_limits", f"vocabulary {vocabulary.name!r} has no category "
                                 f"{unknown[0]!r}; its categories: {known}")



def select_tags(scores: Sequence[float] | Any, vocabulary: TagVocabulary,
                selection: TagSelection | None = None) -> list[Tag]:
    """One image's tags from its ``scores`` (one per vocabulary tag, as :func:`lib_clipcap.tags.ranking.score_tags`
    gives a row: a tensor row or a list of floats).

    Raises:
        TagOptionError: ``scores`` has another length than the vocabulary, or ``category_limits`` names a category
            the vocabulary lacks.
    """
    sel = selection or TagSelection()
    values = scores.tolist() if hasattr(scores, "tolist") else list(scores)  # a tensor row or a list
    if len(values) != len(vocabulary.entries):
        raise TagOptionError("scores", f"{len(values)} scores for a vocabulary of {len(vocabulary.entries)} tags")
    sel.check_categories(vocabulary)
    excluded = {_key(t) for t in sel.exclude}
    chosen: list[tuple[int, float]] = []
    per_cat: dict[str, int] = {}
    for i in sorted(range(len(values)), key=lambda j: (-values[j], j)):
        s = values[i]
        if s < sel.threshold:
            break
        e = vocabulary.entries[i]
        if any(_key(p) in excluded for p in e.phrasings):
            continue
        limit = sel.category_limits.get(e.category)
        if limit is not None and per_cat.get(e.category, 0) >= limit:
            continue
        per_cat[e.category] = per_cat.get(e.category, 0) + 1
        chosen.append((i, s))
        if sel.max_tags is not None and len(chosen) >= sel.max_tags:
            break
    if sel.order == "category":
        rank = {c: k for k, c in enumerate(vocabulary.categories)}
        chosen.sort(key=lambda t: (rank[vocabulary.entries[t[0]].category], -t[1], t[0]))
    if sel.always_first:
        first = {_key(t): k for k, t in enumerate(sel.always_first)}

        def position(t: tuple[int, float]) -> int:
            keys = [first[_key(p)] for p in vocabulary.entries[t[0]].phrasings if _key(p) in first]
            return min(keys) if keys else len(first)

        chosen.sort(key=position)  # stable: the others keep their order
    out: list[Tag] = [Tag(t, TRIGGER_CATEGORY, None) for t in sel.trigger]  # verbatim: a trigger is a token
    seen = {_key(t.tag) for t in out}
    for i, s in chosen:
        e = vocabulary.entries[i]
        text = sel.replacements.get(_key(e.tag), e.tag)
        if not text:
            continue
        text = _styled(text, sel.style)
        if _key(text) in seen:  # a trigger, or two tags replaced by the same text
            continue
        seen.add(_key(text))
        out.append(Tag(text, e.category, float(s)))
    return out


def _styled(text: str, style: str) -> str:
    return "_".join(text.split()) if style == "underscore" else " ".join(text.replace("_", " ").split())


def format_tags(tags: Iterable[Tag | str], *, separator: str = ", ") -> str:
    """The kohya-style caption text of ``tags``: ``"sks, red, triangle"`` (no trailing separator or newline)."""
    return separator.join(t if isinstance(t, str) else t.tag for t in tags)
