"""Joining a caption with other text: the one rule for every joined caption (WebUI prompts, sidecar prefix/suffix,
existing-caption append/prepend in batch tagging).

Parts are joined with ``", "`` unless the first already ends with a comma. A caption's closing period is dropped
wherever other text follows it ("a red circle on a white background, oil painting", not "background., oil").
"""

from __future__ import annotations

__all__ = ["join_phrases", "strip_end_period"]


def strip_end_period(text: str) -> str:
    """``text`` without surrounding whitespace and without the period(s) that end it (``"a dog."`` -> ``"a dog"``)."""
    return text.strip().rstrip(".").rstrip()


def _inner(part: str) -> str:
    """A part followed by another: its closing period goes (nothing else changes, so deliberate whitespace stays)."""
    if not part.rstrip().endswith("."):
        return part
    return strip_end_period(part) or part


def join_phrases(parts: list[str] | tuple[str, ...], separator: str = ", ") -> str:
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
