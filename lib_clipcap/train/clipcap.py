"""ClipCap training on precomputed CLIP features (:mod:`.features`), with the model class inference uses.

What it covers (ClipCap, Mokady et al.; the CLIP-prefix paper's variants, Huynh et al.):

- MLP mapper with GPT-2 fine-tuned (the published models), or the transformer mapper, usually with GPT-2 frozen
  (``prefix_only``: only the mapper trains, and the checkpoint stores only the mapper + the GPT-2 base's name);
- gradient clipping (``grad_clip``, the paper's "gradient clipping" variant);
- GPT-2's own tokenizer, or a byte-level BPE retrained on the training captions with GPT-2's vocabulary size
  (``tokenizer="custom"``, the paper's "custom tokenizer" variant), saved in the format every ``tokenizers`` reads;
- captions lower-cased (the Flickr models), each followed by EOS; padding labelled -100 (never token 0, which the
  original padded with although it is GPT-2's "!");
- AdamW with linear warm-up then linear decay (as ``get_linear_schedule_with_warmup`` in the original), mixed precision
  on CUDA (bf16 where supported, else fp16 with loss scaling);
- a checkpoint every ``save_every`` steps (safetensors + JSON config that :meth:`Captioner.from_checkpoint` reads with
  strict key matching, plus an optimizer/scheduler/step state loaded with ``weights_only=True``), and ``resume``;
- a tqdm bar and a ``metrics.jsonl`` log; batches, initialisation and results depend only on ``seed``: a resumed run
  ends with the same weights as an uninterrupted one;
- validation (:mod:`.validation`): ``val_images`` held out from the training split (or a ``val_split`` of the
  features), its loss and greedy captions' BLEU-4/CIDEr every ``eval_every`` steps in the log, the best checkpoint
  by ``select_by`` kept as the final model, and early stopping after ``patience`` evaluations without improvement;
- ``tokenizer="auto"`` (custom for a GPT-2 trained from scratch, GPT-2's otherwise); ``"custom"`` is sized to the
  captions by default (``custom_vocab_size=0``): BPE merges until every caption
  word that occurs twice is one token, a few hundred tokens on a synthetic world instead of GPT-2's 50257, whose
  output layer would dominate the step time of a small model.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ClipCapError
from .data import CaptionPairs, collate, make_pairs
from .gpt2_base import gpt2_base, load_gpt_weights, path_or_name, resolve_train_tokenizer
from .loop import (CHECKPOINT_DIR, SCHEDULES, TRAIN_CONFIG_NAME, EpochBatches, GPT2Settings, MetricsLog, Progress,
                   TrainRunConfig, adamw_no_decay_on_vectors, models_folder, optimizer_step, start_run,
                   step_checkpoint, warmup_schedule)

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)

FINAL_NAME = "clipcap.safetensors"
BEST_NAME = "best.safetensors"  # in CHECKPOINT_DIR: the best validated weights so far


@dataclass(kw_only=True)
class ClipCapTrainConfig(TrainRunConfig, GPT2Settings):
    """Every setting of a ClipCap training run (saved, resolved, as ``train_config.json`` in the output folder).

    Settings left ``None`` are filled by :func:`~lib_clipcap.train.recipe.resolve_recipe` once the training set is
    loaded: with ``gpt2="scratch"`` and no ``epochs``/``max_steps``, from the training set's size (epochs, warm-up,
    validation hold-out and cadence, patience) and the from-scratch defaults (cosine, standardised mapper init,
    dropout, weight decay, label smoothing); otherwise from the paper's values for Flickr/COCO: MLP mapper, prefix
    10, GPT-2 small fine-tuned, batch 40, lr 2e-5, 5000 warm-up steps, linear decay, 10 epochs, features
    L2-normalised (Huynh et al.), captions lower-cased, no validation, no dropout.
    """

    val_split: str | None = None
    mapping: str = "mlp"
    prefix_length: int = 10
    clip_length: int = 10
    mapper_layers: int = 8
    mapper_heads: int = 8
    mlp_hidden: int | None = None
    prefix_only: bool = False
    tokenizer: str = "auto"
    custom_vocab_size: int = 0
    lowercase: bool = True
    normalize: bool = True
    max_tokens: int = 40
    stop_token: str | None = "."
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    warmup_steps: int | None = None
    schedule: str | None = None
    grad_clip: float | None = None
    standardize_init: bool | None = None
    dropout: float | None = None
    mapper_dropout: float | None = None
    label_smoothing: float | None = None
    augment: bool = True
    amp: bool = True
    save_every: int = 1000
    keep_checkpoints: int = 2
    val_images: int | None = None
    eval_every: int | None = None
    val_caption_images: int = 500
    select_by: str = "cider"
    patience: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mapping not in ("mlp", "transformer"):
            raise ClipCapError(f"mapping must be mlp or transformer; got {self.mapping!r}")
        for name in ("prefix_length", "max_tokens"):
            if getattr(self, name) < 1:
                raise ClipCapError(f"{name} must be >= 1; got {getattr(self, name)}")
        if self.schedule is not None and self.schedule not in SCHEDULES:
            raise ClipCapError(f"schedule must be one of {', '.join(SCHEDULES)}; got {self.schedule!r}")
        from .validation import SELECT_METRICS

        if self.select_by not in SELECT_METRICS:
            raise ClipCapError(f"select_by must be one of {', '.join(SELECT_METRICS)}; got {self.select_by!r}")
        for name in ("val_images", "eval_every", "patience", "custom_vocab_size", "weight_decay"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ClipCapError(f"{name} must be >= 0; got {getattr(self, name)}")
        for name in ("dropout", "mapper_dropout", "label_smoothing"):
            v = getattr(self, name)
            if v is not None and not 0.0 <= v < 1.0:
                raise ClipCapError(f"{name} must be in [0, 1); got {v}")
        if self.prefix_only and self.gpt2 == "scratch":
            log.warning("prefix_only with a GPT-2 trained from scratch: GPT-2 stays at its random initialisation")


@dataclass
class TrainResult:
    """Where the run wrote its model, and how it went."""

    checkpoint: Path
    steps: int
    final_loss: float
    history: list[dict[str, Any]] = field(default_factory=list)
    tokenizer: str = ""
    best_step: int | None = None  # the step whose weights were kept (validation runs)
    best_value: float | None = None
    stopped_early: bool = False
    stop_reason: str = ""  # why the run ended, in words (also the last line of metrics.jsonl)
    config: ClipCapTrainConfig | None = None  # the settings as resolved (every recipe default filled)
    steps_per_epoch: int = 0


# ------------------------------------------------------------------------------------------------ building
def build_clipcap_config(cfg: ClipCapTrainConfig, *, prefix_size: int, gpt2_config, tokenizer_spec: str,
                         clip_model: str | None, clip_pretrained: str | None):
    """The :class:`~lib_clipcap.model.ClipCapConfig` a training run produces."""
    from ..model import ClipCapConfig

    n_embd = gpt2_config.n_embd
    frozen_base = cfg.prefix_only and cfg.gpt2 != "scratch"
    if cfg.mapping == "mlp":
        hidden = (cfg.mlp_hidden or n_embd * cfg.prefix_length // 2,)
        extra: dict[str, Any] = dict(mlp_hidden=hidden, mapper_layers=2, clip_length=None)
    else:
        extra = dict(mlp_hidden=(), clip_length=cfg.clip_length, mapper_layers=cfg.mapper_layers,
                     mapper_heads=cfg.mapper_heads)
    return ClipCapConfig(mapping=cfg.mapping, prefix_length=cfg.prefix_length, prefix_size=prefix_size,
                         gpt2=gpt2_config, has_gpt_weights=not frozen_base,
                         gpt2_base=path_or_name(cfg.gpt2) if cfg.gpt2 != "scratch" else "gpt2",
                         normalize=cfg.normalize,
                         clip_model=clip_model, clip_pretrained=clip_pretrained, tokenizer=tokenizer_spec,
                         stop_token=cfg.stop_token, **extra)


def _amp_context(device, enabled: bool):
    import contextlib

    import torch

    if not enabled or device.type != "cuda":
        return contextlib.nullcontext(), None
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return torch.autocast("cuda", dtype=dtype), scaler


def caption_loss(model, tokens: torch.Tensor, labels: torch.Tensor, features: torch.Tensor, *,
                 label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy of the caption tokens given the prefix (padding labelled -100 is ignored).

    ``label_smoothing`` (training only; validation reports the plain loss) moves that share of each target's
    probability to the rest of the vocabulary: with five paraphrases per image the model otherwise learns to be
    certain of one training image's exact wording.
    """
    import torch.nn.functional as F

    p = model.config.prefix_length
    logits = model(tokens, features)[:, p - 1:-1]  # position p-1+t predicts token t
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100,
                           label_smoothing=label_smoothing)


