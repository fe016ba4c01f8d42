"""Scanning a tagged folder into a review table: each image with its caption file, text facts and flags.

Discovery and caption-file naming are batch tagging's own (:func:`lib_clipcap.batch.discover.discover` and
:meth:`~lib_clipcap.batch.discover.Item.caption_path`), so the review sees exactly the files a ``tag`` run with the
same ``caption_ext`` / ``output_dir`` wrote, mirrored layouts included. Nothing here loads a model: scores are added
by :mod:`lib_clipcap.review.scoring`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..batch.discover import discover, is_within
from ..batch.options import TagFailure, TagOptions
from ..batch.plan import journal_root
from ..textrules import REGEX_TIME_LIMIT_S, UserPattern
from .flags import (
    DEFAULT_DUPLICATE_MIN,
    DEFAULT_TOKEN_LIMIT,
    FLAGS,
    clip_token_counter,
    decode_caption,
    detect_trigger,
    duplicate_keys,
    flags_for,
)
from .tags import has_tags, split_tags
from .triggers import attach_triggers, split_triggers

__all__ = ["SORT_KEYS", "ReviewRow", "ReviewTable", "filter_rows", "scan_folder", "sort_rows"]

#: How :func:`sort_rows` can order rows, worst first.
SORT_KEYS = ("clip", "grammar", "ref", "tags", "length", "path")


@dataclass
class ReviewRow:
    """One image and its caption.

    Attributes:
        image: Absolute path of the image (as found, symlinks not resolved).
        rel: ``image`` relative to the folder it was found under (posix).
        caption_file: Where its caption file is (or would be).
        journal_root: The output root whose journal and feature cache this row belongs to.
        caption: The caption text (``None``: no caption file; non-UTF-8 bytes shown as U+FFFD).
        utf8: The caption file is valid UTF-8.
        length: Characters in the caption (0 when missing).
        tokens: CLIP tokens in the caption (``None`` when missing).
        flags: See :mod:`lib_clipcap.review.flags`.
        clip_score: CLIP-S of (image, caption), ``None`` until scored or when there is nothing to score.
        grammar: P(grammatical) from the grammar head, ``None`` until scored / without a head.
        ref_caption: The second caption source's text, when one was given and it exists.
        ref_clip_score: RefCLIP-S against ``ref_caption``.
        error: Why the image could not be read (the row stays in the table; scoring sets and clears it).
        caption_error: Why the caption file or the reference caption was not read: unreadable, a folder in its
            place, or (on a server) a symlink leading outside the allowed folders. Set by the scan only.
        triggers: The trigger words the caption starts with, as written (given or detected, see
            :mod:`lib_clipcap.review.triggers`); shown apart, never scored, kept by every edit.
        body: The caption without them: what CLIP-S and grammar score (``None`` when there is no caption).
        tags: The body's tags as written, in caption order (kohya-style comma-separated tags; a leading sentence,
            as ``tag --content caption+tags`` writes it, is not a tag): see :mod:`lib_clipcap.review.tags`.
        tag_scores: Each tag with its score against the image, lowest first: ``{"tag", "score" (CLIP-S of its best
            prompt), "category", "probability" (its share of its vocabulary category, ``None`` outside the
            vocabulary), "flagged" (below the tagger's threshold: the image disagrees), "better" (the category's
            best tag for this image when flagged)}``; ``None`` until scored.
        tag_min: The lowest tag score (the ``tags`` sort), ``None`` until scored or without tags.
    """

    image: str
    rel: str
    caption_file: str
    journal_root: str
    caption: str | None = None
    utf8: bool = True
    length: int = 0
    tokens: int | None = None
    flags: list[str] = field(default_factory=list)
    clip_score: float | None = None
    grammar: float | None = None
    ref_caption: str | None = None
    ref_clip_score: float | None = None
    error: str | None = None
    caption_error: str | None = None
    triggers: list[str] = field(default_factory=list)
    body: str | None = None
    tags: list[str] = field(default_factory=list)
    tag_scores: list[dict[str, Any]] | None = None
    tag_min: float | None = None

    @property
    def scored_text(self) -> str | None:
        """The text that is scored: the body (the caption itself for a row never split)."""
        return self.body if self.body is not None else self.caption

    def to_dict(self) -> dict[str, Any]:
        """The row as JSON-friendly data (the CLI's ``--json`` rows and the API's)."""
        return asdict(self)


@dataclass
class ReviewTable:
    """A scanned folder: rows in discovery order, entries that could not be listed, and the scan's settings."""

    folder: str
    rows: list[ReviewRow]
    failures: list[TagFailure]
    caption_ext: str = ".txt"
    output_dir: str | None = None
    triggers: list[str] = field(default_factory=list)
    triggers_given: bool = False
    token_limit: int = DEFAULT_TOKEN_LIMIT
    duplicate_min: int = DEFAULT_DUPLICATE_MIN
    #: How the table was last scored (model, grammar, prefix), set by the review service; ``None``: not scored.
    scoring: dict[str, Any] | None = None
    _index: dict[str, ReviewRow] | None = field(default=None, init=False, repr=False, compare=False)

    def row(self, image: str) -> ReviewRow:
        """The row of an image (by its path as listed, or its real path).

        Raises:
            KeyError: the image is not part of this table.
        """
        if self._index is None or len(self._index) != len(self.rows):  # once: bulk edits look up thousands of rows
            self._index = {r.image: r for r in self.rows}
        if image in self._index:
            return self._index[image]
        real = os.path.realpath(image)
        for r in self.rows:
            if os.path.realpath(r.image) == real:
                return r
        raise KeyError(image)

    def set_caption(self, row: ReviewRow, text: str | None, *, utf8: bool = True, refresh: bool = True) -> None:
        """Record a caption's new text (after a save) and refresh the text facts (and, with ``refresh``, every
        row's flags: pass ``False`` when setting many rows, then call :meth:`refresh_flags` once).

        Scores that depend on the text are cleared; rescoring (cheap: image features are cached) fills them again.
        """
        row.caption, row.utf8 = text, utf8
        row.clip_score = row.grammar = row.ref_clip_score = row.tag_min = None
        row.tag_scores = None
        _text_facts(row)
        self._split(row)
        if refresh:
            self.refresh_flags()

    def refresh_flags(self) -> None:
        """Recompute every row's flags (duplicates and the detected trigger depend on the whole folder)."""
        if not self.triggers_given:
            self.triggers = detect_trigger(r.caption for r in self.rows)
        dups = duplicate_keys((r.caption for r in self.rows), duplicate_min=self.duplicate_min)
        for r in self.rows:
            before = r.body
            self._split(r)
            if before is not None and r.body != before:  # the detected trigger changed: the scored text did too
                r.clip_score = r.grammar = r.ref_clip_score = r.tag_min = None
                r.tag_scores = None
            r.flags = flags_for(r.caption, utf8=r.utf8, tokens=r.tokens, token_limit=self.token_limit,
                                triggers=self.triggers, duplicates=dups)

    def _split(self, row: ReviewRow) -> None:
        if row.caption is None:
            row.triggers, row.body = [], None
        else:
            row.triggers, row.body = split_triggers(row.caption, self.triggers)
        row.tags = split_tags(row.body)[1]

    def row_triggers(self, row: ReviewRow) -> list[str]:
        """The trigger words an edit of ``row`` keeps first: the ones its caption starts with (as written), and,
        when triggers were given (not detected), every given one (batch tagging's ``--trigger``: on every file)."""
        out = list(row.triggers)
        if self.triggers_given:
            have = {t.casefold() for t in out}
            out += [t for t in self.triggers if t.strip() and t.strip().casefold() not in have]
        return out

    def with_triggers(self, row: ReviewRow, text: str) -> str:
        """``text`` (a caption body, or a whole caption) with ``row``'s trigger words first, each once."""
        return attach_triggers(text, self.row_triggers(row))

    def summary(self) -> dict[str, int]:
        """How many rows carry each flag (every flag listed, zeros included), plus ``rows``."""
        out = {"rows": len(self.rows)}
        for f in FLAGS:
            out[f] = sum(f in r.flags for r in self.rows)
        return out


