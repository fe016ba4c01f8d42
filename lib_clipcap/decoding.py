"""Batched, KV-cached decoding for GPT-2 continuing from a prefix: greedy, beam search and sampling.

The original ClipCap decoders re-ran GPT-2 over the whole sequence for every token, one image at a time, and its
"top-p sampling" took an argmax after filtering (so temperature and top-p did nothing). Here every image of a batch,
every beam and every sampled candidate advance together, each step feeds one token per row through a preallocated
KV cache, and every option changes the result:

- ``greedy``: argmax at each step.
- ``beam``: the original ``generate_beam`` algorithm (scores are summed log-probabilities, ranked by their average
  over the length, a beam stops at a stop token), batched over images; ``tests/test_decoding.py`` checks it returns
  exactly the tokens of the original per-image loop (:mod:`devtools.reference`).
- ``sample``: temperature, then top-k, then top-p (nucleus) filtering, then a real multinomial draw from a seeded
  generator.

Shared by all modes: repetition penalty (CTRL/HF style), no-repeat-ngram, banned token sequences, min/max new tokens.
Every row's score is its mean token log-probability (under the penalised distribution), so candidates from different
modes compare on one scale.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace

import torch

from .errors import DecodingError
from .gpt2 import GPT2LMHead
from .options_table import DECODING_CHOICES

#: The decoding modes: the options table's ``decoding`` choices.
MODES = DECODING_CHOICES


@dataclass(frozen=True)
class DecodingOptions:
    """How to turn a prefix into text. See the module docstring for what each mode does.

    The decoder's explicit specification. Callers build it from user settings with :meth:`from_settings` (through a
    captioner's ``decoding_options``), which fills in :mod:`lib_clipcap.options_table`'s defaults; the field defaults
    here only serve direct use of :func:`decode` (one greedy caption).
    """

    mode: str = "greedy"
    beam_size: int = 5
    num_candidates: int = 1
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    max_new_tokens: int = 67
    min_new_tokens: int = 0
    seed: int | None = None
    banned_token_ids: tuple[tuple[int, ...], ...] = field(default=())

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`~lib_clipcap.options_table.OptionError` (a :class:`DecodingError`) naming the first bad
        value.

        The rules are the options table's, not repeated here: each field that is a table row is checked by its row
        (type, range, choices) and the rules between fields by :func:`~lib_clipcap.options_table.check_decoding`, so
        a setting's bounds are written once, whichever face (or direct caller) builds the options.
        """
        from .options_table import check_decoding_values

        check_decoding_values(self.settings())

    def settings(self) -> dict:
        """The options by the options table's names (``decoding`` for :attr:`mode`), without the token ids."""
        out = {"decoding": self.mode}
        out.update((k, v) for k, v in asdict(self).items() if k not in ("mode", "banned_token_ids"))
        return out

    @classmethod
    def from_settings(cls, settings: dict, *, banned_token_ids: tuple[tuple[int, ...], ...] = ()) -> DecodingOptions:
        """Options from resolved decoding settings (:func:`lib_clipcap.options_table.resolve_decoding`): the same
        names, except that ``decoding`` is :attr:`mode` and ``banned_words`` arrive tokenised as
        ``banned_token_ids`` (words and token ids are two things, so they have two names). The one translation
        between the table's names and the decoder's: a new setting is a table row and a field of the same name."""
        kw = {k: v for k, v in settings.items() if k not in ("decoding", "banned_words")}
        return cls(mode=settings["decoding"], banned_token_ids=banned_token_ids, **kw)

    def replace(self, **changes) -> DecodingOptions:
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Hypothesis:
    """One decoded continuation: its token ids (stop token included, padding excluded) and mean log-probability."""

    tokens: list[int]
    score: float


def _prepare_positions(attention_mask: torch.Tensor | None, batch: int, length: int, device) -> tuple:
    """Position ids for a (left-padded) prompt, and the position of the next token per row."""
    if attention_mask is None:
        pos = torch.arange(length, device=device).unsqueeze(0).expand(batch, -1)
        return pos, torch.full((batch,), length, device=device, dtype=torch.long)
    pos = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
    return pos, attention_mask.long().sum(-1)


