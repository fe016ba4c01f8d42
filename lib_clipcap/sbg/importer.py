"""Import the original SBG vocabulary (``all_labels.pkl``) and hierarchy (``encyclopedia.pkl``) into our JSON format.

The original files are pickles, and a pickle can run any code when it is loaded with ``pickle.load``. We never do
that: :func:`safe_load_pickle` uses an unpickler whose ``find_class`` refuses every global (so no class, function or
``__reduce__`` call can be reached) and then checks that the result is made only of ``dict``, ``list``, ``tuple``,
``str``, ``int``, ``float``, ``bool`` and ``None``; anything else (sets, bytes, objects...) is refused with an error
that says what was found.

What the original files hold (read from the ICG extension's code):

- ``all_labels.pkl``: a list of ``(keyword, part_of_speech, frequency)`` tuples, most frequent first; the extension
  kept ``NOUN``/``ADJ``/``ADV`` entries and the first 1000 of them.
- ``encyclopedia.pkl``: a dict. ``human`` is a list of occupations; ``scenery``, ``animal``, ``plant``, ``object``
  and ``activity`` map a category to its (tertiary) words; ``time`` and ``weather`` map a label to words that were
  not used.

The rest of the original hierarchy lived in code (prime prompts, people counts, clothing colours, which levels take
how many words); :func:`hierarchy_from_encyclopedia` writes it out as data, the same way the extension used it.
The originals are noisy (typos, misfiled words): entries that are not plain lower-case words are dropped and counted
in the returned :class:`ImportReport`, never silently "corrected".
"""

from __future__ import annotations

import io
import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .vocabulary import _WORD_RE, FORMAT, VERSION, Vocabulary, VocabularyError, vocabulary_from_dict

log = logging.getLogger(__name__)

ALLOWED_TYPES = (dict, list, tuple, str, int, float, bool, type(None))
MAX_PICKLE_BYTES = 64 * 2**20
MAX_ITEMS = 2_000_000

