"""Caption text: post-processing of the generated caption and the existing-caption policies.

The order is fixed and documented because users combine the options: the *generated* caption is lower-cased, then
find/replace runs (so a replacement may introduce capitals, e.g. a trigger word), banned words are removed, trailing
periods stripped, whitespace collapsed and the length cut; then prefix and suffix are joined on with the separator;
finally the existing caption file's text is kept, replaced, or joined before/after it, and the trigger words go
first.

**The tool knows its own text.** A file is laid out as ``triggers, body``; the body is the user's text and the tool's
own segment (prefix, generated caption, suffix), in the order the policy put them. The run record
(:mod:`.runs`) keeps both parts of every file a run wrote, so a later ``append``/``prepend`` run replaces its own
earlier segment instead of adding a second one (:func:`own_part`). A file whose tool-written segment was edited since
is the user's text: ``append``/``prepend`` leave it alone (only ``overwrite`` replaces it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from ..phrases import _inner, join_phrases
from .options import TagOptions

_SPACE = re.compile(r"\s+")
# Control characters a model could emit (C0 and C1, DEL); whitespace among them is collapsed by _SPACE first.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Punctuation left dangling when a caption is cut at a word boundary ("a red circle," -> "a red circle").
_DANGLING = " ,;:-"


def remove_words(text: str, words: list[str] | tuple[str, ...]) -> str:
    """Remove whole-word, case-insensitive occurrences of ``words`` (phrases allowed) from ``text``."""
    for w in words:
        w = w.strip()
        if w:
            text = re.sub(rf"(?<!\w){re.escape(w)}(?!\w)", " ", text, flags=re.IGNORECASE)
    return text


def truncate(text: str, max_length: int | None) -> str:
    """Cut ``text`` to at most ``max_length`` characters, at the last word boundary when there is one."""
    if max_length is None or len(text) <= max_length:
        return text
    cut = text[:max_length]
    if text[max_length] != " " and " " in cut:  # the cut falls inside a word: drop the partial word
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(_DANGLING) or text[:max_length]


def clean_caption(text: str, options: TagOptions) -> str:
    """Post-process a generated caption (see the module docstring for the order).

    Args:
        text: The model's caption.
        options: Uses ``lowercase``, ``replace``, ``banned_words``, ``strip_period``, ``max_length``.

    Returns:
        The cleaned caption, one line, no surrounding whitespace (may be empty if nothing is left).
    """
    if options.lowercase:
        text = text.lower()
    for find, repl in options.replace:
        text = text.replace(find, repl)
    text = remove_words(text, options.banned_words)
    text = _SPACE.sub(" ", text).strip()  # also turns newlines into spaces: a caption file holds one line
    text = _CONTROL.sub("", text)
    if options.strip_period:
        text = text.rstrip(". ").rstrip()
    return truncate(text, options.max_length).strip()


def with_tags(caption: str, tags: Sequence[str], options: TagOptions, content: str | None = None) -> str:
    """The tool's text for ``content`` (default ``options.content``): the cleaned caption, the tags, or the caption
    then the tags.

    Tags are joined with the separator (kohya style: ``red, triangle, white background``); after a caption, the
    caption loses its closing period (``a red triangle, red, triangle``). With ``tags_file`` each file has its own
    content (:meth:`TagOptions.outputs <lib_clipcap.batch.options.TagOptions.outputs>`).
    """
    content = options.content if content is None else content
    if content == "caption":
        return caption
    tag_text = options.separator.join(tags)
    if content == "tags":
        return tag_text
    return join_phrases((caption, tag_text), options.separator)


def decorate(caption: str, options: TagOptions) -> str:
    """Join ``prefix``, ``caption`` and ``suffix`` (those not empty) with the separator; a caption followed by a
    suffix loses its closing period (:func:`lib_clipcap.phrases.join_phrases`)."""
    return join_phrases((options.prefix, caption, options.suffix), options.separator)


def combine(existing: str | None, new: str, options: TagOptions) -> str:
    """Apply the existing-caption policy.

    Args:
        existing: The caption file's current text, or ``None`` when there is no file.
        new: The decorated new caption.
        options: Uses ``existing`` (``skip`` behaves as ``overwrite`` here: skipping happens before captioning) and
            ``separator``.

    Returns:
        The text to write.
    """
    old = (existing or "").strip()
    if not old or options.existing in ("skip", "overwrite"):
        return new
    if options.existing == "append":
        return join_phrases((old, new), options.separator)
    return join_phrases((new, old), options.separator)  # prepend


def final_text(existing: str | None, generated: str, options: TagOptions) -> tuple[str, str]:
    """The cleaned caption and the full text to write for it.

    Returns:
        ``(cleaned caption, file content)``.
    """
    caption = clean_caption(generated, options)
    return caption, compose(existing, decorate(caption, options), options)


# ------------------------------------------------------------------------------------------------ trigger words
def _fold(s: str) -> str:
    return s.strip().casefold()


def strip_triggers(text: str, triggers: Iterable[str], separator: str) -> str:
    """``text`` without the segments (split on the separator's punctuation) that are one of ``triggers``
    (case-insensitive), so a trigger put first is never there twice. Text without such a segment is returned as is."""
    wanted = {_fold(t) for t in triggers if t.strip()}
    mark = separator.strip() or separator
    if not wanted or not text:
        return text
    parts = text.split(mark) if mark else [text]
    kept = [p for p in parts if _fold(p) not in wanted]
    if len(kept) == len(parts):
        return text
    return join_phrases([p.strip() for p in kept], separator)


def compose(user: str | None, own: str, options: TagOptions) -> str:
    """The file content: the trigger words first, then ``own`` placed beside the user's text by the policy.

    Args:
        user: The user's text to keep (``None`` or empty: none; ignored by ``overwrite``).
        own: The tool's segment (:func:`decorate` of the cleaned caption).
    """
    body = combine(strip_triggers(user or "", options.triggers, options.separator) or None, own, options)
    return join_phrases(tuple(options.triggers) + (body,), options.separator)


def _without_own(body: str, own: str, separator: str) -> str | None:
    """``body`` with the tool's ``own`` segment taken off its start or end; ``None`` when it is not there as written
    (the user edited it)."""
    body = body.strip()
    for o in dict.fromkeys((own.strip(), _inner(own).strip())):
        if not o:
            continue
        if body == o:
            return ""
        if body.endswith(separator + o):
            return body[: -len(separator + o)]
        if body.startswith(o + separator):
            return body[len(o + separator):]
    return None


def own_part(existing: str, sha: str, history: Sequence[object], options: TagOptions) -> tuple[str | None, str]:
    """What of an existing caption file is the user's, for an ``append``/``prepend`` run.

    Args:
        existing: The file's text.
        sha: SHA-256 of its bytes.
        history: Its :class:`~lib_clipcap.batch.runs.FileRecord` s, oldest first (empty: the tool never wrote it).
        options: Uses ``triggers`` and ``separator``.

    Returns:
        ``(user text, why)``: the text to keep beside the new caption (triggers removed); ``None`` when the tool's
        own earlier text was edited since, so the whole file is the user's and must not be rewritten.
    """
    recs: list = list(history)
    for rec in reversed(recs):
        if rec.after == sha:  # exactly what a run wrote: its user part is known
            return rec.user, f"replace own part (run {rec.run})"
    triggers = list(options.triggers) + [t for rec in recs for t in rec.triggers]
    body = strip_triggers(existing.strip(), triggers, options.separator)
    if not recs or any(rec.before == sha for rec in recs):  # never ours, or given back by an undo
        return body, options.existing
    rest = _without_own(body, recs[-1].own, options.separator)
    if rest is not None:  # the user edited only their own part: keep their edits, replace ours
        return rest, f"replace own part (run {recs[-1].run}; your edits kept)"
    return None, (f"its ClipCap text (run {recs[-1].run}) was edited since, so the file is yours now; "
                  f"--existing overwrite replaces it")