class _LogitsProcessor:
    """Applies penalties and bans that depend on the tokens generated so far.

    ``history`` is ``[rows, steps]``. Only generated tokens count (not the prefix), so the prompt of a keyword-guided
    generator may be repeated in the caption on purpose.
    """

    def __init__(self, opts: DecodingOptions, stop_ids: list[int]) -> None:
        self.opts = opts
        self.stop_ids = stop_ids
        self.single_bans = sorted({seq[0] for seq in opts.banned_token_ids if len(seq) == 1})
        self.multi_bans = [tuple(seq) for seq in opts.banned_token_ids if len(seq) > 1]

    def __call__(self, logits: torch.Tensor, history: torch.Tensor, step: int) -> torch.Tensor:
        opts = self.opts
        if opts.repetition_penalty != 1.0 and history.shape[1] > 0:
            prev = logits.gather(1, history)
            prev = torch.where(prev > 0, prev / opts.repetition_penalty, prev * opts.repetition_penalty)
            logits = logits.scatter(1, history, prev)
        if step < opts.min_new_tokens and self.stop_ids:
            logits[:, self.stop_ids] = -float("inf")
        if self.single_bans:
            logits[:, self.single_bans] = -float("inf")
        if self.multi_bans or opts.no_repeat_ngram_size > 0:
            rows = history.tolist()
            for r, seq in enumerate(rows):
                banned = _ngram_bans(seq, opts.no_repeat_ngram_size) if opts.no_repeat_ngram_size else set()
                for ban in self.multi_bans:
                    k = len(ban) - 1
                    if len(seq) >= k and tuple(seq[len(seq) - k :]) == ban[:-1]:
                        banned.add(ban[-1])
                if banned:
                    logits[r, list(banned)] = -float("inf")
        return logits


def _ngram_bans(seq: Sequence[int], n: int) -> set[int]:
    """Tokens that would repeat an n-gram already in ``seq``."""
    if len(seq) < n:
        return set()
    if n == 1:
        return set(seq)
    tail = tuple(seq[len(seq) - n + 1 :])
    return {seq[i + n - 1] for i in range(len(seq) - n + 1) if tuple(seq[i : i + n - 1]) == tail}


