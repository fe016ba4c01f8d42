"""SBG keyword vocabularies and category hierarchies, as validated JSON data.

A vocabulary file holds the words CLIP scores an image against (step 1 of Selective Blind Guessing) and the category
hierarchy that adds keywords on top (step 2). Its layout (``"format": "clipcap-sbg-vocabulary"``, version 1)::

    {
      "format": "clipcap-sbg-vocabulary", "version": 1,
      "name": "natural", "description": "...",
      "keyword_template": "{}",                  # how a keyword is shown to CLIP ("{}": the bare word, as the paper)
      "keywords": {"noun": [...], "adjective": [...], "adverb": [...]},
      "hierarchy": {                             # optional
        "prime": {
          "template": "picture of {}.",
          "subjects": {"landscape": "landscape", "people": "people", ..., "object": "some object"},
          "max_combination": 3,                  # prompts for every subject, pair and triple
          "always": ["landscape", "object"]      # branches visited whatever the prime prompt says
        },
        "branches": {"<subject>": [<level>, ...], ...},   # one list of levels per prime subject
        "context": [<level>, ...],               # visited after the branches: time of day, weather, activity
        "indoor": ["indoor", "kitchen", ...]     # chosen keywords that mean "indoors" (levels can skip then)
      }
    }

    <level> = {
      "name": "scenery",
      "template": "picture of {}.",              # CLIP prompt of a label
      "labels": {"beach": ["sand", "wave"], "forest": [...], "city": []},   # label -> tertiary words
      "top": 1,                                  # labels taken from this level
      "add_label": true,                         # the label itself becomes a keyword (false: only its words)
      "tertiary_template": "picture of {}.",     # CLIP prompt of a tertiary word (default: template)
      "tertiary_top": 3,                         # tertiary words taken under each chosen label (0: none)
      "requires": ["people", "animal"],          # only when one of these prime subjects was chosen
      "skip_when_indoor": false                  # skip when an "indoor" keyword was chosen before
    }

Everything is checked on load (unknown fields, templates, duplicates, word shapes), and the error names the field.
Words are lower-case English: letters, spaces, hyphens and apostrophes only.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ClipCapError, MissingFileError

FORMAT = "clipcap-sbg-vocabulary"
VERSION = 1
POS = ("noun", "adjective", "adverb")
DATA_DIR = Path(__file__).resolve().parent / "data"
BUILTIN = {"natural": "natural.json", "shapes": "shapes.json"}

_WORD_RE = re.compile(r"^[a-z](?:[a-z' -]*[a-z])?$")


class VocabularyError(ClipCapError, ValueError):
    """A vocabulary file is malformed; the message names the file, the field and the bad value."""


@dataclass(frozen=True)
class Level:
    """One step of the hierarchy: CLIP picks the best ``top`` labels, then optionally their best tertiary words."""

    name: str
    template: str
    labels: dict[str, tuple[str, ...]]
    top: int = 1
    add_label: bool = True
    tertiary_template: str = ""
    tertiary_top: int = 0
    requires: tuple[str, ...] = ()
    skip_when_indoor: bool = False

    @property
    def tertiary_prompt(self) -> str:
        return self.tertiary_template or self.template

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "template": self.template,
                             "labels": {k: list(v) for k, v in self.labels.items()}, "top": self.top,
                             "add_label": self.add_label}
        if self.tertiary_template:
            d["tertiary_template"] = self.tertiary_template
        if self.tertiary_top:
            d["tertiary_top"] = self.tertiary_top
        if self.requires:
            d["requires"] = list(self.requires)
        if self.skip_when_indoor:
            d["skip_when_indoor"] = True
        return d


@dataclass(frozen=True)
class Prime:
    """The prime categories: CLIP picks the best prompt among every subject and combination of subjects."""

    template: str
    subjects: dict[str, str]  # branch name -> phrase in the prompt
    max_combination: int = 1
    always: tuple[str, ...] = ()

    def combinations(self) -> list[tuple[str, ...]]:
        """Subject tuples in prompt order: singles, then pairs, then triples... (as the original)."""
        from itertools import combinations

        names = list(self.subjects)
        out: list[tuple[str, ...]] = []
        for n in range(1, self.max_combination + 1):
            out.extend(combinations(names, n))
        return out

    def prompt(self, combo: tuple[str, ...]) -> str:
        return self.template.format(" and ".join(self.subjects[s] for s in combo))

    def to_dict(self) -> dict[str, Any]:
        return {"template": self.template, "subjects": dict(self.subjects), "max_combination": self.max_combination,
                "always": list(self.always)}


@dataclass(frozen=True)
class Hierarchy:
    prime: Prime | None
    branches: dict[str, tuple[Level, ...]]
    context: tuple[Level, ...] = ()
    indoor: tuple[str, ...] = ()

    def levels(self) -> list[tuple[str, Level]]:
        """Every level with a stable id (``branch/name`` or ``context/name``)."""
        out = [(f"{b}/{lv.name}", lv) for b, levels in self.branches.items() for lv in levels]
        return out + [(f"context/{lv.name}", lv) for lv in self.context]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        if self.prime is not None:
            d["prime"] = self.prime.to_dict()
        d["branches"] = {b: [lv.to_dict() for lv in levels] for b, levels in self.branches.items()}
        d["context"] = [lv.to_dict() for lv in self.context]
        d["indoor"] = list(self.indoor)
        return d


@dataclass(frozen=True)
class Vocabulary:
    """Keywords (by part of speech) and an optional hierarchy. Build with :func:`load_vocabulary`."""

    name: str
    keywords: dict[str, tuple[str, ...]]
    hierarchy: Hierarchy | None = None
    description: str = ""
    keyword_template: str = "{}"
    source: str = field(default="", compare=False)

    @property
    def words(self) -> tuple[str, ...]:
        """All keywords, nouns first, then adjectives, then adverbs (file order within each)."""
        return tuple(w for pos in POS for w in self.keywords.get(pos, ()))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"format": FORMAT, "version": VERSION, "name": self.name,
                             "description": self.description, "keyword_template": self.keyword_template,
                             "keywords": {p: list(self.keywords[p]) for p in POS if p in self.keywords}}
        if self.hierarchy is not None:
            d["hierarchy"] = self.hierarchy.to_dict()
        return d

    @property
    def content_hash(self) -> str:
        """SHA-256 of the canonical JSON content: the text-feature cache key (name and description excluded)."""
        d = self.to_dict()
        d.pop("name")
        d.pop("description")
        text = json.dumps(d, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def save(self, path: str | Path) -> Path:
        """Write the vocabulary as JSON (atomically)."""
        from ..fileio import atomic_write_text

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1, ensure_ascii=False) + "\n")
        return path

    def __repr__(self) -> str:
        levels = len(self.hierarchy.levels()) if self.hierarchy else 0
        return f"Vocabulary({self.name!r}, {len(self.words)} keywords, {levels} hierarchy levels)"


# ------------------------------------------------------------------------------------------------- validation
class _Checker:
    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, path: str, problem: str) -> VocabularyError:
        return VocabularyError(f"{self.where}: {path}: {problem}")

    def obj(self, value: Any, path: str, allowed: Iterable[str], required: Iterable[str] = ()) -> dict:
        if not isinstance(value, dict):
            raise self.fail(path, f"must be an object (got {type(value).__name__})")
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            raise self.fail(path, f"unknown field(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(allowed)}")
        missing = [k for k in required if k not in value]
        if missing:
            raise self.fail(path, f"missing field(s) {', '.join(map(repr, missing))}")
        return value

    def word(self, value: Any, path: str) -> str:
        if not isinstance(value, str) or not _WORD_RE.match(value) or "  " in value:
            raise self.fail(path, f"{value!r} is not a lower-case word or phrase (letters, spaces, hyphens and "
                                  f"apostrophes only, no surrounding spaces)")
        return value

    def words(self, value: Any, path: str, *, allow_empty: bool = True) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise self.fail(path, f"must be a list of words (got {type(value).__name__})")
        if not value and not allow_empty:
            raise self.fail(path, "must not be empty")
        out = tuple(self.word(w, f"{path}[{i}]") for i, w in enumerate(value))
        dup = sorted({w for w in out if out.count(w) > 1})
        if dup:
            raise self.fail(path, f"duplicate word(s) {', '.join(map(repr, dup))}")
        return out

    def template(self, value: Any, path: str) -> str:
        if not isinstance(value, str) or value.count("{}") != 1 or value.replace("{}", "").count("{") \
                or value.replace("{}", "").count("}"):
            raise self.fail(path, f"must be a text with exactly one '{{}}' where the word goes (got {value!r})")
        return value

    def integer(self, value: Any, path: str, lo: int, hi: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
            bound = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
            raise self.fail(path, f"must be an integer {bound} (got {value!r})")
        return value

    def boolean(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, f"must be true or false (got {value!r})")
        return value


_LEVEL_FIELDS = ("name", "template", "labels", "top", "add_label", "tertiary_template", "tertiary_top", "requires",
                 "skip_when_indoor")


def _parse_level(c: _Checker, raw: Any, path: str, subjects: set[str]) -> Level:
    raw = c.obj(raw, path, _LEVEL_FIELDS, ("name", "template", "labels"))
    name = raw["name"]
    if not isinstance(name, str) or not re.match(r"^[a-z][a-z0-9_ -]*$", name):
        raise c.fail(f"{path}.name", f"must be a short lower-case identifier (got {name!r})")
    path = f"{path} ({name})"
    labels_raw = raw["labels"]
    if not isinstance(labels_raw, dict) or not labels_raw:
        raise c.fail(f"{path}.labels", "must be a non-empty object mapping each label to its tertiary words")
    labels = {c.word(k, f"{path}.labels"): c.words(v, f"{path}.labels[{k!r}]") for k, v in labels_raw.items()}
    top = c.integer(raw.get("top", 1), f"{path}.top", 1, len(labels))
    tertiary_top = c.integer(raw.get("tertiary_top", 0), f"{path}.tertiary_top", 0)
    add_label = c.boolean(raw.get("add_label", True), f"{path}.add_label")
    if not add_label and not tertiary_top:
        raise c.fail(path, "add_label is false and tertiary_top is 0: the level would never add a keyword")
    if not add_label and not any(labels.values()):
        raise c.fail(path, "add_label is false but no label has tertiary words")
    tertiary_template = raw.get("tertiary_template", "")
    if tertiary_template:
        c.template(tertiary_template, f"{path}.tertiary_template")
    if not isinstance(raw.get("requires", []), list):
        raise c.fail(f"{path}.requires", "must be a list of prime subjects")
    requires = tuple(raw.get("requires", ()))
    bad = [r for r in requires if r not in subjects]
    if bad:
        raise c.fail(f"{path}.requires", f"{bad} are not prime subjects ({', '.join(sorted(subjects)) or 'none'})")
    return Level(name=name, template=c.template(raw["template"], f"{path}.template"), labels=labels, top=top,
                 add_label=add_label, tertiary_template=tertiary_template, tertiary_top=tertiary_top,
                 requires=requires, skip_when_indoor=c.boolean(raw.get("skip_when_indoor", False),
                                                               f"{path}.skip_when_indoor"))


def _parse_hierarchy(c: _Checker, raw: Any) -> Hierarchy:
    raw = c.obj(raw, "hierarchy", ("prime", "branches", "context", "indoor"), ("branches",))
    prime = None
    if raw.get("prime") is not None:
        p = c.obj(raw["prime"], "hierarchy.prime", ("template", "subjects", "max_combination", "always"),
                  ("template", "subjects"))
        subjects = p["subjects"]
        if not isinstance(subjects, dict) or not subjects:
            raise c.fail("hierarchy.prime.subjects", "must be a non-empty object mapping branch names to phrases")
        for k, v in subjects.items():
            c.word(k, "hierarchy.prime.subjects")
            c.word(v, f"hierarchy.prime.subjects[{k!r}]")
        always = p.get("always", [])
        if not isinstance(always, list) or any(a not in subjects for a in always):
            raise c.fail("hierarchy.prime.always", f"must list prime subjects (got {always!r})")
        prime = Prime(template=c.template(p["template"], "hierarchy.prime.template"), subjects=dict(subjects),
                      max_combination=c.integer(p.get("max_combination", 1), "hierarchy.prime.max_combination", 1,
                                                len(subjects)),
                      always=tuple(always))
    subjects = set(prime.subjects) if prime else set()
    branches_raw = raw["branches"]
    if not isinstance(branches_raw, dict):
        raise c.fail("hierarchy.branches", "must be an object mapping prime subjects to lists of levels")
    if prime is not None and set(branches_raw) != subjects:
        raise c.fail("hierarchy.branches", f"must have one entry per prime subject: expected "
                                           f"{sorted(subjects)}, got {sorted(branches_raw)}")
    if prime is None and branches_raw:
        raise c.fail("hierarchy.branches", "branches need hierarchy.prime to choose between them")
    branches: dict[str, tuple[Level, ...]] = {}
    for b, levels in branches_raw.items():
        if not isinstance(levels, list):
            raise c.fail(f"hierarchy.branches[{b!r}]", "must be a list of levels")
        branches[b] = tuple(_parse_level(c, lv, f"hierarchy.branches[{b!r}][{i}]", subjects)
                            for i, lv in enumerate(levels))
    context_raw = raw.get("context", [])
    if not isinstance(context_raw, list):
        raise c.fail("hierarchy.context", "must be a list of levels")
    context = tuple(_parse_level(c, lv, f"hierarchy.context[{i}]", subjects) for i, lv in enumerate(context_raw))
    names = [f"{b}/{lv.name}" for b, lvs in branches.items() for lv in lvs] + [f"context/{lv.name}" for lv in context]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise c.fail("hierarchy", f"level names must be unique within a branch (repeated: {', '.join(dup)})")
    return Hierarchy(prime=prime, branches=branches, context=context,
                     indoor=c.words(raw.get("indoor", []), "hierarchy.indoor"))


def vocabulary_from_dict(data: Mapping[str, Any], *, source: str = "<dict>") -> Vocabulary:
    """Validate a vocabulary document (see the module docstring) and build a :class:`Vocabulary`.

    Raises:
        VocabularyError: the document is malformed; the message names ``source``, the field and the value.
    """
    c = _Checker(source)
    raw = c.obj(dict(data), "(top level)", ("format", "version", "name", "description", "keyword_template",
                                            "keywords", "hierarchy"), ("format", "version", "name", "keywords"))
    if raw["format"] != FORMAT:
        raise c.fail("format", f"must be {FORMAT!r} (got {raw['format']!r}); is this an SBG vocabulary file?")
    if raw["version"] != VERSION:
        raise c.fail("version", f"this lib_clipcap reads version {VERSION} (got {raw['version']!r})")
    name = raw["name"]
    if not isinstance(name, str) or not name.strip():
        raise c.fail("name", f"must be a non-empty string (got {name!r})")
    kw = c.obj(raw["keywords"], "keywords", POS)
    keywords = {p: c.words(kw[p], f"keywords.{p}") for p in POS if p in kw}
    flat = [w for ws in keywords.values() for w in ws]
    if not flat:
        raise c.fail("keywords", "must contain at least one word")
    dup = sorted({w for w in flat if flat.count(w) > 1})
    if dup:
        raise c.fail("keywords", f"word(s) filed under two parts of speech: {', '.join(map(repr, dup))}")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise c.fail("description", "must be a string")
    hierarchy = _parse_hierarchy(c, raw["hierarchy"]) if raw.get("hierarchy") is not None else None
    return Vocabulary(name=name.strip(), keywords=keywords, hierarchy=hierarchy, description=description,
                      keyword_template=c.template(raw.get("keyword_template", "{}"), "keyword_template"),
                      source=source)


def load_vocabulary(spec: str | Path | Vocabulary | Mapping[str, Any] = "natural") -> Vocabulary:
    """A vocabulary from a built-in name (``"natural"``, ``"shapes"``), a JSON file, a dict or a Vocabulary.

    Raises:
        MissingFileError: the file does not exist.
        VocabularyError: the file is not valid JSON or not a valid vocabulary (the message says where).
    """
    if isinstance(spec, Vocabulary):
        return spec
    if isinstance(spec, Mapping):
        return vocabulary_from_dict(spec)
    text = str(spec)
    if text.startswith("bundled:"):
        from ..registry import package_path

        path = package_path(text)
    elif text in BUILTIN:
        path = DATA_DIR / BUILTIN[text]
    else:
        path = Path(text).expanduser()
    if not path.is_file():
        raise MissingFileError(f"SBG vocabulary {text!r} not found at {path}; use one of {', '.join(BUILTIN)} or "
                               f"the path of a vocabulary JSON file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise VocabularyError(f"{path}: not valid UTF-8 JSON: {e}") from e
    return vocabulary_from_dict(data, source=str(path))
