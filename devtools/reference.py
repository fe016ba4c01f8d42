"""Faithful re-implementations of the original ClipCap decoders, kept as a yardstick.

These follow rmokady/CLIP_prefix_caption's ``generate_beam`` and the greedy path of ``generate2``: one image at a
time, no KV cache (GPT-2 re-runs over the whole sequence at every step). They exist for two reasons: the parity tests
check that :mod:`lib_clipcap.decoding` produces exactly their tokens, and the benchmarks measure our speed-up against
them in the same run. Do not use them for real work.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from lib_clipcap.gpt2 import GPT2LMHead, Linear


class OriginalConv1D(nn.Module):
    """A GPT-2 projection computed as the original code ran it, through Hugging Face's ``Conv1D``:
    ``addmm(bias, x, weight)`` with the weight stored ``[in, out]`` (our :class:`~lib_clipcap.gpt2.Linear` keeps
    ``nn.Linear``'s ``[out, in]``, which CPU kernels multiply faster)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.weight = nn.Parameter(linear.weight.detach().t().contiguous(), requires_grad=False)
        self.bias = nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).view(*x.shape[:-1], -1)


def with_original_layers(gpt: GPT2LMHead) -> GPT2LMHead:
    """A copy of ``gpt`` whose projections compute as the original's (:class:`OriginalConv1D`), so that a benchmark's
    baseline costs what the original code cost, not what it would cost on our layers. Same weights, same outputs."""
    twin = copy.deepcopy(gpt)
    for name, module in list(twin.named_modules()):
        if isinstance(module, Linear):
            parent, _, child = name.rpartition(".")
            setattr(twin.get_submodule(parent) if parent else twin, child, OriginalConv1D(module))
    return twin


@torch.inference_mode()
def original_greedy(gpt: GPT2LMHead, prefix: torch.Tensor, *, stop_ids: list[int], max_new_tokens: int = 67) -> list[int]:
    """``generate2`` with argmax (what its "top-p" path amounted to). ``prefix`` is ``[1, P, n_embd]``."""
    generated = prefix
    tokens: list[int] = []
    for _ in range(max_new_tokens):
        logits = gpt(generated)[:, -1, :]
        nxt = int(logits.argmax(-1))
        tokens.append(nxt)
        if nxt in stop_ids:
            break
        generated = torch.cat((generated, gpt.embed_tokens(torch.tensor([[nxt]], device=prefix.device))), dim=1)
    return tokens


@torch.inference_mode()
def original_beam(
    gpt: GPT2LMHead,
    prefix: torch.Tensor,
    *,
    stop_ids: list[int],
    beam_size: int = 5,
    max_new_tokens: int = 67,
    temperature: float = 1.0,
) -> list[tuple[list[int], float]]:
    """``generate_beam`` for one image; returns ``(tokens, length-normalised score)`` for every beam, best first."""
    device = prefix.device
    stop = torch.tensor(stop_ids, device=device)
    tokens = None
    scores = None
    seq_lengths = torch.ones(beam_size, device=device)
    is_stopped = torch.zeros(beam_size, device=device, dtype=torch.bool)
    generated = prefix
    for _ in range(max_new_tokens):
        logits = gpt(generated)[:, -1, :].float()
        logits = (logits / (temperature if temperature > 0 else 1.0)).softmax(-1).log()
        if scores is None:
            scores, next_tokens = logits.topk(beam_size, -1)
            generated = generated.expand(beam_size, *generated.shape[1:])
            next_tokens, scores = next_tokens.permute(1, 0), scores.squeeze(0)
            tokens = next_tokens
        else:
            logits[is_stopped] = -float("inf")
            logits[is_stopped, 0] = 0
            scores_sum = scores[:, None] + logits
            seq_lengths[~is_stopped] += 1
            scores_sum_average = scores_sum / seq_lengths[:, None]
            scores_sum_average, next_tokens = scores_sum_average.view(-1).topk(beam_size, -1)
            next_tokens_source = next_tokens // scores_sum.shape[1]
            seq_lengths = seq_lengths[next_tokens_source]
            next_tokens = (next_tokens % scores_sum.shape[1]).unsqueeze(1)
            tokens = torch.cat((tokens[next_tokens_source], next_tokens), dim=1)
            generated = generated[next_tokens_source]
            scores = scores_sum_average * seq_lengths
            is_stopped = is_stopped[next_tokens_source]
        next_embed = gpt.embed_tokens(next_tokens.view(-1)).view(generated.shape[0], 1, -1)
        generated = torch.cat((generated, next_embed), dim=1)
        is_stopped = is_stopped | torch.isin(next_tokens.view(-1), stop)
        if is_stopped.all():
            break
    scores = scores / seq_lengths
    out = [(tokens[i, : int(seq_lengths[i])].tolist(), float(scores[i])) for i in range(beam_size)]
    out.sort(key=lambda t: t[1], reverse=True)
    return out
