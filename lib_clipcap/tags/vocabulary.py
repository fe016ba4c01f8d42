"""Tag vocabularies: the tags CLIP ranks an image against, by category, with aliases and prompt templates.

A vocabulary is a file, in one of two forms.

**Plain text** (``.txt`` or any name not ending in ``.json``), UTF-8, one tag a line::

    # a comment; blank lines are ignored
    @template a photo of {}.                 # the prompt every tag is shown to CLIP in (default "{}")
    @template colour: a {} object.           # the prompts of one category's tags: give several lines for
    @template colour: something {}.          #   several prompts (a prompt ensemble)
    @template shape: a {colour} {}.          # {category}: one prompt for each tag of that category
    colour: red | crimson | scarlet          # category "colour", tag "red", aliases "crimson" and "scarlet"
    triangle                                 # a tag without a category (category "")

A tag's aliases are other phrasings of it. CLIP sees every phrasing in every template of the tag's category, and the
tag's similarity to an image is the best of those prompts' (see :mod:`lib_clipcap.tags.ranking` for why the best and
not the mean); ``exclude`` and ``always_first`` match a tag by its name or any alias.

A template may hold ``{category}`` slots besides the tag's ``{}``: a slot stands for every tag of that category, one
prompt each (``a {colour} {}.`` with colours red and blue gives ``a red {}.`` and ``a blue {}.``), so a CLIP that
only knows whole descriptions can be asked about one attribute at a time (at most :data:`MAX_EXPANSION` prompts a
template). A ``#`` starts a comment anywhere on a line. A category name is lower-case letters, digits, ``_``, ``-``
and spaces; a tag is any text without ``|``, ``#``, ``,``, ``{`` or ``}`` (the comma separates tags in a caption
file).

**JSON** (``.json``), ``"format": "clipcap-tag-vocabulary"``, version 1::

    {
      "format": "clipcap-tag-vocabulary", "version": 1,
      "name": "colours", "description": "...",           # optional
      "template": "a photo of {}.",                       # optional, default "{}"; or a list of templates
      "categories": {
        "colour": {"template": ["a {} object."],          # optional, default: the vocabulary's
                   "tags": ["red", {"tag": "blue", "aliases": ["navy"]}]},
        "": {"tags": ["triangle"]}                        # uncategorised tags
      }
    }

An SBG vocabulary (``"format": "clipcap-sbg-vocabulary"``, :mod:`lib_clipcap.sbg.vocabulary`) loads as a tag
vocabulary too: every keyword, filed under the hierarchy level whose labels or tertiary words hold it (the level's
name is the category), else under its part of speech; the hierarchy's labels become tags of their level.

Every problem is reported with the file and the line (plain text) or the field (JSON), as the user wrote them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ClipCapError, MissingFileError

FORMAT = "clipcap-tag-vocabulary"
VERSION = 1
DEFAULT_TEMPLATE = "{}"
ASSETS_DIR = Path(__file__).resolve().parents[1] / "assets" / "tags"
#: Bundled vocabularies, by the name every face accepts (``vocabulary="general"``), and their files.
BUNDLED: dict[str, str] = {
    "subject": "subject.txt",
    "colour": "colour.txt",
    "material": "material.txt",
    "setting": "setting.txt",
    "lighting": "lighting.txt",
    "composition": "composition.txt",
    "medium": "medium.txt",
    "style": "style.txt",
    "shapes": "shapes.txt",
}
#: ``"general"``: the eight category vocabularies above (all but ``shapes``) as one.
GENERAL_NAME = "general"
GENERAL = ("subject", "colour", "material", "setting", "lighting", "composition", "medium", "style")
#: The SBG vocabularies, loadable as tag vocabularies by these names.
SBG_BUNDLED = {"sbg-natural": "natural", "sbg-shapes": "shapes"}



def is_bundled_name(spec: str) -> bool:
    """``spec`` names a bundled vocabulary (``general``, :data:`BUNDLED`, :data:`SBG_BUNDLED`), not a file."""
    return spec == GENERAL_NAME or spec in BUNDLED or spec in SBG_BUNDLED


_CATEGORY_RE = re.compile(r"^[a-z0-9](?:[a-z0-9_ -]*[a-z0-9])?$")
_BAD_TAG_CHARS = ("|", "#", ",", "{", "}", "\n", "\r", "\t")


class TagVocabularyError(ClipCapError, ValueError):
    """A tag vocabulary is malformed; the message names the file and the line (or field) and the bad text."""


@dataclass(frozen=True)
class TagEntry:
    """One tag of a vocabulary: its name, its category ("" for none), and other phrasings CLIP also sees."""

    tag: str
    category: str = ""
    aliases: tuple[str, ...] = ()

    @property
    def phrasings(self) -> tuple[str, ...]:
        """The name, then the aliases: every text CLIP scores for this tag."""
        return (self.tag, *self.aliases)


@dataclass(frozen=True)
class TagVocabulary:
    """Tags in file order, each with a category, and the prompt templates. Build with :func:`load_tag_vocabulary`."""

    name: str
    entries: tuple[TagEntry, ...]
    template: tuple[str, ...] = (DEFAULT_TEMPLATE,)
    category_templates: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    description: str = ""
    source: str = field(default="", compare=False)

    @property
    def tags(self) -> tuple[str, ...]:
        """Every tag name, in file order."""
        return tuple(e.tag for e in self.entries)

    @property
    def categories(self) -> tuple[str, ...]:
        """The categories in order of first appearance (the order ``order="category"`` follows)."""
        seen: dict[str, None] = {}
        for e in self.entries:
            seen.setdefault(e.category, None)
        return tuple(seen)

    def templates_of(self, category: str) -> tuple[str, ...]:
        """The prompt templates of ``category``'s tags."""
        return self.category_templates.get(category, self.template)

    def prompts(self) -> list[tuple[int, str]]:
        """``(entry index, prompt text)`` for every phrasing of every tag in every template of its category: the
        texts CLIP encodes, in a fixed order (tag by tag)."""
        fill: dict[str, list[str]] = {}
        for e in self.entries:
            fill.setdefault(e.category, []).append(e.tag)
        expanded = {t: _expand(t, fill) for c in self.categories for t in self.templates_of(c)}
        return [(i, x.replace("{}", p)) for i, e in enumerate(self.entries) for p in e.phrasings
                for t in self.templates_of(e.category) for x in expanded[t]]

    def to_dict(self) -> dict[str, Any]:
        """The vocabulary as a JSON document of this module's format (loads back to an equal vocabulary)."""
        cats: dict[str, Any] = {}
        for c in self.categories:
            d: dict[str, Any] = {}
            if c in self.category_templates:
                d["template"] = list(self.category_templates[c])
            d["tags"] = [e.tag if not e.aliases else {"tag": e.tag, "aliases": list(e.aliases)}
                         for e in self.entries if e.category == c]
            cats[c] = d
        return {"format": FORMAT, "version": VERSION, "name": self.name, "description": self.description,
                "template": list(self.template), "categories": cats}

    @property
    def content_hash(self) -> str:
        """SHA-256 of everything CLIP sees (the prompts, in order, and what they belong to); not name or description.

        The text-feature cache is keyed by it, so editing a tag, an alias, a category or a template invalidates the
        cached features, and renaming the file or rewording the description does not.
        """
        d = self.to_dict()
        d.pop("name")
        d.pop("description")
        text = json.dumps(d, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return f"TagVocabulary({self.name!r}, {len(self.entries)} tags, {len(self.categories)} categories)"


# ------------------------------------------------------------------------------------------------------ checks
def _check_tag(text: str, where: str) -> str:
    tag = " ".join(text.split())
    if not tag:
        raise TagVocabularyError(f"{where}: empty tag; write a tag, or delete the line")
    bad = [c for c in _BAD_TAG_CHARS if c in tag]
    if bad:
        raise TagVocabularyError(f"{where}: tag {text.strip()!r} contains {bad[0]!r}; a tag cannot contain "
                                 f"'|', '#', ',', '{{' or '}}'")
    return tag


def _check_category(text: str, where: str) -> str:
    cat = " ".join(text.split())
    if cat and not _CATEGORY_RE.match(cat):
        raise TagVocabularyError(f"{where}: category {text.strip()!r} is not a lower-case name (letters, digits, "
                                 f"'_', '-' and spaces); write e.g. 'colour: red'")
    return cat


_SLOT_RE = re.compile(r"\{([^{}]*)\}")
#: Most prompts one template may expand to (its slots' tag counts multiplied): a guard against a typo'd explosion.
MAX_EXPANSION = 5000


def template_slots(template: str) -> list[str]:
    """The ``{category}`` slots of a template, in order (the tag's own ``{}`` not included)."""
    return [m for m in _SLOT_RE.findall(template) if m]


def _check_template(text: Any, where: str) -> str:
    ok = isinstance(text, str) and _SLOT_RE.findall(text).count("") == 1
    if ok:
        rest = _SLOT_RE.sub("", text)
        ok = "{" not in rest and "}" not in rest and all(_CATEGORY_RE.match(m) for m in template_slots(text))
    if not ok:
        raise TagVocabularyError(f"{where}: template {text!r} must hold exactly one '{{}}' where the tag goes, "
                                 f"e.g. 'a photo of {{}}.', and otherwise only '{{category}}' slots")
    return text.strip()


def _expand(template: str, fill: Mapping[str, Sequence[str]]) -> list[str]:
    """Every text of ``template`` with its ``{category}`` slots filled by that category's tags (``{}`` kept)."""
    from itertools import product

    parts = _SLOT_RE.split(template)  # text, slot, text, slot, ..., text
    slots = parts[1::2]
    choices = [["{}"] if not c else list(fill[c]) for c in slots]
    out = []
    for combo in product(*choices):
        pieces = list(parts)
        pieces[1::2] = combo
        out.append("".join(pieces))
    return out


def _templates(value: Any, where: str) -> tuple[str, ...]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise TagVocabularyError(f"{where}: template list is empty; give at least one, e.g. 'a photo of {{}}.'")
    return tuple(_check_template(v, where) for v in values)


def _build(name: str, entries: list[TagEntry], where_of: Sequence[str], *, template: tuple[str, ...],
           category_templates: dict[str, tuple[str, ...]], description: str, source: str) -> TagVocabulary:
    """Refuse duplicates (a tag twice in a category, or a phrasing claimed by two tags of one category)."""
    if not entries:
        raise TagVocabularyError(f"{source}: the vocabulary has no tags; add one tag a line")
    seen: dict[tuple[str, str], str] = {}
    for e, where in zip(entries, where_of):
        for p in e.phrasings:
            key = (e.category, p.casefold())
            if key in seen:
                raise TagVocabularyError(f"{where}: {p!r} is already a tag or alias in category {e.category!r} "
                                         f"({seen[key]}); keep one")
            seen[key] = where
    cats = {e.category: 0 for e in entries}
    for e in entries:
        cats[e.category] += 1
    unknown = sorted(set(category_templates) - set(cats))
    if unknown:
        raise TagVocabularyError(f"{source}: a template is given for category {unknown[0]!r}, which has no tags; "
                                 f"check its spelling")
    for t in {t for ts in [template, *category_templates.values()] for t in ts}:
        n = 1
        for slot in template_slots(t):
            if slot not in cats:
                raise TagVocabularyError(f"{source}: template {t!r} names category {{{slot}}}, which has no tags; "
                                         f"the categories are {', '.join(repr(c) for c in cats)}")
            n *= cats[slot]
        if n > MAX_EXPANSION:
            raise TagVocabularyError(f"{source}: template {t!r} expands to {n} prompts per phrasing (at most "
                                     f"{MAX_EXPANSION}); use fewer '{{category}}' slots")
    return TagVocabulary(name=name, entries=tuple(entries), template=template,
                         category_templates=dict(category_templates), description=description, source=source)


# ------------------------------------------------------------------------------------------------------ parsers
def parse_text_vocabulary(text: str, *, source: str = "<text>", name: str = "") -> TagVocabulary:
    """Parse the plain-text form (see the module docstring).

    Raises:
        TagVocabularyError: a bad line; the message names ``source`` and the line number.
    """
    entries: list[TagEntry] = []
    wheres: list[str] = []
    template: list[str] = []
    cat_templates: dict[str, list[str]] = {}
    for no, raw in enumerate(text.splitlines(), start=1):
        where = f"{source}, line {no}"
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("@"):
            directive, _, rest = line.partition(" ")
            if directive != "@template":
                raise TagVocabularyError(f"{where}: unknown directive {directive!r}; the only one is "
                                         f"'@template [category:] a photo of {{}}.'")
            rest = rest.strip()
            head, colon, tail = rest.partition(":")
            if colon and "{}" not in head:
                cat = _check_category(head, where)
                cat_templates.setdefault(cat, []).append(_check_template(tail.strip(), where))
            else:
                template.append(_check_template(rest, where))
            continue
        head, colon, tail = line.partition(":")
        category, body = (_check_category(head, where), tail) if colon else ("", line)
        if colon and not head.strip():
            raise TagVocabularyError(f"{where}: {raw.strip()!r} has ':' but no category before it")
        parts = [_check_tag(p, where) for p in body.split("|")]
        entries.append(TagEntry(parts[0], category, tuple(parts[1:])))
        wheres.append(where)
    return _build(name or Path(source).stem, entries, wheres, template=tuple(template) or (DEFAULT_TEMPLATE,),
                  category_templates={c: tuple(t) for c, t in cat_templates.items()}, description="", source=source)


def vocabulary_from_dict(data: Mapping[str, Any], *, source: str = "<dict>") -> TagVocabulary:
    """Build a vocabulary from a JSON document: this module's format, or an SBG vocabulary.

    Raises:
        TagVocabularyError: the document is malformed; the message names ``source`` and the field.
    """
    if not isinstance(data, Mapping):
        raise TagVocabularyError(f"{source}: must be a JSON object with \"format\": {FORMAT!r}")
    fmt = data.get("format")
    if fmt == "clipcap-sbg-vocabulary":
        from ..sbg.vocabulary import vocabulary_from_dict as sbg_from_dict

        return from_sbg(sbg_from_dict(data, source=source))
    if fmt != FORMAT:
        raise TagVocabularyError(f"{source}: format: must be {FORMAT!r} or 'clipcap-sbg-vocabulary' (got {fmt!r})")
    allowed = {"format", "version", "name", "description", "template", "categories"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise TagVocabularyError(f"{source}: unknown field {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")
    if data.get("version") != VERSION:
        raise TagVocabularyError(f"{source}: version: this lib_clipcap reads version {VERSION} "
                                 f"(got {data.get('version')!r})")
    name = data.get("name", Path(source).stem)
    description = data.get("description", "")
    if not isinstance(name, str) or not isinstance(description, str):
        raise TagVocabularyError(f"{source}: name and description must be strings")
    template = _templates(data.get("template", DEFAULT_TEMPLATE), f"{source}: template")
    cats = data.get("categories")
    if not isinstance(cats, Mapping) or not cats:
        raise TagVocabularyError(f"{source}: categories: must be a non-empty object mapping each category to "
                                 f"{{\"tags\": [...]}}")
    entries: list[TagEntry] = []
    wheres: list[str] = []
    cat_templates: dict[str, tuple[str, ...]] = {}
    for raw_cat, body in cats.items():
        where_cat = f"{source}: categories[{raw_cat!r}]"
        cat = _check_category(str(raw_cat), where_cat)
        if not isinstance(body, Mapping) or not set(body) <= {"template", "tags"} or "tags" not in body:
            raise TagVocabularyError(f"{where_cat}: must be an object {{\"tags\": [...], \"template\": ...}}")
        if "template" in body:
            cat_templates[cat] = _templates(body["template"], f"{where_cat}.template")
        tags = body["tags"]
        if not isinstance(tags, list):
            raise TagVocabularyError(f"{where_cat}.tags: must be a list of tags")
        for i, t in enumerate(tags):
            where = f"{where_cat}.tags[{i}]"
            if isinstance(t, str):
                entries.append(TagEntry(_check_tag(t, where), cat))
            elif isinstance(t, Mapping) and set(t) <= {"tag", "aliases"} and isinstance(t.get("tag"), str) \
                    and isinstance(t.get("aliases", []), list) \
                    and all(isinstance(a, str) for a in t.get("aliases", [])):
                entries.append(TagEntry(_check_tag(t["tag"], where), cat,
                                        tuple(_check_tag(a, where) for a in t.get("aliases", []))))
            else:
                raise TagVocabularyError(f"{where}: must be a tag (a string) or {{\"tag\": ..., \"aliases\": [...]}} "
                                         f"(got {t!r})")
            wheres.append(where)
    return _build(name, entries, wheres, template=template, category_templates=cat_templates,
                  description=description, source=source)


def from_sbg(vocab: Any) -> TagVocabulary:
    """A tag vocabulary from an SBG :class:`~lib_clipcap.sbg.vocabulary.Vocabulary` (see the module docstring)."""
    level_of: dict[str, str] = {}
    if vocab.hierarchy is not None:
        for _, level in vocab.hierarchy.levels():
            for label, words in level.labels.items():
                level_of.setdefault(label, level.name)
                for w in words:
                    level_of.setdefault(w, level.name)
    entries: list[TagEntry] = []
    seen: set[tuple[str, str]] = set()

    def add(word: str, category: str) -> None:
        cat = _check_category(category.replace("/", " "), vocab.source or vocab.name)
        if (cat, word) not in seen:
            seen.add((cat, word))
            entries.append(TagEntry(word, cat))

    for pos, words in vocab.keywords.items():
        for w in words:
            add(w, level_of.get(w, pos))
    for word, level in level_of.items():
        add(word, level)
    # Another level may file the same word again under its own name: keep the first, so a tag is scored once.
    first: dict[str, TagEntry] = {}
    for e in entries:
        first.setdefault(e.tag, e)
    entries = [e for e in entries if first[e.tag] is e]
    return TagVocabulary(name=vocab.name, entries=tuple(entries), template=(vocab.keyword_template,),
                         description=vocab.description, source=vocab.source)


def merge_vocabularies(vocabs: Sequence[TagVocabulary], *, name: str = "") -> TagVocabulary:
    """One vocabulary holding the tags of ``vocabs`` in order, each keeping its category and templates.

    Raises:
        TagVocabularyError: two of them give a category different templates, or file the same phrasing twice in
            one category (the message names both sources).
    """
    if len(vocabs) == 1:
        return vocabs[0]
    entries: list[TagEntry] = []
    wheres: list[str] = []
    templates: dict[str, tuple[str, ...]] = {}
    owner: dict[str, str] = {}
    for v in vocabs:
        for c in v.categories:
            t = v.templates_of(c)
            if c in templates and templates[c] != t:
                raise TagVocabularyError(f"{v.source or v.name}: category {c!r} has other templates than in "
                                         f"{owner[c]}; give it the same templates, or another category name")
            templates.setdefault(c, t)
            owner.setdefault(c, v.source or v.name)
        entries.extend(v.entries)
        wheres.extend(f"{v.source or v.name}: tag {e.tag!r}" for e in v.entries)
    return _build(name or "+".join(v.name for v in vocabs), entries, wheres, template=(DEFAULT_TEMPLATE,),
                  category_templates=templates, description="", source="+".join(v.source or v.name for v in vocabs))


def load_tag_vocabulary(
        spec: str | Path | TagVocabulary | Mapping[str, Any] | Sequence[str | Path] = "general") -> TagVocabulary:
    """A vocabulary from a bundled name (:data:`BUNDLED`, ``general``, ``sbg-natural``/``sbg-shapes``), a file, a
    dict, or a list of those (merged, see :func:`merge_vocabularies`).

    Args:
        spec: a bundled name (``"general"``, ``"colour"``, ``"shapes"``...), the path of a ``.txt``/``.json``
            vocabulary file, an already-built vocabulary, a JSON document as a dict, or a list of names and paths.

    Raises:
        MissingFileError: ``spec`` is neither a bundled name nor an existing file (the message lists the names).
        TagVocabularyError: the file is malformed (the message names the file and the line or field).
    """
    if isinstance(spec, TagVocabulary):
        return spec
    if isinstance(spec, Mapping):
        return vocabulary_from_dict(spec)
    if isinstance(spec, (list, tuple)):
        if not spec:
            raise TagVocabularyError("the list of tag vocabularies is empty; give a name or a file")
        return merge_vocabularies([load_tag_vocabulary(s) for s in spec])
    text = str(spec)
    if text == GENERAL_NAME:
        return merge_vocabularies([load_tag_vocabulary(n) for n in GENERAL], name=GENERAL_NAME)
    if text in SBG_BUNDLED:
        from ..sbg.vocabulary import load_vocabulary

        return from_sbg(load_vocabulary(SBG_BUNDLED[text]))
    path = ASSETS_DIR / BUNDLED[text] if text in BUNDLED else Path(text).expanduser()
    if not path.is_file():
        names = ", ".join(["general", *BUNDLED, *SBG_BUNDLED])
        raise MissingFileError(f"tag vocabulary {text!r} not found (no such file: {path}); use a bundled one "
                               f"({names}) or the path of a .txt or .json vocabulary file")
    try:
        content = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise TagVocabularyError(f"{path}: not UTF-8 text ({e}); save the vocabulary as UTF-8") from e
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(content)
        except json.JSONDecodeError as e:
            raise TagVocabularyError(f"{path}, line {e.lineno}: not valid JSON: {e.msg}") from e
        return vocabulary_from_dict(data, source=str(path))
    return parse_text_vocabulary(content, source=str(path), name=path.stem)
