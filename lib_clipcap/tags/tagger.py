"""Tagging images: a CLIP, a tag vocabulary with its cached text features, and the selection rules.

    from lib_clipcap import Captioner
    from lib_clipcap.tags import TagSelection, Tagger, caption_and_tag, format_tags, tag_images

    cap = Captioner.from_pretrained("shapes-demo")
    tags = tag_images(cap, ["a.png"], "shapes", TagSelection(trigger="sks"))
    print(format_tags(tags[0]))                       # sks, large, blue, black background, circle

    tagger = Tagger(cap, "shapes")                    # the text features: encoded once, cached on disk
    for result, tags in caption_and_tag(cap, tagger, ["a.png"], decoding="greedy"):
        print(result.text, format_tags(tags))         # one image encoding serves the caption and the tags

Cost: the vocabulary's prompts are encoded once per (vocabulary, CLIP) and cached (:mod:`.cache`); after that an
image costs its CLIP image encoding -- which :func:`caption_and_tag` shares with the caption -- plus one row of one
matrix product with the prompts' features.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from ..errors import ClipCapError, ImageLoadError
from .cache import TagTextCache, TextFeatures, default_cache_dir
from .ranking import logit_scale_of, score_tags
from .selection import Tag, TagSelection, select_tags
from .vocabulary import TagVocabulary, load_tag_vocabulary

#: ``cache=`` default: the models folder's tag text-feature cache (:func:`lib_clipcap.tags.cache.default_cache_dir`).
DEFAULT_CACHE = "default"


def clip_of(model: Any) -> Any:
    """The CLIP backbone of a :class:`~lib_clipcap.captioner.Captioner` (or anything with ``.clip``), or ``model``
    itself when it is one (has ``encode_images`` and ``encode_texts``).

    Raises:
        ClipCapError: ``model`` is neither (e.g. an unloaded captioner).
    """
    clip = getattr(model, "clip", model)
    if clip is None or not (hasattr(clip, "encode_images") and hasattr(clip, "encode_texts")):
        raise ClipCapError(f"cannot tag with {model!r}: give a Captioner or a ClipBackbone (an unloaded captioner "
                           f"has no CLIP; load it again)")
    return clip


class Tagger:
    """A vocabulary's tags ranked by one CLIP.

    Args:
        model: a :class:`~lib_clipcap.captioner.Captioner` (its CLIP is used) or a
            :class:`~lib_clipcap.clip.ClipBackbone`.
        vocabulary: a bundled name (``"general"``, ``"shapes"``, ``"colour"``...), a vocabulary file, a list of
            those, or a :class:`~lib_clipcap.tags.vocabulary.TagVocabulary`.
        cache: a :class:`~lib_clipcap.tags.cache.TagTextCache`, a folder for one, ``"default"`` (the models
            folder's ``cache/tag-text-features``) or None (memory only).
        models_dir: the models folder behind ``cache="default"`` (default: ``$CLIPCAP_MODELS_DIR`` or
            ``~/.cache/clipcap``).

    Raises:
        MissingFileError, TagVocabularyError: the vocabulary cannot be found or read.
    """

    def __init__(self, model: Any, vocabulary: str | Path | TagVocabulary | Sequence[str | Path] = "general", *,
                 cache: TagTextCache | str | Path | None = DEFAULT_CACHE,
                 models_dir: str | Path | None = None) -> None:
        self.clip = clip_of(model)
        self.vocabulary = load_tag_vocabulary(vocabulary)
        if isinstance(cache, TagTextCache):
            self.cache = cache
        else:
            self.cache = TagTextCache(default_cache_dir(models_dir) if cache == DEFAULT_CACHE else cache)
        self.text: TextFeatures = self.cache.get(self.clip, self.vocabulary)
        self.logit_scale = logit_scale_of(self.clip)

    def scores(self, image_features: torch.Tensor, *, scoring: str = "probability") -> torch.Tensor:
        """``[batch, n_tags]`` scores of CLIP image features ``[batch, D]`` (raw or normalised), on the CPU."""
        return score_tags(image_features, self.text, self.vocabulary, scoring=scoring, logit_scale=self.logit_scale)

    def tag_features(self, image_features: torch.Tensor, selection: TagSelection | None = None) -> list[list[Tag]]:
        """Each image's tags, from its CLIP image features ``[batch, D]``.

        Raises:
            TagOptionError: ``selection.category_limits`` names a category the vocabulary lacks.
        """
        sel = selection or TagSelection()
        sel.check_categories(self.vocabulary)
        return [select_tags(row, self.vocabulary, sel) for row in self.scores(image_features, scoring=sel.scoring)]

    def tag_pixels(self, pixels: torch.Tensor, selection: TagSelection | None = None) -> list[list[Tag]]:
        """Each image's tags from preprocessed pixels ``[batch, 3, H, W]`` (``clip.preprocess``)."""
        return self.tag_features(self.clip.encode_images(pixels), selection)

    def __repr__(self) -> str:
        return f"Tagger({self.vocabulary!r}, CLIP {self.clip.name}, {self.text.prompts.shape[0]} prompts)"


def _load_all(images: Sequence | Any) -> list:
    from ..images import describe_source, try_load_image

    if not isinstance(images, (list, tuple)):
        images = [images]
    out = []
    for src in images:
        img, err = try_load_image(src)
        if err is not None:
            raise ImageLoadError(f"cannot tag {describe_source(src)}: {err}")
        out.append(img)
    return out


def tag_images(model: Any, images: Sequence | Any,
               vocabulary: str | Path | TagVocabulary | Sequence[str | Path] | Tagger = "general",
               options: TagSelection | Mapping[str, Any] | None = None, *, batch_size: int = 16,
               cache: TagTextCache | str | Path | None = DEFAULT_CACHE) -> list[list[Tag]]:
    """Tag images with a CLIP: one image encoding per image plus one matrix product per batch.

    Args:
        model: a Captioner (its CLIP is used) or a ClipBackbone.
        images: paths, PIL images, bytes or arrays (one, or a list).
        vocabulary: see :class:`Tagger`; or a Tagger already built (its model and cache are used).
        options: a :class:`~lib_clipcap.tags.selection.TagSelection`, or its fields as a dict.
        batch_size: images per CLIP call.
        cache: see :class:`Tagger`.

    Returns:
        One list of :class:`~lib_clipcap.tags.selection.Tag` per input, in order.

    Raises:
        ImageLoadError: an input cannot be loaded (the message names it); use :func:`caption_and_tag` to get
            per-input errors instead.
        TagOptionError: a bad selection setting (before any image is read).
        ClipCapError: ``batch_size`` < 1.
    """
    if batch_size < 1:
        raise ClipCapError(f"batch_size must be >= 1; got {batch_size}")
    sel = options if isinstance(options, TagSelection) else TagSelection(**dict(options or {}))
    tagger = vocabulary if isinstance(vocabulary, Tagger) else Tagger(model, vocabulary, cache=cache)
    sel.check_categories(tagger.vocabulary)
    pil = _load_all(images)
    out: list[list[Tag]] = []
    for i in range(0, len(pil), batch_size):
        out.extend(tagger.tag_pixels(tagger.clip.preprocess_images(pil[i:i + batch_size]), sel))
    return out


def caption_and_tag(captioner: Any, tagger: Tagger, images: Sequence | Any,
                    options: TagSelection | Mapping[str, Any] | None = None, *, batch_size: int = 16,
                    rerank: str = "none", **decoding: Any) -> list[tuple[Any, list[Tag]]]:
    """Caption and tag images with one CLIP image encoding each (the captioner's features feed both).

    Args:
        captioner: a :class:`~lib_clipcap.captioner.Captioner`; ``tagger`` must use the same CLIP.
        tagger: the :class:`Tagger`.
        images: paths, PIL images, bytes or arrays (one, or a list).
        options: the tag selection (or its fields as a dict).
        batch_size: images per model call.
        rerank, decoding: as :meth:`~lib_clipcap.captioner.Captioner.caption` (``decoding="greedy"``...).

    Returns:
        ``(CaptionResult, tags)`` per input, in order; an input that cannot be loaded gets a result with ``error``
        set and no tags, and the others are processed normally.

    Raises:
        ClipCapError: ``tagger`` was built for another CLIP than the captioner's.
        TagOptionError, DecodingError: bad settings (before any image is read).
    """
    from ..results import caption_in_batches

    if clip_of(captioner) is not tagger.clip:
        raise ClipCapError("caption_and_tag: the tagger uses another CLIP than the captioner; build it with "
                           "Tagger(captioner, vocabulary)")
    sel = options if isinstance(options, TagSelection) else TagSelection(**dict(options or {}))
    sel.check_categories(tagger.vocabulary)
    opts = captioner.decoding_options(**decoding)
    tags_of: dict[int, list[Tag]] = {}

    def batch(imgs: list, start: int) -> list:
        batch_opts = opts if opts.seed is None else opts.replace(seed=opts.seed + start)
        with getattr(captioner, "_lock", nullcontext()):  # as caption_pixels: a captioner may serve threads
            feats = captioner.clip.encode_images(captioner.clip.preprocess_images(imgs))
        results = captioner.caption_features(feats, batch_opts, rerank=rerank)
        for k, t in enumerate(tagger.tag_features(feats, sel)):
            tags_of[id(results[k])] = t
        return results

    results = caption_in_batches(images, batch_size, batch)
    return [(r, tags_of.get(id(r), [])) for r in results]
