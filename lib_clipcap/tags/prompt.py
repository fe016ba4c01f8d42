"""Prompts from images (issue 22): the caption plus CLIP-ranked modifiers, and a negative-prompt suggestion.

    from lib_clipcap import Captioner
    from lib_clipcap.tags import make_prompt

    cap = Captioner.from_pretrained("flickr8k")
    p = make_prompt(cap, "photo.jpg", "best")
    print(p.text)        # a dog runs on the beach, photograph, golden hour light, wide shot, on a beach
    print(p.negative)    # the negative modifiers the image matches least: watermark, text, collage, ...
    print(p.clip_s, [(m.tag, m.category, round(m.score, 2)) for m in p.modifiers])

Two styles, as clip-interrogator's "fast" and "best" modes:

* ``"fast"``: the caption, then each modifier category's best tag (in the vocabulary's category order) when its score
  -- its probability within its category, :mod:`lib_clipcap.tags.ranking` -- reaches ``threshold``, while the prompt
  fits the token budget. No text is encoded besides the (cached) vocabulary.
* ``"best"``: a greedy search that maximises CLIP-S (:func:`lib_clipcap.scoring.clip_score_from_cosine` of the
  cosine between the image and the whole prompt's text) within the token budget. It starts from the fast prompt and,
  at each step, tries every move -- adding one of the candidates (the ``top_k`` best tags of each category that
  score at least ``min_score``) or
  removing a modifier already in the prompt -- and keeps the one that raises CLIP-S most; it stops when no move
  raises it. Every step raises CLIP-S, so the best prompt's CLIP-S is never below the fast prompt's (nor below the
  caption's: removing every modifier is among the paths it can take, and the caption alone is checked at the end).
  Cost: one batch of text encodings per step (at most ``2 x candidates`` texts; each text is encoded once per call).

**Token budget.** ``max_tokens`` counts CLIP tokens (start and end markers not included) of the whole prompt, at
most the CLIP's own context less those two (75 for OpenAI's CLIPs, 30 for the bundled demo CLIP): text beyond it is
cut off before CLIP sees it, and Stable Diffusion starts a new 75-token chunk. The caption is always kept whole;
modifiers fill what is left.

**Negative prompt.** The bundled ``negative.txt`` list (blurry, lowres, watermark, text, deformed...) ranked by how
*little* the image matches each (lowest CLIP cosine first): the flaws this image shows least are the safest to push
away from. ``negatives`` of them, comma-separated.

**One image encoding.** The image is encoded once; the caption (:meth:`Captioner.caption_features`), the modifiers'
scores, the negative ranking and every CLIP-S of the search use the same features.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import ImageLoadError
from ..phrases import join_phrases
from .cache import TagTextCache
from .ranking import tag_cosines
from .selection import Tag, TagOptionError
from .tagger import DEFAULT_CACHE, Tagger, clip_of
from .vocabulary import ASSETS_DIR, TagVocabulary

__all__ = ["DEFAULT_MAX_TOKENS", "FACE_STYLES", "MODIFIER_VOCABULARY", "NEGATIVE_VOCABULARY", "PROMPT_STYLES",
           "PromptOptionError", "PromptOptions", "PromptResult", "Prompter", "count_tokens", "make_prompt",
           "modifier_vocabulary_for", "prompt_images"]

#: The library's styles (:class:`PromptOptions`).
PROMPT_STYLES = ("fast", "best")
#: What the faces offer as ``prompt_style`` (options table, ``--prompt-style``, the API, the WebUI setting):
#: ``sentence`` (the caption alone, as before) or one of :data:`PROMPT_STYLES`.
FACE_STYLES = ("sentence", *PROMPT_STYLES)
#: The default modifier vocabulary: these bundled category vocabularies, in this order (the order ``fast`` adds
#: them in). The ``subject`` vocabulary is left out: the caption says what the picture shows.
MODIFIER_VOCABULARY = ("medium", "style", "lighting", "composition", "setting", "colour", "material")
#: The bundled negative modifiers.
NEGATIVE_VOCABULARY = ASSETS_DIR / "negative.txt"
#: CLIP's context (77) less its start and end markers.
DEFAULT_MAX_TOKENS = 75
DEFAULT_THRESHOLD = 0.3
DEFAULT_TOP_K = 3
DEFAULT_MIN_SCORE = 0.05
DEFAULT_NEGATIVES = 6
#: The bundled demo CLIP's name: it knows only the shapes world, so its modifiers are the ``shapes`` vocabulary.
_SHAPES_CLIP = "shapes-tiny"
_MIN_GAIN = 1e-6  # cosine: a move must raise it by more than this (float noise is not a gain)


class PromptOptionError(TagOptionError):
    """A prompt setting is invalid; the message names the setting and the value (``setting``, ``reason`` and
    ``value`` as :class:`~lib_clipcap.tags.selection.TagOptionError`, so a face can report it under its own name)."""


def _int(name: str, value: Any, lo: int, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise PromptOptionError(name, f"must be an integer >= {lo}{hint}", value)
    return value


@dataclass(frozen=True)
class PromptOptions:
    """How a prompt is built (see the module docstring).

    Args:
        style: ``"fast"`` or ``"best"``.
        max_tokens: the prompt's token budget (CLIP tokens, at most the CLIP's context less 2; a larger value is
            capped there). Default :data:`DEFAULT_MAX_TOKENS`.
        threshold: ``fast``: the least score (probability within its category, 0..1) a category's best tag needs.
        top_k: ``best``: the candidates of each category: its best ``top_k`` tags scoring at least ``min_score``.
        min_score: ``best``: the least score (0..1) a candidate needs: CLIP-S can rise with a tag the image plainly
            lacks (a triangle beside a circle), which makes a prompt that describes another picture.
        negatives: tags in the negative-prompt suggestion (0: none).

    Raises:
        PromptOptionError: a bad value; the message names the setting and the value, and what to give.
    """

    style: str = "fast"
    max_tokens: int = DEFAULT_MAX_TOKENS
    threshold: float = DEFAULT_THRESHOLD
    top_k: int = DEFAULT_TOP_K
    min_score: float = DEFAULT_MIN_SCORE
    negatives: int = DEFAULT_NEGATIVES

    def __post_init__(self) -> None:
        if self.style not in PROMPT_STYLES:
            hint = " ('sentence' is the caption alone: caption the image instead)" if self.style == "sentence" else ""
            raise PromptOptionError("style", f"use one of {', '.join(PROMPT_STYLES)}{hint}", self.style)
        _int("max_tokens", self.max_tokens, 1, f" (CLIP tokens; {DEFAULT_MAX_TOKENS} fills OpenAI CLIP's context)")
        for name, default in (("threshold", DEFAULT_THRESHOLD), ("min_score", DEFAULT_MIN_SCORE)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and 0 <= v <= 1):
                raise PromptOptionError(name, "must be a number between 0 and 1 (a probability within the "
                                              f"category; default {default})", v)
            object.__setattr__(self, name, float(v))
        _int("top_k", self.top_k, 1, " (candidates per category for style 'best')")
        _int("negatives", self.negatives, 0, " (0: no negative prompt)")


@dataclass(frozen=True)
class PromptResult:
    """A prompt for one image.

    Attributes:
        text: the prompt: the caption, then the modifiers (``"a red circle on a white background, red, large"``).
        caption: the caption it starts from.
        modifiers: the modifiers in the prompt, in order: ``(tag, category, score)`` with the tag's score (its
            probability within its category).
        negative: the negative-prompt suggestion, comma-separated ("" when none was asked for).
        clip_s: CLIP-S of ``text`` with the image (``2.5 x max(cosine, 0)``, :mod:`lib_clipcap.scoring`).
        style: ``"fast"`` or ``"best"``.
        negative_modifiers: the negative suggestion's tags, ``(tag, "negative", cosine)``, least matching first.
        tokens: ``text``'s length in CLIP tokens.
    """

    text: str
    caption: str
    modifiers: tuple[Tag, ...]
    negative: str
    clip_s: float
    style: str
    negative_modifiers: tuple[Tag, ...] = ()
    tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready data (what ``--json`` and the HTTP API answer)."""
        return {"text": self.text, "caption": self.caption, "style": self.style, "clip_s": self.clip_s,
                "tokens": self.tokens, "negative": self.negative,
                "modifiers": [{"tag": m.tag, "category": m.category, "score": m.score} for m in self.modifiers],
                "negative_modifiers": [{"tag": m.tag, "score": m.score} for m in self.negative_modifiers]}