# ------------------------------------------------------------------------------------------- checkpoints
def _checkpoints(out: Path) -> list[tuple[int, Path]]:
    found = []
    for p in (out / CHECKPOINT_DIR).glob("step-*.safetensors"):
        try:
            found.append((int(p.stem.split("-")[1]), p))
        except (IndexError, ValueError):
            continue
    return sorted(found)


def latest_checkpoint(out: str | Path) -> Path | None:
    """The newest ``checkpoints/step-N.safetensors`` that has its training state beside it, if any."""
    for _, p in reversed(_checkpoints(Path(out))):
        if p.with_suffix(".state.pt").is_file():
            return p
    return None


def _save_state(model, optimizer, scheduler, scaler, step: int, out: Path, keep: int, include_gpt: bool,
                best: dict | None = None) -> Path:
    import torch

    from ..checkpoint import save_checkpoint
    from ..fileio import atomic_replace

    target = step_checkpoint(out, step)
    folder = target.parent
    folder.mkdir(parents=True, exist_ok=True)
    path = save_checkpoint(model, target, include_gpt=include_gpt)
    state = {"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "scaler": scaler.state_dict() if scaler is not None else {}, "best": best or {}}
    tmp = folder / f".{target.stem}.state.pt.tmp"
    torch.save(state, tmp)
    atomic_replace(tmp, path.with_suffix(".state.pt"))
    for _, old in _checkpoints(out)[:-keep] if keep > 0 else []:
        for f in (old, old.with_suffix(".json"), old.with_suffix(".state.pt")):
            f.unlink(missing_ok=True)
    return path


def _load_model_file(path: Path, gpt_weights: dict | None):
    from ..checkpoint import build_model, load_config

    config, sd = load_config(path)
    return build_model(config, sd, gpt2_weights=gpt_weights)


# ------------------------------------------------------------------------------------------------ training
def _check_resumable(out: Path, old: dict[str, Any] | None, cfg: ClipCapTrainConfig) -> None:
    """Refuse to resume the run in ``out`` if its recorded settings ``old`` differ from the resolved ``cfg`` in
    anything but the run's length (``max_steps``, ``epochs``), checkpoint cadence (``save_every``,
    ``keep_checkpoints``) and ``progress``, ``device``, ``log_every`` (what may change between the pieces of one run,
    e.g. a longer run or another machine). Both sides are resolved settings, so an unset option that the recipe
    filled compares equal to the value it was filled with."""
    if old is None:
        return
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("progress", "device", "log_every")}
    old = {k: v for k, v in old.items() if k in settings}
    diff = {k: (old[k], settings[k]) for k in old
            if old[k] != settings[k] and k not in ("max_steps", "epochs", "save_every", "keep_checkpoints")}
    if diff:
        raise ClipCapError(f"cannot resume {out}: settings changed {diff}; use the same settings or a new --out")


