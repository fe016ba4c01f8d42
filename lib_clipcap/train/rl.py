"""CLIP-S reinforcement learning: self-critical sequence training (SCST) of a ClipCap model with a CLIP reward.

As in Cho et al. (2022), "Fine-grained Image Captioning with CLIP Reward", on top of Rennie et al.'s SCST:

- for each training image, ``samples`` captions are drawn from the model (our batched, KV-cached sampler) and one
  greedy caption is decoded as the baseline (``baseline="greedy"``, SCST); ``baseline="mean"`` uses the mean reward
  of the image's other samples instead (Luo 2020), which stays unbiased when samples are much worse than greedy;
- the reward of a caption is ``CLIP-S = 2.5 * max(cos(image, caption), 0)``, plus ``grammar_weight * P(grammatical)``
  from the grammar head when one is given (the paper's fix for the disfluent text a pure CLIP reward produces);
- the loss is ``-(r(sample) - r(greedy)) * log p(sample)``, averaged over the sampled tokens (stop token included,
  padding excluded), with teacher-forced log-probabilities under the current weights.

Image features come from a features folder (:mod:`.features`); they must be from the reward CLIP (the captioner's
own backbone, as for the shapes world; for a real run extract features with the CLIP you reward with).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ClipCapError

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)


@dataclass
class RLTrainConfig:
    """Settings of a CLIP-S SCST run (saved as ``train_config.json``)."""

    checkpoint: str
    features: str
    out: str
    split: str = "train"
    clip_model: str | None = None
    clip_pretrained: str | None = None
    tokenizer: str | None = None
    grammar: str | None = None
    grammar_weight: float = 2.0
    clip_prefix: str = ""
    samples: int = 5
    baseline: str = "greedy"
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    max_new_tokens: int = 30
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 16
    lr: float = 2e-6
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    train_gpt: bool = True
    save_every: int = 0
    seed: int = 0
    device: str | None = None
    log_every: int = 10
    progress: bool = True
    models_dir: str | None = None

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ClipCapError(f"samples must be >= 1; got {self.samples}")
        if self.baseline not in ("greedy", "mean"):
            raise ClipCapError(f"baseline must be 'greedy' or 'mean'; got {self.baseline!r}")
        if self.baseline == "mean" and self.samples < 2:
            raise ClipCapError("baseline='mean' (the mean reward of the other samples) needs samples >= 2")


def caption_rewards(clip, image_feats: torch.Tensor, texts: list[str], *, grammar=None, grammar_weight: float = 0.0,
                    prefix: str = "") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(reward, clip_s, p_grammatical or None)`` for each ``(image_feats[i], texts[i])``, all ``[n]`` on the CPU.

    Empty captions get CLIP-S 0 (and grammar probability 0) without being encoded.
    """
    import torch

    with torch.inference_mode():
        return _caption_rewards(clip, image_feats, texts, grammar, grammar_weight, prefix)


def _caption_rewards(clip, image_feats, texts, grammar, grammar_weight, prefix):
    import torch

    from ..scoring import clip_score_from_cosine, text_features

    n = len(texts)
    cs = torch.zeros(n)
    keep = [i for i, t in enumerate(texts) if t.strip()]
    if keep:
        img = image_feats[keep].float().to(clip.device)
        img = img / img.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        txt = text_features(clip, [texts[i] for i in keep], prefix=prefix)
        cs[keep] = clip_score_from_cosine((img * txt).sum(-1)).cpu()
    reward = cs.clone()
    probs = None
    if grammar is not None:
        probs = torch.zeros(n)
        if keep:
            probs[keep] = grammar.probability([texts[i] for i in keep]).cpu().float()
        reward = reward + grammar_weight * probs
    return reward, cs, probs


