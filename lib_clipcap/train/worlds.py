"""Harder synthetic captioning worlds, written in Flickr8k's distributed layout, to test a training recipe on data
it was not tuned on.

    python -m lib_clipcap.train.worlds data/relations --train 3000 --test 500
    python -m lib_clipcap.train.worlds data/relations-combo --train 3000 --test 500 --split combo

gives ``Images/*.jpg`` and ``captions.txt`` (``image,caption`` CSV, captions with commas quoted, five paraphrased
captions per image); the **last** ``--test`` images are the test split, as the CLIP-prefix paper's Flickr8k split.

The "relations" world differs from the bundled shapes world (:mod:`lib_clipcap.shapes`) in everything: shapes (star,
diamond, cross, ring, hexagon), colours (orange, pink, cyan, brown, gray, lime), sizes (tiny, small, big),
backgrounds (sand, navy, white) and scene kinds:

- one object with a size: ``"a big orange star on a navy background."``
- a count of identical objects: ``"three small pink rings on a sand background."``
- two objects and their relation: ``"a cyan diamond above a brown cross on a white background."`` (left of, right
  of, above, below; a paraphrase states the inverse relation: ``"a brown cross below a cyan diamond, ..."``)

Each image has five references from different templates (word order, "there is/are", commas), like Flickr's five
annotators. Colour/shape pairs in :data:`HELDOUT_PAIRS` never occur in the training images of either split. With
``split="combo"`` every **test** image shows at least one of those pairs: the test images combine attributes never
seen together in training, so no training caption describes them and retrieval cannot copy a right answer.
Every scene is a pure function of ``(seed, index)``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

COLORS: dict[str, tuple[int, int, int]] = {
    "orange": (245, 130, 0), "pink": (255, 105, 180), "cyan": (0, 200, 220), "brown": (125, 75, 30),
    "gray": (140, 140, 140), "lime": (150, 230, 40),
}
SHAPES = ("star", "diamond", "cross", "ring", "hexagon")
PLURAL = {"star": "stars", "diamond": "diamonds", "cross": "crosses", "ring": "rings", "hexagon": "hexagons"}
SIZES = {"tiny": 0.09, "small": 0.14, "big": 0.25}  # radius as a fraction of the image side
BACKGROUNDS: dict[str, tuple[int, int, int]] = {"sand": (225, 205, 155), "navy": (20, 30, 90),
                                                "white": (255, 255, 255)}
RELATIONS = {"to the left of": "to the right of", "to the right of": "to the left of", "above": "below",
             "below": "above"}
NUMBERS = {2: "two", 3: "three", 4: "four"}
# Never together in training: one pair per colour, every shape at least once.
HELDOUT_PAIRS = frozenset({("orange", "star"), ("pink", "ring"), ("cyan", "diamond"), ("brown", "cross"),
                           ("gray", "hexagon"), ("lime", "star")})
IMAGE_SIZE = 64
TRAIN_SEED, TEST_SEED = 11, 12

# The training recipe (README, "Training on a new dataset"; tools/bench_train.py): a tiny GPT-2 from scratch with the
# custom tokenizer, everything else left to `train clipcap`'s data-sized recipe (lib_clipcap.train.recipe: epochs,
# warm-up, validation hold-out and cadence and patience from the training set's size; cosine decay, standardised
# mapper init, dropout, weight decay, label smoothing; the best checkpoint by validation CIDEr).
RECIPE: dict = dict(gpt2="scratch", gpt2_layers=2, gpt2_width=64, gpt2_heads=2, gpt2_positions=64, prefix_length=4,
                    tokenizer="custom", save_every=0, log_every=500)
# The earlier fixed recipe (6000 cosine steps, fitted to world seed 0 at 2,700 training images), kept to compare.
RECIPE_FIXED_6000: dict = dict(gpt2="scratch", gpt2_layers=2, gpt2_width=64, gpt2_heads=2, gpt2_positions=64,
                               prefix_length=4, tokenizer="custom", batch_size=64, lr=3e-3, warmup_steps=100,
                               schedule="cosine", max_steps=6000, standardize_init=True, val_images=300,
                               eval_every=500, val_caption_images=300, select_by="cider", patience=4, save_every=0,
                               log_every=500)
SPLITS = ("iid", "combo")


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


@dataclass(frozen=True)
class Obj:
    shape: str
    color: str
    size: str
    cx: float
    cy: float


@dataclass(frozen=True)
class RelScene:
    """One image: ``kind`` is ``single``, ``count`` or ``relation``; ``relation`` reads "objects[0] REL objects[1]"."""

    kind: str
    objects: tuple[Obj, ...]
    background: str
    relation: str = ""

    @property
    def pairs(self) -> set[tuple[str, str]]:
        return {(o.color, o.shape) for o in self.objects}

    @property
    def captions(self) -> list[str]:
        """Five paraphrased references (the first is the canonical one)."""
        bg = self.background
        if self.kind == "single":
            o = self.objects[0]
            d = f"{o.size} {o.color} {o.shape}"
            return [f"{_a(d)} on {_a(bg)} background.", f"there is {_a(d)} on {_a(bg)} background.",
                    f"{_a(bg)} background with {_a(d)} on it.", f"{_a(d)}, on {_a(bg)} background.",
                    f"a picture of {_a(d)} against {_a(bg)} backdrop."]
        if self.kind == "count":
            o = self.objects[0]
            n = NUMBERS[len(self.objects)]
            d = f"{n} {o.size} {o.color} {PLURAL[o.shape]}"
            return [f"{d} on {_a(bg)} background.", f"there are {d} on {_a(bg)} background.",
                    f"{_a(bg)} background with {d} on it.", f"{n} {o.color} {PLURAL[o.shape]}, all {o.size}, "
                                                             f"on {_a(bg)} background.",
                    f"a picture of {d} against {_a(bg)} backdrop."]
        a, b = self.objects
        da, db = f"{a.color} {a.shape}", f"{b.color} {b.shape}"
        rel, inv = self.relation, RELATIONS[self.relation]
        return [f"{_a(da)} {rel} {_a(db)} on {_a(bg)} background.",
                f"{_a(db)} {inv} {_a(da)}, on {_a(bg)} background.",
                f"there is {_a(da)} {rel} {_a(db)}.",
                f"on {_a(bg)} background, {_a(da)} is {rel} {_a(db)}.",
                f"{_a(da)} and {_a(db)}; the {a.shape} is {rel} the {b.shape}."]

    def render(self, size: int = IMAGE_SIZE):
        """The scene as an RGB PIL image of ``size`` x ``size`` pixels."""
        from PIL import Image, ImageDraw

        img = Image.new("RGB", (size, size), BACKGROUNDS[self.background])
        draw = ImageDraw.Draw(img)
        for o in self.objects:
            _draw(draw, o.shape, COLORS[o.color], o.cx * size, o.cy * size, SIZES[o.size] * size)
        return img


def _polygon(cx: float, cy: float, r: float, n: int, phase: float, inner: float | None = None) -> list:
    pts = []
    for i in range(n * (2 if inner else 1)):
        rr = r if not inner or i % 2 == 0 else r * inner
        t = phase + i * math.pi / (n if inner else n / 2)
        pts.append((cx + rr * math.cos(t), cy + rr * math.sin(t)))
    return pts


def _draw(draw, shape: str, fill, cx: float, cy: float, r: float) -> None:
    if shape == "star":
        draw.polygon(_polygon(cx, cy, r, 5, -math.pi / 2, inner=0.45), fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r * 0.7, cy), (cx, cy + r), (cx - r * 0.7, cy)], fill=fill)
    elif shape == "cross":
        w = r * 0.35
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)
    elif shape == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=fill, width=max(2, round(r * 0.4)))
    else:  # hexagon
        draw.polygon(_polygon(cx, cy, r, 6, 0.0), fill=fill)


def _pair(rng: random.Random, allowed) -> tuple[str, str]:
    while True:
        p = (rng.choice(list(COLORS)), rng.choice(SHAPES))
        if allowed(p):
            return p


def make_scene(seed: int, index: int, *, heldout: str = "exclude") -> RelScene:
    """Scene ``index`` of world ``seed``.

    Args:
        heldout: ``"exclude"``: no object shows a pair of :data:`HELDOUT_PAIRS` (training, and the iid test split);
            ``"require"``: at least one object does (the held-out-combination test split).
    """
    rng = random.Random(seed * 1_000_003 + index)
    bg = rng.choice(list(BACKGROUNDS))
    kind = rng.choices(("single", "count", "relation"), weights=(0.35, 0.3, 0.35))[0]
    excl = lambda p: p not in HELDOUT_PAIRS  # noqa: E731
    first = (lambda p: p in HELDOUT_PAIRS) if heldout == "require" else excl  # noqa: E731
    if kind == "single":
        color, shape = _pair(rng, first)
        size = rng.choice(list(SIZES))
        m = SIZES[size] + 0.05
        return RelScene(kind, (Obj(shape, color, size, rng.uniform(m, 1 - m), rng.uniform(m, 1 - m)),), bg)
    if kind == "count":
        color, shape = _pair(rng, first)
        n = rng.choice(list(NUMBERS))
        size = rng.choice(("tiny", "small"))
        cells = rng.sample([(x, y) for x in range(2) for y in range(2)], n)
        objs = tuple(Obj(shape, color, size, 0.27 + 0.46 * x + rng.uniform(-0.05, 0.05),
                         0.27 + 0.46 * y + rng.uniform(-0.05, 0.05)) for x, y in cells)
        return RelScene(kind, objs, bg)
    pa = _pair(rng, first)
    pb = _pair(rng, lambda p: excl(p) and p != pa and p[1] != pa[1])  # different shapes: "the star is above..."
    if rng.random() < 0.5:  # the held-out pair may be either object
        pa, pb = pb, pa
    rel = rng.choice(list(RELATIONS))
    near, far = rng.uniform(0.22, 0.3), rng.uniform(0.7, 0.78)
    cross_a, cross_b = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7)
    if rel in ("to the left of", "to the right of"):
        (xa, xb) = (near, far) if rel == "to the left of" else (far, near)
        a, b = Obj(pa[1], pa[0], "small", xa, cross_a), Obj(pb[1], pb[0], "small", xb, cross_b)
    else:
        (ya, yb) = (near, far) if rel == "above" else (far, near)
        a, b = Obj(pa[1], pa[0], "small", cross_a, ya), Obj(pb[1], pb[0], "small", cross_b, yb)
    return RelScene(kind, (a, b), bg, rel)


def world_seeds(world_seed: int = 0) -> tuple[int, int]:
    """``(training scenes' seed, test scenes' seed)`` of world ``world_seed``; world 0 is the one the README's
    recipe was first developed on (:data:`TRAIN_SEED`, :data:`TEST_SEED`), others are new draws of the same world
    (same vocabulary and scene kinds, other scenes) for checking a recipe on data it was not tuned on."""
    if world_seed < 0:
        raise ValueError(f"world_seed must be >= 0; got {world_seed}")
    return TRAIN_SEED + 100 * world_seed, TEST_SEED + 100 * world_seed


def make_world(train: int, test: int, *, split: str = "iid", world_seed: int = 0) -> list[tuple[str, RelScene]]:
    """``[(split name, scene)]``: ``train`` training scenes, then ``test`` test scenes (iid or held-out combos) of
    world ``world_seed`` (:func:`world_seeds`)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    train_seed, test_seed = world_seeds(world_seed)
    scenes = [("train", make_scene(train_seed, i)) for i in range(train)]
    mode = "require" if split == "combo" else "exclude"
    return scenes + [("test", make_scene(test_seed, i, heldout=mode)) for i in range(test)]