def _recorded_settings(out: Path) -> dict[str, Any] | None:
    path = out / TRAIN_CONFIG_NAME
    return json.loads(path.read_text()) if path.is_file() else None


def train_clipcap(cfg: ClipCapTrainConfig, *, resume: bool = False, features=None,
                  stop_after: int | None = None) -> TrainResult:
    """Train a ClipCap model on a features folder and write ``<out>/clipcap.safetensors`` (+ ``.json``).

    Args:
        cfg: the run's settings; unset ones are filled by :func:`~lib_clipcap.train.recipe.resolve_recipe`.
        resume: continue from the newest checkpoint in ``<out>/checkpoints`` (same settings required).
        features: an already loaded :class:`~lib_clipcap.train.features.FeatureSet` (default: read ``cfg.features``).
        stop_after: stop (with a checkpoint) after this global step, as if interrupted; for tests and time slicing.

    Returns:
        A :class:`TrainResult` (final checkpoint path, steps, last logged loss, the metrics log, why it stopped).

    Raises:
        ClipCapError: inconsistent settings (e.g. a resumed run with another configuration).
        MissingFileError: the features folder, GPT-2 base or tokenizer is missing.
    """
    import torch

    from ..devices import device_and_dtype
    from ..model import ClipCapModel
    from .features import load_features
    from .recipe import resolve_recipe

    out = Path(cfg.out)
    recorded = _recorded_settings(out) if resume else None
    if recorded is None:
        start_run(cfg)  # the settings as asked, so a run that fails to load still records them; resolved below
    models_dir = models_folder(cfg.models_dir)

    fs = features if features is not None else load_features(cfg.features)
    train_fs = fs.select(cfg.split)
    if len(train_fs) == 0:
        raise ClipCapError(f"split {cfg.split!r} of {cfg.features} is empty")
    has_val_split = bool(cfg.val_split) and len(fs.select(cfg.val_split)) > 0
    cfg, recipe = resolve_recipe(cfg, images=len(train_fs), has_val_split=has_val_split,
                                 captions_per_image=sum(map(len, train_fs.captions)) / len(train_fs))
    log.info("clipcap: %s", recipe)
    _check_resumable(out, recorded, cfg)
    start_run(cfg)
    from .validation import BestTracker, split_off_validation

    train_fs, val_fs = split_off_validation(train_fs, cfg.val_images)
    if val_fs is None and cfg.val_split:
        val_fs = fs.select(cfg.val_split)
    dev, _ = device_and_dtype(cfg.device, None)
    all_caps = [c for caps in train_fs.captions for c in caps]
    tok_choice = cfg.tokenizer if cfg.tokenizer != "auto" else ("custom" if cfg.gpt2 == "scratch" else "gpt2")
    tok, tok_spec = resolve_train_tokenizer(tok_choice, all_caps, out, vocab_size=cfg.custom_vocab_size,
                                            lowercase=cfg.lowercase, models_dir=models_dir)
    gcfg, gpt_sd = gpt2_base(cfg, tok, models_dir)
    max_tokens = min(cfg.max_tokens, gcfg.n_positions - cfg.prefix_length)
    pairs: CaptionPairs = make_pairs(train_fs.captions, tok, max_tokens=max_tokens, lowercase=cfg.lowercase)
    mcfg = build_clipcap_config(cfg, prefix_size=train_fs.dim, gpt2_config=gcfg, tokenizer_spec=tok_spec,
                                clip_model=fs.meta.get("clip_model"), clip_pretrained=fs.meta.get("clip_pretrained"))
    batches = EpochBatches(len(pairs), cfg.batch_size, seed=cfg.seed)
    total = batches.run_length(cfg.epochs, cfg.max_steps)

    torch.manual_seed(cfg.seed)
    model = ClipCapModel(mcfg)
    if gpt_sd is not None:
        load_gpt_weights(model.gpt, gpt_sd)
    if cfg.standardize_init:
        standardize_first_layer(model, train_fs.features)
    start_step = 0
    ckpt = latest_checkpoint(out) if resume else None
    if ckpt is not None:
        model = _load_model_file(ckpt, gpt_sd)
        start_step = int(ckpt.stem.split("-")[1])
        log.info("resuming from %s (step %d)", ckpt, start_step)
    model.set_dropout(mapper=cfg.mapper_dropout, gpt=0.0 if cfg.prefix_only else cfg.dropout)
    model.to(dev).train()
    if cfg.prefix_only:
        model.gpt.requires_grad_(False).eval()
    params = [p for p in model.parameters() if p.requires_grad]
    state = torch.load(ckpt.with_suffix(".state.pt"), map_location="cpu", weights_only=True) if ckpt else None
    if state is not None and len(state["optimizer"]["param_groups"]) == 1:
        # A run started before the decay grouping: continue it exactly as it began (one group, decay on everything).
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        optimizer = adamw_no_decay_on_vectors(model.named_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = warmup_schedule(optimizer, cfg.warmup_steps, total, cfg.schedule)
    amp_ctx, scaler = _amp_context(dev, cfg.amp)
    tracker = BestTracker.for_metric(cfg.select_by, patience=cfg.patience) if val_fs is not None else None
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if tracker is not None and state.get("best"):
            tracker.load_state_dict(state["best"])
    views = TrainingViews(train_fs, seed=cfg.seed, enabled=cfg.augment, device=dev)
    include_gpt = mcfg.has_gpt_weights
    metrics = MetricsLog(out, cfg.log_every, fresh=start_step == 0)
    end = total if stop_after is None else min(total, stop_after)
    eval_every = cfg.eval_every or cfg.log_every
    best_path = out / CHECKPOINT_DIR / BEST_NAME
    if start_step == 0:
        best_path.unlink(missing_ok=True)
    bar = Progress(cfg.progress, total, "clipcap", initial=start_step)
    last_loss, grad_norm = float("nan"), None
    step = start_step
    stopped_early = False
    while step < end:
        epoch, idx = batches(step)
        tokens, labels = collate([pairs.tokens[j] for j in idx.tolist()], pad_id=tok.eos_token_id)
        tokens, labels = tokens.to(dev), labels.to(dev)
        with amp_ctx:
            loss = caption_loss(model, tokens, labels, views.batch(pairs.image_index[idx], step),
                                label_smoothing=cfg.label_smoothing)
        grad_norm = optimizer_step(loss, optimizer, params, grad_clip=cfg.grad_clip, scheduler=scheduler,
                                   scaler=scaler)
        step += 1
        last_loss = float(loss.detach())
        metrics.add(loss=last_loss)
        bar.update(loss=f"{last_loss:.3f}")
        validate = val_fs is not None and (step % eval_every == 0 or step == end)
        if metrics.due(step, end) or validate:
            extra: dict[str, Any] = {"lr": scheduler.get_last_lr()[0]}
            if grad_norm is not None:
                extra["grad_norm"] = grad_norm
            if validate:
                extra.update(validation_record(model, val_fs, tok, cfg, dev))
                if tracker.update(step, extra):
                    from ..checkpoint import save_checkpoint

                    best_path.parent.mkdir(parents=True, exist_ok=True)
                    save_checkpoint(model, best_path, include_gpt=include_gpt)
                extra.update(best_step=tracker.best_step, best=tracker.best)
                stopped_early = tracker.should_stop
            if step == end or stopped_early:  # the last record says why the run ended
                extra.update(stop_reason=stop_reason(step, total, batches.steps_per_epoch, tracker, stopped_early),
                             recipe=recipe)
            metrics.write(step, epoch, **extra)
        if (cfg.save_every and step % cfg.save_every == 0) or step == end or stopped_early:
            _save_state(model, optimizer, scheduler, scaler, step, out, cfg.keep_checkpoints, include_gpt,
                        tracker.state_dict() if tracker is not None else None)
        if stopped_early:
            break
    bar.close()
    reason = stop_reason(step, total, batches.steps_per_epoch, tracker, stopped_early)
    log.info("clipcap: %s", reason)
    model.eval()
    from ..checkpoint import save_checkpoint

    final = out / FINAL_NAME
    if step >= total or stopped_early:
        if tracker is not None and best_path.is_file():
            # The kept model is the best validated one, not the last step's (re-saved here so its tokenizer path
            # is recorded relative to the final file).
            model = _load_model_file(best_path, gpt_sd)
        final = save_checkpoint(model, final, include_gpt=include_gpt)
    else:
        final = _checkpoints(out)[-1][1]
    return TrainResult(final, step, last_loss, metrics.history, tok_spec,
                       best_step=tracker.best_step if tracker else None, best_value=tracker.best if tracker else None,
                       stopped_early=stopped_early, stop_reason=reason, config=cfg,
                       steps_per_epoch=batches.steps_per_epoch)


def stop_reason(step: int, total: int, steps_per_epoch: int, tracker, stopped_early: bool) -> str:
    """Why a run ended, in one line: early stopping (with the patience and the best validation), the run's full
    length, or an interruption (``stop_after``)."""
    epochs = f"step {step} (epoch {step / max(1, steps_per_epoch):.1f})"
    best = ""
    if tracker is not None and tracker.best is not None:
        best = f"; best {tracker.key} {tracker.best:.4f} at step {tracker.best_step}, kept"
    if stopped_early:
        return (f"stopped early at {epochs}: {tracker.key} did not improve for {tracker.bad_evals} validations "
                f"(patience {tracker.patience}){best}")
    if step >= total:
        return f"reached the run's length at {epochs}{best}"
    return f"interrupted at {epochs} of {total} (resume to continue)"


class TrainingViews:
    """The CLIP encoding each training caption is paired with at a step: one of its image's stored encodings (the
    plain one or an augmented view from ``train features --augment``), drawn per caption and step.

    The draw depends only on ``(seed, step)``, so a resumed run sees the same encodings as an uninterrupted one.
    Without augmented views (or ``enabled=False``) it is the plain encoding, as before.
    """

    def __init__(self, fs, *, seed: int, enabled: bool, device) -> None:
        import torch

        self.plain = fs.features.to(device)
        self.views = fs.views.to(device) if enabled and fs.views is not None else None
        self.seed = seed
        self._n = 1 + (0 if self.views is None else self.views.shape[1])
        self._device = device
        self._torch = torch

    def batch(self, image_index: torch.Tensor, step: int) -> torch.Tensor:
        """``[B, D]`` encodings of the images ``image_index`` at global ``step``."""
        torch = self._torch
        image_index = image_index.to(self._device)
        if self.views is None:
            return self.plain[image_index]
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step + 7)
        pick = torch.randint(0, self._n, (len(image_index),), generator=g).to(self._device)
        out = self.plain[image_index].clone()
        aug = pick > 0
        out[aug] = self.views[image_index[aug], pick[aug] - 1]
        return out