def _filter_top_k_top_p(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Mask everything outside the top-k tokens and outside the smallest set whose probability reaches top_p."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -float("inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        # Drop a token when the mass *before* it already reaches top_p; the most likely token always stays.
        drop_sorted = (cum - sorted_logits.softmax(-1)) >= top_p
        drop = drop_sorted.scatter(1, order, drop_sorted)
        logits = logits.masked_fill(drop, -float("inf"))
    return logits


def sampling_logits(logits: torch.Tensor, options: DecodingOptions) -> torch.Tensor:
    """The logits ``mode="sample"`` draws from: divided by ``options.temperature``, then top-k/top-p filtered
    (``-inf`` outside). ``logits`` is ``[..., vocab]``.

    One function for the sampler and for whoever must score its draws under the same distribution (the SCST
    trainer's on-policy log-probabilities, :mod:`lib_clipcap.train.rl`).
    """
    shape = logits.shape
    flat = logits.reshape(-1, shape[-1])
    if options.temperature != 1.0:
        flat = flat / options.temperature
    if options.top_k > 0 or options.top_p < 1.0:
        flat = _filter_top_k_top_p(flat, options.top_k, options.top_p)
    return flat.view(shape)


@torch.inference_mode()
def decode(
    gpt: GPT2LMHead,
    prefix: torch.Tensor,
    options: DecodingOptions,
    *,
    stop_ids: Iterable[int],
    pad_id: int,
    attention_mask: torch.Tensor | None = None,
) -> list[list[Hypothesis]]:
    """Continue each prefix and return its candidates, best first.

    Args:
        gpt: the language model.
        prefix: ``[batch, prefix_len, n_embd]`` input embeddings (ClipCap prefix, or embedded prompt tokens).
        options: decoding options (mode, sizes, penalties...).
        stop_ids: token ids that end a caption (e.g. "." and EOS); the stop token is kept in the output.
        pad_id: id written after a row stopped (never part of an output).
        attention_mask: ``[batch, prefix_len]`` with 0 on left padding, for prompts of different lengths.

    Returns:
        For each batch row, ``num_candidates`` sequences (``beam``: the best beams) sorted by score, best first.
    """
    options.validate()
    room = gpt.config.n_positions - prefix.shape[1]
    if room < 1:
        raise DecodingError(f"the prompt/prefix of {prefix.shape[1]} positions leaves no room in GPT-2's context of "
                            f"{gpt.config.n_positions} positions; shorten it")
    if options.max_new_tokens > room:  # a caption cannot outgrow the model's context: stop there, don't fail
        options = options.replace(max_new_tokens=room, min_new_tokens=min(options.min_new_tokens, room))
    stop_ids = sorted(set(int(s) for s in stop_ids))
    if options.mode == "beam":
        return _beam(gpt, prefix, options, stop_ids, pad_id, attention_mask)
    return _greedy_or_sample(gpt, prefix, options, stop_ids, pad_id, attention_mask)


def _prefill(gpt, prefix, attention_mask, max_new_tokens):
    b, p, _ = prefix.shape
    if attention_mask is not None and bool(attention_mask.all()):
        attention_mask = None  # no padding: use the cheaper maskless path
    pos, next_pos = _prepare_positions(attention_mask, b, p, prefix.device)
    cache = gpt.new_cache(b, p + max_new_tokens)
    logits = gpt(prefix, attention_mask=attention_mask, position_ids=pos, cache=cache, last_only=True)
    return logits.float(), cache, attention_mask, next_pos


def _step(gpt, tokens, cache, attention_mask, next_pos):
    """Feed one token per row; returns next logits and the grown attention mask."""
    emb = gpt.embed_tokens(tokens).unsqueeze(1)
    if attention_mask is not None:
        attention_mask = torch.cat((attention_mask, attention_mask.new_ones(attention_mask.shape[0], 1)), dim=1)
    logits = gpt(emb, attention_mask=attention_mask, position_ids=next_pos.unsqueeze(1), cache=cache, last_only=True)
    return logits.float(), attention_mask


def _greedy_or_sample(gpt, prefix, opts, stop_ids, pad_id, attention_mask):
    b = prefix.shape[0]
    n = opts.num_candidates if opts.mode == "sample" else 1
    device = prefix.device
    logits, cache, attention_mask, next_pos = _prefill(gpt, prefix, attention_mask, opts.max_new_tokens)
    if n > 1:  # prefill once per image, then fork the cache into n candidates
        cache.expand_rows(n)
        logits = logits.repeat_interleave(n, dim=0)
        next_pos = next_pos.repeat_interleave(n, dim=0)
        if attention_mask is not None:
            attention_mask = attention_mask.repeat_interleave(n, dim=0)
    rows = b * n
    generator = None
    if opts.mode == "sample" and opts.seed is not None:
        generator = torch.Generator(device=device).manual_seed(int(opts.seed))
    process = _LogitsProcessor(opts, stop_ids)
    stop_t = torch.tensor(stop_ids, device=device, dtype=torch.long)
    history = torch.empty(rows, 0, dtype=torch.long, device=device)
    finished = torch.zeros(rows, dtype=torch.bool, device=device)
    lengths = torch.zeros(rows, dtype=torch.long, device=device)
    logp_sum = torch.zeros(rows, dtype=torch.float32, device=device)
    for step in range(opts.max_new_tokens):
        logits = process(logits, history, step)
        logp = logits.log_softmax(-1)
        if opts.mode == "greedy":
            nxt = logits.argmax(-1)
        else:
            nxt = torch.multinomial(sampling_logits(logits, opts).softmax(-1), 1, generator=generator).squeeze(1)
        nxt = torch.where(finished, torch.full_like(nxt, pad_id), nxt)
        logp_sum += torch.where(finished, 0.0, logp.gather(1, nxt.unsqueeze(1)).squeeze(1))
        lengths += (~finished).long()
        history = torch.cat((history, nxt.unsqueeze(1)), dim=1)
        finished |= torch.isin(nxt, stop_t)
        if bool(finished.all()) or step == opts.max_new_tokens - 1:
            break
        logits, attention_mask = _step(gpt, nxt, cache, attention_mask, next_pos)
        next_pos = next_pos + 1
    scores = (logp_sum / lengths.clamp_min(1)).tolist()
    toks, lens = history.tolist(), lengths.tolist()
    out: list[list[Hypothesis]] = []
    for i in range(b):
        cands = [Hypothesis(toks[r][: lens[r]], scores[r]) for r in range(i * n, (i + 1) * n)]
        cands.sort(key=lambda s: s.score, reverse=True)
        out.append(cands)
    return out


def _beam(gpt, prefix, opts, stop_ids, pad_id, attention_mask):
    """The original ``generate_beam``, batched over images: ``b`` images x ``k`` beams share one cache."""
    b = prefix.shape[0]
    k = opts.beam_size
    device = prefix.device
    logits, cache, attention_mask, next_pos = _prefill(gpt, prefix, attention_mask, opts.max_new_tokens)
    process = _LogitsProcessor(opts, stop_ids)
    stop_t = torch.tensor(stop_ids, device=device, dtype=torch.long)
    empty = torch.empty(b, 0, dtype=torch.long, device=device)
    logp = (process(logits, empty, 0) / opts.temperature).log_softmax(-1)  # [b, vocab]
    vocab = logp.shape[-1]
    k = min(k, vocab)
    scores, first = logp.topk(k, dim=-1)  # [b, k]
    tokens = first.reshape(b * k, 1)
    seq_len = torch.ones(b, k, device=device)
    stopped = torch.isin(first, stop_t)
    cache.expand_rows(k)
    next_pos = next_pos.repeat_interleave(k, dim=0)
    if attention_mask is not None:
        attention_mask = attention_mask.repeat_interleave(k, dim=0)
    base = (torch.arange(b, device=device) * k).unsqueeze(1)  # row offset of each image's beams
    for step in range(1, opts.max_new_tokens):
        if bool(stopped.all()):
            break
        logits, attention_mask = _step(gpt, tokens[:, -1], cache, attention_mask, next_pos)
        next_pos = next_pos + 1
        logp = (process(logits, tokens, step) / opts.temperature).log_softmax(-1).view(b, k, vocab)
        # A stopped beam may only continue with padding, at no cost, and does not grow.
        logp = torch.where(stopped.unsqueeze(-1), -float("inf"), logp)
        logp[..., pad_id] = torch.where(stopped, 0.0, logp[..., pad_id])
        total = scores.unsqueeze(-1) + logp  # [b, k, vocab]
        seq_len = seq_len + (~stopped).float()
        avg = total / seq_len.unsqueeze(-1)
        avg_top, idx = avg.view(b, -1).topk(k, dim=-1)  # [b, k]
        src = idx // vocab
        nxt = idx % vocab
        seq_len = seq_len.gather(1, src)
        stopped = stopped.gather(1, src)
        scores = avg_top * seq_len
        rows = (base + src).view(-1)
        tokens = torch.cat((tokens.index_select(0, rows), nxt.view(-1, 1)), dim=1)
        cache.reorder(rows)
        if attention_mask is not None:
            attention_mask = attention_mask.index_select(0, rows)
        stopped = stopped | torch.isin(nxt, stop_t)
    final = (scores / seq_len).tolist()
    lens = seq_len.long().tolist()
    toks = tokens.view(b, k, -1).tolist()
    out: list[list[Hypothesis]] = []
    for i in range(b):
        cands = [Hypothesis(toks[i][j][: lens[i][j]], final[i][j]) for j in range(k)]
        cands.sort(key=lambda s: s.score, reverse=True)  # stable, like the original's argsort on ties
        out.append(cands[: opts.num_candidates])
    return out
