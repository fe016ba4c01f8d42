"""Caption datasets, read in the formats they are distributed in.

Every reader returns an :class:`EvalDataset`: a list of :class:`EvalItem` (image id, image path, reference captions,
split). :func:`load_dataset` picks the reader from the file (``format="auto"``) or by name:

``flickr``
    Flickr8k/Flickr30k caption lists: the Kaggle ``captions.txt`` (``image,caption`` CSV with a header), the original
    ``Flickr8k.token.txt`` / ``results_20130124.token`` (``name.jpg#0<TAB>caption``) and Flickr30k's ``results.csv``
    (``image_name| comment_number| comment``). Images are in the order of their first caption; the CLIP-prefix paper
    (Huynh et al.) tests on the **last 1000 images** (5000 captions) of ``captions.txt``: ``split="test"``;
    ``split="train"`` is everything before them.
``karpathy``
    Karpathy's split files ``dataset_coco.json``, ``dataset_flickr8k.json``, ``dataset_flickr30k.json``
    (``images[].{filepath, filename, split, sentences[].raw}``). ``split="train"`` includes ``restval`` (as
    everyone trains on COCO), ``"restval"`` alone is also accepted.
``coco``
    COCO caption annotations (``captions_val2014.json``: ``images[].{id, file_name}`` + ``annotations[].{image_id,
    caption}``); no splits.
``finecapeval``
    FineCapEval (Cho et al. 2022), ``FineCapEval.csv`` with columns ``image, caption, background, object, relation``:
    5 rows per image; ``caption`` is the "overall" criterion and the references, the other three hold phrases
    separated by ``\\;`` and are kept per item in :attr:`EvalItem.criteria`.
``jsonl``
    A generic "folder + JSONL references" format: one JSON object per line,
    ``{"image": "sub/dir/a.png", "captions": ["...", "..."], "split": "test"}`` (``split`` optional; ``file`` /
    ``file_name`` and ``references`` / ``caption`` accepted as aliases); image paths are relative to the JSONL file's
    folder unless ``images`` says otherwise.

Captions are kept as written (the PTB tokenizer lower-cases and strips punctuation at scoring time).
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ClipCapError, MissingFileError

log = logging.getLogger(__name__)

FORMATS = ("flickr", "karpathy", "coco", "finecapeval", "jsonl")
SPLITS = ("all", "train", "val", "test", "restval")
FLICKR_TEST_IMAGES = 1000  # the CLIP-prefix paper's Flickr test split: the last 1000 images
FINECAP_CRITERIA = ("background", "object", "relation")
# Where the datasets' archives put the images, relative to the caption file's folder.
_FLICKR_IMAGE_DIRS = ("Images", "Flicker8k_Dataset", "Flickr8k_Dataset", "flickr30k_images", "images")


class DatasetError(ClipCapError, ValueError):
    """A dataset file is malformed; the message names the file, the line or field, and the bad value."""


@dataclass
class EvalItem:
    """One image and its references.

    Attributes:
        image_id: a stable id (the file name for Flickr, the COCO id as a string...).
        path: where the image is expected (it may be missing; captioning then reports that image as failed).
        references: the human captions.
        split: the split the item belongs to, when the format has splits.
        criteria: FineCapEval phrases per criterion (``background``/``object``/``relation``); empty otherwise.
    """

    image_id: str
    path: Path
    references: list[str]
    split: str | None = None
    criteria: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class EvalDataset:
    """The items of one split of one dataset, in a stable order."""

    name: str
    format: str
    split: str
    items: list[EvalItem]
    source: str = ""

    def __len__(self) -> int:
        return len(self.items)

    def references(self) -> dict[str, list[str]]:
        """``{image_id: [reference, ...]}``."""
        return {it.image_id: list(it.references) for it in self.items}

    def head(self, n: int) -> EvalDataset:
        """The first ``n`` items (quick runs)."""
        return EvalDataset(self.name, self.format, self.split, self.items[:n], self.source)

    def captions(self) -> list[str]:
        return [c for it in self.items for c in it.references]


# --------------------------------------------------------------------------------------------------- helpers
def _read_text(path: Path) -> str:
    if not path.is_file():
        raise MissingFileError(f"dataset file not found: {path}")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path} is not UTF-8 text: {e}") from e


def _read_json(path: Path) -> Any:
    try:
        return json.loads(_read_text(path))
    except ValueError as e:
        raise DatasetError(f"{path} is not valid JSON: {e}") from e


def _images_root(path: Path, images: str | Path | None, candidates: Iterable[str] = ()) -> Path:
    if images is not None:
        root = Path(images).expanduser()
        if not root.is_dir():
            raise MissingFileError(f"images folder not found: {root}")
        return root
    for name in candidates:
        if (path.parent / name).is_dir():
            return path.parent / name
    return path.parent


def _check_split(split: str, allowed: tuple[str, ...], path: Path) -> str:
    split = (split or "all").lower()
    if split not in allowed:
        raise DatasetError(f"split {split!r} is not available for {path.name}; use one of {', '.join(allowed)}")
    return split


# --------------------------------------------------------------------------------------------------- Flickr
def read_flickr_captions(path: str | Path) -> list[tuple[str, list[str]]]:
    """``[(image file name, [captions...]), ...]`` in order of first appearance, from any Flickr caption list."""
    path = Path(path).expanduser()
    text = _read_text(path)
    order: dict[str, list[str]] = {}

    def add(name: str, caption: str, where: str) -> None:
        name, caption = name.strip(), caption.strip()
        if not name or not caption:
            raise DatasetError(f"{path}:{where}: expected an image name and a caption")
        order.setdefault(name, []).append(caption)

    lines = text.splitlines()
    first = lines[0].strip() if lines else ""
    if "|" in first and first.replace(" ", "").lower().startswith("image_name|"):
        # Flickr30k results.csv: "image_name| comment_number| comment"
        for no, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            parts = line.split("|", 2)
            if len(parts) != 3:
                raise DatasetError(f"{path}:{no}: expected 'image| number| comment', got {line[:80]!r}")
            add(parts[0], parts[2], str(no))
    elif "\t" in first and "#" in first.split("\t", 1)[0]:
        # The original token files: "name.jpg#0<TAB>caption"
        for no, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            key, sep, caption = line.partition("\t")
            if not sep:
                raise DatasetError(f"{path}:{no}: expected 'name.jpg#n<TAB>caption', got {line[:80]!r}")
            add(key.rsplit("#", 1)[0], caption, str(no))
    else:
        # Kaggle captions.txt: CSV with a header "image,caption"; captions may be quoted and contain commas.
        reader = csv.reader(io.StringIO(text))
        header = next(reader, None)
        if not header or [h.strip().lower() for h in header[:2]] != ["image", "caption"]:
            raise DatasetError(f"{path}: expected a header 'image,caption' (Kaggle captions.txt), a token file "
                               f"('name.jpg#0<TAB>caption') or Flickr30k's results.csv; got {first[:80]!r}")
        for no, row in enumerate(reader, start=2):
            if not row or not any(c.strip() for c in row):
                continue
            if len(row) < 2:
                raise DatasetError(f"{path}:{no}: expected 'image,caption', got {row!r}")
            add(row[0], ",".join(row[1:]), str(no))
    if not order:
        raise DatasetError(f"{path} holds no captions")
    return list(order.items())


def load_flickr(path: str | Path, *, split: str = "test", images: str | Path | None = None,
                test_images: int = FLICKR_TEST_IMAGES) -> EvalDataset:
    """A Flickr8k/30k caption list with the CLIP-prefix paper's split (last ``test_images`` images = test)."""
    path = Path(path).expanduser()
    split = _check_split(split, ("all", "train", "test"), path)
    pairs = read_flickr_captions(path)
    if split != "all" and len(pairs) <= test_images:
        raise DatasetError(f"{path} has {len(pairs)} images: too few for a test split of the last {test_images}; "
                           f"use split='all' or a smaller test_images")
    root = _images_root(path, images, _FLICKR_IMAGE_DIRS)
    cut = len(pairs) - test_images
    items = [EvalItem(name, root / name, caps, split="test" if i >= cut else "train")
             for i, (name, caps) in enumerate(pairs)]
    if split != "all":
        items = [it for it in items if it.split == split]
    return EvalDataset(path.parent.name or "flickr", "flickr", split, items, str(path))