def standardize_first_layer(model, features: torch.Tensor) -> None:
    """Data-dependent initialisation of an MLP mapper: rescale its first layer so that it sees the training features
    standardised (zero mean, unit variance per dimension, after the model's own L2-normalisation).

    CLIP features share a large common direction (on the tiny shapes CLIP the mean vector has half the norm of a
    feature), so at the default initialisation the first layer's outputs are dominated by what all images have in
    common, and the image-specific part is a small signal the optimiser must first amplify. Folding
    ``(x - mean) / std`` into the layer's weight and bias keeps the architecture a plain Linear: nothing changes at
    inference, and checkpoints stay compatible with every loader.
    """
    import torch

    first = model.clip_project.model[0] if hasattr(model.clip_project, "model") else None
    if first is None or not isinstance(first, torch.nn.Linear):
        log.warning("standardize_init applies to the MLP mapper only; left the default initialisation")
        return
    with torch.no_grad():
        x = features.float()
        if model.config.normalize:
            x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
        w = first.weight / std.to(first.weight)
        first.weight.copy_(w)
        first.bias.sub_(w @ mean.to(w))


def validation_record(model, val_fs, tok, cfg: ClipCapTrainConfig, device) -> dict[str, float]:
    """``{"val_loss", "val_BLEU-4", "val_CIDEr"}``: the loss on every validation caption, and the greedy captions of
    the first ``cfg.val_caption_images`` validation images scored against their references."""
    from .validation import caption_scores, greedy_captions

    rec = {"val_loss": evaluate_loss(model, val_fs, tok, cfg, device)}
    n = min(len(val_fs), cfg.val_caption_images) if cfg.val_caption_images else len(val_fs)
    if n:
        texts = greedy_captions(model, tok, val_fs.features[:n], stop_token=cfg.stop_token,
                                max_new_tokens=cfg.max_tokens)
        rec.update({f"val_{k}": v for k, v in caption_scores(texts, val_fs.captions[:n]).items()})
        if cfg.prefix_only:
            model.gpt.eval()
    return rec


