"""Caption review: open a tagged training set, see the worst captions first, fix them in place.

    from lib_clipcap.review import scan_folder, ReviewScorer, load_review_clip, sort_rows, save_captions

    table = scan_folder("dataset/")                           # images + sidecar captions, flags (no model)
    clip = load_review_clip(model="flickr8k")                 # only the model's CLIP
    ReviewScorer(clip, default_grammar(clip)).score(table)    # CLIP-S, grammar; image features cached on disk
    for row in sort_rows(table.rows, "clip")[:20]:
        print(row.clip_score, row.flags, row.rel, row.caption)
    save_captions(table, [(row.image, "a better caption")])   # atomic, journaled, undoable (undo_last)

    # Tag captions ("sks, red, triangle"): each tag scored against its image, the disagreeing ones first.
    ReviewScorer(clip, tags=ReviewTagScorer(clip, "general")).score(table)
    rows = sort_rows(filter_rows(table.rows, tags=["red"]), "tags")       # row.tag_scores: lowest first
    save_captions(table, plan_tags(rows, add=["outdoors"], remove=["blurry"], table=table))  # one undo step

Modules: :mod:`.flags` (text checks), :mod:`.table` (scan, sort, filter), :mod:`.cache` (image-feature cache),
:mod:`.scoring` (CLIP-S / RefCLIP-S / grammar over a table), :mod:`.tags` (tag captions: tags, their scores, tag
edits), :mod:`.edits` (save, undo, bulk edits), :mod:`.cli`
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
              "plan_bulk", "plan_tags"),
    "tags": ("ReviewTagScorer", "split_tags", "tag_key", "tag_counts"),
})
__all__ = sorted(_LAZY_NAMES)