# ------------------------------------------------------------------------------------------------- Karpathy
def load_karpathy(path: str | Path, *, split: str = "test", images: str | Path | None = None) -> EvalDataset:
    """Karpathy's ``dataset_{coco,flickr8k,flickr30k}.json`` (``train`` includes ``restval``)."""
    path = Path(path).expanduser()
    split = _check_split(split, SPLITS, path)
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetError(f"{path}: expected Karpathy's layout {{'images': [...], 'dataset': ...}}")
    name = str(data.get("dataset") or path.stem.replace("dataset_", ""))
    root = _images_root(path, images, ("images", "Images", "Flicker8k_Dataset", "flickr30k_images"))
    items = []
    for i, img in enumerate(data["images"]):
        try:
            fname = img["filename"]
            sents = [s["raw"] for s in img["sentences"]]
        except (KeyError, TypeError) as e:
            raise DatasetError(f"{path}: images[{i}] lacks {e} (expected filename and sentences[].raw)") from e
        s = img.get("split", "train")
        if split == "train" and s not in ("train", "restval"):
            continue
        if split not in ("all", "train") and s != split:
            continue
        image_id = str(img.get("cocoid", img.get("imgid", fname))) if name == "coco" else fname
        sub = img.get("filepath") or ""
        items.append(EvalItem(image_id, root / sub / fname, [str(x).strip() for x in sents], split=s))
    return EvalDataset(name, "karpathy", split, items, str(path))


