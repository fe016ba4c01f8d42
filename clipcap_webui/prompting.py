"""A caption used as a prompt: how it is combined with the prompt the user typed.

``{caption}`` anywhere in the typed prompt is the placeholder: it is replaced by the caption, whatever the mode
(``"masterpiece, {caption}, by an old master"``). Without a placeholder the mode decides:

- ``replace``: the caption alone;
- ``append``: the typed prompt, then the caption (the typed text is a prefix);
- ``prepend``: the caption, then the typed prompt (the typed text is a suffix).

Parts are joined with ``", "`` unless the first already ends with a comma; an empty typed prompt gives the caption.
A caption's closing period is dropped wherever other text follows it ("a red circle on a white background, oil
painting", not "background., oil"): :func:`lib_clipcap.phrases.join_phrases` is the one rule for every joined caption.
"""

from __future__ import annotations

from lib_clipcap.phrases import join_phrases, strip_end_period

__all__ = ["PLACEHOLDER", "PROMPT_MODES", "caption_prompt"]

PLACEHOLDER = "{caption}"
#: ``off`` leaves the prompt alone; see the module docstring for the others.
PROMPT_MODES = ("off", "replace", "append", "prepend")


def _join(first: str, second: str) -> str:
    return join_phrases((first.strip(), second.strip()))


def _fill_placeholder(typed: str, caption: str) -> str:
    """``typed`` with every ``{caption}`` replaced; the caption keeps its period only where nothing follows it."""
    pieces = typed.split(PLACEHOLDER)
    out = pieces[0]
    for i, rest in enumerate(pieces[1:]):
        last = i == len(pieces) - 2
        text = caption if last and not rest.strip() else (strip_end_period(caption) or caption)
        out += text + rest
    return out


def caption_prompt(typed: str | None, caption: str, mode: str) -> str:
    """The prompt to generate with.

    Args:
        typed: The prompt the user typed (may hold ``{caption}``).
        caption: The image's caption.
        mode: One of :data:`PROMPT_MODES`.

    Returns:
        The combined prompt (``typed`` unchanged for ``off``).

    Raises:
        ValueError: ``mode`` is not one of :data:`PROMPT_MODES`.
    """
    if mode not in PROMPT_MODES:
        raise ValueError(f"prompt mode {mode!r} is invalid; valid: {', '.join(PROMPT_MODES)}")
    typed = typed or ""
    caption = caption.strip()
    if mode == "off":
        return typed
    if PLACEHOLDER in typed:
        return _fill_placeholder(typed, caption)
    if mode == "replace":
        return caption
    return _join(typed, caption) if mode == "append" else _join(caption, typed)