def _read_text(path: Path, allowed_roots: Sequence[Path] | None = None, what: str = "caption file"
               ) -> tuple[str | None, bool, str | None]:
    """``(text, valid UTF-8, error)`` of a caption file; ``(None, True, None)`` when there is none.

    With ``allowed_roots``, a file whose real path (symlinks resolved) lies outside them is not read at all: the row
    reports it, the way a save through it is refused. Its target is not named: that would tell a client about
    files outside the folders it may see.
    """
    if allowed_roots is not None and os.path.lexists(path) and not is_within(path, allowed_roots):
        return None, True, (f"the {what} {path} is a symlink leading outside the allowed folders; not read (replace "
                            f"it with a regular file inside them)")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, True, None
    except IsADirectoryError:
        return None, True, f"a folder is in the way of the caption file {path}"
    except OSError as e:
        return None, True, f"cannot read the caption file {path}: {e.strerror or e}"
    text, ok = decode_caption(data)
    return text, ok, None


def _text_facts(row: ReviewRow) -> None:
    if row.caption is None:
        row.length, row.tokens = 0, None
    else:
        row.length = len(row.caption)
        row.tokens = clip_token_counter()(row.caption)


def scan_folder(folder: str | os.PathLike, *, caption_ext: str = ".txt", output_dir: str | None = None,
                recursive: bool = True, include: Sequence[str] = (), exclude: Sequence[str] = (),
                triggers: Sequence[str] | None = None, token_limit: int = DEFAULT_TOKEN_LIMIT,
                duplicate_min: int = DEFAULT_DUPLICATE_MIN, ref_ext: str | None = None,
                ref_dir: str | None = None, allowed_roots: Sequence[Path] | None = None) -> ReviewTable:
    """Pair every image of ``folder`` with its caption file and flag what is wrong with the text.

    Args:
        folder: The dataset folder (searched like ``tag`` searches it).
        caption_ext, output_dir: Where the captions are, as given to ``tag`` (sidecars, or a mirror folder).
        recursive, include, exclude: As for ``tag``.
        triggers: The trigger word(s)/prefix segments for ``trigger_only``; ``None``: detected (the leading
            comma-separated segment most captions share, see :func:`~lib_clipcap.review.flags.detect_trigger`).
        token_limit: The trainer's CLIP token limit for ``too_long``.
        duplicate_min: Images that must share a caption for ``duplicate``.
        ref_ext, ref_dir: A second caption source for RefCLIP-S: sidecars with this suffix and/or mirrored under
            this folder (either defaults to the captions' own).
        allowed_roots: Real paths of the folders a server may touch (``None``: anywhere); see batch jobs.

    Returns:
        A :class:`ReviewTable`, rows in discovery order (unscored).

    Raises:
        OptionError: a bad ``caption_ext`` or other option (named in the message).
        BatchInputError: ``folder`` does not exist.
        PathNotAllowedError: ``folder`` is outside ``allowed_roots``.
    """
    if token_limit < 1 or duplicate_min < 2:
        from ..options_table import OptionError

        bad = ("token_limit", token_limit) if token_limit < 1 else ("duplicate_min", duplicate_min)
        raise OptionError(bad[0], bad[1], "must be >= 1" if bad[0] == "token_limit" else "must be >= 2")
    options = TagOptions(inputs=[os.path.expanduser(os.fspath(folder))], recursive=recursive, include=list(include),
                         exclude=list(exclude), caption_ext=caption_ext, output_dir=output_dir)
    if ref_ext is not None:
        TagOptions._check_ext(ref_ext, "ref_ext")
    out_dir = Path(os.path.abspath(options.output_dir)) if options.output_dir else None
    r_dir = Path(os.path.abspath(ref_dir)) if ref_dir else out_dir
    found = discover(options, allowed_roots=allowed_roots)
    rows: list[ReviewRow] = []
    for item in found.items:
        cap = item.caption_path(options.caption_ext, out_dir)
        row = ReviewRow(image=os.fspath(item.path), rel=item.rel.as_posix(), caption_file=os.fspath(cap),
                        journal_root=os.fspath(journal_root(item, options)))
        row.caption, row.utf8, row.caption_error = _read_text(cap, allowed_roots)
        _text_facts(row)
        if ref_ext is not None or ref_dir is not None:
            ref = item.caption_path(ref_ext or options.caption_ext, r_dir)
            if os.path.realpath(ref) != os.path.realpath(cap):
                text, _, ref_error = _read_text(ref, allowed_roots, "reference caption file")
                row.ref_caption = text if text is not None and text.strip() else None
                row.caption_error = row.caption_error or ref_error
        rows.append(row)
    table = ReviewTable(folder=os.path.abspath(os.path.expanduser(folder)), rows=rows, failures=list(found.failures),
                        caption_ext=options.caption_ext, output_dir=options.output_dir,
                        triggers=list(triggers or []), triggers_given=triggers is not None, token_limit=token_limit,
                        duplicate_min=duplicate_min)
    table.refresh_flags()
    return table


