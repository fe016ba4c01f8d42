"""What user-supplied text may hold, and how user-supplied patterns run: one rule for every face.

Batch tagging (prefix, suffix, separator, replacements), caption review (saved captions, their flags) and every file
suffix a request names (caption files, reference captions, manifests) are checked here, so the CLI, the HTTP API
and the UIs refuse exactly the same things with the same words:

- :func:`text_problem` / :func:`check_text`: a caption file holds one line of UTF-8 text. Control characters (C0,
  DEL, C1 -- ``U+0085`` NEXT LINE among them) and the Unicode line and paragraph separators ``U+2028`` / ``U+2029``
  are refused, because a trainer or an editor breaks a line at them (``str.splitlines()`` does) and text with line
  breaks is how a request could shape a file into something else (a launcher, a script). ``multiline=True`` lets
  line breaks and tabs through on purpose; other control characters are refused always. Lone surrogates (which JSON
  can carry) are refused too: they cannot be written as UTF-8.
- :func:`suffix_key` / :func:`check_suffix`: suffixes compare case-folded (``.TXT`` is ``.txt``, ``.PNG`` is
  ``.png``) for allow-lists and deny-lists alike; the suffix is kept as typed for the file name.
- :class:`UserPattern`: a regular expression typed by a user runs with the ``regex`` package's ``timeout`` under one
  deadline for a whole filter (``^(a|aa)+$`` backtracks exponentially), releasing the GIL meanwhile, so one request
  cannot stall a server. Without that package, regular expressions are refused with a message saying how to get it.

Importing this module is cheap (no torch, no Pillow).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Sequence
from typing import Any

from .options_table import OptionError

__all__ = ["LINE_BREAKS", "REGEX_TIME_LIMIT_S", "UserPattern", "check_suffix", "check_text", "forbidden_char",
           "has_forbidden_chars", "regex_available", "suffix_key", "text_problem"]

#: Line breaks as Python's ``str.splitlines()`` knows them (a trainer or an editor may break a line at any of them).
LINE_BREAKS = frozenset("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")
#: The longest a user's regular expression may run over one filter (all rows together), in seconds.
REGEX_TIME_LIMIT_S = 1.0


def _is_control(c: str) -> bool:
    o = ord(c)
    return o < 32 or 127 <= o < 160  # C0, DEL, C1 (Unicode category Cc)


def forbidden_char(text: str, *, multiline: bool = False) -> int | None:
    """Position of the first character :func:`text_problem` refuses, or ``None`` when there is none."""
    for i, c in enumerate(text):
        if c in LINE_BREAKS or c == "\t":
            if not multiline:
                return i
        elif _is_control(c) or 0xD800 <= ord(c) <= 0xDFFF:
            return i
    return None


def has_forbidden_chars(text: str) -> bool:
    """True when a one-line caption would be refused for its characters (the review's ``control_chars`` flag); a
    final line break, which editors add, does not count."""
    return forbidden_char(text.rstrip("\r\n")) is not None


def text_problem(text: str, *, multiline: bool = False, multiline_hint: str = "") -> str | None:
    """Why ``text`` must not go into a caption file, or ``None`` when it may.

    Args:
        text: The text.
        multiline: Line breaks and tabs are allowed (other control characters never are).
        multiline_hint: Appended to the line-break message, e.g. ``" (set multiline to allow line breaks on
            purpose)"``, where the face has such a setting.

    Returns:
        A sentence naming the character (``U+2028``) and its position, and saying what to do.
    """
    i = forbidden_char(text, multiline=multiline)
    if i is None:
        return None
    c = text[i]
    if c in LINE_BREAKS or c == "\t":
        kind = "control character" if _is_control(c) else "Unicode line/paragraph separator"
        return (f"it holds a line break or tab (the {kind} U+{ord(c):04X} at position {i}), but a caption file "
                f"holds one line of text{multiline_hint}; remove it")
    if 0xD800 <= ord(c) <= 0xDFFF:
        return (f"it holds a lone surrogate (U+{ord(c):04X} at position {i}), which cannot be written as UTF-8; "
                f"remove it")
    return f"it holds the control character U+{ord(c):04X} at position {i}; remove it"


def check_text(field: str, value: Any, *, multiline: bool = False, multiline_hint: str = "") -> str:
    """Return ``value`` if it may go into a caption file (see :func:`text_problem`), else raise.

    Raises:
        OptionError: not a string, or a refused character; the message names ``field``, the value as given, the
            character and what to do.
    """
    if not isinstance(value, str):
        raise OptionError(field, value, "must be a string")
    problem = text_problem(value, multiline=multiline, multiline_hint=multiline_hint)
    if problem is not None:
        raise OptionError(field, value, problem)
    return value


# ---------------------------------------------------------------------------------------------------- suffixes
def suffix_key(ext: str) -> str:
    """How suffixes compare: case-folded (``.TXT`` == ``.txt``, ``.PNG`` == ``.png``)."""
    return ext.casefold()


def check_suffix(field: str, ext: Any, *, forbidden: Iterable[str] = (), forbidden_reason: str = "",
                 allowed: Sequence[str] | None = None, allowed_hint: str = "") -> str:
    """Return ``ext`` (as typed) if it is a plain suffix that the rules allow, else raise.

    A suffix is refused when it is not ``.<something>``, holds a path separator or a control character, when it or
    its last part (``.txt.png`` ends in ``.png``) is in ``forbidden``, or, with an ``allowed`` list, when it is not
    in it. Every comparison is case-folded (:func:`suffix_key`).

    Args:
        field: The option or flag, named in the message.
        ext: The suffix, e.g. ``.txt``.
        forbidden: Suffixes never allowed (e.g. images'), with ``forbidden_reason`` saying why.
        allowed: The only suffixes allowed (``None``: any that is not forbidden), with ``allowed_hint`` saying how
            the operator allows another.

    Raises:
        OptionError: naming ``field`` and the suffix as typed.
    """
    if not isinstance(ext, str) or not ext.startswith(".") or len(ext) < 2:
        raise OptionError(field, ext, "must be a suffix starting with a dot, like .txt or .caption")
    if any(c in ext for c in "/\\\0") or ext in (".", "..") or forbidden_char(ext) is not None:
        raise OptionError(field, ext, "must be a plain suffix without path separators or control characters")
    key = suffix_key(ext)
    deny = {suffix_key(e) for e in forbidden}
    if key in deny or suffix_key(os.path.splitext("x" + ext)[1]) in deny:
        raise OptionError(field, ext, forbidden_reason or "is not allowed")
    if allowed is not None and key not in {suffix_key(e) for e in allowed}:
        raise OptionError(field, ext, f"not an allowed suffix (allowed: {', '.join(allowed)})"
                                      + (f"; allow it with {allowed_hint}" if allowed_hint else ""))
    return ext


# ---------------------------------------------------------------------------------------------------- patterns
def regex_available() -> bool:
    """Whether user regular expressions can run (the ``regex`` package, for its ``timeout``, is installed)."""
    try:
        import regex  # noqa: F401
    except ImportError:
        return False
    return True


class UserPattern:
    """A user's search text or regular expression, matched case-insensitively under one time limit.

    Plain text is matched as a case-folded substring (no regular expression involved). A regular expression is
    compiled with the ``regex`` package and every match gets the time left of ``time_limit`` seconds, counted from
    the first match: a filter over thousands of rows stops as a whole, not per row.

    Args:
        field: The option the text came from (named in errors).
        text: The text or pattern.
        regex: Treat ``text`` as a regular expression.
        time_limit: Seconds all matches together may take.

    Raises:
        OptionError: an invalid regular expression, or the ``regex`` package is missing.
    """

    def __init__(self, field: str, text: str, *, regex: bool = False, time_limit: float = REGEX_TIME_LIMIT_S,
                 case_insensitive: bool = True) -> None:
        self.field, self.text, self.time_limit = field, text, time_limit
        self._needle = text.casefold() if case_insensitive else text
        self._case_insensitive = case_insensitive
        self._compiled: Any = None
        self._deadline: float | None = None
        if regex:
            try:
                import regex as regex_lib
            except ImportError:
                raise OptionError(field, text, "regular expressions need the 'regex' package (pip install regex); "
                                               "install it, or search for plain text (regex: false)") from None
            try:
                flags = regex_lib.IGNORECASE if case_insensitive else 0
                self._compiled = regex_lib.compile(text, flags)
            except (regex_lib.error, ValueError, OverflowError) as e:
                raise OptionError(field, text, f"is not a valid regular expression ({e})") from None
            try:  # releases before 2016 had no timeout: without it the expression must not run at all
                self._compiled.search("", timeout=time_limit)
            except TypeError:
                raise OptionError(field, text, "regular expressions need a newer 'regex' package (pip install -U "
                                               "regex); upgrade it, or search for plain text") from None

    def _timeout(self) -> float:
        now = time.monotonic()
        if self._deadline is None:
            self._deadline = now + self.time_limit
        left = self._deadline - now
        if left <= 0:
            raise self._too_slow()
        return left

    def _too_slow(self) -> OptionError:
        return OptionError(self.field, self.text, f"the regular expression took longer than {self.time_limit:g} s "
                                                  f"(it backtracks too much, e.g. nested repeats like (a|aa)+); "
                                                  f"simplify it, or search for plain text")

    def search(self, text: str) -> bool:
        """Whether ``text`` contains the search text / matches the expression.

        Raises:
            OptionError: the expression ran out of time (message says so and what to do).
        """
        if self._compiled is None:
            return self._needle in (text.casefold() if self._case_insensitive else text)
        try:
            return self._compiled.search(text, timeout=self._timeout()) is not None
        except TimeoutError:
            raise self._too_slow() from None

    def sub(self, replacement: str, text: str) -> str:
        """``text`` with every match replaced (``\\1`` group references for expressions, literal for plain text).

        Raises:
            OptionError: the expression ran out of time, or ``replacement`` is invalid for it.
        """
        if self._compiled is None:
            if self._case_insensitive:
                return re.sub(re.escape(self.text), lambda m: replacement, text, flags=re.IGNORECASE)
            return text.replace(self.text, replacement)
        import regex as regex_lib

        try:
            return self._compiled.sub(replacement, text, timeout=self._timeout())
        except TimeoutError:
            raise self._too_slow() from None
        except (regex_lib.error, IndexError, ValueError) as e:  # a bad group reference
            raise OptionError("replace", replacement, f"is not a valid replacement ({e})") from None
