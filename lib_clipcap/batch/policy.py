"""Caption text: post-processing of the generated caption and the existing-caption policies.

The order is fixed and documented because users combine the options: the *generated* caption is lower-cased, then
find/replace runs (so a replacement may introduce capitals, e.g. a trigger word), banned words are removed, trailing
periods stripped, whitespace collapsed and the length cut; then prefix and suffix are joined on with the separator;
finally the existing caption file's text is kept, replaced, or joined before/after it.
"""

from __future__ import annotations

import re
from typing import Optional

from ..phrases import join_phrases
from .options import TagOptions

_SPACE = re.compile(r"\s+")
# Control characters a model could emit (C0 and C1, DEL); whitespace among them is collapsed by _SPACE first.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Punctuation left dangling when a caption is cut at a word boundary ("a red circle," -> "a red circle").
_DANGLING = " ,;:-"


def remove_words(text: str, words: "list[str] | tuple[str, ...]") -> str:
    """Remove whole-word, case-insensitive occurrences of ``words`` (phrases allowed) from ``text``."""
    for w in words:
        w = w.strip()
        if w:
            text = re.sub(rf"(?<!\w){re.escape(w)}(?!\w)", " ", text, flags=re.IGNORECASE)
    return text


def truncate(text: str, max_length: Optional[int]) -> str:
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


def decorate(caption: str, options: TagOptions) -> str:
    """Join ``prefix``, ``caption`` and ``suffix`` (those not empty) with the separator; a caption followed by a
    suffix loses its closing period (:func:`lib_clipcap.phrases.join_phrases`)."""
    return join_phrases((options.prefix, caption, options.suffix), options.separator)


def combine(existing: Optional[str], new: str, options: TagOptions) -> str:
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


def final_text(existing: Optional[str], generated: str, options: TagOptions) -> tuple[str, str]:
    """The cleaned caption and the full text to write for it.

    Returns:
        ``(cleaned caption, file content)``.
    """
    caption = clean_caption(generated, options)
    return caption, combine(existing, decorate(caption, options), options)
