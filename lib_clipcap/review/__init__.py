"""Caption review: open a tagged training set, see the worst captions first, fix them in place.

    from lib_clipcap.review import scan_folder, ReviewScorer, load_review_clip, sort_rows, save_captions

    table = scan_folder("dataset/")                           # images + sidecar captions, flags (no model)
    clip = load_review_clip(model="flickr8k")                 # only the model's CLIP
    ReviewScorer(clip, default_grammar(clip)).score(table)    # CLIP-S, grammar; image features cached on disk
    for row in sort_rows(table.rows, "clip")[:20]:
        print(row.clip_score, row.flags, row.rel, row.caption)
    save_captions(table, [(row.image, "a better caption")])   # atomic, journaled, undoable (undo_last)

Modules: :mod:`.flags` (text checks), :mod:`.table` (scan, sort, filter), :mod:`.cache` (image-feature cache),
:mod:`.scoring` (CLIP-S / RefCLIP-S / grammar over a table), :mod:`.edits` (save, undo, bulk edits), :mod:`.cli`
(``python -m lib_clipcap review``), :mod:`.routes` (HTTP API), :mod:`.ui` (the gradio section).
Importing this package is cheap: torch loads only when scoring.
"""

from __future__ import annotations

from .._lazy import lazy_getattr

_LAZY = {
    "FLAGS": ("flags", "FLAGS"),
    "CaptionTextError": ("flags", "CaptionTextError"),
    "check_caption_text": ("flags", "check_caption_text"),
    "ReviewRow": ("table", "ReviewRow"),
    "ReviewTable": ("table", "ReviewTable"),
    "SORT_KEYS": ("table", "SORT_KEYS"),
    "scan_folder": ("table", "scan_folder"),
    "sort_rows": ("table", "sort_rows"),
    "filter_rows": ("table", "filter_rows"),
    "FeatureCache": ("cache", "FeatureCache"),
    "ReviewScorer": ("scoring", "ReviewScorer"),
    "load_review_clip": ("scoring", "load_review_clip"),
    "default_grammar": ("scoring", "default_grammar"),
    "EditOutcome": ("edits", "EditOutcome"),
    "ReviewEditError": ("edits", "ReviewEditError"),
    "UnknownImageError": ("edits", "UnknownImageError"),
    "save_captions": ("edits", "save_captions"),
    "undo_last": ("edits", "undo_last"),
    "undo_depth": ("edits", "undo_depth"),
    "plan_bulk": ("edits", "plan_bulk"),
}

__all__ = sorted(_LAZY)

__getattr__ = lazy_getattr(__name__, _LAZY)