# ------------------------------------------------------------------------------------------------------ tokens
def count_tokens(clip: Any, texts: Sequence[str]) -> list[int]:
    """Each text's length in ``clip``'s tokens, start and end markers not included.

    Uses the tokenizer's own ``encode`` (open_clip's BPE); a tokenizer without one (open_clip 2.20's ``tokenize``)
    is counted from its padded output, where a text filling the whole context counts as one token over it.
    """
    tok = clip_of(clip).tokenizer
    base = getattr(tok, "func", tok)  # ClipBackbone binds the context length with functools.partial
    encode = getattr(base, "encode", None)
    if callable(encode):
        return [len(encode(t)) for t in texts]
    ids = tok(list(texts))
    n = (ids != 0).sum(-1)
    return [int(k) - 2 + (1 if int(k) >= ids.shape[-1] else 0) for k in n]


def context_budget(clip: Any) -> int:
    """The most tokens ``clip`` reads of a text (its context less the start and end markers)."""
    model = getattr(clip_of(clip), "model", None)
    ctx = getattr(model, "context_length", None)
    if ctx is None and getattr(model, "positional_embedding", None) is not None:
        ctx = int(model.positional_embedding.shape[0])
    return int(ctx) - 2 if ctx else DEFAULT_MAX_TOKENS


