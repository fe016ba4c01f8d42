"""CLIP-S reinforcement learning: self-critical sequence training (SCST) of a ClipCap model with a CLIP reward.

As in Cho et al. (2022), "Fine-grained Image Captioning with CLIP Reward", on top of Rennie et al.'s SCST:

- for each training image, ``samples`` captions are drawn from the model (our batched, KV-cached sampler) and one
  greedy caption is decoded as the baseline (``baseline="greedy"``, SCST); ``baseline="mean"`` uses the mean reward
  of the image's other samples instead (Luo 2020): both are unbiased, the mean has less variance when samples
  are much worse than the greedy caption;
- the reward of a caption is ``clip_weight * CLIP-S + grammar_weight * P(grammatical)``, with
  ``CLIP-S = 2.5 * max(cos(image, "A photo depicts " + caption), 0)`` and the grammar head's probability when one is
  given (the paper's fix for the disfluent text a pure CLIP reward produces). The defaults are the paper's
  (``clipscore_reward_weight: 2.0``, grammar weight 1, Hessel's text prefix, as ``eval`` computes CLIP-S); with a
  greedy baseline the grammar term is the paper's ``P(sample) - P(greedy)`` (``use_grammar_baseline``);
- the loss is ``-(r(sample) - r(greedy)) * log p(sample)``, averaged over the sampled tokens (stop token included,
  padding excluded), with teacher-forced log-probabilities under the current weights, of the distribution the
  candidates were drawn from (the same temperature and top-k/top-p): a sampler at temperature 0.7 scored with
  temperature-1 log-probabilities is off-policy, and on the shapes world that bias wrecked the model.

SCST starts from a captioner trained to convergence with cross-entropy (as in the papers): when the sampled candidates
are much worse than the greedy caption, nearly every advantage is negative and the update mostly pushes probability
away from samples, which adds noise rather than reward. ``metrics.jsonl`` logs ``advantage_positive`` (the share of
samples that beat their baseline) and the greedy/sampled CLIP-S to watch for this.

Image features come from a features folder (:mod:`.features`); they must be from the reward CLIP (the captioner's
own backbone, as for the shapes world; for a real run extract features with the CLIP you reward with).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ClipCapError
from .loop import EpochBatches, MetricsLog, Progress, TrainRunConfig, optimizer_step, start_run, step_checkpoint

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..decoding import DecodingOptions

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class RLTrainConfig(TrainRunConfig):
    """Settings of a CLIP-S SCST run (saved as ``train_config.json``).

    The defaults follow the CLIP-S paper's SCST configuration (``configs/phase2/clipRN50_clips_grammar.yml``): five
    sampled candidates per image, greedy baseline, reward ``2 * CLIP-S + P(grammatical)``, learning rate 5e-6.
    """

    checkpoint: str
    clip_model: str | None = None
    clip_pretrained: str | None = None
    tokenizer: str | None = None
    grammar: str | None = None
    clip_weight: float = 2.0
    grammar_weight: float = 1.0
    clip_prefix: str = "A photo depicts "
    samples: int = 5
    baseline: str = "greedy"
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    max_new_tokens: int = 30
    lr: float = 5e-6
    weight_decay: float = 0.0
    train_gpt: bool = True
    save_every: int = 0
    log_every: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.samples < 1:
            raise ClipCapError(f"samples must be >= 1; got {self.samples}")
        if self.baseline not in ("greedy", "mean"):
            raise ClipCapError(f"baseline must be 'greedy' or 'mean'; got {self.baseline!r}")
        if self.baseline == "mean" and self.samples < 2:
            raise ClipCapError("baseline='mean' (the mean reward of the other samples) needs samples >= 2")


def caption_rewards(clip, image_feats: torch.Tensor, texts: list[str], *, grammar=None, grammar_weight: float = 0.0,
                    clip_weight: float = 1.0, prefix: str = ""
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(reward, clip_s, p_grammatical or None)`` for each ``(image_feats[i], texts[i])``, all ``[n]`` on the CPU;
    ``reward = clip_weight * clip_s + grammar_weight * p_grammatical`` (the grammar term only with a ``grammar`` head).

    Empty captions get CLIP-S 0 (and grammar probability 0) without being encoded.
    """
    import torch

    with torch.inference_mode():
        return _caption_rewards(clip, image_feats, texts, grammar, grammar_weight, clip_weight, prefix)


def _caption_rewards(clip, image_feats, texts, grammar, grammar_weight, clip_weight, prefix):
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
    reward = clip_weight * cs
    probs = None
    if grammar is not None:
        probs = torch.zeros(n)
        if keep:
            probs[keep] = grammar.probability([texts[i] for i in keep]).cpu().float()
        reward = reward + grammar_weight * probs
    return reward, cs, probs


