"""CLIP image features of a dataset, written once as safetensors shards and read by every trainer.

Layout of a features folder::

    features.json                 CLIP backbone, feature size, normalisation, shard list, dataset source
    items.jsonl                   one line per image: {"image_id", "file", "captions", "split"}
    features-00000.safetensors    "features" [n, D] float32 and "valid" [n] uint8 (0: the image could not be read)

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

    def __len__(self) -> int:
        return len(self.image_ids)

    def select(self, split: str | None) -> FeatureSet:
        """The images of one split (``None``/``"all"``: every image); unreadable images are dropped."""
        import torch

        keep = [i for i, s in enumerate(self.splits)
                if (split in (None, "all") or s == split or (split == "train" and s == "restval"))
                and (self.valid is None or bool(self.valid[i]))]
        idx = torch.tensor(keep, dtype=torch.long)
        return FeatureSet(self.features[idx], [self.image_ids[i] for i in keep], [self.captions[i] for i in keep],
                          [self.splits[i] for i in keep], [self.files[i] for i in keep], dict(self.meta),
                          None if self.valid is None else self.valid[idx])

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])


def _image_files(paths: Sequence[str], preprocess, size: tuple[int, ...]):
    """A Dataset that decodes and preprocesses images in DataLoader workers; an unreadable image gives zeros and
    ``ok=False``."""
    import torch

    class _ImageFiles(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(paths)

        def __getitem__(self, i: int):
            from ..images import try_load_image

            img, err = try_load_image(paths[i])
            if err is not None:
                return torch.zeros(size), False
            return preprocess(img), True

    return _ImageFiles()


def _shard_key(meta: dict[str, Any], ids: Sequence[str]) -> str:
    h = hashlib.sha256(json.dumps({k: meta[k] for k in ("clip_model", "clip_pretrained", "normalized")}).encode())
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
                     progress: bool = True) -> Path:
    """Encode every image of ``dataset`` with CLIP and write the features folder (resuming a previous run).

    Args:
        dataset: an :class:`~lib_clipcap.eval.datasets.EvalDataset` (any split; usually ``split="all"``).
        out_dir: the features folder.
        clip: a loaded :class:`~lib_clipcap.clip.ClipBackbone`, or give ``clip_model`` + ``clip_pretrained``.
        normalize: store L2-normalised features (recorded; ClipCap normalises by its config anyway).
        batch_size: images per CLIP call; ``shard_size`` is rounded up to a multiple of it.
        workers: image-decoding worker processes (0: decode in this process).
        shard_size: images per shard file.

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
    meta: dict[str, Any] = {
        "format": FORMAT, "version": 1, "clip_model": clip_model or clip.name,
        "clip_pretrained": clip_pretrained if clip_pretrained is not None else clip.pretrained,
        "embed_dim": clip.embed_dim, "normalized": bool(normalize), "count": len(items),
        "dataset": dataset.name, "source": dataset.source, "split": dataset.split, "shards": [],
    }
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
        loader = torch.utils.data.DataLoader(_image_files(paths, clip.preprocess, tuple(probe.shape)),
                                             batch_size=batch_size, num_workers=workers, shuffle=False,
                                             persistent_workers=False)
        feats, valid = [], []
        for pixels, ok in loader:
            f = clip.encode_images(pixels, normalize=normalize).cpu().clone()  # out of inference mode
            f[~ok] = 0.0
            feats.append(f)
            valid.append(ok.to(torch.uint8))
            if bar is not None:
                bar.update(len(ok))
        tensors = {"features": torch.cat(feats).float().contiguous(), "valid": torch.cat(valid).contiguous()}
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
    rows = [json.loads(line) for line in (folder / ITEMS_NAME).read_text(encoding="utf-8").splitlines() if line]
    feats, valid = [], []
    for sh in meta["shards"]:
        p = folder / sh["file"]
        if not p.is_file():
            raise MissingFileError(f"feature shard {p} is missing; run the extraction again to finish it")
        t = load_file(str(p))
        feats.append(t["features"])
        valid.append(t["valid"].bool())
    fs = FeatureSet(torch.cat(feats) if feats else torch.empty(0, meta["embed_dim"]),
                    [r["image_id"] for r in rows], [r["captions"] for r in rows], [r.get("split") for r in rows],
                    [r["file"] for r in rows], meta, torch.cat(valid) if valid else torch.empty(0, dtype=torch.bool))
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


def run(args) -> int:
    from ..eval.datasets import load_dataset

    kw = {"test_images": args.test_images} if args.format in ("auto", "flickr") else {}
    try:
        ds = load_dataset(args.dataset, format=args.format, split=args.split, images=args.images, **kw)
    except TypeError:  # a non-Flickr file detected automatically does not take test_images
        ds = load_dataset(args.dataset, format=args.format, split=args.split, images=args.images)
    out = extract_features(ds, args.out, clip_model=args.clip_model, clip_pretrained=args.clip_pretrained,
                           normalize=args.normalize, batch_size=args.batch_size, workers=args.workers,
                           shard_size=args.shard_size, device=args.device, dtype=args.dtype, progress=args.progress)
    print(f"clipcap: wrote features of {len(ds)} images to {out}")
    return 0