def modifier_vocabulary_for(model: Any) -> str | tuple[str, ...]:
    """The default modifier vocabulary for a model's CLIP: ``"shapes"`` for the bundled demo CLIP (it knows nothing
    else), else :data:`MODIFIER_VOCABULARY`."""
    clip = clip_of(model)
    return "shapes" if getattr(clip, "name", "") == _SHAPES_CLIP else MODIFIER_VOCABULARY


# ---------------------------------------------------------------------------------------------------- prompter
class Prompter:
    """A CLIP with its modifier and negative vocabularies' text features (encoded once, cached on disk).

    Args:
        model: a :class:`~lib_clipcap.captioner.Captioner` (its CLIP is used) or a ClipBackbone.
        vocabulary: the modifiers (as :class:`~lib_clipcap.tags.tagger.Tagger`); None: :func:`modifier_vocabulary_for`.
        negative_vocabulary: the negative modifiers (default: the bundled ``negative.txt``).
        cache: as :class:`~lib_clipcap.tags.tagger.Tagger`.

    Raises:
        MissingFileError, TagVocabularyError: a vocabulary cannot be found or read.
    """

    def __init__(self, model: Any, vocabulary: str | Path | TagVocabulary | Sequence[str | Path] | None = None, *,
                 negative_vocabulary: str | Path | TagVocabulary = NEGATIVE_VOCABULARY,
                 cache: TagTextCache | str | Path | None = DEFAULT_CACHE) -> None:
        vocab = modifier_vocabulary_for(model) if vocabulary is None else vocabulary
        self.tagger = Tagger(model, vocab, cache=cache)
        self.clip = self.tagger.clip
        self.negative = Tagger(self.clip, negative_vocabulary, cache=self.tagger.cache)
        self._budget = context_budget(self.clip)

    @property
    def vocabulary(self) -> TagVocabulary:
        return self.tagger.vocabulary

    def budget(self, options: PromptOptions) -> int:
        """The token budget ``options`` get with this CLIP: ``max_tokens``, at most the CLIP's context less 2."""
        return min(options.max_tokens, self._budget)

    @torch.inference_mode()
    def prompt_features(self, image_features: torch.Tensor, captions: Sequence[str],
                        options: PromptOptions | None = None) -> list[PromptResult]:
        """One prompt per image from its CLIP image features ``[batch, D]`` (raw or normalised) and its caption."""
        from ..scoring import image_features as normalized

        opts = options or PromptOptions()
        if image_features.shape[0] != len(captions):
            raise PromptOptionError("captions", f"{len(captions)} captions for {image_features.shape[0]} images")
        img = normalized(self.clip, image_features)
        scores = self.tagger.scores(img)
        neg = tag_cosines(img, self.negative.text, len(self.negative.vocabulary.entries)).cpu() \
            if opts.negatives else None
        out = []
        for i, caption in enumerate(captions):
            negative = self._negative(neg[i], opts.negatives) if neg is not None else ()
            out.append(self._one(img[i], caption.strip(), scores[i], negative, opts))
        return out

    # ------------------------------------------------------------------------------------------------ internals
    def _negative(self, cosines: torch.Tensor, n: int) -> tuple[Tag, ...]:
        entries = self.negative.vocabulary.entries
        order = sorted(range(len(entries)), key=lambda j: (float(cosines[j]), j))[:n]
        return tuple(Tag(entries[j].tag, entries[j].category, float(cosines[j])) for j in order)

    def _candidates(self, scores: torch.Tensor, opts: PromptOptions) -> tuple[list[Tag], list[Tag]]:
        """``(fast modifiers in category order, best's candidates)`` from one image's tag scores."""
        vocab = self.vocabulary
        values = scores.tolist()
        by_cat: dict[str, list[int]] = {}
        for j, e in enumerate(vocab.entries):
            by_cat.setdefault(e.category, []).append(j)
        fast, cands = [], []
        for c in vocab.categories:
            ranked = sorted(by_cat[c], key=lambda j: (-values[j], j))
            tags = [Tag(vocab.entries[j].tag, c, float(values[j])) for j in ranked[:opts.top_k]]
            if tags and tags[0].score >= opts.threshold:
                fast.append(tags[0])
            cands.extend(t for t in tags if t.score >= opts.min_score)
        return fast, cands

    def _one(self, img: torch.Tensor, caption: str, scores: torch.Tensor, negative: tuple[Tag, ...],
             opts: PromptOptions) -> PromptResult:
        from ..scoring import clip_score_from_cosine, text_features

        budget = self.budget(opts)
        fast, cands = self._candidates(scores, opts)
        tokens: dict[str, int] = {}
        cosine: dict[str, float] = {}

        def text_of(mods: Sequence[Tag]) -> str:
            return join_phrases((caption, *(m.tag for m in mods)))

        def fits(texts: list[str]) -> list[bool]:
            new = [t for t in dict.fromkeys(texts) if t not in tokens]
            tokens.update(zip(new, count_tokens(self.clip, new)))
            return [tokens[t] <= budget for t in texts]

        def cosines(texts: list[str]) -> list[float]:
            new = [t for t in dict.fromkeys(texts) if t not in cosine]
            if new:
                cos = (text_features(self.clip, new) @ img.to(self.clip.device, torch.float32)).tolist()
                cosine.update(zip(new, cos))
            return [cosine[t] for t in texts]

        chosen: list[Tag] = []  # fast: each category's best tag that passes, while the prompt fits
        for m in fast:
            if fits([text_of([*chosen, m])])[0]:
                chosen.append(m)
        if opts.style == "best":
            chosen = self._search(chosen, cands, text_of, fits, cosines)
            if cosines([caption])[0] > cosines([text_of(chosen)])[0]:
                chosen = []
        text = text_of(chosen)
        cos = cosines([text])[0]
        fits([text])
        return PromptResult(text=text, caption=caption, modifiers=tuple(chosen),
                            negative=", ".join(t.tag for t in negative),
                            clip_s=float(clip_score_from_cosine(torch.tensor(cos))), style=opts.style,
                            negative_modifiers=negative, tokens=tokens[text])

    @staticmethod
    def _search(start: list[Tag], cands: list[Tag], text_of, fits, cosines) -> list[Tag]:
        """Greedy hill climbing on the cosine: the best single add or remove move, until none gains."""
        state = list(start)
        current = cosines([text_of(state)])[0]
        for _ in range(2 * len(cands) + len(start) + 1):  # every step gains, so this bound is never the stop
            names = {m.tag for m in state}
            moves = [[*state, c] for c in cands if c.tag not in names]
            moves = [m for m, ok in zip(moves, fits([text_of(m) for m in moves])) if ok]
            moves += [state[:k] + state[k + 1:] for k in range(len(state))]
            if not moves:
                break
            values = cosines([text_of(m) for m in moves])
            k = max(range(len(moves)), key=lambda j: (values[j], -j))
            if values[k] <= current + _MIN_GAIN:
                break
            state, current = moves[k], values[k]
        return state


_PROMPTERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def prompter_for(model: Any, vocabulary: Any = None, *, cache: TagTextCache | str | Path | None = DEFAULT_CACHE
                 ) -> Prompter:
    """A :class:`Prompter` for ``model``'s CLIP, kept while the CLIP lives (one per vocabulary given by name or
    path; others are built each call)."""
    clip = clip_of(model)
    key = (repr(vocabulary) if isinstance(vocabulary, (str, Path, tuple, list, type(None))) else None,
           cache if isinstance(cache, (str, Path, type(None))) else id(cache))
    if key[0] is None:
        return Prompter(model, vocabulary, cache=cache)
    per_clip = _PROMPTERS.setdefault(clip, {})
    if key not in per_clip:
        per_clip[key] = Prompter(model, vocabulary, cache=cache)
    return per_clip[key]


# ------------------------------------------------------------------------------------------------ entry points
def _options(style: str | PromptOptions, settings: Mapping[str, Any]) -> PromptOptions:
    if isinstance(style, PromptOptions):
        if settings:
            raise PromptOptionError("options", f"give the settings in the PromptOptions, not also as "
                                               f"{', '.join(sorted(settings))}")
        return style
    known = {"max_tokens", "threshold", "top_k", "min_score", "negatives"}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise PromptOptionError(unknown[0], f"unknown prompt setting; valid: style, {', '.join(sorted(known))}",
                                settings[unknown[0]])
    return PromptOptions(style=style, **settings)


