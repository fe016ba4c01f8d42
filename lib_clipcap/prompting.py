"""A caption used as a prompt: how it is combined with the prompt the user typed.

``{caption}`` anywhere in the typed prompt is the placeholder: it is replaced by the caption, whatever the mode
(``"masterpiece, {caption}, by an old master"``). Without a placeholder the mode decides:

- ``replace``: the caption alone;
- ``append``: the typed prompt, then the caption (the typed text is a prefix);
- ``prepend``: the caption, then the typed prompt (the typed text is a suffix).

Parts are joined with ``", "`` unless the first already ends with a comma; an empty typed prompt gives the caption.
A caption's closing period is dropped wherever other text follows it ("a red circle on a white background, oil
painting", not "background., oil"): :func:`join_phrases` is the one rule for every joined caption (prompts, sidecar
prefix/suffix, existing-caption append/prepend).
"""

from __future__ import annotations

__all__ = ["PLACEHOLDER", "PROMPT_MODES", "caption_prompt", "join_phrases", "strip_end_period"]

PLACEHOLDER = "{caption}"
#: ``off`` leaves the prompt alone; see the module docstring for the others.
PROMPT_MODES = ("off", "replace", "append", "prepend")


def strip_end_period(text: str) -> str:
    """``text`` without surrounding whitespace and without the period(s) that end it (``"a dog."`` -> ``"a dog"``)."""
    return text.strip().rstrip(".").rstrip()


def _inner(part: str) -> str:
    """A part followed by another: its closing period goes (nothing else changes, so deliberate whitespace stays)."""
    if not part.rstrip().endswith("."):
        return part
    return strip_end_period(part) or part


def join_phrases(parts: "list[str] | tuple[str, ...]", separator: str = ", ") -> str:
    """Join the non-empty ``parts`` with ``separator``; each part followed by another loses its closing period.

    A part that already ends with the separator's punctuation (``"masterpiece,"``, ``"mytrigger, "``) is followed by
    one space only, not a second separator.
    """
    kept = [p for p in parts if p and p.strip()]
    mark = separator.strip()
    out = ""
    for i, part in enumerate(kept):
        if i + 1 < len(kept):
            part = _inner(part)
        if not out:
            out = part
        elif mark and out.rstrip().endswith(mark):
            out = f"{out.rstrip()} {part.lstrip()}"
        else:
            out = f"{out}{separator}{part}"
    return out


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
