"""What a batch-tagging run is asked to do (:class:`TagOptions`) and what it did (:class:`TagSummary`).

Plain dataclasses with no heavy imports: the CLI's ``--help``, the HTTP API's request check and the UI build them
without loading torch. The decoding fields carry the same names, checks and messages as the captioning settings table
(:mod:`lib_clipcap.options_table`), so one JSON body works for ``/caption`` and ``/batch`` alike.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any

from ..options_table import OPTIONS, OptionError, caption_kwargs, get_option, resolve_decoding
from ..textrules import check_suffix, check_text, suffix_key

__all__ = ["CONTENTS", "DEFAULT_MAX_PIXELS", "EXISTING_POLICIES", "MANIFEST_SUFFIXES", "TAGS_EXT",
           "TAG_DECODING_DEFAULTS", "TAG_FIELDS", "FileOutcome", "TagFailure", "TagOptions", "TagSummary",
           "check_manifest_name"]

#: What to do when a caption file already exists: keep it (``skip``), replace it, or add the new caption after /
#: before the old text, joined by the separator.
EXISTING_POLICIES = ("skip", "overwrite", "append", "prepend")

#: Same value as :data:`lib_clipcap.images.MAX_IMAGE_PIXELS_DEFAULT` (a test keeps them equal); repeated here so that
#: building options does not import Pillow and numpy.
DEFAULT_MAX_PIXELS = 8192 * 8192

#: What a run writes as its own text (``content``): the sentence, CLIP-ranked tags, or both (issue 22).
CONTENTS = ("caption", "tags", "caption+tags")
#: The suffix of the separate tags file (``tags_file``): ``a.jpg`` -> ``a.tags``, kohya-style comma-separated tags.
TAGS_EXT = ".tags"
#: The ``tag_*`` fields of :class:`TagOptions` and the :class:`lib_clipcap.tags.TagSelection` argument of each.
TAG_FIELDS = {"tag_threshold": "threshold", "tag_scoring": "scoring", "tag_max": "max_tags",
              "tag_category_limits": "category_limits", "tag_exclude": "exclude", "tag_always_first": "always_first",
              "tag_replacements": "replacements", "tag_style": "style", "tag_order": "order"}

#: Where a batch run's decoding defaults differ from the options table's: it decodes greedily, one caption per image
#: (deterministic, so an interrupted run resumes with identical results).
TAG_DECODING_DEFAULTS = {"decoding": "greedy"}
_MAX_WORKERS = 64
_MAX_BATCH = 4096
# Suffixes a caption file must never get: writing one would replace an image (or look like one to a trainer).
_FORBIDDEN_CAPTION_EXTS = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".webp", ".bmp", ".gif", ".tif",
                           ".tiff", ".avif", ".heic", ".heif", ".jxl", ".tmp")


def _paths(name: str, value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        value = [value]
    try:
        return [os.fspath(v) for v in value]
    except TypeError:
        raise OptionError(name, value, "must be a path or a list of paths") from None


def _opt_path(name: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    try:
        return os.fspath(value)
    except TypeError:
        raise OptionError(name, value, "must be a path") from None


def _strings(name: str, value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise OptionError(name, value, "must be a list of strings")
    return list(value)


def _pairs(value: Any) -> list[tuple[str, str]]:
    if value is None:
        return []
    if isinstance(value, dict):
        value = list(value.items())
    out = []
    for pair in value if isinstance(value, (list, tuple)) else [value]:
        if (not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(isinstance(s, str) for s in pair)
                or not pair[0]):
            raise OptionError("replace", value, "must be a list of [find, replace] string pairs with a non-empty find")
        out.append((pair[0], pair[1]))
    return out


def _int(name: str, value: Any, *, lo: int, hi: int | None = None, nullable: bool = True) -> int | None:
    if value is None and nullable:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionError(name, value, "must be an integer")
    if value < lo or (hi is not None and value > hi):
        raise OptionError(name, value, f"must be between {lo} and {hi}" if hi is not None else f"must be >= {lo}")
    return value


#: The API's and the UI's wording; the command line names its flag instead (``--multiline``, see batch/cli.py).
_MULTILINE_HINT = " (set multiline to allow line breaks on purpose)"
#: Runs kept per output root (records and backups) unless ``keep_runs`` says otherwise; same as
#: :data:`lib_clipcap.batch.runs.DEFAULT_KEEP_RUNS` (repeated so that building options imports nothing more).
DEFAULT_KEEP_RUNS = 20


def _triggers(value: Any, separator: str) -> list[str]:
    """Trigger words: one segment each (no line break, no separator mark), duplicates (case-insensitive) dropped."""
    out: list[str] = []
    seen = set()
    mark = separator.strip()
    for t in _strings("triggers", value):
        check_text("triggers", t)
        t = t.strip()
        if not t:
            raise OptionError("triggers", t, "a trigger word cannot be empty")
        if mark and mark in t:
            raise OptionError("triggers", t, f"a trigger is one segment of the caption: it cannot hold the "
                                             f"separator {mark!r}; give each trigger on its own")
        if t.casefold() not in seen:
            seen.add(t.casefold())
            out.append(t)
    return out

#: The only suffix each manifest may have (case-folded). A manifest is data: never a script, an image or a dot-file
#: (``.bashrc``; the tool's own ``.clipcap-journal.jsonl`` and ``.clipcap-review-undo.jsonl`` are dot-files too).
MANIFEST_SUFFIXES = {"manifest_jsonl": ".jsonl", "manifest_csv": ".csv"}


def check_manifest_name(name: str, value: str | None) -> None:
    """Refuse a manifest path whose file name is not ``<stem>.jsonl`` / ``<stem>.csv`` (:data:`MANIFEST_SUFFIXES`,
    case-folded) with a stem that does not start with a dot.

    Raises:
        OptionError: naming ``name`` (``manifest_jsonl`` / ``manifest_csv``) and the path as given.
    """
    if value is None:
        return
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value):  # (a non-UTF-8 file name's escapes are fine)
        raise OptionError(name, value, "the path holds a control character; give a plain path")
    want = MANIFEST_SUFFIXES[name]
    stem, ext = os.path.splitext(os.path.basename(value))
    if suffix_key(ext) != want or not stem or stem.startswith("."):
        raise OptionError(name, value, f"a manifest must be a file whose name ends in {want} and does not start "
                                       f"with a dot, like run{want}; give such a file name")


def _with_decoding_fields(cls: type) -> type:
    """Give ``cls`` one typed field per decoding setting of the options table that it does not declare itself, with
    the batch default (:data:`TAG_DECODING_DEFAULTS` over the table's; one candidate, as greedy decoding gives).

    Applied before ``@dataclass``, so the fields are real dataclass fields (the CLI, the API's ``/batch`` and the UI
    read them with :func:`dataclasses.fields`): a new decoding setting is a table row, not also a line here.
    """
    batch_defaults = resolve_decoding({}, method_defaults=TAG_DECODING_DEFAULTS)
    annotations = cls.__dict__["__annotations__"]  # the class body declares fields, so it has its own
    names = []
    for o in OPTIONS:
        if o.group != "decoding":
            continue
        names.append(o.key)
        if o.key not in annotations:  # banned_words is declared: it also filters the written caption
            annotations[o.key] = f"{o.type.__name__} | None" if o.nullable else o.type.__name__
            setattr(cls, o.key, batch_defaults[o.key])
    cls._decoding_fields = tuple(names)
    return cls


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise OptionError(name, value, "must be true or false")
    return value


@dataclass
@_with_decoding_fields
class TagOptions:
    """Everything a batch-tagging run needs besides the model.

    Inputs:
        inputs: Folders and/or image files. Folders are searched for files with an image suffix.
        recursive: Descend into sub-folders (symlinked folders are followed, each real folder visited once).
        include, exclude: Glob patterns (``*.png``, ``raw/*``) matched case-insensitively against a file's path
            relative to its input folder and against its bare name; only for files found in folders. With
            ``include`` set, a file must match one of them; a file matching any ``exclude`` pattern is left out.
        list_file: A UTF-8 text file with one image (or folder) per line; blank lines and ``#`` comments are ignored;
            relative entries are relative to the list file's folder. Missing entries fail individually.
        max_pixels: Images with more pixels (width x height, read from the header) fail as oversized; ``None``: no
            limit beyond Pillow's own.

    Outputs:
        caption_ext: Suffix of the caption file that replaces the image's suffix (``a.jpg`` -> ``a.txt``).
        output_dir: Write captions under this folder, mirroring each file's path relative to its input folder,
            instead of next to the images. The journal and lock then live here too.
        manifest_jsonl, manifest_csv: Also append one row per file (path, output, status, caption, model, score,
            keywords, reason, tags: every tag written with its score, tags_output: the ``.tags`` file) to these
            files; a manifest an earlier version wrote keeps its own columns (:mod:`lib_clipcap.batch.writer`).
            Names must end in ``.jsonl`` / ``.csv`` (not dot-files); an existing file is only extended when an
            earlier run wrote it (CSV: our header line; JSONL: a row of ours first), never a file of someone else's
            (see :func:`lib_clipcap.batch.writer.check_manifest_file`).
        dry_run: Report per file what the policy would do (create / replace own part / append / prepend /
            overwrite / skip, and why); write nothing (no caption, journal, lock, record or manifest), load and
            caption nothing.
        preview: Caption the first N files that would be written and report the exact text each file would get
            (:attr:`FileOutcome.text`); write nothing. Loads the model.
        keep_runs: Run records and backups kept per output root (older ones are dropped and reported in
            :attr:`TagSummary.pruned_runs`); ``None``: keep all.
        resume: Skip files that the journal of an earlier run with the same settings records as finished (and whose
            caption file still holds what that run wrote). ``False`` starts a fresh journal.

    Text:
        existing: ``skip`` (default), ``overwrite``, ``append`` or ``prepend`` when a caption file exists.
        separator: Joins prefix, caption and suffix, and old and new text for append/prepend.
        prefix, suffix: Text put before / after every generated caption, verbatim (part of the tool's own segment:
            with append/prepend it sits mid-file; use ``triggers`` for words that must come first).
        triggers: Trigger words (kohya ``keep_tokens`` / ``shuffle_caption`` sets): always the first segments of the
            file whatever the policy, in this order, never twice (a trigger segment already in the old text moves
            first).
        multiline: Allow line breaks and tabs in ``prefix``, ``suffix`` and ``separator`` (for trainers that read
            multi-line caption files). Off by default: a caption file holds one line, and text with line breaks is
            how a request could shape a file into something else (a launcher, a script). The generated caption
            and ``replace`` texts are always one line, and other control characters are always refused.
        lowercase: Lower-case the generated caption (not the prefix/suffix).
        strip_period: Remove trailing periods from the generated caption.
        max_length: Cut the generated caption to at most this many characters, at a word boundary when possible
            (prefix and suffix are added afterwards, so a trigger word is never cut).
        replace: ``[(find, replace), ...]`` applied in order to the generated caption (literal text).
        banned_words: Words the decoder must not produce; whole-word occurrences are also removed afterwards.

    Content (issue 22; tags: :mod:`lib_clipcap.tags`):
        content: What the tool writes as its part of the file: ``caption`` (the sentence; default), ``tags``
            (CLIP-ranked tags, kohya style: ``red, triangle, white background``) or ``caption+tags`` (the sentence,
            then the tags). The existing-caption policies, ``prefix``/``suffix``, ``triggers`` (first of all), the run
            record and undo apply to that text as to a caption. The caption rules (``lowercase``, ``replace``,
            ``strip_period``, ``max_length``, ``banned_words``) act on the sentence only; tags follow the ``tag_*``
            settings. The tags come from the captioner's own CLIP image features: no second encoding.
        tag_vocabulary: Tag vocabularies (bundled names or ``.txt``/``.json`` files, see
            :mod:`lib_clipcap.tags.vocabulary`), merged; default ``general``. With ``allowed_roots`` (the API), a
            file must lie inside them.
        tag_threshold, tag_scoring, tag_max, tag_category_limits, tag_exclude, tag_always_first, tag_replacements,
            tag_style, tag_order: :class:`lib_clipcap.tags.TagSelection`'s ``threshold`` (``None``: its default),
            ``scoring``, ``max_tags``, ``category_limits``, ``exclude``, ``always_first``, ``replacements``,
            ``style`` and ``order``. Trigger words are ``triggers`` (a tag equal to one is not written twice).
        tags_file: Write the tags to a file of their own, ``<image name>.tags`` (:data:`TAGS_EXT`), beside the caption
            file (or mirrored under ``output_dir`` alike): with ``caption+tags`` the caption file gets the sentence
            and the ``.tags`` file the tags; with ``tags`` only the ``.tags`` file is written (the caption file is not
            touched). Each file is a caption file of its own for everything else: ``triggers`` first, ``prefix``
            / ``suffix`` around the tool's text, the existing-caption policy, the journal (resume), the run record
            and undo apply to each as to the other. Needs ``content`` ``tags`` or ``caption+tags``, and a
            ``caption_ext`` other than ``.tags``.

    Speed:
        batch_size: Images per model call (default: 16 on CPU, 64 on a GPU).
        workers: Processes that decode and preprocess images (default: up to 16 on a GPU; 0 on a CPU, where the
            model needs every core, and for runs under two batches). With 0, a background thread of this process
            decodes instead, still ahead of the model.

    Decoding (as :meth:`lib_clipcap.captioner.Captioner.caption`): one field per decoding setting of the options
    table (decoding, beam_size, num_candidates, temperature, top_k, top_p, ...), generated from it with the batch
    defaults (greedy, one caption); rerank (``None``: the model's default). Greedy, deterministic decoding gives
    captions that do not depend on how files are batched, so an interrupted run resumes with identical results;
    sampled captions depend on the batch they were drawn in.

    Raises:
        OptionError: a value is invalid (the message names the field and value); it is a ``ValueError`` and a
            :class:`~lib_clipcap.errors.ClipCapError`.
    """

    inputs: list[str] = field(default_factory=list)
    recursive: bool = True
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    list_file: str | None = None
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    caption_ext: str = ".txt"
    output_dir: str | None = None
    manifest_jsonl: str | None = None
    manifest_csv: str | None = None
    dry_run: bool = False
    preview: int | None = None
    keep_runs: int | None = DEFAULT_KEEP_RUNS
    resume: bool = True
    existing: str = "skip"
    separator: str = ", "
    prefix: str = ""
    suffix: str = ""
    triggers: list[str] = field(default_factory=list)
    multiline: bool = False
    lowercase: bool = False
    strip_period: bool = False
    max_length: int | None = None
    replace: list[tuple[str, str]] = field(default_factory=list)
    banned_words: list[str] = field(default_factory=list)
    batch_size: int | None = None
    workers: int | None = None
    rerank: str | None = None
    content: str = "caption"
    tag_vocabulary: list[str] = field(default_factory=list)
    tag_threshold: float | None = None
    tag_scoring: str = "probability"
    tag_max: int | None = None
    tag_category_limits: dict[str, int] = field(default_factory=dict)
    tag_exclude: list[str] = field(default_factory=list)
    tag_always_first: list[str] = field(default_factory=list)
    tag_replacements: dict[str, str] = field(default_factory=dict)
    tag_style: str = "space"
    tag_order: str = "score"
    tags_file: bool = False
    # ... and one field per decoding setting of the options table (decoding, beam_size, ...): _with_decoding_fields.

    def __post_init__(self) -> None:
        self.inputs = _paths("inputs", self.inputs)
        self.list_file = _opt_path("list_file", self.list_file)
        self.output_dir = _opt_path("output_dir", self.output_dir)
        self.manifest_jsonl = _opt_path("manifest_jsonl", self.manifest_jsonl)
        self.manifest_csv = _opt_path("manifest_csv", self.manifest_csv)
        if not self.inputs and not self.list_file:
            raise OptionError("inputs", self.inputs, "give at least one folder or image, or a list_file")
        self.include = _strings("include", self.include)
        self.exclude = _strings("exclude", self.exclude)
        for name in ("recursive", "dry_run", "resume", "multiline", "lowercase", "strip_period", "tags_file"):
            setattr(self, name, _bool(name, getattr(self, name)))
        for name in ("manifest_jsonl", "manifest_csv"):
            check_manifest_name(name, getattr(self, name))
        for name in ("separator", "prefix", "suffix"):
            check_text(name, getattr(self, name), multiline=self.multiline, multiline_hint=_MULTILINE_HINT)
        self.triggers = _triggers(self.triggers, self.separator)
        self.preview = _int("preview", self.preview, lo=1)
        self.keep_runs = _int("keep_runs", self.keep_runs, lo=1)
        if self.existing not in EXISTING_POLICIES:
            raise OptionError("existing", self.existing, f"must be one of {', '.join(EXISTING_POLICIES)}")
        self.caption_ext = self._check_ext(self.caption_ext)
        self.max_pixels = _int("max_pixels", self.max_pixels, lo=1)
        self.max_length = _int("max_length", self.max_length, lo=1)
        self.batch_size = _int("batch_size", self.batch_size, lo=1, hi=_MAX_BATCH)
        self.workers = _int("workers", self.workers, lo=0, hi=_MAX_WORKERS)
        self.replace = _pairs(self.replace)
        for find, repl in self.replace:  # replacements act on the one-line caption: never line breaks
            check_text("replace", find)
            check_text("replace", repl)
        if self.rerank is not None:
            self.rerank = get_option("rerank").coerce(self.rerank)
        self.banned_words = self.banned_words or []
        self._check_tag_fields()
        if self.tags_file and self.content == "caption":
            raise OptionError("tags_file", self.tags_file, "writes the tags to a .tags file of their own; set content "
                                                           "to tags or caption+tags (or leave tags_file off)")
        if self.tags_file and suffix_key(self.caption_ext) == TAGS_EXT:
            raise OptionError("tags_file", self.tags_file, f"the caption files are {self.caption_ext} files already; "
                                                           f"give another caption_ext (.txt) or leave tags_file off")
        # The decoding fields are checked here, once, by the table's rules (each value, then the rules between them);
        # the runner and the model take them as they are.
        checked = caption_kwargs({name: getattr(self, name) for name in self._decoding_fields})
        for name in self._decoding_fields:
            setattr(self, name, checked[name])

    def _check_tag_fields(self) -> None:
        """Check ``content`` and the ``tag_*`` fields with the tag library's own rules (torch-free), each error
        under the field's name."""
        from ..tags.selection import TagOptionError

        if self.content not in CONTENTS:
            raise OptionError("content", self.content, f"must be one of {', '.join(CONTENTS)}")
        self.tag_vocabulary = _strings("tag_vocabulary", self.tag_vocabulary)
        if any(not v.strip() for v in self.tag_vocabulary):
            raise OptionError("tag_vocabulary", self.tag_vocabulary, "a vocabulary name or file cannot be empty")
        for name in ("tag_exclude", "tag_always_first"):
            setattr(self, name, _strings(name, getattr(self, name)))
        for name in ("tag_category_limits", "tag_replacements"):
            value = getattr(self, name)
            if value is None:
                value = {}
            if not isinstance(value, dict):
                raise OptionError(name, value, "must be an object mapping names to values")
            setattr(self, name, dict(value))
        if self.tag_threshold is not None and isinstance(self.tag_threshold, int) \
                and not isinstance(self.tag_threshold, bool):
            self.tag_threshold = float(self.tag_threshold)
        self.tag_max = _int("tag_max", self.tag_max, lo=1)
        try:
            self.tag_selection()
        except TagOptionError as e:  # name the field as the user gave it: tag_threshold, not threshold
            field_name = next((f for f, arg in TAG_FIELDS.items() if arg == e.setting), e.setting)
            raise OptionError(field_name, getattr(self, field_name, e.value), e.reason) from None

    def tag_selection(self) -> Any:
        """The :class:`lib_clipcap.tags.TagSelection` of the ``tag_*`` fields (triggers are excluded from the tags:
        the policy writes them first).

        Raises:
            TagOptionError: a bad value (the fields were checked when the options were built).
        """
        from ..tags.selection import TagSelection

        kw = {arg: getattr(self, name) for name, arg in TAG_FIELDS.items()}
        kw["exclude"] = list(kw["exclude"]) + list(self.triggers)
        return TagSelection(**kw)

    @property
    def writes_tags(self) -> bool:
        """The run computes tags (``content`` is ``tags`` or ``caption+tags``)."""
        return self.content != "caption"

    @property
    def writes_caption(self) -> bool:
        """The run decodes a caption (``content`` is ``caption`` or ``caption+tags``)."""
        return self.content != "tags"

    def outputs(self) -> list[tuple[str, str]]:
        """The files each image gets: ``(suffix, content of that file)``, the caption file first.

        Without ``tags_file`` one file, ``(caption_ext, content)``; with it, ``(caption_ext, "caption")`` and
        ``(".tags", "tags")`` for ``caption+tags``, only ``(".tags", "tags")`` for ``tags``.
        """
        if not self.tags_file:
            return [(self.caption_ext, self.content)]
        tags = (TAGS_EXT, "tags")
        return [(self.caption_ext, "caption"), tags] if self.writes_caption else [tags]

    @staticmethod
    def _check_ext(ext: Any, field: str = "caption_ext") -> str:
        """``ext`` if it may be a caption (or reference caption) suffix: :func:`lib_clipcap.textrules.check_suffix`
        with the image and temporary-file suffixes forbidden, compared case-folded (``.PNG`` is ``.png``)."""
        return check_suffix(field, ext, forbidden=_FORBIDDEN_CAPTION_EXTS,
                            forbidden_reason="is an image (or temporary-file) suffix; captions would replace images; "
                                             "use .txt or .caption")

    def decoding_settings(self) -> dict[str, Any]:
        """The settings for the model's ``decoding_options`` (checked when the options were built).

        Returns:
            ``{decoding, beam_size, num_candidates, ..., banned_words}`` (every decoding setting of the table) plus
            ``rerank`` when set.
        """
        kw = {name: getattr(self, name) for name in self._decoding_fields}
        kw["banned_words"] = list(self.banned_words)
        if self.rerank is not None:
            kw["rerank"] = self.rerank
        return kw

    #: The old name of :meth:`decoding_settings`.
    caption_kwargs = decoding_settings

    def signature_fields(self) -> dict[str, Any]:
        """The settings that decide a caption file's content: a journal only resumes a run with the same ones."""
        keep = ("caption_ext", "existing", "separator", "prefix", "suffix", "lowercase", "strip_period", "max_length")
        # multiline is not part of it: it only widens what prefix/suffix/separator may hold, which are compared
        out: dict[str, Any] = {name: getattr(self, name) for name in keep}
        out["output_dir"] = os.path.abspath(self.output_dir) if self.output_dir else None
        out["replace"] = [list(p) for p in self.replace]
        if self.triggers:  # (absent when unset: journals of runs before triggers existed still resume)
            out["triggers"] = list(self.triggers)
        out["decoding"] = self.decoding_settings()
        if self.content != "caption":  # (absent for captions: journals of runs before tags existed still resume)
            out["content"] = self.content
            out["tags"] = {name: getattr(self, name) for name in ("tag_vocabulary", *TAG_FIELDS)}
        if self.tags_file:  # (absent when off: journals of runs before the .tags file existed still resume)
            out["tags_file"] = True
        return out

    @property
    def writes(self) -> bool:
        """The run writes files (not a dry run, not a preview)."""
        return not (self.dry_run or self.preview)

    def to_dict(self) -> dict[str, Any]:
        """The options as JSON-friendly data (``TagOptions(**d)`` rebuilds them)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["replace"] = [list(p) for p in self.replace]
        return d


@dataclass
class TagFailure:
    """One file that could not be captioned or written, and why."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class FileOutcome:
    """What happened to one file (passed to ``on_file`` callbacks and written as a manifest row).

    Attributes:
        path: The image.
        status: ``written``, ``skipped``, ``failed`` or (dry run) ``would_write``.
        output: The caption file (``None`` when it could not be determined).
        reason: Why it was skipped or failed; for ``would_write`` the action (``new``, ``overwrite``, ``append``,
            ``prepend``).
        caption: The generated caption after post-processing (without prefix/suffix/old text), when written.
        score, keywords: From the model, when written.
        category: For ``skipped``: ``resumed`` (finished by an earlier run of the same settings, per the journal)
            or ``policy`` (it had a caption the policy keeps).
        text: Preview only: the exact content the file would get.
        tags: With tags (``content`` ``tags`` / ``caption+tags``), when written: every tag written, with its score
            (``[(tag, score), ...]`` in the file's order; the tag as written, after replacements and style).
        tags_output: With ``tags_file``, the ``.tags`` file (when that file was written, or would be).
        tags_text: Preview with ``tags_file`` and a caption file too: the exact content the ``.tags`` file would get.
    """

    path: str
    status: str
    output: str | None = None
    reason: str = ""
    caption: str | None = None
    score: float | None = None
    keywords: list[str] | None = None
    category: str = ""
    text: str | None = None
    tags: list[tuple[str, float | None]] | None = None
    tags_output: str | None = None
    tags_text: str | None = None

    @property
    def tally(self) -> str:
        """Which count of a summary it adds to: ``written`` (a dry run's ``would_write`` too), ``skipped`` or
        ``failed``."""
        return {"written": "written", "would_write": "written", "skipped": "skipped"}.get(self.status, "failed")


@dataclass
class TagSummary:
    """The result of :func:`lib_clipcap.batch.run_tagging`.

    Attributes:
        total: Files found (including skipped and failed ones).
        written, skipped, failed: Counts; ``written + skipped + failed == total`` unless the run was stopped.
        resumed, kept: The two kinds of ``skipped``: already done by an earlier run (resume), and had a caption
            the policy keeps.
        run_ids: The run id recorded in each output root's state folder (for ``tag --undo``).
        pruned_runs: Runs whose records and backups retention (``keep_runs``) dropped at the start of this one.
        failures: Every failed file with its reason.
        elapsed_s: Wall time of the whole run, discovery to last write.
        images_per_s: Files that went through decoding and the model (written, or failed there) per second of
            ``elapsed_s``.
        stopped: ``should_stop()`` ended the run early; rerunning resumes it.
        dry_run: Nothing was written; ``plan`` lists what would have been.
        plan: Dry run only: one :class:`FileOutcome` per file (``would_write``, ``skipped`` or ``failed``).
        journals: The journal files of this run.
        model: Name of the model that captioned.
    """

    total: int = 0
    written: int = 0
    skipped: int = 0
    failed: int = 0
    failures: list[TagFailure] = field(default_factory=list)
    elapsed_s: float = 0.0
    images_per_s: float = 0.0
    stopped: bool = False
    dry_run: bool = False
    plan: list[FileOutcome] = field(default_factory=list)
    journals: list[str] = field(default_factory=list)
    model: str = ""
    resumed: int = 0
    kept: int = 0
    run_ids: dict[str, str] = field(default_factory=dict)
    pruned_runs: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No file failed."""
        return self.failed == 0

    def line(self) -> str:
        """``written N, already done (resume) N, had a caption (policy) N, failed N`` (``would write`` in a dry
        run or preview)."""
        verb = "would write" if self.dry_run else "written"
        return (f"{verb} {self.written}, already done (resume) {self.resumed}, had a caption (policy) {self.kept}, "
                f"failed {self.failed}")