# What the original extension hard-coded around the encyclopedia (scripts/image_caption.py).
_PRIME = {"landscape": "landscape", "people": "people", "animal": "animal", "plant": "plant", "object": "some object"}
_PEOPLE_SINGLE = ["a man", "a woman", "a boy", "a girl", "an old man", "an old woman"]
_PEOPLE_PLURAL = ["men", "women", "boys", "girls", "old men", "old women"]
_PEOPLE_COUNTS = ["two", "three", "four"]
_CLOTHING_COLOURS = ["red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "white", "black"]
_GARMENTS = ["shirt", "suit", "cloth", "jacket"]
_POS = {"NOUN": "noun", "ADJ": "adjective", "ADV": "adverb"}
_TERTIARY_LIMIT = 100  # the extension scored only the first 100 words of a category


class UnsafePickleError(VocabularyError):
    """A pickle holds something other than plain data (a class, a function call, a set, bytes...)."""


class _DataOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        raise UnsafePickleError(
            f"refused to load global {module}.{name}: only plain data (dict, list, tuple, str, int, float, bool, "
            f"None) is allowed, and a pickle that names a class or function could run code"
        )

    def persistent_load(self, pid):  # pragma: no cover - pickle API
        raise UnsafePickleError(f"refused persistent id {pid!r}: only plain data is allowed")


def _check_plain(obj: Any, where: str, max_items: int) -> None:
    """Walk ``obj`` without recursion; refuse other types and shared-reference blow-ups (a counted walk)."""
    stack = [obj]
    seen = 0
    while stack:
        x = stack.pop()
        seen += 1
        if seen > max_items:
            raise UnsafePickleError(f"{where}: more than {max_items} items (a repeated shared reference can make a "
                                    f"tiny pickle expand enormously); refused")
        t = type(x)
        if t not in ALLOWED_TYPES:
            raise UnsafePickleError(f"{where}: holds a {t.__module__}.{t.__qualname__} ({str(x)[:60]!r}); only dict, "
                                    f"list, tuple, str, int, float, bool and None are allowed")
        if t is dict:
            for k, v in x.items():
                stack.append(k)
                stack.append(v)
        elif t in (list, tuple):
            stack.extend(x)


def safe_load_pickle(source: str | Path | bytes, *, max_bytes: int = MAX_PICKLE_BYTES,
                     max_items: int = MAX_ITEMS) -> Any:
    """Load a pickle that may only contain plain data, without ever running code from it.

    Args:
        source: a file path or the pickle's bytes.
        max_bytes: refuse larger files (the original files are a few hundred KB).
        max_items: refuse structures with more items than this, counting shared references each time.

    Returns:
        The data (nested dicts, lists, tuples, strings, numbers, booleans, None).

    Raises:
        MissingFileError: the file does not exist.
        UnsafePickleError: the pickle names a class or function, holds another type, or is too large.
        VocabularyError: the bytes are not a readable pickle.
    """
    from ..errors import MissingFileError

    where = "<bytes>"
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    else:
        path = Path(source).expanduser()
        where = str(path)
        if not path.is_file():
            raise MissingFileError(f"pickle file not found: {path}")
        if path.stat().st_size > max_bytes:
            raise UnsafePickleError(f"{path} is {path.stat().st_size} bytes, more than the {max_bytes} allowed")
        data = path.read_bytes()
    if len(data) > max_bytes:
        raise UnsafePickleError(f"{where}: {len(data)} bytes, more than the {max_bytes} allowed")
    try:
        obj = _DataOnlyUnpickler(io.BytesIO(data)).load()
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{where}: {e}") from None
    except Exception as e:  # truncated/corrupt pickles raise many types (EOFError, UnpicklingError, ValueError...)
        raise VocabularyError(f"{where}: not a readable pickle ({type(e).__name__}: {e})") from e
    _check_plain(obj, where, max_items)
    return obj


@dataclass
class ImportReport:
    """What the import kept and what it dropped (and why)."""

    keywords: int = 0
    dropped: list[str] = field(default_factory=list)

    def drop(self, where: str, value: Any, why: str) -> None:
        self.dropped.append(f"{where}: {value!r} ({why})")


def _clean(value: Any, where: str, report: ImportReport) -> str | None:
    if not isinstance(value, str):
        report.drop(where, value, "not a string")
        return None
    w = " ".join(value.strip().lower().split())
    if not _WORD_RE.match(w):
        report.drop(where, value, "not a plain word")
        return None
    return w


def _unique(words: list[str | None]) -> list[str]:
    out: list[str] = []
    for w in words:
        if w is not None and w not in out:
            out.append(w)
    return out


def keywords_from_labels(labels: Any, *, limit: int = 1000, report: ImportReport | None = None) -> dict[str, list[str]]:
    """``all_labels.pkl`` content -> ``{"noun": [...], "adjective": [...], "adverb": [...]}`` (first ``limit``)."""
    report = report if report is not None else ImportReport()
    if not isinstance(labels, (list, tuple)):
        raise VocabularyError(f"all_labels: expected a list of (keyword, pos, frequency) tuples, got "
                              f"{type(labels).__name__}")
    out: dict[str, list[str]] = {p: [] for p in _POS.values()}
    seen: set[str] = set()
    count = 0
    for i, item in enumerate(labels):
        if not isinstance(item, (list, tuple)) or len(item) < 2:
            report.drop(f"all_labels[{i}]", item, "not a (keyword, pos, frequency) tuple")
            continue
        pos = _POS.get(str(item[1]).upper())
        if pos is None:
            continue  # verbs, numbers... were never keywords
        w = _clean(item[0], f"all_labels[{i}]", report)
        if w is None or w in seen:
            continue
        seen.add(w)
        out[pos].append(w)
        count += 1
        if count >= limit:
            break
    report.keywords = count
    return out


def _category_map(enc: dict, key: str, report: ImportReport) -> dict[str, list[str]]:
    raw = enc.get(key)
    if isinstance(raw, (list, tuple)):
        raw = {k: [] for k in raw}
    if not isinstance(raw, dict):
        raise VocabularyError(f"encyclopedia[{key!r}]: expected a dict of category -> words, got "
                              f"{type(raw).__name__}")
    out: dict[str, list[str]] = {}
    for k, words in raw.items():
        label = _clean(k, f"encyclopedia[{key!r}]", report)
        if label is None or label in out:
            continue
        if isinstance(words, dict):
            words = list(words)
        if not isinstance(words, (list, tuple)):
            report.drop(f"encyclopedia[{key!r}][{k!r}]", words, "not a list of words")
            words = []
        out[label] = _unique([_clean(w, f"encyclopedia[{key!r}][{k!r}]", report) for w in words])[:_TERTIARY_LIMIT]
    if not out:
        raise VocabularyError(f"encyclopedia[{key!r}] has no usable category")
    return out


def hierarchy_from_encyclopedia(enc: Any, report: ImportReport | None = None) -> dict[str, Any]:
    """``encyclopedia.pkl`` content -> the ``hierarchy`` object of a vocabulary document (as the extension used it)."""
    report = report if report is not None else ImportReport()
    if not isinstance(enc, dict):
        raise VocabularyError(f"encyclopedia: expected a dict, got {type(enc).__name__}")
    missing = [k for k in ("human", "scenery", "animal", "plant", "object", "activity", "time", "weather")
               if k not in enc]
    if missing:
        raise VocabularyError(f"encyclopedia: missing categories {missing}; is this the original encyclopedia.pkl?")
    people = [f"{s}" for s in _PEOPLE_SINGLE]
    people += [f"{n} {p}" for n in _PEOPLE_COUNTS for p in _PEOPLE_PLURAL]
    people += [f"{n} people" for n in _PEOPLE_COUNTS] + ["a crowd of people"]
    occupations = _category_map(enc, "human", report)
    clothing = [f"{c} {g}" for g in _GARMENTS for c in _CLOTHING_COLOURS]
    objects = _category_map(enc, "object", report)
    objects.pop("clothing and fashion", None)  # the extension left this category out
    pic = "picture of {}."

    def level(name, labels, *, tertiary_top=0, template=pic, **kw):
        return {"name": name, "template": template, "labels": labels, "tertiary_top": tertiary_top, **kw}

    return {
        "prime": {"template": pic, "subjects": dict(_PRIME), "max_combination": 3, "always": ["landscape", "object"]},
        "branches": {
            "landscape": [level("scenery", _category_map(enc, "scenery", report), tertiary_top=3)],
            "people": [level("people", {p: [] for p in people}),
                       level("occupation", {o: [] for o in occupations}),
                       level("clothing", {c: [] for c in clothing}, template="wearing {}.")],
            "animal": [level("animal", _category_map(enc, "animal", report), tertiary_top=1)],
            "plant": [level("plant", _category_map(enc, "plant", report), tertiary_top=3)],
            "object": [level("object", objects, tertiary_top=3)],
        },
        "context": [
            level("time", {k: [] for k in _category_map(enc, "time", report)}, template="picture during {}."),
            level("weather", {k: [] for k in _category_map(enc, "weather", report)}, template="picture during {}.",
                  skip_when_indoor=True),
            level("activity", _category_map(enc, "activity", report), template="activity is {}.", tertiary_top=1,
                  add_label=False, requires=["people", "animal"]),
        ],
        "indoor": ["indoor"],
    }


def import_original(encyclopedia: str | Path, labels: str | Path, *, name: str = "original",
                    limit: int = 1000) -> tuple[Vocabulary, ImportReport]:
    """Read the original pickles safely and build a validated :class:`Vocabulary`.

    Raises:
        UnsafePickleError: a file holds anything but plain data.
        VocabularyError: the content does not have the expected structure.
    """
    report = ImportReport()
    doc = {
        "format": FORMAT, "version": VERSION, "name": name,
        "description": f"imported from the original SBG files {Path(labels).name} and {Path(encyclopedia).name}",
        "keyword_template": "{}",
        "keywords": keywords_from_labels(safe_load_pickle(labels), limit=limit, report=report),
        "hierarchy": hierarchy_from_encyclopedia(safe_load_pickle(encyclopedia), report),
    }
    vocab = vocabulary_from_dict(doc, source=f"import of {encyclopedia} + {labels}")
    if report.dropped:
        log.warning("SBG import dropped %d noisy entries (first: %s)", len(report.dropped), report.dropped[0])
    return vocab, report


def convert_original(encyclopedia: str | Path, labels: str | Path, out: str | Path, *, name: str = "original",
                     limit: int = 1000) -> tuple[Path, ImportReport]:
    """:func:`import_original` and write the result as vocabulary JSON at ``out``."""
    vocab, report = import_original(encyclopedia, labels, name=name, limit=limit)
    return vocab.save(out), report
