"""CLIP-ranked tags (issue 22): tag vocabularies as data, their text features cached on disk, and the rules that
turn scores into a kohya-style tag list (``sks, red, triangle, white background``).

    from lib_clipcap.tags import TagSelection, format_tags, tag_images
    tags = tag_images(captioner, ["a.png"], "general", TagSelection(threshold=0.3, max_tags=10, trigger="sks"))
    print(format_tags(tags[0]))

Modules: :mod:`.vocabulary` (plain-text and JSON vocabularies, the bundled ones, SBG vocabularies as tag
vocabularies), :mod:`.cache` (text features per vocabulary and CLIP, on disk), :mod:`.ranking` (scores),
:mod:`.selection` (the rules that choose tags, and the text; torch-free), :mod:`.tagger` (the entry points),
:mod:`.prompt` (prompts: the caption plus CLIP-ranked modifiers, fast or searched for CLIP-S, and a negative prompt).
Importing this package is cheap: torch loads with the submodules that need it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

__getattr__, _LAZY_NAMES = lazy_exports(__name__, {
    "vocabulary": ("TagEntry", "TagVocabulary", "TagVocabularyError", "load_tag_vocabulary", "merge_vocabularies",
                   "parse_text_vocabulary"),
    "cache": ("TagTextCache", "default_cache_dir"),
    "ranking": ("score_tags",),
    "selection": ("DEFAULT_THRESHOLD", "Tag", "TagOptionError", "TagSelection", "format_tags", "select_tags"),
    "tagger": ("Tagger", "caption_and_tag", "tag_images"),
    "prompt": ("PromptOptionError", "PromptOptions", "PromptResult", "Prompter", "make_prompt", "prompt_images"),
})
__all__ = sorted(_LAZY_NAMES)


if TYPE_CHECKING:  # pragma: no cover
    from .cache import TagTextCache, default_cache_dir
    from .prompt import PromptOptionError, PromptOptions, PromptResult, Prompter, make_prompt, prompt_images
    from .ranking import score_tags
    from .selection import DEFAULT_THRESHOLD, Tag, TagOptionError, TagSelection, format_tags, select_tags
    from .tagger import Tagger, caption_and_tag, tag_images
    from .vocabulary import (TagEntry, TagVocabulary, TagVocabularyError, load_tag_vocabulary, merge_vocabularies,
                             parse_text_vocabulary)