def _worst_key(by: str) -> Callable[[ReviewRow], tuple]:
    if by not in SORT_KEYS:
        from ..options_table import OptionError

        raise OptionError("sort", by, f"must be one of {', '.join(SORT_KEYS)}")
    if by == "path":
        return lambda r: (r.rel,)
    if by == "length":
        return lambda r: (r.caption is not None, r.length, r.rel)
    attr = {"clip": "clip_score", "grammar": "grammar", "ref": "ref_clip_score", "tags": "tag_min"}[by]

    def key(r: ReviewRow) -> tuple:
        v = getattr(r, attr)
        # Rows with nothing to score (missing, empty, unreadable) are the worst of all: they come first.
        return (v is not None, v if v is not None else 0.0, r.rel)

    return key


def sort_rows(rows: Iterable[ReviewRow], by: str = "clip", *, descending: bool = False) -> list[ReviewRow]:
    """Rows worst first by ``by`` (``clip``: lowest CLIP-S first; ``grammar``: least grammatical; ``ref``: lowest
    RefCLIP-S; ``tags``: the tags the image disagrees with, by each row's lowest tag score; ``length``: shortest;
    ``path``: by path); ``descending`` reverses. Rows without a value come first.

    Raises:
        OptionError: an unknown key.
    """
    return sorted(rows, key=_worst_key(by), reverse=descending)


