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

from .._lazy import lazy_exports

__getattr__, _LAZY_NAMES = lazy_exports(__name__, {
    "flags": ("FLAGS", "CaptionTextError", "check_caption_text"),
    "table": ("ReviewRow", "ReviewTable", "SORT_KEYS", "scan_folder", "sort_rows", "filter_rows"),
    "cache": ("FeatureCache",),
    "scoring": ("ReviewScorer", "load_review_clip", "default_grammar"),
    "edits": ("EditOutcome", "ReviewEditError", "UnknownImageError", "save_captions", "undo_last", "undo_depth",
              "plan_bulk"),
})
__all__ = sorted(_LAZY_NAMES)