def prompt_images(captioner: Any, images: Sequence | Any, style: str | PromptOptions = "fast", *,
                  vocabulary: Any = None, prompter: Prompter | None = None, batch_size: int = 16,
                  rerank: str | None = None, decoding: Mapping[str, Any] | None = None,
                  cache: TagTextCache | str | Path | None = DEFAULT_CACHE,
                  **settings: Any) -> list[tuple[Any, PromptResult | None]]:
    """Caption images and make their prompts, with one CLIP image encoding each.

    Args:
        captioner: a :class:`~lib_clipcap.captioner.Captioner` (or an SBG guesser: anything with ``clip``,
            ``decoding_options`` and ``caption_features``).
        images: paths, PIL images, bytes or arrays (one, or a list).
        style: ``"fast"`` or ``"best"``, or a :class:`PromptOptions`.
        vocabulary: the modifier vocabulary (default: :func:`modifier_vocabulary_for` the captioner).
        prompter: a :class:`Prompter` built for the captioner's CLIP (overrides ``vocabulary`` and ``cache``).
        batch_size: images per model call.
        rerank: the caption's re-ranking (as :meth:`Captioner.caption`; None: the captioner's default).
        decoding: the caption's decoding settings, by the options table's names (``{"decoding": "greedy"}``).
        cache: the vocabularies' text-feature cache (as :class:`~lib_clipcap.tags.tagger.Tagger`).
        settings: :class:`PromptOptions` fields (``max_tokens``, ``threshold``, ``top_k``, ``min_score``,
            ``negatives``).

    Returns:
        ``(CaptionResult, PromptResult)`` per input, in order; an input that cannot be loaded gets a result with
        ``error`` set and ``None``, and the others are processed normally.

    Raises:
        PromptOptionError: a bad prompt setting; DecodingError: a bad decoding setting (both before any image is
            read). ClipCapError: ``prompter`` was built for another CLIP.
    """
    from ..results import caption_in_batches

    opts = _options(style, settings)
    p = prompter or prompter_for(captioner, vocabulary, cache=cache)
    if p.clip is not clip_of(captioner):
        raise PromptOptionError("prompter", "was built for another CLIP than the captioner's; build it with "
                                            "Prompter(captioner)")
    dec = captioner.decoding_options(**dict(decoding or {}))
    extra = {} if rerank is None else {"rerank": rerank}
    prompts: dict[int, PromptResult] = {}

    def batch(imgs: list, start: int) -> list:
        batch_opts = dec if getattr(dec, "seed", None) is None else dec.replace(seed=dec.seed + start)
        with getattr(captioner, "_lock", nullcontext()):  # as caption_and_tag: a captioner may serve threads
            feats = p.clip.encode_images(p.clip.preprocess_images(imgs))
        results = captioner.caption_features(feats, batch_opts, **extra)
        for r, pr in zip(results, p.prompt_features(feats, [r.text for r in results], opts)):
            prompts[id(r)] = pr
        return results

    results = caption_in_batches(images, batch_size, batch)
    return [(r, prompts.get(id(r))) for r in results]


def make_prompt(captioner: Any, image: Any, style: str | PromptOptions = "fast", **kwargs: Any) -> PromptResult:
    """The prompt for one image (see :func:`prompt_images` for the arguments).

    Raises:
        ImageLoadError: the image cannot be loaded (the message names it).
        PromptOptionError, DecodingError: bad settings.
    """
    res, prompt = prompt_images(captioner, [image], style, **kwargs)[0]
    if prompt is None:
        raise ImageLoadError(f"cannot make a prompt: {res.error}")
    return prompt