def evaluate_loss(model, fs, tok, cfg: ClipCapTrainConfig, device, *, batch_size: int = 256) -> float:
    """Mean caption cross-entropy on a feature set (validation loss)."""
    import torch

    with torch.no_grad():
        return _evaluate_loss(model, fs, tok, cfg, device, batch_size)


def _evaluate_loss(model, fs, tok, cfg: ClipCapTrainConfig, device, batch_size: int) -> float:
    import torch

    was_training = model.training
    model.eval()
    pairs = make_pairs(fs.captions, tok, max_tokens=cfg.max_tokens, lowercase=cfg.lowercase)
    total, n = 0.0, 0
    feats = fs.features.to(device)
    for start in range(0, len(pairs), batch_size):
        idx = torch.arange(start, min(len(pairs), start + batch_size))
        tokens, labels = collate([pairs.tokens[j] for j in idx.tolist()], pad_id=tok.eos_token_id)
        loss = caption_loss(model, tokens.to(device), labels.to(device), feats[pairs.image_index[idx].to(device)])
        total += float(loss) * len(idx)
        n += len(idx)
    model.train(was_training)
    if cfg.prefix_only:
        model.gpt.eval()
    return total / max(1, n)


# ------------------------------------------------------------------------------------------------------ CLI
HELP = "train a ClipCap model (MLP/transformer mapper) on a features folder"


