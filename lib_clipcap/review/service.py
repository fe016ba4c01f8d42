"""Review for servers and UIs: folder permissions, scanned tables kept between requests, scoring through the model
manager.

The HTTP API (:mod:`.routes`) and the gradio section (:mod:`.ui`) both go through :class:`ReviewService`, so they
follow the same rules as batch tagging: a folder must resolve inside the job manager's allowed folders (relative
folders are taken relative to the first one), and model calls go through the :class:`~lib_clipcap.app.service.ModelManager`
(one at a time, under the host's device policy). Scanned tables are kept (a few, least recently used dropped) so that
saving one caption does not rescan a folder of thousands of files.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..batch.discover import check_allowed
from ..batch.errors import BatchInputError
from .edits import EditOutcome, save_captions, undo_last
from .flags import DEFAULT_DUPLICATE_MIN, DEFAULT_TOKEN_LIMIT
from .table import ReviewRow, ReviewTable, scan_folder
from .tags import DEFAULT_VOCABULARY

__all__ = ["ReviewService", "ScanParams"]


def _unscored(row: ReviewRow) -> bool:
    """A row with text to score but no score: edited, or its body changed with the detected trigger."""
    text = row.scored_text
    return bool(text and text.strip()) and row.clip_score is None and not row.error


@dataclass(frozen=True)
class ScanParams:
    """Where the captions of a folder are and how to flag them (a scan's identity in :class:`ReviewService`)."""

    folder: str
    caption_ext: str = ".txt"
    output_dir: str | None = None
    recursive: bool = True
    triggers: tuple[str, ...] | None = None
    token_limit: int = DEFAULT_TOKEN_LIMIT
    duplicate_min: int = DEFAULT_DUPLICATE_MIN
    ref_ext: str | None = None
    ref_dir: str | None = None


class ReviewService:
    """Scans, scores and edits review tables on behalf of a server or UI.

    Args:
        manager: The :class:`~lib_clipcap.app.service.ModelManager` (scoring uses the named model's CLIP).
        allowed_roots: Real paths of the folders that may be reviewed and edited (a batch job manager's
            ``allowed_roots``); ``None``: anywhere (a local, single-user tool).
        max_tables: Scanned tables kept in memory.
    """

    def __init__(self, manager: Any, *, allowed_roots: Sequence[Path] | None = None,
                 check_options: Callable[[Any], Any] | None = None, max_tables: int = 4,
                 roots_hint: str = "") -> None:
        self.manager = manager
        self.allowed_roots = list(allowed_roots) if allowed_roots is not None else None
        self.roots_hint = roots_hint  # how the operator allows another folder, quoted when a path is refused
        self.check_options = check_options
        self.max_tables = max_tables
        self._tables: OrderedDict[ScanParams, ReviewTable] = OrderedDict()
        self._lock = threading.RLock()
        # Per (CLIP cache key, grammar, prefix): the scorers' text memos. Never the scorers themselves: they hold the
        # model, which the manager must be able to unload and free.
        self._memos: OrderedDict[tuple[str, str, str], tuple[dict[str, Any], dict[str, float]]] = OrderedDict()
        # Per (CLIP cache key, vocabulary content): text features of the tags outside the vocabulary (each distinct
        # tag encoded once per session); the vocabularies' own features live in the tag text cache (memory, disk).
        self._tag_memos: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
        self._tag_cache: Any = None
        self._vocabularies: dict[tuple[str, int], Any] = {}

    @classmethod
    def for_jobs(cls, manager: Any, job_manager: Any, **kw: Any) -> ReviewService:
        """A service with batch tagging's permissions: ``job_manager``'s folders, and its ``check_options`` for the
        folder, the output folder and the caption suffix (its allow-list included)."""
        kw.setdefault("roots_hint", getattr(job_manager, "roots_hint", ""))
        return cls(manager, allowed_roots=job_manager.allowed_roots, check_options=job_manager.check_options, **kw)

    # ------------------------------------------------------------------------------------------------ folders
    def resolve(self, path: str | None, what: str) -> str | None:
        """An absolute path for ``path`` (relative ones under the first allowed folder), checked to be allowed.

        Raises:
            PathNotAllowedError: outside the allowed folders.
            OptionError: the path holds a control character.
        """
        if path is None or str(path).strip() == "":
            return None
        text = str(path).strip()
        if any(ord(c) < 32 or ord(c) == 127 for c in text):
            from ..options_table import OptionError

            raise OptionError(what, text, "the path holds a control character; give a plain path")
        p = Path(text).expanduser()
        if not p.is_absolute() and self.allowed_roots:
            p = self.allowed_roots[0] / p
        out = os.path.abspath(p)
        check_allowed(out, self.allowed_roots, what, hint=self.roots_hint)
        return out

    def params(self, folder: str, **kw: Any) -> ScanParams:
        """Checked :class:`ScanParams`: every path absolute and inside the allowed folders; with ``check_options``
        (batch tagging's check), the folder, output folder and caption suffix pass exactly the rules a batch job's do.

        Raises:
            PathNotAllowedError: a path is outside the allowed folders.
            BatchInputError: the folder does not exist or is not a folder.
            OptionError: a bad or disallowed caption suffix, a control character in a path.
        """
        from ..batch.options import TagOptions

        if folder is None or not str(folder).strip():
            raise BatchInputError("give the folder to review")
        opts = TagOptions(inputs=[str(folder).strip()], caption_ext=kw.get("caption_ext") or ".txt",
                          output_dir=kw.get("output_dir") or None)
        if self.check_options is not None:
            opts = self.check_options(opts)
            resolved, out_dir = opts.inputs[0], opts.output_dir
        else:
            resolved, out_dir = self.resolve(opts.inputs[0], "folder"), self.resolve(opts.output_dir, "output folder")
        if not os.path.isdir(resolved):
            raise BatchInputError(f"folder not found: {resolved}; give an existing folder of images")
        kw["caption_ext"], kw["output_dir"] = opts.caption_ext, out_dir
        if kw.get("ref_dir"):
            kw["ref_dir"] = self.resolve(kw["ref_dir"], "reference folder")
        if kw.get("triggers") is not None:
            kw["triggers"] = tuple(kw["triggers"])
        return ScanParams(folder=resolved, **{k: v for k, v in kw.items() if v is not None})

    # ------------------------------------------------------------------------------------------------- tables
    def table(self, params: ScanParams, *, rescan: bool = False) -> ReviewTable:
        """The table of ``params``: kept from an earlier scan, or scanned now (``rescan``: always scanned)."""
        with self._lock:
            if not rescan and params in self._tables:
                self._tables.move_to_end(params)
                return self._tables[params]
        table = scan_folder(params.folder, caption_ext=params.caption_ext, output_dir=params.output_dir,
                            recursive=params.recursive, triggers=params.triggers, token_limit=params.token_limit,
                            duplicate_min=params.duplicate_min, ref_ext=params.ref_ext, ref_dir=params.ref_dir,
                            allowed_roots=self.allowed_roots)
        with self._lock:
            old = self._tables.get(params)
            if old is not None:  # keep the scoring settings: edits on the new scan are rescored like before
                table.scoring = old.scoring
            self._tables[params] = table
            self._tables.move_to_end(params)
            while len(self._tables) > self.max_tables:
                self._tables.popitem(last=False)
        return table

    # --------------------------------------------------------------------------------------------------- tags
    def tag_vocabulary(self, spec: Any) -> str | None:
        """The checked tag vocabulary of tag scores: a bundled name (``general``, ``shapes``...) or a vocabulary file
        inside the allowed folders (relative: under the first one), as batch tagging checks ``tag_vocabulary``;
        ``None``, ``""`` or ``"none"``: no tag scores (``None`` returned).

        Raises:
            OptionError: not a string, or no such file (naming ``tag_vocabulary``).
            PathNotAllowedError: a file outside the allowed folders.
        """
        from ..options_table import OptionError
        from ..tags.vocabulary import is_bundled_name

        if spec is None or (isinstance(spec, str) and spec.strip() in ("", "none")):
            return None
        if not isinstance(spec, str):
            raise OptionError("tag_vocabulary", spec, "must be a vocabulary name or file (a string)")
        text = spec.strip()
        if is_bundled_name(text):
            return text
        path = self.resolve(text, "tag vocabulary")
        if path is None or not os.path.isfile(path):
            raise OptionError("tag_vocabulary", spec, f"no such file: {path}; give a bundled vocabulary's name "
                                                      f"(general, shapes...) or a .txt/.json vocabulary file"
                              + (" inside the allowed folders" if self.allowed_roots is not None else ""))
        return path

    def _vocabulary(self, spec: str) -> Any:
        """The loaded vocabulary of a checked spec (kept while its file is unchanged).

        Raises:
            OptionError: a malformed vocabulary file (the message names its line).
        """
        from ..options_table import OptionError
        from ..tags.vocabulary import TagVocabularyError, load_tag_vocabulary

        try:
            stamp = os.stat(spec).st_mtime_ns if os.path.isfile(spec) else 0
        except OSError:
            stamp = 0
        key = (spec, stamp)
        with self._lock:
            if key in self._vocabularies:
                return self._vocabularies[key]
        try:
            vocab = load_tag_vocabulary(spec)
        except TagVocabularyError as e:
            raise OptionError("tag_vocabulary", spec, str(e)) from None
        with self._lock:
            if len(self._vocabularies) > 8:
                self._vocabularies.clear()
            self._vocabularies[key] = vocab
        return vocab

    def _tag_scorer(self, clip: Any, spec: str | None) -> Any:
        if spec is None:
            return None
        from ..tags.cache import TagTextCache, default_cache_dir
        from .cache import cache_key
        from .tags import ReviewTagScorer

        vocab = self._vocabulary(spec)
        key = (cache_key(clip), vocab.content_hash)
        with self._lock:
            if self._tag_cache is None:
                self._tag_cache = TagTextCache(default_cache_dir(getattr(self.manager, "models_dir", None)))
            memo = self._tag_memos.setdefault(key, {})
            self._tag_memos.move_to_end(key)
            while len(self._tag_memos) > 2:
                self._tag_memos.popitem(last=False)
        return ReviewTagScorer(clip, vocab, cache=self._tag_cache, memo=memo)

    def edit_tags(self, table: ReviewTable, images: Sequence[str], *, add: Sequence[str] = (),
                  remove: Sequence[str] = (), rescore: bool = True,
                  dry_run: bool = False) -> tuple[list[tuple[ReviewRow, str]], list[EditOutcome]]:
        """Add and remove tags across the rows of ``images`` (absolute, or relative to the folder): one save, so
        atomic, journaled and undone in one step (see :func:`~lib_clipcap.review.edits.plan_tags`).

        Returns:
            ``(plan, outcomes)``: each changed row with its new caption, and what happened to each file (nothing
            written with ``dry_run``: the outcomes are empty).

        Raises:
            UnknownImageError: an image is not in the table.
            OptionError: a bad tag, or no tag given.
        """
        from .edits import UnknownImageError, plan_tags

        rows = []
        for image in images:
            try:
                rows.append(self.image_row(table, image))
            except KeyError:
                raise UnknownImageError(f"{image} is not an image of the reviewed folder {table.folder}; rescan the "
                                        f"folder or pick an image from the table") from None
        rows = list({r.image: r for r in rows}.values())
        plan = plan_tags(rows, add=add, remove=remove, table=table)
        if dry_run or not plan:
            return plan, []
        return plan, self.save(table, [(r.image, t) for r, t in plan], rescore=rescore, keep_triggers=False)

    # ------------------------------------------------------------------------------------------------ scoring
    def _scorer(self, model: Any, grammar: str, prefix: str, tags: str | None = None) -> Any:
        """A scorer for a loaded model's CLIP (the grammar head kept on the model, as re-ranking keeps it)."""
        from ..errors import ClipCapError
        from ..scoring import resolve_grammar
        from .cache import cache_key
        from .scoring import ReviewScorer

        clip = model.clip
        head = None
        if grammar == "bundled":
            try:
                head = resolve_grammar(model, clip)  # the model's own head, else the bundled one (cached on it)
            except ClipCapError:
                head = None  # none for this CLIP: no grammar column
        elif grammar != "none":
            from .scoring import default_grammar

            head = default_grammar(clip, grammar)
        key = (cache_key(clip), grammar, prefix)
        with self._lock:
            memo = self._memos.setdefault(key, ({}, {}))
            self._memos.move_to_end(key)
            while len(self._memos) > 2:
                self._memos.popitem(last=False)
        return ReviewScorer(clip, head, prefix=prefix, memo=memo, tags=self._tag_scorer(clip, tags))

    def score(self, table: ReviewTable, model: str, *, grammar: str = "bundled", prefix: str = "",
              rows: Sequence[ReviewRow] | None = None, progress: Callable[[int, int], None] | None = None,
              tags: str | None = DEFAULT_VOCABULARY) -> dict[str, int]:
        """Score ``rows`` (default: all) of ``table`` with ``model``'s CLIP, through the model manager.

        The scoring settings are remembered on the table (``table.scoring``), so :meth:`rescore` after an edit uses
        the same ones.

        Args:
            tags: The tag vocabulary of the rows' tag scores (checked by :meth:`tag_vocabulary`; default
                ``general``); ``None``: no tag scores.

        Returns:
            The scorer's counters (images encoded / from the cache, texts encoded).
        """
        tags = self.tag_vocabulary(tags)
        with self.manager.using(model) as m:
            scorer = self._scorer(m, grammar, prefix, tags)
            scorer.score(list(rows) if rows is not None else table, progress=progress)
        table.scoring = {"model": model, "grammar": grammar, "prefix": prefix, "tags": tags,
                         "has_grammar": scorer.grammar is not None}
        return dict(scorer.stats)

    def rescore(self, table: ReviewTable, rows: Sequence[ReviewRow]) -> None:
        """Score ``rows`` again with the table's last scoring settings (after an edit); nothing if never scored."""
        s = getattr(table, "scoring", None)
        if s and rows:
            self.score(table, s["model"], grammar=s["grammar"], prefix=s["prefix"], rows=rows, tags=s.get("tags"))

    def score_texts(self, table: ReviewTable, row: ReviewRow, texts: Sequence[str]) -> list[float | None]:
        """CLIP-S of other texts (e.g. fresh candidates) for ``row``'s image, with the table's scoring settings (the
        server's default model's CLIP when the table was never scored); ``None`` each when the image cannot be read.
        """
        from ..scoring import clip_score_from_cosine

        s = getattr(table, "scoring", None) or {}
        model = s.get("model")
        if model is None or not texts:
            return [None] * len(texts)
        with self.manager.using(model) as m:
            scorer = self._scorer(m, s.get("grammar", "bundled"), s.get("prefix", ""))
            feats = scorer.image_features([row])
            if 0 not in feats:
                return [None] * len(texts)
            txt = scorer.text_features(list(texts))
            return [float(x) for x in clip_score_from_cosine((txt * feats[0]).sum(-1))]

    # -------------------------------------------------------------------------------------------------- edits
    def save(self, table: ReviewTable, edits: Sequence[tuple[str, str]], *, rescore: bool = True,
             keep_triggers: bool = True) -> list[EditOutcome]:
        """Save captions (see :func:`~lib_clipcap.review.edits.save_captions`) and rescore the saved rows.

        Args:
            keep_triggers: Each text gets its row's trigger words first, once (:meth:`ReviewTable.with_triggers`):
                a caption body, or a whole caption that already starts with them, saves the same file.
        """
        if keep_triggers:
            edits = [(image, self._with_triggers(table, image, text)) for image, text in edits]
        with self._lock:
            out = save_captions(table, edits, allowed_roots=self.allowed_roots)
        if rescore:
            saved = {o.image for o in out if o.status == "saved"}
            self.rescore(table, [r for r in table.rows if r.image in saved or _unscored(r)])
        return out

    @staticmethod
    def _with_triggers(table: ReviewTable, image: str, text: Any) -> Any:
        if not isinstance(text, str):
            return text  # refused by the text rule, with its own message
        try:
            row = table.row(os.fspath(image))
        except KeyError:
            return text  # refused by save_captions, with its own message
        return table.with_triggers(row, text)

    def undo(self, table: ReviewTable, *, rescore: bool = True) -> list[EditOutcome]:
        """Undo the last save in the table's folder (see :func:`~lib_clipcap.review.edits.undo_last`)."""
        with self._lock:
            out = undo_last(table, allowed_roots=self.allowed_roots)
        if rescore:
            changed = {o.image for o in out if o.status == "restored"}
            self.rescore(table, [r for r in table.rows if r.image in changed or _unscored(r)])
        return out

    def image_row(self, table: ReviewTable, image: str) -> ReviewRow:
        """The row of ``image`` (absolute, or relative to the folder).

        Raises:
            KeyError: not an image of the table.
        """
        p = Path(str(image)).expanduser()
        if not p.is_absolute():
            p = Path(table.folder) / p
        return table.row(os.path.abspath(p))
