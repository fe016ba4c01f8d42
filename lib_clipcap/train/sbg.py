"""Training the Selective Blind Guessing generator: GPT-2 fine-tuned on ``keywords ### caption`` pairs.

The keywords of each training image come from the **same** :class:`~lib_clipcap.sbg.keywords.KeywordExtractor` the
inference uses (same CLIP, vocabulary, hierarchy, threshold and keyword order), so the generator learns exactly the
prompt distribution it will see; the prompt is :meth:`SbgGenerator.prompt` (``"k1, k2, k3 ###"``) and the target is
``" " + caption`` followed by EOS. By default only the caption tokens are in the loss (``loss_on="caption"``); the
original fine-tuned on the whole text (``loss_on="all"``).

The result is an HF-format GPT-2 folder (``config.json``, ``model.safetensors``, ``tokenizer.json``, ``sbg.json``) that
:meth:`BlindGuesser.from_files` loads.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ClipCapError
from .data import collate, normalize_caption
from .loop import (EpochBatches, GPT2Settings, MetricsLog, Progress, TrainRunConfig, models_folder, optimizer_step,
                   start_run, warmup_schedule)

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class SbgTrainConfig(TrainRunConfig, GPT2Settings):
    """Settings of an SBG generator run (saved as ``train_config.json`` beside the generator)."""

    clip_model: str | None = None
    clip_pretrained: str | None = None
    vocabulary: str = "natural"
    threshold: float = 0.5
    max_keywords: int | None = 16
    max_prompt_tokens: int = 48
    separator: str = "###"
    tokenizer: str = "gpt2"
    lowercase: bool = True
    loss_on: str = "caption"
    max_tokens: int = 96
    epochs: int = 3
    warmup_steps: int = 500

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loss_on not in ("caption", "all"):
            raise ClipCapError(f"loss_on must be 'caption' or 'all'; got {self.loss_on!r}")


def keyword_prompts(extractor, features, generator_prompt, fit, *, threshold: float,
                    max_keywords: int | None, max_prompt_tokens: int, batch_size: int = 512) -> list[str]:
    """The generator prompt of each image, exactly as :class:`~lib_clipcap.sbg.BlindGuesser` builds it."""
    prompts: list[str] = []
    for start in range(0, len(features), batch_size):
        for kw in extractor.extract(features[start:start + batch_size], threshold=threshold,
                                    max_keywords=max_keywords):
            prompts.append(generator_prompt(fit(kw.keywords, max_prompt_tokens)))
    return prompts


def train_sbg(cfg: SbgTrainConfig, *, clip=None, features=None) -> Path:
    """Fine-tune (or train from scratch) the SBG generator and save it in ``cfg.out``.

    Args:
        cfg: the run's settings.
        clip: the CLIP backbone the features came from (default: loaded from ``cfg.clip_model`` or the features
            folder's record); its text encoder scores the keyword vocabulary.
        features: an already loaded :class:`~lib_clipcap.train.features.FeatureSet`.

    Returns:
        The generator folder.
    """
    import torch
    import torch.nn.functional as F

    from ..devices import device_and_dtype
    from ..clip import ClipBackbone
    from ..gpt2 import GPT2LMHead
    from ..sbg.generator import SbgGenerator
    from ..sbg.keywords import KeywordExtractor
    from .gpt2_base import gpt2_base, load_gpt_weights, resolve_train_tokenizer
    from .features import load_features

    out = start_run(cfg)
    models_dir = models_folder(cfg.models_dir)
    fs = (features if features is not None else load_features(cfg.features)).select(cfg.split)
    dev, _ = device_and_dtype(cfg.device, None)
    if clip is None:
        model_name = cfg.clip_model or fs.meta.get("clip_model")
        pretrained = cfg.clip_pretrained if cfg.clip_model else fs.meta.get("clip_pretrained")
        clip = ClipBackbone.load(model_name, pretrained, device=dev)
    if clip.embed_dim != fs.dim:
        raise ClipCapError(f"the features are {fs.dim}-d but CLIP {clip.name!r} gives {clip.embed_dim}-d; keywords "
                           f"must come from the backbone that made the features")
    caps = [c for cs in fs.captions for c in cs]
    tok, _ = resolve_train_tokenizer(cfg.tokenizer, caps, out / "_tokenizer", vocab_size=50257,
                                     lowercase=cfg.lowercase, models_dir=models_dir)
    gcfg, gpt_sd = gpt2_base(cfg, tok, models_dir)
    torch.manual_seed(cfg.seed)
    gpt = GPT2LMHead(gcfg)
    if gpt_sd is not None:
        load_gpt_weights(gpt, gpt_sd)
    generator = SbgGenerator(gpt, tok, separator=cfg.separator, name=out.name)
    extractor = KeywordExtractor(clip, cfg.vocabulary)
    t0 = time.perf_counter()
    prompts = keyword_prompts(extractor, fs.features, generator.prompt, generator.fit_keywords,
                              threshold=cfg.threshold, max_keywords=cfg.max_keywords,
                              max_prompt_tokens=cfg.max_prompt_tokens)
    log.info("keywords for %d images in %.1fs; e.g. %r", len(prompts), time.perf_counter() - t0, prompts[:1])
    seqs, starts = [], []
    eos = tok.eos_token_id
    max_tokens = min(cfg.max_tokens, gcfg.n_positions)
    for i, cs in enumerate(fs.captions):
        p_ids = tok.encode(prompts[i])
        for c in cs:
            c = normalize_caption(c, lowercase=cfg.lowercase)
            if not c:
                continue
            ids = (tok.encode(f"{prompts[i]} {c}") + [eos])[:max_tokens]
            seqs.append(ids)
            starts.append(len(p_ids) if cfg.loss_on == "caption" else 1)
    if not seqs:
        raise ClipCapError(f"split {cfg.split!r} of {cfg.features} has no captions")
    (out / "pairs-sample.txt").write_text("\n".join(f"{prompts[i]} {fs.captions[i][0]}"
                                                    for i in range(min(20, len(prompts)))) + "\n", encoding="utf-8")
    batches = EpochBatches(len(seqs), cfg.batch_size, seed=cfg.seed)
    total = batches.run_length(cfg.epochs, cfg.max_steps)
    gpt.to(dev).train().requires_grad_(True)
    params = list(gpt.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = warmup_schedule(optimizer, cfg.warmup_steps, total, "linear")
    metrics = MetricsLog(out, cfg.log_every)
    bar = Progress(cfg.progress, total, "sbg generator")
    for step in range(total):
        epoch, idx = batches(step)
        tokens, labels = collate([seqs[j] for j in idx.tolist()], pad_id=eos,
                                 label_from=[starts[j] for j in idx.tolist()])
        tokens, labels = tokens.to(dev), labels.to(dev)
        logits = gpt(gpt.embed_tokens(tokens[:, :-1]))
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1),
                               ignore_index=-100)
        optimizer_step(loss, optimizer, params, grad_clip=cfg.grad_clip, scheduler=scheduler)
        metrics.add(loss=float(loss.detach()))
        bar.update()
        if metrics.due(step + 1, total):
            metrics.write(step + 1, epoch, lr=scheduler.get_last_lr()[0])
    bar.close()
    gpt.eval()
    generator.save(out)
    return out


# ------------------------------------------------------------------------------------------------------ CLI
HELP = "train the SBG generator on 'keywords ### caption' pairs (keywords from the inference extractor)"


def add_arguments(p) -> None:
    from .data import add_dataclass_arguments

    add_dataclass_arguments(p, SbgTrainConfig, required=("features", "out"), help={
        "features": "features folder from `train features` (keywords need the same CLIP)",
        "out": "generator folder to write (HF format)",
        "clip_model": "CLIP for the keywords (default: the one recorded in the features folder)",
        "vocabulary": "SBG vocabulary: natural, shapes or a JSON file",
        "gpt2": "GPT-2 base: 'gpt2', an HF-format folder, or 'scratch' (sized by --gpt2-*)",
        "loss_on": "caption (only the caption after ###) or all (the whole text, as the original)"})


def run(args) -> int:
    from .data import dataclass_from_args

    out = train_sbg(dataclass_from_args(SbgTrainConfig, args))
    print(f"clipcap: wrote the SBG generator to {out}")
    return 0