# ------------------------------------------------------------------------------------------------------ COCO
def load_coco(path: str | Path, *, split: str = "all", images: str | Path | None = None) -> EvalDataset:
    """COCO caption annotations (``captions_val2014.json``); images without captions are left out."""
    path = Path(path).expanduser()
    _check_split(split, ("all",), path)
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise DatasetError(f"{path}: expected COCO's layout {{'images': [...], 'annotations': [...]}}")
    root = _images_root(path, images, ("images",))
    files = {}
    for i, img in enumerate(data.get("images") or []):
        try:
            files[img["id"]] = img["file_name"]
        except (KeyError, TypeError) as e:
            raise DatasetError(f"{path}: images[{i}] lacks {e}") from e
    refs: dict[Any, list[str]] = {}
    for i, ann in enumerate(data["annotations"]):
        try:
            refs.setdefault(ann["image_id"], []).append(str(ann["caption"]).strip())
        except (KeyError, TypeError) as e:
            raise DatasetError(f"{path}: annotations[{i}] lacks {e}") from e
    items = [EvalItem(str(iid), root / files.get(iid, f"{iid}.jpg"), caps)
             for iid, caps in sorted(refs.items(), key=lambda kv: kv[0])]
    return EvalDataset(path.stem, "coco", "all", items, str(path))


# ----------------------------------------------------------------------------------------------- FineCapEval
def split_phrases(cell: str) -> list[str]:
    """FineCapEval phrases: separated by ``\\;`` (the file's convention) or ``;``; lower-cased, empty ones dropped."""
    cell = (cell or "").replace("\\;", ";")
    return [p.strip().lower() for p in cell.split(";") if len(p.strip()) > 1]


def load_finecapeval(path: str | Path, *, split: str = "all", images: str | Path | None = None) -> EvalDataset:
    """``FineCapEval.csv`` (columns image, caption, background, object, relation)."""
    path = Path(path).expanduser()
    _check_split(split, ("all", "test"), path)
    reader = csv.DictReader(io.StringIO(_read_text(path)))
    cols = [c.strip().lower() for c in (reader.fieldnames or [])]
    need = ("image", "caption", *FINECAP_CRITERIA)
    if any(c not in cols for c in need):
        raise DatasetError(f"{path}: expected columns {', '.join(need)}; got {', '.join(cols) or 'none'}")
    root = _images_root(path, images, ("images", "FineCapEval"))
    by: dict[str, EvalItem] = {}
    for row in reader:
        row = {(k or "").strip().lower(): (v or "") for k, v in row.items()}
        name = row["image"].strip()
        if not name:
            continue
        it = by.get(name)
        if it is None:
            it = by[name] = EvalItem(name.rsplit(".", 1)[0], root / name, [], split="test",
                                     criteria={c: [] for c in FINECAP_CRITERIA})
        if row["caption"].strip():
            it.references.append(row["caption"].strip())
        for c in FINECAP_CRITERIA:
            it.criteria[c].extend(split_phrases(row[c]))
    items = [it for it in by.values() if it.references]
    return EvalDataset("FineCapEval", "finecapeval", "test", items, str(path))


# ----------------------------------------------------------------------------------------------------- JSONL
def load_jsonl(path: str | Path, *, split: str = "all", images: str | Path | None = None) -> EvalDataset:
    """The generic "folder + JSONL references" format (see the module docstring)."""
    path = Path(path).expanduser()
    split = (split or "all").lower()
    root = _images_root(path, images)
    items = []
    for no, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise DatasetError(f"{path}:{no}: not valid JSON: {e}") from e
        if not isinstance(obj, dict):
            raise DatasetError(f"{path}:{no}: expected a JSON object, got {type(obj).__name__}")
        image = obj.get("image", obj.get("file", obj.get("file_name")))
        caps = obj.get("captions", obj.get("references", obj.get("caption")))
        if isinstance(caps, str):
            caps = [caps]
        if not isinstance(image, str) or not image or not isinstance(caps, list) or not caps:
            raise DatasetError(f"{path}:{no}: each line needs \"image\" (a path) and \"captions\" (a non-empty "
                               f"list); got keys {sorted(obj)}")
        s = obj.get("split")
        if split != "all" and s != split:
            continue
        p = Path(image)
        items.append(EvalItem(str(obj.get("id", image)), p if p.is_absolute() else root / p,
                              [str(c).strip() for c in caps], split=s))
    if split != "all" and not items:
        raise DatasetError(f"{path}: no line has \"split\": {split!r}; use split='all'")
    return EvalDataset(path.stem, "jsonl", split, items, str(path))


