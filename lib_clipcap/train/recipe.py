"""The two recipes ``train clipcap`` fills unset settings from: the paper's (fine-tuning a pretrained GPT-2, or any run
whose length is given) and one sized to the training set (a GPT-2 trained from scratch with no ``--epochs`` /
``--max-steps``).

Why a recipe sized to the data: a fixed step count fits one dataset. The README's earlier recipe (6000 cosine steps)
was 45 epochs of a 1,700-image world: its validation loss doubled after epoch 11 while the training loss kept
falling. Counted in epochs, with early stopping on validation CIDEr and regularisation, the same model trains as long
as the data supports, on 1,000 images or 20,000.

:func:`data_schedule` is the pure derivation (numbers in its docstring); :func:`resolve_recipe` applies it, or the
paper's values, to the settings the user left unset (``None``), so an explicit flag always wins.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, fields, replace
from typing import Any

log = logging.getLogger(__name__)

# The paper's settings (ClipCap on Flickr/COCO, GPT-2 fine-tuned): what an unset field means outside the data-sized
# recipe. Dropout 0: the trainer has never had any, and existing runs must stay reproducible.
PAPER: dict[str, Any] = dict(epochs=10, batch_size=40, lr=2e-5, warmup_steps=5000, schedule="linear",
                             standardize_init=False, val_images=0, eval_every=0, patience=0, weight_decay=0.01,
                             dropout=0.0, mapper_dropout=0.0, label_smoothing=0.0)

# The data-sized recipe's settings that do not depend on the data size. lr 3e-3 and batch 64 are what the tiny
# GPT-2 (2 layers, width 64) was tuned with on the relations world; the learning rate is scaled down for wider
# models (see scratch_lr). Regularisation: measured on relations world seed 3, 1,000 training-split images, 500 test
# images, training seed 0 (tools/bench_train.py --variant ...), test BLEU-4 / CIDEr of greedy captions (PTB):
#   none 0.546 / 3.071; dropout 0.1 (GPT-2 and mapper) 0.556 / 3.148; label smoothing 0.1 0.566 / 3.124;
#   weight decay 0.05 0.552 / 3.066; all four (these defaults) 0.551 / 3.236; all with dropout 0.2 0.520 / 2.854;
#   all with the five crops' encodings (train features --augment crops) 0.481 / 2.529: crops hurt on this world
#   (its captions name sizes and positions that a crop changes), so augmentation is opt-in;
#   the better retrieval baseline (nearest) 0.540 / 2.924.
# One seed of one world: the components differ by about the seed-to-seed noise; together they gave the best CIDEr.
SCRATCH: dict[str, Any] = dict(batch_size=64, schedule="cosine", standardize_init=True, weight_decay=0.05,
                               dropout=0.1, mapper_dropout=0.1, label_smoothing=0.1)

VALIDATIONS_PER_RUN = 30  # validations over the longest run: the curve is sampled finely enough to stop near its top
PATIENCE = 6  # validations without a better CIDEr before stopping: a fifth of the longest run


@dataclass(frozen=True)
class DataSchedule:
    """A run's length and cadence derived from its training set (:func:`data_schedule`)."""

    val_images: int  # held out from the training split when no validation set is given
    train_images: int  # what is left to train on
    steps_per_epoch: int
    epochs: int  # the longest run; early stopping usually ends it sooner
    warmup_steps: int
    eval_every: int  # steps between validations
    patience: int  # validations without improvement before stopping

    @property
    def max_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def eval_every_epochs(self) -> float:
        return self.eval_every / self.steps_per_epoch