def filter_rows(rows: Iterable[ReviewRow], *, flags: Sequence[str] = (), text: str | None = None,
                regex: bool = False, min_score: float | None = None, max_score: float | None = None,
                score: str = "clip", time_limit: float = REGEX_TIME_LIMIT_S,
                tags: Sequence[str] = ()) -> list[ReviewRow]:
    """Rows that match every given condition.

    Args:
        flags: Keep rows carrying at least one of these flags (``"any"``: any flag at all; ``"none"``: no flag).
        text: Keep rows whose caption contains this text (case-insensitive), or matches it as a regular expression
            (with ``regex``; all rows together may take ``time_limit`` seconds).
        min_score, max_score: Keep rows whose ``score`` (``clip``, ``grammar``, ``ref``, ``tags``: the lowest tag
            score) is within the range (rows without that score are dropped when a bound is given).
        tags: Keep rows whose caption holds every one of these tags (case, underscores and spaces do not count;
            trigger words and a leading sentence are not tags).

    Raises:
        OptionError: an unknown flag or score name, an invalid regular expression, one that ran out of time, or
            ``regex`` without the ``regex`` package.
    """
    from ..options_table import OptionError

    for f in flags:
        if f not in FLAGS and f not in ("any", "none"):
            raise OptionError("flags", f, f"must be one of {', '.join(FLAGS)}, any, none")
    attr = {"clip": "clip_score", "grammar": "grammar", "ref": "ref_clip_score", "tags": "tag_min"}.get(score)
    if attr is None:
        raise OptionError("score", score, "must be clip, grammar, ref or tags")
    # A user's expression runs under one time limit with the GIL released (textrules.UserPattern): a backtracking
    # pattern fails this request with a clear error instead of stalling the server.
    pattern = UserPattern("text", text, regex=regex, time_limit=time_limit) if text else None
    out = []
    for r in rows:
        if flags:
            ok = any((f == "any" and r.flags) or (f == "none" and not r.flags) or f in r.flags for f in flags)
            if not ok:
                continue
        if pattern is not None and not pattern.search(r.caption or ""):
            continue
        if tags and not has_tags(r, tags):
            continue
        v = getattr(r, attr)
        if (min_score is not None or max_score is not None) and v is None:
            continue
        if min_score is not None and v < min_score:
            continue
        if max_score is not None and v > max_score:
            continue
        out.append(r)
    return out