def _sequence_logprobs(model, features: torch.Tensor, seqs: list[list[int]], pad_id: int,
                       sampler: DecodingOptions | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token log-probabilities ``[n, T]`` of ``seqs`` under ``model`` (with grad) and their mask ``[n, T]``.

    The log-probabilities are those of the distribution that ``sampler`` (the candidates' own
    :class:`~lib_clipcap.decoding.DecodingOptions`) draws from, computed by the decoder's own
    :func:`~lib_clipcap.decoding.sampling_logits`, so the policy gradient is on-policy; without a sampler (or at
    temperature 1 with no filtering) it is the model's own distribution. The mask covers each caption's tokens up to
    and including its stop token, never the padding after it.
    """
    import torch

    from ..decoding import sampling_logits

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
    if sampler is not None:
        logits = sampling_logits(logits, sampler)
    logp = logits.log_softmax(-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    # Padding, and (in a numerical tie at the top-k/top-p edge) a token the recomputed filter dropped, count 0.
    keep = (mask > 0) & torch.isfinite(logp)
    return torch.where(keep, logp, torch.zeros_like(logp)), mask


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
    from .features import load_features

    out = start_run(cfg)
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
    batches = EpochBatches(len(fs), cfg.batch_size, seed=cfg.seed)
    total = batches.run_length(cfg.epochs, cfg.max_steps)
    metrics = MetricsLog(out, cfg.log_every)
    bar = Progress(cfg.progress, total, "clip-s scst")
    k = cfg.samples
    weights = dict(grammar=grammar, grammar_weight=cfg.grammar_weight, clip_weight=cfg.clip_weight,
                   prefix=cfg.clip_prefix)
    for step in range(total):
        epoch, idx = batches(step)
        feats = feats_all[idx.to(dev)]
        # The candidates' distribution: given to the sampler, and to the loss's log-probabilities (on-policy).
        sample_opts = DecodingOptions(mode="sample", num_candidates=k, max_new_tokens=cfg.max_new_tokens,
                                      seed=cfg.seed * 100_003 + step, temperature=cfg.temperature,
                                      top_k=cfg.top_k, top_p=cfg.top_p)
        # The greedy baseline and the candidates come from the current weights, without grad.
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
        r_greedy, cs_greedy, p_greedy = caption_rewards(clip, feats, g_text, **weights)
        r_sample, cs_sample, p_sample = caption_rewards(clip, feats[rep.to(dev)], s_text, **weights)
        advantage = scst_advantage(r_sample, r_greedy, k, cfg.baseline)
        logp, mask = _sequence_logprobs(model, feats[rep.to(dev)], seqs, tok.eos_token_id, sample_opts)
        loss = -(advantage.to(dev).unsqueeze(1) * logp * mask).sum() / mask.sum().clamp_min(1.0)
        optimizer_step(loss, optimizer, params, grad_clip=cfg.grad_clip)
        stats = {"loss": float(loss.detach()), "reward_sample": float(r_sample.mean()),
                 "reward_greedy": float(r_greedy.mean()), "clip_s_greedy": float(cs_greedy.mean()),
                 "clip_s_sample": float(cs_sample.mean()), "advantage_positive": float((advantage > 0).float().mean())}
        if p_sample is not None:
            stats["grammar_greedy"] = float((p_greedy > 0.5).float().mean())
            stats["grammar_sample"] = float((p_sample > 0.5).float().mean())
        metrics.add(**stats)
        bar.update(clip_s=f"{stats['clip_s_greedy']:.3f}")
        if metrics.due(step + 1, total):
            metrics.write(step + 1, epoch, example=g_text[0])
        if cfg.save_every and (step + 1) % cfg.save_every == 0:
            save_checkpoint(model, step_checkpoint(out, step + 1), include_gpt=include_gpt)
    bar.close()
    model.eval().requires_grad_(False)
    return save_checkpoint(model, out / "clipcap.safetensors", include_gpt=include_gpt)


def scst_advantage(r_sample: torch.Tensor, r_greedy: torch.Tensor, k: int, baseline: str) -> torch.Tensor:
    """``r(sample) - baseline`` for ``b * k`` image-major samples: the image's greedy reward (``"greedy"``, SCST), or
    the mean reward of the image's other ``k - 1`` samples (``"mean"``)."""
    if baseline == "greedy":
        return r_sample - r_greedy.repeat_interleave(k)
    grid = r_sample.view(-1, k)
    return (grid - (grid.sum(1, keepdim=True) - grid) / (k - 1)).reshape(-1)


# ------------------------------------------------------------------------------------------------------ CLI
HELP = "CLIP-S self-critical RL of a ClipCap checkpoint (optional grammar-head reward)"


def add_arguments(p) -> None:
    from .data import add_dataclass_arguments

    add_dataclass_arguments(p, RLTrainConfig, required=("checkpoint", "features", "out", "clip_model"), help={
        "checkpoint": "ClipCap checkpoint to start from", "features": "features folder of the reward CLIP",
        "clip_model": "the reward CLIP (the features' backbone)", "grammar": "grammar head folder (train grammar)",
        "baseline": "greedy (SCST, the default) or mean (mean reward of the image's other samples)",
        "samples": "sampled candidates per image (default: 5)",
        "temperature": "sampling temperature of the candidates; the loss uses the same tempered distribution "
                       "(default: 1.0)",
        "clip_weight": "reward = this * CLIP-S + grammar weight * P(grammatical) (default: 2.0, the paper's)",
        "grammar_weight": "weight of P(grammatical) in the reward when --grammar is given (default: 1.0)",
        "clip_prefix": "text before each caption for CLIP-S (default: 'A photo depicts ', as the paper and eval; "
                       "'' for a CLIP trained without it)"})


def run(args) -> int:
    from .data import dataclass_from_args

    out = train_rl(dataclass_from_args(RLTrainConfig, args))
    print(f"clipcap: wrote {out}")
    return 0
