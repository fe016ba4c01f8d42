"""Selective Blind Guessing (Huynh et al., INISCOM 2024): captions written from CLIP keywords by a GPT-2 that never
sees the image, the best of k candidates chosen by CLIP.

    from lib_clipcap.sbg import BlindGuesser
    sbg = BlindGuesser.from_pretrained("shapes-sbg")
    print(sbg.caption("image.png", top_k_candidates=5)[0].text)

Modules: :mod:`.vocabulary` (vocabulary + hierarchy JSON), :mod:`.importer` (the original pickles, read safely),
:mod:`.keywords` (zero-shot keywords, text-feature cache), :mod:`.generator` (the GPT-2 generator),
:mod:`.guesser` (the pipeline). Importing this package is cheap: torch loads with the submodules that need it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

__getattr__, _LAZY_NAMES = lazy_exports(__name__, {
    "guesser": ("BlindGuesser",),
    "keywords": ("KeywordExtractor", "KeywordResult", "TextFeatureCache"),
    "generator": ("SbgGenerator",),
    "vocabulary": ("Vocabulary", "VocabularyError", "load_vocabulary"),
    "importer": ("import_original", "safe_load_pickle", "UnsafePickleError"),
})
__all__ = sorted(_LAZY_NAMES)


if TYPE_CHECKING:  # pragma: no cover
    from .generator import SbgGenerator
    from .guesser import BlindGuesser
    from .importer import UnsafePickleError, import_original, safe_load_pickle
    from .keywords import KeywordExtractor, KeywordResult, TextFeatureCache
    from .vocabulary import Vocabulary, VocabularyError, load_vocabulary
