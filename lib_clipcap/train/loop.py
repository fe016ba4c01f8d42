"""The step bookkeeping every trainer shares: the run folder (its ``train_config.json``, the models folder, the
step checkpoints' names), batch order by global step and the run's length, the learning-rate schedule, the optimizer
step (with gradient clipping and, on CUDA fp16, loss scaling), the progress bar and the ``metrics.jsonl`` log of
running means.

Each trainer keeps its own loss (ClipCap's prefix loss, the SBG generator's prompt-masked loss, SCST's policy
gradient); this module holds the loop around it, so a fix here reaches all of them.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .data import epoch_batches

if TYPE_CHECKING:  # pragma: no cover
    import torch

METRICS_NAME = "metrics.jsonl"
TRAIN_CONFIG_NAME = "train_config.json"
CHECKPOINT_DIR = "checkpoints"


@dataclass(kw_only=True)
class TrainRunConfig:
    """The settings every trainer has (ClipCap, the SBG generator, CLIP-S SCST), with the checks they share.

    Each trainer's config derives from this one and sets its own defaults (the values of the paper it follows); its
    fields become ``train ... --options`` through :func:`~lib_clipcap.train.data.add_dataclass_arguments`. Keyword
    construction only, so that a trainer can add required fields (``checkpoint``) and change defaults freely.
    """

    features: str
    out: str
    split: str = "train"
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 16
    lr: float = 5e-5
    weight_decay: float = 0.01
    grad_clip: float | None = 1.0
    seed: int = 0
    device: str | None = None
    log_every: int = 50
    progress: bool = True
    models_dir: str | None = None

    def __post_init__(self) -> None:
        from ..errors import ClipCapError

        # None: left to the trainer to fill (ClipCap's recipes, lib_clipcap.train.recipe) before training starts.
        for name in ("batch_size", "epochs"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ClipCapError(f"{name} must be >= 1; got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ClipCapError(f"max_steps must be >= 1 (or unset); got {self.max_steps}")
        if self.lr is not None and not self.lr > 0:
            raise ClipCapError(f"lr must be > 0; got {self.lr}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ClipCapError(f"grad_clip must be > 0 (or None to disable); got {self.grad_clip}")


@dataclass(kw_only=True)
class GPT2Settings:
    """The GPT-2 a trainer starts from (:func:`~lib_clipcap.train.gpt2_base.gpt2_base` reads these): a registry
    name or folder, or ``"scratch"`` with the shape given here."""

    gpt2: str = "gpt2"
    gpt2_layers: int = 12
    gpt2_width: int = 768
    gpt2_heads: int = 12
    gpt2_positions: int = 1024


def start_run(cfg: Any) -> Path:
    """Create the output folder ``cfg.out`` of a trainer's settings dataclass ``cfg`` and save every setting there as
    ``train_config.json`` (the dataclass's field order, indented JSON); returns the folder.

    Written before anything is loaded, so a run that fails still records what it was asked to do.
    """
    from ..fileio import atomic_write_text

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / TRAIN_CONFIG_NAME, json.dumps(asdict(cfg), indent=1) + "\n")
    return out


def models_folder(models_dir: str | None) -> Path | None:
    """The ``models_dir`` setting as a path (``~`` expanded), or ``None`` (unset: the default models folder)."""
    return Path(models_dir).expanduser() if models_dir else None


def step_checkpoint(out: str | Path, step: int) -> Path:
    """``<out>/checkpoints/step-NNNNNNN.safetensors``: where a trainer saves the weights after global ``step``.

    Zero-padded so that names sort by step; ClipCap's resume looks its checkpoints up by this pattern.
    """
    return Path(out) / CHECKPOINT_DIR / f"step-{step:07d}.safetensors"


class EpochBatches:
    """Batch ``k`` of epoch ``e`` for a global step: ``step = e * steps_per_epoch + k``.

    The order of an epoch depends only on ``(seed, epoch)`` (:func:`~.data.epoch_batches`), so a run resumed at any
    step sees the same batches as an uninterrupted one.
    """

    def __init__(self, n: int, batch_size: int, *, seed: int) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.steps_per_epoch = math.ceil(n / batch_size)
        self._epoch, self._batches = -1, []

    def __call__(self, step: int) -> tuple[int, torch.Tensor]:
        """``(epoch, indices [B] long)`` of global ``step``."""
        epoch, k = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._batches = epoch_batches(self.n, self.batch_size, seed=self.seed, epoch=epoch)
            self._epoch = epoch
        return epoch, self._batches[k]

    def run_length(self, epochs: int, max_steps: int | None) -> int:
        """Global steps of a run: ``max_steps`` when set (non-zero), else ``epochs`` whole epochs."""
        return max_steps or epochs * self.steps_per_epoch


SCHEDULES = ("linear", "cosine", "constant")


def schedule_lambda(kind: str, warmup: int, total: int) -> Callable[[int], float]:
    """Linear warm-up over ``warmup`` steps, then ``linear`` decay to 0 at ``total`` (the original's), ``cosine``
    decay to 0 at ``total``, or ``constant``."""
    if kind not in SCHEDULES:
        raise ValueError(f"unknown learning-rate schedule {kind!r}; use one of {', '.join(SCHEDULES)}")

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        if kind == "linear":  # get_linear_schedule_with_warmup, as the original ClipCap
            return max(0.0, (total - step) / max(1, total - warmup))
        if kind == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


def warmup_schedule(optimizer, warmup: int, total: int, kind: str = "linear"):
    """A ``LambdaLR`` with :func:`schedule_lambda` (warm-up capped at ``total``)."""
    import torch

    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule_lambda(kind, min(warmup, total), total))


def optimizer_step(loss: torch.Tensor, optimizer, params: Iterable[torch.Tensor], *, grad_clip: float | None = None,
                   scheduler=None, scaler=None) -> float | None:
    """Backward, optional gradient-norm clipping, optimizer (and scheduler) step.

    With a ``GradScaler`` (CUDA fp16) the loss is scaled and the gradients are unscaled before clipping.

    Returns:
        The gradient norm before clipping, or ``None`` when ``grad_clip`` is off.
    """
    import torch

    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    norm = float(torch.nn.utils.clip_grad_norm_(params, grad_clip)) if grad_clip else None
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return norm


class MetricsLog:
    """Running means of per-step statistics, written every ``every`` steps (and at the last step) as one JSON line
    of ``<out>/metrics.jsonl``: ``{"step", "epoch", <means>, <extra>, "seconds"}``.

    Args:
        fresh: start a new log (a resumed run appends to the old one).
    """

    def __init__(self, out: str | Path, every: int, *, fresh: bool = True) -> None:
        self.path = Path(out) / METRICS_NAME
        self.every = max(1, int(every))
        if fresh:
            self.path.unlink(missing_ok=True)
        self.history: list[dict[str, Any]] = []
        self._sums: dict[str, float] = {}
        self._n = 0
        self._t0 = time.perf_counter()

    def add(self, **stats: float) -> None:
        """Accumulate one step's statistics (averaged until the next write)."""
        for k, v in stats.items():
            self._sums[k] = self._sums.get(k, 0.0) + float(v)
        self._n += 1

    def due(self, step: int, end: int) -> bool:
        """Whether the record of (1-based) ``step`` is written: every ``every`` steps and at ``end``."""
        return step % self.every == 0 or step == end

    def write(self, step: int, epoch: int, **extra: Any) -> dict[str, Any]:
        """Append the means since the last write, plus ``extra`` values as they are; reset the means."""
        rec: dict[str, Any] = {"step": step, "epoch": epoch, **{k: v / max(1, self._n) for k, v in self._sums.items()},
                               **extra, "seconds": round(time.perf_counter() - self._t0, 2)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
        self.history.append(rec)
        self._sums, self._n = {}, 0
        return rec


class Progress:
    """A tqdm bar when ``enabled``, else nothing (tqdm is imported only when shown)."""

    def __init__(self, enabled: bool, total: int, desc: str, *, initial: int = 0) -> None:
        self._bar = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit="step")

    def update(self, **postfix: str) -> None:
        if self._bar is not None:
            self._bar.update(1)
            if postfix:
                self._bar.set_postfix(**postfix)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def adamw_no_decay_on_vectors(named_params: Iterable[tuple[str, torch.Tensor]], *, lr: float, weight_decay: float):
    """AdamW with ``weight_decay`` on the matrices (linear weights, embeddings, the mapper's learned prefix) and none on
    the vectors (biases, LayerNorm gains and shifts).

    Why: decaying a LayerNorm gain pulls it towards 0, i.e. towards switching the layer's output off, and decaying a
    bias pulls it to a value that has no reason to be 0; neither is the "smaller weights generalise better" that
    weight decay is for. This is the grouping GPT-2/BERT trainers use. Parameters without ``requires_grad`` are left
    out. Two groups always (one may be empty), so a resumed optimizer state always matches.
    """
    import torch

    decay, keep = [], []
    for _, p in named_params:
        if p.requires_grad:
            (decay if p.dim() >= 2 else keep).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": keep, "weight_decay": 0.0}], lr=lr)
