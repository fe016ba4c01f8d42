"""Write the shapes world as a dataset on disk, in Flickr8k's layout, so the paper's commands run on it unchanged.

    python -m lib_clipcap.eval.shapes_data data/shapes --train 5000 --test 1000

gives ``data/shapes/Images/*.png``, ``data/shapes/captions.txt`` (Kaggle Flickr8k format: ``image,caption``, two
captions per image) and ``data/shapes/references.jsonl`` (the generic format, with a ``split`` field). As in the
paper's Flickr8k split, the **last** ``--test`` images are the test split: they are the standard held-out scenes
(:func:`lib_clipcap.shapes.heldout_scenes`), never used for training.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .datasets import EvalItem, write_flickr_captions, write_jsonl


def write_shapes_dataset(folder: str | Path, *, train: int = 5000, test: int = 1000, size: int = 64) -> Path:
    """Render ``train`` training scenes then ``test`` held-out scenes into ``folder``; returns ``captions.txt``."""
    from .. import shapes

    folder = Path(folder)
    images = folder / "Images"
    images.mkdir(parents=True, exist_ok=True)
    items: list[EvalItem] = []
    for split, scenes in (("train", shapes.make_scenes(shapes.TRAIN_SEED, train)),
                          ("test", shapes.heldout_scenes(test))):
        for i, scene in enumerate(scenes):
            path = images / f"shapes_{split}_{i:05d}.png"
            if not path.is_file():
                scene.render(size).save(path)
            items.append(EvalItem(path.name, path, scene.captions, split=split))
    write_jsonl(folder / "references.jsonl", items)
    return write_flickr_captions(folder / "captions.txt", [(it.image_id, it.references) for it in items])


def world_parser(prog: str, description: str | None, *, train: int, test: int,
                 test_images: str = "test images") -> argparse.ArgumentParser:
    """The command line of a synthetic-world writer (this module's, :mod:`lib_clipcap.train.worlds`'):
    ``FOLDER [--train N] [--test N]``, with ``train``/``test`` as the defaults and the module docstring as the
    description; ``test_images`` names the test images in the help.

    One parser, so that every world is written by the same command shape: the test images come last, as the
    paper's Flickr8k split.
    """
    p = argparse.ArgumentParser(prog=prog, description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path)
    p.add_argument("--train", type=int, default=train, help=f"training images (default {train})")
    p.add_argument("--test", type=int, default=test, help=f"{test_images}, written last (default {test})")
    return p


def main(argv: list[str] | None = None) -> int:
    p = world_parser("python -m lib_clipcap.eval.shapes_data", __doc__, train=5000, test=1000,
                     test_images="held-out test images")
    args = p.parse_args(argv)
    out = write_shapes_dataset(args.folder, train=args.train, test=args.test)
    print(f"clipcap: wrote {args.train + args.test} images and {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