# ------------------------------------------------------------------------------------------------- dispatch
_READERS = {"flickr": load_flickr, "karpathy": load_karpathy, "coco": load_coco, "finecapeval": load_finecapeval,
            "jsonl": load_jsonl}


def detect_format(path: str | Path) -> str:
    """Guess the format of a dataset file from its name and first bytes.

    Raises:
        DatasetError: the file matches no known format.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        for name in ("captions.txt", "references.jsonl", "FineCapEval.csv", "results.csv"):
            if (p / name).is_file():
                return detect_format(p / name)
        raise DatasetError(f"{p} is a folder without captions.txt, references.jsonl, FineCapEval.csv or results.csv; "
                           f"pass the caption file itself")
    head = _read_text(p)[:4096]
    low = p.name.lower()
    if low.endswith(".jsonl"):
        return "jsonl"
    if low.endswith(".json"):
        if '"annotations"' in head:
            return "coco"
        if '"sentences"' in head or low.startswith("dataset_"):
            return "karpathy"
        raise DatasetError(f"{p}: JSON that is neither Karpathy's (images[].sentences) nor COCO's (annotations)")
    first = head.splitlines()[0].lower() if head else ""
    if all(c in first for c in ("background", "object", "relation")):
        return "finecapeval"
    return "flickr"


def _resolve_file(path: Path, fmt: str) -> Path:
    if not path.is_dir():
        return path
    names = {"flickr": ("captions.txt", "results.csv", "Flickr8k.token.txt", "results_20130124.token"),
             "jsonl": ("references.jsonl",), "finecapeval": ("FineCapEval.csv",)}.get(fmt, ())
    for n in names:
        if (path / n).is_file():
            return path / n
    raise DatasetError(f"{path} is a folder; pass the {fmt} caption file itself")


def load_dataset(path: str | Path, *, format: str = "auto", split: str | None = None,
                 images: str | Path | None = None, limit: int | None = None, **kwargs: Any) -> EvalDataset:
    """Read a caption dataset.

    Args:
        path: the caption file (or a folder holding ``captions.txt`` / ``references.jsonl`` / ``FineCapEval.csv``).
        format: one of :data:`FORMATS`, or ``"auto"`` (from the file's name and contents).
        split: ``"test"`` (default for Flickr and Karpathy), ``"train"``, ``"val"``, ``"restval"`` or ``"all"``
            (default for the formats without splits).
        images: the images folder (default: next to the caption file, where the dataset archives put it).
        limit: keep only the first ``limit`` items.
        kwargs: reader options (``test_images`` for Flickr).

    Raises:
        MissingFileError: the file or images folder does not exist.
        DatasetError: the file is malformed, or the split does not exist in it.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise MissingFileError(f"dataset not found: {p}")
    fmt = detect_format(p) if format == "auto" else format
    if fmt not in _READERS:
        raise DatasetError(f"unknown dataset format {format!r}; use one of auto, {', '.join(FORMATS)}")
    p = _resolve_file(p, fmt)
    if split is None:
        split = "test" if fmt in ("flickr", "karpathy") else "all"
    ds = _READERS[fmt](p, split=split, images=images, **kwargs)
    if not ds.items:
        raise DatasetError(f"{p}: split {split!r} is empty")
    return ds.head(limit) if limit else ds


# --------------------------------------------------------------------------------------------- writing
def write_flickr_captions(path: str | Path, pairs: Iterable[tuple[str, Iterable[str]]]) -> Path:
    """Write ``[(image name, captions)]`` as a Kaggle-style ``captions.txt`` (``image,caption`` CSV)."""
    from ..fileio import atomic_write_text

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image", "caption"])
    for name, caps in pairs:
        for c in caps:
            w.writerow([name, c])
    atomic_write_text(Path(path), buf.getvalue())
    return Path(path)


def write_jsonl(path: str | Path, items: Iterable[EvalItem], *, relative_to: str | Path | None = None) -> Path:
    """Write items in the generic JSONL format (image paths relative to ``relative_to`` when inside it)."""
    from ..fileio import atomic_write_text

    base = Path(relative_to or Path(path).parent).resolve()
    lines = []
    for it in items:
        p = Path(it.path).resolve()
        try:
            image = p.relative_to(base).as_posix()
        except ValueError:
            image = str(p)
        obj: dict[str, Any] = {"image": image, "captions": it.references}
        if it.split:
            obj["split"] = it.split
        lines.append(json.dumps(obj, ensure_ascii=False))
    atomic_write_text(Path(path), "\n".join(lines) + "\n")
    return Path(path)