def data_schedule(images: int, captions_per_image: float, batch_size: int, *, val_images: int | None = None
                  ) -> DataSchedule:
    """Derive validation hold-out, epochs, warm-up, validation interval and patience from the training set's size.

    Args:
        images: images in the training split, before any validation hold-out.
        captions_per_image: mean references per image (each caption is one training example per epoch).
        batch_size: captions per step.
        val_images: images held out for validation; ``None``: derive it; 0: a separate validation split is used
            (nothing is held out of the training split).

    The numbers, and why:

    - validation hold-out: 10% of the images, at least 200 (validation CIDEr on fewer images is too noisy to pick a
      checkpoint: its step-to-step noise approaches the differences that matter) and at most 500 (it is computed
      about 30 times a run; more images cost time and change little); never more than a fifth of the set.
    - epochs (the longest run): ``60 * sqrt(1000 / n)`` for ``n`` training images, between 8 and 80. A small set needs
      many passes for the optimiser to take enough steps (1,000 images x 5 captions / 64 = 70 steps an epoch; 60
      epochs = 4,200 steps), a large one converges in fewer passes while its step count still grows (10,000 images:
      19 epochs, 13,000 steps). On the relations world validation CIDEr peaked at about 30 epochs of 1,700 images
      without regularisation; with it the peak comes later, so the bound leaves room and early stopping ends the run.
    - warm-up: one epoch, at least 100 steps (the tiny GPT-2 at lr 3e-3 diverges in its first steps without them) and
      at most 1,000.
    - validation every ``max_steps / 30`` steps (a fraction of an epoch on large sets, one or two epochs on small
      ones), and patience 6 validations: the run stops when a fifth of its longest length brought no better
      validation CIDEr.

    Raises:
        ValueError: fewer than 2 images, no captions, or a batch size below 1.
    """
    if images < 2 or captions_per_image <= 0 or batch_size < 1:
        raise ValueError(f"data_schedule needs >= 2 images, captions and batch_size >= 1; got {images}, "
                         f"{captions_per_image}, {batch_size}")
    if val_images is None:
        val_images = min(max(200, round(0.1 * images)), 500, images // 5)
    train = images - val_images
    if train < 1:
        raise ValueError(f"val_images={val_images} leaves no training image of {images}")
    steps_per_epoch = max(1, math.ceil(train * captions_per_image / batch_size))
    epochs = int(min(80, max(8, round(60 * math.sqrt(1000 / train)))))
    total = epochs * steps_per_epoch
    warmup = int(min(1000, max(100, steps_per_epoch)))
    eval_every = max(1, round(total / VALIDATIONS_PER_RUN))
    return DataSchedule(val_images, train, steps_per_epoch, epochs, min(warmup, total // 4 or 1), eval_every,
                        PATIENCE)


def scratch_lr(width: int) -> float:
    """Learning rate of a GPT-2 trained from scratch: 3e-3 at width 64 (the tuned tiny model), scaled as
    ``64 / width`` beyond it (wider transformers need smaller steps; 2.5e-4 at GPT-2 small's 768)."""
    return 3e-3 * min(1.0, 64 / max(1, width))


def uses_data_recipe(cfg: Any) -> bool:
    """Whether ``cfg`` (a ClipCap training config) gets the data-sized recipe: GPT-2 from scratch and no run length
    given. Any other run keeps the paper's settings for whatever it leaves unset."""
    return cfg.gpt2 == "scratch" and cfg.epochs is None and cfg.max_steps is None


def resolve_recipe(cfg: Any, *, images: int, captions_per_image: float, has_val_split: bool) -> tuple[Any, str]:
    """``(cfg with every unset field filled, a one-line description of the recipe)``.

    Args:
        cfg: a :class:`~lib_clipcap.train.clipcap.ClipCapTrainConfig`; fields left ``None`` are filled.
        images: images in its training split (before validation hold-out).
        captions_per_image: mean references per training image.
        has_val_split: a separate validation split was given (``val_split``), so nothing needs holding out.
    """
    unset = {f.name for f in fields(cfg) if f.name in {*PAPER, *SCRATCH} and getattr(cfg, f.name) is None}
    if not uses_data_recipe(cfg):
        filled = {k: PAPER[k] for k in unset}
        return replace(cfg, **filled), "paper settings for unset options" if filled else "as given"
    values: dict[str, Any] = {**PAPER, **SCRATCH, "lr": scratch_lr(cfg.gpt2_width)}
    batch = cfg.batch_size if cfg.batch_size is not None else values["batch_size"]
    want_val = cfg.val_images if cfg.val_images is not None else (0 if has_val_split else None)
    sched = data_schedule(images, captions_per_image, batch, val_images=want_val)
    values.update(val_images=sched.val_images, epochs=sched.epochs, warmup_steps=sched.warmup_steps,
                  eval_every=sched.eval_every, patience=sched.patience)
    filled = {k: values[k] for k in unset}
    desc = (f"data-sized recipe for {images} images ({sched.val_images} held out): up to {sched.epochs} epochs of "
            f"{sched.steps_per_epoch} steps, warm-up {sched.warmup_steps}, validation every {sched.eval_every} steps "
            f"({sched.eval_every_epochs:.2f} epochs), patience {sched.patience}; filled {sorted(filled)}")
    return replace(cfg, **filled), desc