def _sequence_logprobs(model, features: torch.Tensor, seqs: list[list[int]], pad_id: int
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Token log-probabilities ``[n, T]`` of ``seqs`` under ``model`` (with grad) and their mask ``[n, T]``."""
    import torch

    width = max(1, max(len(s) for s in seqs))
    tokens = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width))
    for r, s in enumerate(seqs):
        if s:
            tokens[r, :len(s)] = torch.tensor(s)
            mask[r, :len(s)] = 1.0
    dev = features.device
    tokens, mask = tokens.to(dev), mask.to(dev)
    p = model.config.prefix_length
    logits = model(tokens, features)[:, p - 1:-1].float()
    logp = logits.log_softmax(-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return logp, mask


def train_rl(cfg: RLTrainConfig, *, captioner=None, grammar=None, features=None) -> Path:
    """Fine-tune a ClipCap checkpoint with SCST and the CLIP-S (+ grammar) reward; writes ``<out>/clipcap.safetensors``.

    Args:
        cfg: the run's settings.
        captioner: an already loaded :class:`~lib_clipcap.captioner.Captioner` (default: ``cfg.checkpoint``); its
            model is trained in place, its CLIP gives the reward.
        grammar: a :class:`~lib_clipcap.grammar.GrammarScorer` (default: loaded from ``cfg.grammar`` if set).
        features: an already loaded :class:`~lib_clipcap.train.features.FeatureSet`.

    Returns:
        The path of the fine-tuned checkpoint.
    """
    import torch

    from ..captioner import Captioner
    from ..checkpoint import save_checkpoint
    from ..decoding import DecodingOptions, decode
    from ..fileio import atomic_write_text
    from .data import epoch_batches
    from .features import load_features

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "train_config.json", json.dumps(asdict(cfg), indent=1) + "\n")
    if captioner is None:
        if not cfg.clip_model:
            raise ClipCapError("RL needs the reward CLIP: pass clip_model/clip_pretrained (the features' backbone)")
        captioner = Captioner.from_checkpoint(cfg.checkpoint, clip_model=cfg.clip_model,
                                              clip_pretrained=cfg.clip_pretrained, tokenizer=cfg.tokenizer,
                                              device=cfg.device, dtype="fp32", models_dir=cfg.models_dir)
    if grammar is None and cfg.grammar:
        from ..grammar import GrammarScorer

        grammar = GrammarScorer.load(cfg.grammar, captioner.clip)
    fs = (features if features is not None else load_features(cfg.features)).select(cfg.split)
    clip, model, tok = captioner.clip, captioner.model, captioner.tokenizer
    if fs.dim != clip.embed_dim:
        raise ClipCapError(f"features are {fs.dim}-d but the reward CLIP {clip.name!r} gives {clip.embed_dim}-d")
    dev = captioner.device
    torch.manual_seed(cfg.seed)
    model.float().train().requires_grad_(True)
    if not cfg.train_gpt:
        model.gpt.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    include_gpt = cfg.train_gpt or model.config.has_gpt_weights
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    greedy_opts = DecodingOptions(mode="greedy", max_new_tokens=cfg.max_new_tokens)
    feats_all = fs.features.to(dev)
    steps_per_epoch = math.ceil(len(fs) / cfg.batch_size)
    total = cfg.max_steps or cfg.epochs * steps_per_epoch
    log_path = out / "metrics.jsonl"
    log_path.unlink(missing_ok=True)
    bar = None
    if cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="clip-s scst", unit="step")
    t0 = time.perf_counter()
    acc: dict[str, float] = {}
    n_acc = 0
    batches: list = []
    cur = -1
    k = cfg.samples
    for step in range(total):
        epoch, j = divmod(step, steps_per_epoch)
        if epoch != cur:
            batches, cur = epoch_batches(len(fs), cfg.batch_size, seed=cfg.seed, epoch=epoch), epoch
        idx = batches[j].to(dev)
        feats = feats_all[idx]
        sample_opts = DecodingOptions(mode="sample", num_candidates=k, temperature=cfg.temperature, top_k=cfg.top_k,
                                      top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
                                      seed=cfg.seed * 100_003 + step)
        model.eval()
        with torch.inference_mode():
            prefix = model.prefix_embeddings(feats)
            greedy = decode(model.gpt, prefix, greedy_opts, stop_ids=captioner.stop_ids, pad_id=tok.eos_token_id)
            sampled = decode(model.gpt, prefix, sample_opts, stop_ids=captioner.stop_ids, pad_id=tok.eos_token_id)
        model.train()
        if not cfg.train_gpt:
            model.gpt.eval()
        g_text = [tok.decode(h[0].tokens).strip() for h in greedy]
        seqs = [h.tokens for row in sampled for h in row]  # [b * k], image-major
        s_text = [tok.decode(s).strip() for s in seqs]
        rep = torch.arange(len(idx)).repeat_interleave(k)
        r_greedy, cs_greedy, _ = caption_rewards(clip, feats, g_text, grammar=grammar,
                                                 grammar_weight=cfg.grammar_weight, prefix=cfg.clip_prefix)
        r_sample, cs_sample, p_sample = caption_rewards(clip, feats[rep.to(dev)], s_text, grammar=grammar,
                                                        grammar_weight=cfg.grammar_weight, prefix=cfg.clip_prefix)
        if cfg.baseline == "greedy":
            base = r_greedy[rep]
        else:  # the mean reward of the image's other samples (Luo 2020), unbiased when samples trail greedy
            grid = r_sample.view(-1, k)
            base = ((grid.sum(1, keepdim=True) - grid) / (k - 1)).reshape(-1)
        advantage = (r_sample - base).to(dev)
        logp, mask = _sequence_logprobs(model, feats[rep.to(dev)], seqs, tok.eos_token_id)
        loss = -(advantage.unsqueeze(1) * logp * mask).sum() / mask.sum().clamp_min(1.0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        stats = {"loss": float(loss.detach()), "reward_sample": float(r_sample.mean()),
                 "reward_greedy": float(r_greedy.mean()), "clip_s_greedy": float(cs_greedy.mean()),
                 "clip_s_sample": float(cs_sample.mean())}
        if p_sample is not None:
            stats["grammar_sample"] = float(p_sample.mean())
        for key, v in stats.items():
            acc[key] = acc.get(key, 0.0) + v
        n_acc += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(clip_s=f"{stats['clip_s_greedy']:.3f}")
        if (step + 1) % cfg.log_every == 0 or step + 1 == total:
            rec: dict[str, Any] = {"step": step + 1, "epoch": epoch, **{kk: v / n_acc for kk, v in acc.items()},
                                   "seconds": round(time.perf_counter() - t0, 2), "example": g_text[0]}
            with log_path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")
            acc, n_acc = {}, 0
        if cfg.save_every and (step + 1) % cfg.save_every == 0:
            save_checkpoint(model, out / "checkpoints" / f"step-{step + 1:07d}.safetensors", include_gpt=include_gpt)
    if bar is not None:
        bar.close()
    model.eval().requires_grad_(False)
    return save_checkpoint(model, out / "clipcap.safetensors", include_gpt=include_gpt)


# ------------------------------------------------------------------------------------------------------ CLI
HELP = "CLIP-S self-critical RL of a ClipCap checkpoint (optional grammar-head reward)"


def add_arguments(p) -> None:
    from .data import add_dataclass_arguments

    add_dataclass_arguments(p, RLTrainConfig, required=("checkpoint", "features", "out", "clip_model"), help={
        "checkpoint": "ClipCap checkpoint to start from", "features": "features folder of the reward CLIP",
        "clip_model": "the reward CLIP (the features' backbone)", "grammar": "grammar head folder (train grammar)",
        "baseline": "greedy (SCST) or mean (mean reward of the other samples)"})


def run(args) -> int:
    from .data import dataclass_from_args

    out = train_rl(dataclass_from_args(RLTrainConfig, args))
    print(f"clipcap: wrote {out}")
    return 0
