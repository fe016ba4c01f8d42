"""Trigger words in review: a caption is ``triggers, body``, and review treats the two parts apart.

Batch tagging puts the trigger words (``tag --trigger WORD``) first in every caption file, as the first
comma-separated segments (:func:`lib_clipcap.batch.policy.compose`). They mean nothing to CLIP or to the grammar
head, so review scores the *body* only (a ``"sks, "`` in front would otherwise drag every grammar score to 0 and CLIP-S
with it), shows the triggers apart, and puts them back on every text it writes: a saved edit, a candidate taken from
a recaption, a bulk find/replace (which sees the body only). A trigger is never written twice.

The triggers are the ones given (``review --trigger``, the API's ``triggers``, the UI's box) or detected
(:func:`lib_clipcap.review.flags.detect_trigger`). Importing this module is cheap.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["SEPARATOR", "attach_triggers", "parse_triggers", "split_triggers"]

#: How review joins triggers and body (batch tagging's default separator).
SEPARATOR = ", "


def _key(segment: str) -> str:
    return " ".join(segment.split()).casefold().strip(" .")


def _wanted(triggers: Iterable[str]) -> set:
    return {k for k in (_key(t) for t in triggers) if k}


def split_triggers(text: str, triggers: Sequence[str]) -> tuple[list[str], str]:
    """``(leading trigger segments as written, body)`` of a caption.

    The leading comma-separated segments that are one of ``triggers`` (case, surrounding white space and a closing
    period ignored) are the caption's triggers; the rest, white space before it dropped, is its body. A caption
    without them is all body: ``split_triggers("a dog", ["sks"]) == ([], "a dog")``;
    ``split_triggers("SKS, a dog", ["sks"]) == (["SKS"], "a dog")``; ``split_triggers("sks", ["sks"]) == (["sks"], "")``.
    """
    wanted = _wanted(triggers)
    head: list[str] = []
    rest = text
    while wanted and rest.strip():
        cut = rest.find(",")
        seg = rest if cut < 0 else rest[:cut]
        if _key(seg) not in wanted:
            break
        head.append(seg.strip())
        rest = "" if cut < 0 else rest[cut + 1:]
    return head, (rest.lstrip() if head else text)


def attach_triggers(text: str, triggers: Sequence[str], separator: str = SEPARATOR) -> str:
    """``text`` with ``triggers`` first, each once.

    A text that already starts with exactly these triggers (in this order) is returned as it is; otherwise the
    triggers it starts with, and trigger segments elsewhere in it, are taken out and ``triggers`` put first
    (batch tagging's rule: :func:`lib_clipcap.batch.policy.compose`). Without ``triggers``, ``text`` as it is.
    """
    trig = [t.strip() for t in triggers if t.strip()]
    if not trig:
        return text
    head, body = split_triggers(text, trig)
    from ..batch.policy import strip_triggers
    from ..phrases import join_phrases

    clean = strip_triggers(body, trig, separator)
    if [_key(h) for h in head] == [_key(t) for t in trig] and clean == body:
        return text
    return join_phrases(tuple(trig) + (clean.strip(),), separator)


def parse_triggers(value: object) -> list[str] | None:
    """Trigger words typed in a UI box (``"sks, ohwx"``) or given as a list; ``None`` when none are given (detect)."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)  # type: ignore[arg-type]
    out = list(dict.fromkeys(str(s).strip() for s in items if str(s).strip()))
    return out or None