def write_world(folder: str | Path, *, train: int = 3000, test: int = 500, split: str = "iid",
                size: int = IMAGE_SIZE, world_seed: int = 0) -> Path:
    """Render world ``world_seed`` into ``folder`` (``Images/*.jpg`` + ``captions.txt``); returns ``captions.txt``.

    Images already there are kept (a rerun only writes what is missing; the scenes are deterministic), so use one
    folder per world seed.
    """
    from ..eval.datasets import write_flickr_captions

    folder = Path(folder)
    images = folder / "Images"
    images.mkdir(parents=True, exist_ok=True)
    pairs = []
    counters = {"train": 0, "test": 0}
    for name, scene in make_world(train, test, split=split, world_seed=world_seed):
        i = counters[name]
        counters[name] += 1
        fname = f"{split}_{name}_{i:05d}.jpg"
        path = images / fname
        if not path.is_file():
            tmp = images / f".{fname}.tmp"
            scene.render(size).save(tmp, format="JPEG", quality=95)
            tmp.replace(path)
        pairs.append((fname, scene.captions))
    return write_flickr_captions(folder / "captions.txt", pairs)


def main(argv: list[str] | None = None) -> int:
    from ..eval.shapes_data import world_parser

    p = world_parser("python -m lib_clipcap.train.worlds", __doc__, train=3000, test=500)
    p.add_argument("--split", default="iid", choices=SPLITS,
                   help="iid: test scenes like the training ones; combo: every test image shows a colour/shape "
                        "pair never seen in training")
    p.add_argument("--world-seed", type=int, default=0,
                   help="which draw of the world (0, the default: the one the README's recipe was developed on)")
    args = p.parse_args(argv)
    out = write_world(args.folder, train=args.train, test=args.test, split=args.split, world_seed=args.world_seed)
    print(f"clipcap: wrote {args.train + args.test} images and {out} (test: the last {args.test}, {args.split})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