def add_arguments(p) -> None:
    from .data import add_dataclass_arguments

    add_dataclass_arguments(p, ClipCapTrainConfig, required=("features", "out"), help={
        "features": "features folder from `train features`", "out": "output folder (checkpoints, log, model)",
        "gpt2": "GPT-2 base: 'gpt2' (registry), an HF-format folder, or 'scratch' (random, sized by --gpt2-*)",
        "tokenizer": "'gpt2', a tokenizer file/folder, 'custom' (BPE trained on the captions: the paper's "
                     "custom-tokenizer variant) or 'auto' (the default: custom with --gpt2 scratch, whose GPT-2 "
                     "has no vocabulary to keep; else gpt2)",
        "grad_clip": "clip the gradient norm to this (the paper's gradient-clipping variant; default off)",
        "prefix_only": "freeze GPT-2 and train only the mapper", "max_steps": "stop after N steps (default: epochs)",
        "mapping": "mlp (the papers') or transformer",
        "custom_vocab_size": "--tokenizer custom: vocabulary size (0, the default: as many tokens as the captions "
                             "need, at most 50257)",
        "standardize_init": "initialise the MLP mapper's first layer on standardised training features "
                            "(data-dependent; inference unchanged)",
        "schedule": "learning rate after warm-up: linear (the original's), cosine (both decay to 0 at the last "
                    "step) or constant",
        "val_images": "hold out the last N training images for validation (loss, BLEU-4 and CIDEr of greedy "
                      "captions in metrics.jsonl; the best checkpoint becomes the final model; unset: 10%%, "
                      "200 to 500, for the data-sized recipe, else none)",
        "eval_every": "validate every N steps (unset: 30 times over the data-sized recipe's longest run, else "
                      "every --log-every steps)",
        "val_caption_images": "validation images captioned for the caption metrics (default 500; 0: all)",
        "select_by": "what picks the best checkpoint: cider (default), bleu4 or loss (validation values)",
        "patience": "stop after N validations without improvement (0: never stop early)",
        "epochs": "passes over the training captions (unset: derived from the training set's size with --gpt2 "
                  "scratch, else 10, the paper's)",
        "batch_size": "captions per step (unset: 64 with --gpt2 scratch and no --epochs/--max-steps, else 40)",
        "lr": "peak learning rate (unset: 3e-3 x min(1, 64 / --gpt2-width) for the data-sized recipe, else 2e-5)",
        "warmup_steps": "linear warm-up steps (unset: one epoch, 100 to 1000, for the data-sized recipe, else 5000)",
        "weight_decay": "AdamW weight decay on weight matrices; none on biases and norms (unset: 0.05 for the "
                        "data-sized recipe, else 0.01)",
        "dropout": "GPT-2 dropout on embeddings, attention and residuals while training (unset: 0.1 for the "
                   "data-sized recipe, else 0); not saved, inference unchanged",
        "mapper_dropout": "dropout inside the mapper while training (unset: 0.1 for the data-sized recipe, else 0)",
        "label_smoothing": "label smoothing of the training loss (unset: 0.1 for the data-sized recipe, else 0)",
        "augment": "pair each caption with one of its image's stored encodings, drawn per step, when the features "
                   "folder has augmented views (`train features --augment`; default on)"})
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")


def run(args) -> int:
    from .data import dataclass_from_args

    cfg = dataclass_from_args(ClipCapTrainConfig, args)
    result = train_clipcap(cfg, resume=args.resume)
    kept = ""
    if result.best_step is not None:
        kept = (f"; kept step {result.best_step} (best validation {cfg.select_by} {result.best_value:.4f})"
                + (", stopped early" if result.stopped_early else ""))
    print(f"clipcap: {result.steps} steps, last loss {result.final_loss:.4f}{kept}; wrote {result.checkpoint}")
    print(f"clipcap: {result.stop_reason}")
    return 0
