"""What can be wrong with a caption file, decided from its text alone (no model): the review table's flags.

Flags (the strings are part of the CLI's JSON/CSV and the API):

- ``missing``: the image has no caption file;
- ``empty``: the file holds only white space;
- ``non_utf8``: the file is not UTF-8 (trainers read it as garbage or fail); shown with replacement characters;
- ``duplicate``: the same caption (case and surrounding white space ignored) is shared by ``duplicate_min`` or more
  images: usually a tagging run that said the same thing for everything, which teaches the trainer nothing;
- ``trigger_only``: the caption is nothing but the trigger word(s) / prefix (a run whose caption came out empty);
- ``too_long``: more CLIP tokens than the trainer reads (75 by default, kohya's ``max_token_length``); the rest is
  silently cut off during training;
- ``control_chars``: line breaks (``U+2028``/``U+2029`` included) or other control characters (kohya joins lines,
  other trainers keep only the first): what :func:`check_caption_text` would refuse to save.

Importing this module is cheap: no torch, no Pillow.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

from ..errors import ClipCapError
from ..textrules import has_forbidden_chars, text_problem

__all__ = ["FLAGS", "DEFAULT_DUPLICATE_MIN", "DEFAULT_TOKEN_LIMIT", "CaptionTextError", "check_caption_text",
           "clip_token_counter", "decode_caption", "detect_trigger", "duplicate_keys", "flags_for", "is_trigger_only"]

FLAGS = ("missing", "empty", "non_utf8", "duplicate", "trigger_only", "too_long", "control_chars")
#: Tokens a Stable Diffusion trainer reads from a caption (kohya's default ``max_token_length``; 77 minus the start
#: and end tokens).
DEFAULT_TOKEN_LIMIT = 75
#: A caption shared by at least this many images is flagged ``duplicate``.
DEFAULT_DUPLICATE_MIN = 3

_SPLIT = re.compile(r"[,;|]")


class CaptionTextError(ClipCapError, ValueError):
    """A caption that must not be written (control characters, unencodable text); the message says where."""


def check_caption_text(text: object) -> str:
    """Return ``text`` if it can be saved as a caption, else raise.

    A caption file is one line of UTF-8: trainers read the first line (or join lines), so a line break (``\\n``,
    ``U+2028``, ``U+2029``, ``U+0085``...) or any other control character would silently change what the trainer
    sees. The rule is batch tagging's own (:func:`lib_clipcap.textrules.text_problem`), so both faces refuse the
    same text with the same words.

    Raises:
        CaptionTextError: not a string, a refused character (named with its code point and position), or text that
            cannot be encoded as UTF-8 (lone surrogates).
    """
    if not isinstance(text, str):
        raise CaptionTextError(f"a caption must be a string, got {type(text).__name__}")
    problem = text_problem(text)
    if problem is not None:
        raise CaptionTextError(f"the caption is refused: {problem}")
    return text


def decode_caption(data: bytes) -> tuple[str, bool]:
    """The text of a caption file's bytes and whether they were valid UTF-8 (a BOM is dropped).

    Invalid bytes become U+FFFD so the text can still be shown and edited; saving it writes clean UTF-8.
    """
    try:
        return data.decode("utf-8-sig"), True
    except UnicodeDecodeError:
        return data.decode("utf-8-sig", errors="replace"), False


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def _segments(text: str) -> list[str]:
    return [s for s in (_norm(p).strip(" .") for p in _SPLIT.split(text)) if s]


def detect_trigger(captions: Iterable[str | None], *, min_share: float = 0.5, min_count: int = 3) -> list[str]:
    """Guess the trigger word(s): a leading comma-separated segment that most captions start with.

    LoRA training sets are tagged with ``--prefix "sks, "``, so the first segment of most captions is the trigger.

    Args:
        captions: The captions (``None`` for missing ones, ignored).
        min_share: The segment must start at least this share of the non-empty captions...
        min_count: ...and at least this many of them.

    Returns:
        ``[segment]`` in lower case, or ``[]`` when no segment is that common.
    """
    leads = Counter()
    n = 0
    for c in captions:
        if c is None:
            continue
        segs = _segments(c)
        if not segs:
            continue
        n += 1
        # Only captions that go on after their first segment count: otherwise a caption repeated verbatim on many
        # images (a duplicate) would pass for a trigger and every copy would be called trigger-only.
        if len(segs) > 1:
            leads[segs[0]] += 1
    if not leads:
        return []
    seg, count = leads.most_common(1)[0]
    return [seg] if count >= min_count and count >= min_share * n else []


def is_trigger_only(text: str, triggers: Sequence[str]) -> bool:
    """True when ``text`` holds nothing but trigger words (and separators / punctuation)."""
    if not triggers:
        return False
    wanted = {_norm(t).strip(" .,") for t in triggers if t.strip(" .,")}
    segs = _segments(text)
    return bool(segs) and all(s in wanted for s in segs)


def duplicate_keys(captions: Iterable[str | None], *, duplicate_min: int = DEFAULT_DUPLICATE_MIN) -> dict[str, int]:
    """Normalised captions shared by at least ``duplicate_min`` images -> how many share each."""
    counts = Counter(_norm(c) for c in captions if c is not None and c.strip())
    return {k: n for k, n in counts.items() if n >= max(2, duplicate_min)}


_TOKENIZER: Callable[[str], int] | None = None
_COUNT_CHARS = 8192


def clip_token_counter() -> Callable[[str], int]:
    """CLIP BPE token count of a text (without the start/end tokens), as Stable Diffusion trainers count them
    (texts longer than 8192 characters: the count of their first 8192, already far above any limit).

    Uses open_clip's tokenizer (the same BPE as Stable Diffusion's text encoder; :mod:`lib_clipcap.clip_bpe`, so that
    it works where open_clip is missing or too old), loaded once on first use.
    """
    global _TOKENIZER
    if _TOKENIZER is None:
        from ..clip_bpe import ClipBpeTokenizer

        tok = ClipBpeTokenizer()
        # A BPE token covers at most a few dozen characters, so the first _COUNT_CHARS characters already hold far
        # more than any trainer's limit; counting a pasted megabyte in full would stall the scan for nothing.
        _TOKENIZER = lambda text: len(tok.encode(text[:_COUNT_CHARS]))  # noqa: E731
    return _TOKENIZER


def flags_for(text: str | None, *, utf8: bool = True, tokens: int | None = None,
              token_limit: int = DEFAULT_TOKEN_LIMIT, triggers: Sequence[str] = (),
              duplicates: dict[str, int] | None = None) -> list[str]:
    """The flags of one caption (see the module docstring), in :data:`FLAGS` order.

    Args:
        text: The caption text, ``None`` when the file is missing.
        utf8: Whether the file was valid UTF-8.
        tokens: Its CLIP token count (``None``: not checked).
        token_limit: The trainer's token limit.
        triggers: Trigger words / prefix segments (see :func:`detect_trigger`).
        duplicates: From :func:`duplicate_keys` over the whole folder.
    """
    if text is None:
        return ["missing"]
    out: list[str] = []
    if not text.strip():
        out.append("empty")
    if not utf8:
        out.append("non_utf8")
    if text.strip() and duplicates and _norm(text) in duplicates:
        out.append("duplicate")
    if text.strip() and is_trigger_only(text, triggers):
        out.append("trigger_only")
    if tokens is not None and tokens > token_limit:
        out.append("too_long")
    if has_forbidden_chars(text):
        out.append("control_chars")
    return out
