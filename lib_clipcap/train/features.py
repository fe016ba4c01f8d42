"""CLIP image features of a dataset, written once as safetensors shards and read by every trainer.

Layout of a features folder::

    features.json                 CLIP backbone, feature size, normalisation, shard list, dataset source
    items.jsonl                   one line per image: {"image_id", "file", "captions", "split"}
    features-00000.safetensors    "features" [n, D] float32 and "valid" [n] uint8 (0: the image could not be read),
                                  and with ``--augment`` also "views" [n, V, D]: the encodings of V augmented copies

Format versions: 1 (plain encodings) and 2 (``features.json`` lists ``"views"``, the augmentations, and each shard
holds the "views" tensor beside "features"). Version 2 keeps "features" as the plain encoding, so a version-1
reader, which loads only "features" and "valid", reads a version-2 folder as the plain features it always read; a
reader meeting a version newer than it knows stops with a :class:`~lib_clipcap.errors.ClipCapError` naming it.

Images are decoded and preprocessed in worker processes (a ``DataLoader``) while the model encodes the previous
batch. Each shard is written atomically and carries a key (backbone + normalisation + its image ids) in its metadata,
so an interrupted run resumes at the first missing shard, and a changed setting never reuses a stale shard.
Features are stored as CLIP outputs (``normalized: false``) unless ``normalize=True``; either way the folder records
it, and :class:`~lib_clipcap.model.ClipCapModel` applies its own ``config.normalize`` to whatever it is given.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ClipCapError, MissingFileError

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # pragma: no cover
    import torch

META_NAME = "features.json"
ITEMS_NAME = "items.jsonl"
FORMAT = "clipcap-features"
VERSION = 2  # the newest layout this module writes and reads (see the module docstring)
CROP = 0.85  # side of an augmentation crop, as a share of the image's: small shifts, no object cut away


def _crop(box: tuple[float, float]):
    def f(img):
        w, h = img.size
        cw, ch = round(w * CROP), round(h * CROP)
        x, y = round(box[0] * (w - cw)), round(box[1] * (h - ch))
        return img.crop((x, y, x + cw, y + ch))

    return f


def _flip(img):
    from PIL import Image

    return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


# Augmented copies ``train features --augment`` can encode. A flip swaps left and right: leave it out for datasets
# whose captions say "left of"/"right of" (the relations world does), or the model learns contradictory pairs. A
# crop enlarges and moves what it keeps: on the 64-pixel relations world, whose captions name sizes ("tiny", "big"),
# the five crops lowered test CIDEr from 3.24 to 2.53 (lib_clipcap.train.recipe), so nothing is augmented by default.
AUGMENTATIONS = {"flip": _flip, "crop-tl": _crop((0, 0)), "crop-tr": _crop((1, 0)), "crop-bl": _crop((0, 1)),
                 "crop-br": _crop((1, 1)), "crop-center": _crop((0.5, 0.5))}
AUGMENT_GROUPS = {"crops": ("crop-tl", "crop-tr", "crop-bl", "crop-br", "crop-center")}


def augmentation_names(spec: Sequence[str]) -> list[str]:
    """The augmentations a ``--augment`` list names (``crops``: the four corner crops and the centre one), in
    order, without repeats.

    Raises:
        ClipCapError: an unknown name.
    """
    names: list[str] = []
    for item in spec:
        for name in AUGMENT_GROUPS.get(item, (item,)):
            if name not in AUGMENTATIONS:
                raise ClipCapError(f"unknown augmentation {name!r}; use "
                                   f"{', '.join([*AUGMENTATIONS, *AUGMENT_GROUPS])}")
            if name not in names:
                names.append(name)
    return names


@dataclass
class FeatureSet:
    """Features of a dataset in memory: ``features[i]`` belongs to ``image_ids[i]`` with ``captions[i]``."""

    features: torch.Tensor  # [N, D] float32
    image_ids: list[str]
    captions: list[list[str]]
    splits: list[str | None]
    files: list[str]
    meta: dict[str, Any] = field(default_factory=dict)
    valid: torch.Tensor | None = None  # [N] bool
    views: torch.Tensor | None = None  # [N, V, D] float32: augmented encodings (meta["views"] names them)

    def __len__(self) -> int:
        return len(self.image_ids)

    def select(self, split: str | None) -> FeatureSet:
        """The images of one split (``None``/``"all"``: every image); unreadable images are dropped."""
        import torch

        keep = [i for i, s in enumerate(self.splits)
                if (split in (None, "all") or s == split or (split == "train" and s == "restval"))
                and (self.valid is None or bool(self.valid[i]))]
        idx = torch.tensor(keep, dtype=torch.long)
        return self.take(idx)

    def take(self, idx: torch.Tensor) -> FeatureSet:
        """The images at positions ``idx`` (a 1-D long tensor), in that order."""
        keep = idx.tolist()
        return FeatureSet(self.features[idx], [self.image_ids[i] for i in keep], [self.captions[i] for i in keep],
                          [self.splits[i] for i in keep], [self.files[i] for i in keep], dict(self.meta),
                          None if self.valid is None else self.valid[idx],
                          None if self.views is None else self.views[idx])

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])


def _image_files(paths: Sequence[str], preprocess, size: tuple[int, ...], augment: Sequence[str] = ()):
    """A Dataset that decodes and preprocesses images in DataLoader workers; an unreadable image gives zeros and
    ``ok=False``. With ``augment``, each item is ``[1 + V, C, H, W]``: the image, then its augmented copies."""
    import torch

    views = [AUGMENTATIONS[a] for a in augment]
    shape = (1 + len(views), *size) if views else size

    class _ImageFiles(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(paths)

        def __getitem__(self, i: int):
            from ..images import try_load_image

            img, err = try_load_image(paths[i])
            if err is not None:
                return torch.zeros(shape), False
            if not views:
                return preprocess(img), True
            return torch.stack([preprocess(img), *(preprocess(v(img)) for v in views)]), True

    return _ImageFiles()


def _shard_key(meta: dict[str, Any], ids: Sequence[str]) -> str:
    keyed = {k: meta[k] for k in ("clip_model", "clip_pretrained", "normalized")}
    if meta.get("views"):  # only when set, so that version-1 shards keep their keys (and resume)
        keyed["views"] = meta["views"]
    h = hashlib.sha256(json.dumps(keyed).encode())
    for i in ids:
        h.update(i.encode("utf-8") + b"\x00")
    return h.hexdigest()[:32]


def _shard_done(path: Path, key: str, n: int) -> bool:
    if not path.is_file():
        return False
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("key") == key and f.get_slice("features").get_shape()[0] == n
    except Exception:  # a corrupt shard is recomputed (safetensors raises its own error types)
        return False


def extract_features(dataset, out_dir: str | Path, *, clip=None, clip_model: str | None = None,
                     clip_pretrained: str | None = None, normalize: bool = False, batch_size: int = 64,
                     workers: int = 2, shard_size: int = 4096, device=None, dtype=None,
                     progress: bool = True, augment: Sequence[str] = ()) -> Path:
    """Encode every image of ``dataset`` with CLIP and write the features folder (resuming a previous run).

    Args:
        dataset: an :class:`~lib_clipcap.eval.datasets.EvalDataset` (any split; usually ``split="all"``).
        out_dir: the features folder.
        clip: a loaded :class:`~lib_clipcap.clip.ClipBackbone`, or give ``clip_model`` + ``clip_pretrained``.
        normalize: store L2-normalised features (recorded; ClipCap normalises by its config anyway).
        batch_size: images per CLIP call; ``shard_size`` is rounded up to a multiple of it.
        workers: image-decoding worker processes (0: decode in this process).
        shard_size: images per shard file.
        augment: augmentations (:data:`AUGMENTATIONS` names, or ``crops``) whose encodings are stored too, as each
            shard's "views" (format version 2); training samples one encoding per image and step.

    Returns:
        ``out_dir``.

    Raises:
        ClipCapError: the folder holds features of another backbone or dataset.
    """
    import torch

    from ..devices import device_and_dtype
    from ..clip import ClipBackbone
    from ..fileio import atomic_replace, atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if clip is None:
        if not clip_model:
            raise ClipCapError("extract_features needs a CLIP backbone: pass clip= or clip_model=/clip_pretrained=")
        dev, dt = device_and_dtype(device, dtype)
        clip = ClipBackbone.load(clip_model, clip_pretrained, device=dev, dtype=dt)
    shard_size = max(batch_size, -(-shard_size // batch_size) * batch_size)
    items = dataset.items
    augment = augmentation_names(augment)
    meta: dict[str, Any] = {
        "format": FORMAT, "version": 2 if augment else 1, "clip_model": clip_model or clip.name,
        "clip_pretrained": clip_pretrained if clip_pretrained is not None else clip.pretrained,
        "embed_dim": clip.embed_dim, "normalized": bool(normalize), "count": len(items),
        "dataset": dataset.name, "source": dataset.source, "split": dataset.split, "shards": [],
    }
    if augment:
        meta["views"] = augment
    meta_path = out / META_NAME
    if meta_path.is_file():
        old = json.loads(meta_path.read_text(encoding="utf-8"))
        for k in ("clip_model", "clip_pretrained", "normalized", "count", "source"):
            if old.get(k) != meta[k]:
                raise ClipCapError(f"{out} already holds features with {k}={old.get(k)!r} (now {meta[k]!r}); "
                                   f"use another folder or delete it")
    lines = [json.dumps({"image_id": it.image_id, "file": str(it.path), "captions": it.references,
                         "split": it.split}, ensure_ascii=False) for it in items]
    atomic_write_text(out / ITEMS_NAME, "\n".join(lines) + "\n")
    shards = []
    for s, start in enumerate(range(0, len(items), shard_size)):
        ids = [it.image_id for it in items[start:start + shard_size]]
        name = f"features-{s:05d}.safetensors"
        shards.append({"file": name, "start": start, "count": len(ids), "key": _shard_key(meta, ids)})
    meta["shards"] = shards
    todo = [sh for sh in shards if not _shard_done(out / sh["file"], sh["key"], sh["count"])]
    if len(todo) < len(shards):
        log.info("resuming: %d of %d shards already done", len(shards) - len(todo), len(shards))
    probe = clip.preprocess(_blank_image())
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(items), initial=len(items) - sum(sh["count"] for sh in todo), desc="CLIP features",
                   unit="img")
    from safetensors.torch import save_file

    for sh in todo:
        paths = [str(it.path) for it in items[sh["start"]:sh["start"] + sh["count"]]]
        loader = torch.utils.data.DataLoader(_image_files(paths, clip.preprocess, tuple(probe.shape), augment),
                                             batch_size=batch_size, num_workers=workers, shuffle=False,
                                             persistent_workers=False)
        feats, valid = [], []
        for pixels, ok in loader:
            if augment:  # [B, 1 + V, C, H, W] -> one CLIP call -> [B, 1 + V, D]
                b, v = pixels.shape[:2]
                f = clip.encode_images(pixels.flatten(0, 1), normalize=normalize).cpu().clone().view(b, v, -1)
            else:
                f = clip.encode_images(pixels, normalize=normalize).cpu().clone()  # out of inference mode
            f[~ok] = 0.0
            feats.append(f)
            valid.append(ok.to(torch.uint8))
            if bar is not None:
                bar.update(len(ok))
        enc = torch.cat(feats).float()
        tensors = {"features": (enc[:, 0] if augment else enc).contiguous(), "valid": torch.cat(valid).contiguous()}
        if augment:
            tensors["views"] = enc[:, 1:].contiguous()
        tmp = out / f".{sh['file']}.tmp"
        save_file(tensors, str(tmp), metadata={"key": sh["key"], "start": str(sh["start"])})
        atomic_replace(tmp, out / sh["file"])
        bad = int((tensors["valid"] == 0).sum())
        if bad:
            log.warning("%s: %d image(s) could not be read and are marked invalid", sh["file"], bad)
    if bar is not None:
        bar.close()
    atomic_write_text(meta_path, json.dumps(meta, indent=1) + "\n")
    return out


def _blank_image():
    from PIL import Image

    return Image.new("RGB", (32, 32))


def load_features(folder: str | Path, *, split: str | None = None) -> FeatureSet:
    """Read a features folder written by :func:`extract_features` (optionally one split of it).

    Raises:
        MissingFileError: the folder, its metadata or a shard is missing (an interrupted extraction: run it again).
    """
    import torch
    from safetensors.torch import load_file

    folder = Path(folder).expanduser()
    meta_path = folder / META_NAME
    if not meta_path.is_file():
        raise MissingFileError(f"no {META_NAME} in {folder}: extract features first (`python -m lib_clipcap train "
                               f"features DATASET --out {folder} ...`), or let an interrupted run finish")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    version = meta.get("version", 1)
    if not isinstance(version, int) or version > VERSION:
        raise ClipCapError(f"{meta_path} is features format version {version!r}; this lib_clipcap reads versions "
                           f"1 to {VERSION}: update lib_clipcap, or extract the features again with this one")
    rows = [json.loads(line) for line in (folder / ITEMS_NAME).read_text(encoding="utf-8").splitlines() if line]
    n_views = len(meta.get("views") or ())
    feats, valid, views = [], [], []
    for sh in meta["shards"]:
        p = folder / sh["file"]
        if not p.is_file():
            raise MissingFileError(f"feature shard {p} is missing; run the extraction again to finish it")
        t = load_file(str(p))
        feats.append(t["features"])
        valid.append(t["valid"].bool())
        if n_views:
            if "views" not in t or t["views"].shape[1] != n_views:
                raise ClipCapError(f"{p} lacks the {n_views} augmented views {meta_path} lists; extract again")
            views.append(t["views"])
    fs = FeatureSet(torch.cat(feats) if feats else torch.empty(0, meta["embed_dim"]),
                    [r["image_id"] for r in rows], [r["captions"] for r in rows], [r.get("split") for r in rows],
                    [r["file"] for r in rows], meta, torch.cat(valid) if valid else torch.empty(0, dtype=torch.bool),
                    torch.cat(views) if views else None)
    return fs.select(split) if split else fs


# ------------------------------------------------------------------------------------------------------ CLI
HELP = "extract CLIP image features of a dataset into safetensors shards (resumable)"


def add_arguments(p) -> None:
    from pathlib import Path as _P

    p.add_argument("dataset", help="caption file (captions.txt, dataset_*.json, references.jsonl, ...) or folder")
    p.add_argument("--out", type=_P, required=True, help="features folder (re-running resumes)")
    p.add_argument("--format", default="auto")
    p.add_argument("--split", default="all", help="all (default: training reads its split later), train, test...")
    p.add_argument("--images", type=_P, help="images folder (default: beside the caption file)")
    p.add_argument("--test-images", type=int, default=1000, help="Flickr: size of the test split (last N images)")
    p.add_argument("--clip-model", required=True, help="open_clip model name or config JSON (ViT-L-14 for Flickr)")
    p.add_argument("--clip-pretrained", help="pretrained tag (openai) or local weights file")
    p.add_argument("--normalize", action="store_true", help="store L2-normalised features (recorded)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2, help="image-decoding worker processes")
    p.add_argument("--shard-size", type=int, default=4096)
    p.add_argument("--device")
    p.add_argument("--dtype", choices=["fp32", "fp16", "bf16"])
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--augment", nargs="+", default=[], metavar="NAME",
                   help="also store the encodings of augmented copies (format version 2; training samples one "
                        f"encoding per image and step): {', '.join(AUGMENTATIONS)}, or crops (the five crops). "
                        "No flip when captions say left/right")


def run(args) -> int:
    from ..eval.datasets import load_dataset

    kw = {"test_images": args.test_images} if args.format in ("auto", "flickr") else {}
    try:
        ds = load_dataset(args.dataset, format=args.format, split=args.split, images=args.images, **kw)
    except TypeError:  # a non-Flickr file detected automatically does not take test_images
        ds = load_dataset(args.dataset, format=args.format, split=args.split, images=args.images)
    out = extract_features(ds, args.out, clip_model=args.clip_model, clip_pretrained=args.clip_pretrained,
                           normalize=args.normalize, batch_size=args.batch_size, workers=args.workers,
                           shard_size=args.shard_size, device=args.device, dtype=args.dtype, progress=args.progress,
                           augment=args.augment)
    print(f"clipcap: wrote features of {len(ds)} images to {out}")
    return 0
