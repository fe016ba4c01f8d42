"""SBG speed benchmark: our pipeline vs a re-implementation of the original procedure, in the same run.

Real-size architecture, random weights (the compute is the same as with trained ones): open_clip ViT-B-32 and GPT-2
small, GPT-2's real tokenizer, the bundled "natural" vocabulary + hierarchy, k candidates per image.

- **original** (ICG extension / SBG notebook, one image at a time): CLIP image features; keyword scoring against the
  vocabulary, prime and secondary features computed once at load (as the original did); per image, the tertiary
  words of every chosen category, the final keywords and the k candidates are encoded again (as the original did);
  k sequential generations, each an uncached loop that re-runs GPT-2 over the whole sequence for every token, with
  top-k 50 sampling.
- **ours** (:class:`lib_clipcap.sbg.BlindGuesser`): text features of everything cached (computed once, on disk);
  a batch of images scored with one matrix product; all k candidates of all images in one batched, KV-cached
  decoding call (prompt prefilled once per image); one CLIP text pass over all candidates.

Both sides generate exactly ``--tokens`` new tokens per candidate (no stop token: random weights would stop at random
places) from the same keyword prompts (the vocabulary keywords are capped at ``--max-keywords`` on both sides: with
random CLIP weights the softmax is flat and the uncapped prompt would not fit GPT-2). Timings start from preprocessed
pixels.

    python tools/bench_sbg.py                        # CPU fp32, k=5, batch sizes 1 and 8
    python tools/bench_sbg.py --device cuda --dtype fp16 --batch-sizes 1 16 64

Prints a Markdown table (medians) and writes JSON to artifacts/bench_sbg.json.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

import _bench_common as common  # first: puts the repository on sys.path
from lib_clipcap.captioner import resolve_tokenizer
from lib_clipcap.clip import ClipBackbone
from lib_clipcap.gpt2 import GPT2Config, GPT2LMHead
from lib_clipcap.sbg.generator import SbgGenerator
from lib_clipcap.sbg.guesser import BlindGuesser
from lib_clipcap.sbg.keywords import TEMPERATURE, KeywordExtractor, TextFeatureCache

sync = common.sync


class OriginalSBG:
    """The original per-image procedure (ICG extension's generate_caption), re-implemented on our modules."""

    def __init__(self, clip, gpt, tokenizer, vocabulary, *, max_keywords: int, tokens: int, k: int, seed: int,
                 load_time_features):
        self.clip, self.gpt, self.tok, self.v = clip, gpt, tokenizer, vocabulary
        self.max_keywords, self.tokens, self.k = max_keywords, tokens, k
        self.gen = torch.Generator(device=gpt.transformer.wte.weight.device).manual_seed(seed)
        h = vocabulary.hierarchy
        # What the original encoded once when it loaded the model (vocabulary, prime and secondary prompts). Not
        # timed, so it is taken from the same texts' features instead of being computed a second time.
        enc = load_time_features
        self.words = list(vocabulary.words)
        self.word_f = enc([vocabulary.keyword_template.format(w) for w in self.words])
        self.prime = h.prime.combinations()
        self.prime_f = enc([h.prime.prompt(c) for c in self.prime])
        self.level_f = {id(lv): enc([lv.template.format(l) for l in lv.labels]) for _, lv in h.levels()}

    @torch.inference_mode()
    def caption(self, pixels: torch.Tensor) -> str:
        clip, h = self.clip, self.v.hierarchy
        img = clip.encode_images(pixels, normalize=True)[0]
        probs = (TEMPERATURE * self.word_f @ img).softmax(-1)
        chosen, mass = [], 0.0
        for j in probs.argsort(descending=True).tolist():
            chosen.append(self.words[j])
            mass += float(probs[j])
            if mass > 0.5 or len(chosen) >= self.max_keywords:
                break
        best = self.prime[int((self.prime_f @ img).argmax())]
        subjects = [s for s in h.prime.subjects if s in best or s in h.prime.always]

        def level(lv):
            if lv.requires and not any(r in subjects for r in lv.requires):
                return
            if lv.skip_when_indoor and any(w in h.indoor for w in chosen):
                return
            labels = list(lv.labels)
            for b in (self.level_f[id(lv)] @ img).topk(lv.top).indices.tolist():
                if lv.add_label:
                    chosen.append(labels[b])
                words = lv.labels[labels[b]]
                if lv.tertiary_top and words:  # the original re-encoded the tertiary words for every image
                    tf = clip.encode_texts([lv.tertiary_prompt.format(w) for w in words[:100]])
                    chosen.extend(words[j] for j in (tf @ img).topk(min(lv.tertiary_top, len(words))).indices)

        for s in subjects:
            for lv in h.branches[s]:
                level(lv)
        for lv in h.context:
            level(lv)
        final_f = clip.encode_texts(chosen)  # re-encoded to order the keywords
        keywords = [chosen[j] for j in (final_f @ img).argsort(descending=True).tolist()]
        prompt = ", ".join(dict.fromkeys(keywords)) + " ###"
        results = [self._generate(prompt) for _ in range(self.k)]  # k sequential generations
        cand_f = clip.encode_texts(results)
        return results[int((cand_f @ img).argmax())]

    def _generate(self, prompt: str) -> str:
        """HF-pipeline-style sampling (top-k 50) without a KV cache: the whole sequence runs for every token."""
        dev = self.gpt.transformer.wte.weight.device
        ids = torch.tensor([self.tok.encode(prompt)], device=dev)
        out = []
        for _ in range(self.tokens):
            logits = self.gpt(self.gpt.embed_tokens(ids))[:, -1].float()
            kth = logits.topk(50, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, -float("inf"))
            nxt = torch.multinomial(logits.softmax(-1), 1, generator=self.gen)
            ids = torch.cat((ids, nxt), dim=1)
            out.append(int(nxt))
        return self.tok.decode(out)


def main() -> None:
    ap = common.parser(__doc__, clip_help="open_clip architecture (random weights)")
    ap.add_argument("--k", type=int, default=5, help="candidates per image")
    ap.add_argument("--tokens", type=int, default=20, help="new tokens per candidate")
    ap.add_argument("--max-keywords", type=int, default=6)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--repeats", type=int, default=3, help="rounds (each: original on 1 image, ours per batch size)")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice); 1 is steadier on a "
                                                "machine shared with other jobs")
    ap.add_argument("--cache-dir", type=Path, help="text-feature cache (default: a new temporary folder, so the "
                                                   "first computation is timed too)")
    ap.add_argument("--out", type=Path, default=common.ROOT / "artifacts" / "bench_sbg.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = common.device_and_dtype(args)

    clip = ClipBackbone.load(args.clip, None, device=device, dtype=dtype)
    gpt = GPT2LMHead(GPT2Config()).to(device, dtype).eval()
    tok = resolve_tokenizer("gpt2")
    generator = SbgGenerator(gpt, tok, name="gpt2-small-random")
    generator.stop_ids = []  # fixed-length captions: both sides do the same number of decoding steps
    cache_dir = args.cache_dir or Path(tempfile.mkdtemp(prefix="bench_sbg_"))
    t = time.perf_counter()
    extractor = KeywordExtractor(clip, "natural", cache=TextFeatureCache(cache_dir))
    first_build = time.perf_counter() - t
    t = time.perf_counter()
    KeywordExtractor(clip, "natural", cache=TextFeatureCache(cache_dir))
    cached_build = time.perf_counter() - t
    print(f"text features of {len(extractor.texts)} texts: {first_build:.1f}s the first time "
          f"({'computed' if extractor.cache.encode_calls else 'already cached'}), {cached_build:.2f}s from the disk "
          f"cache", flush=True)
    sbg = BlindGuesser(clip, generator, extractor, name="bench")
    table = lambda texts: extractor.features[[extractor._index[t] for t in texts]]
    orig = OriginalSBG(clip, gpt, tok, extractor.vocabulary, max_keywords=args.max_keywords, tokens=args.tokens,
                       k=args.k, seed=0, load_time_features=table)
    size = clip.model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    n = max(max(args.batch_sizes), args.repeats)
    pixels = torch.randn(n, 3, size, size)
    opts = sbg.decoding_options(decoding="sample", top_k_candidates=args.k, max_new_tokens=args.tokens,
                                min_new_tokens=args.tokens, seed=0)

    def ours(batch: int) -> float:
        sync(device)
        t0 = time.perf_counter()
        res = sbg.caption_pixels(pixels[:batch], opts, max_keywords=args.max_keywords)
        sync(device)
        assert len(res) == batch and all(r.candidates for r in res)
        return (time.perf_counter() - t0) / batch

    def original(i: int) -> float:
        sync(device)
        t0 = time.perf_counter()
        orig.caption(pixels[i:i + 1])
        sync(device)
        return time.perf_counter() - t0

    ours(1)  # warm-up
    kw = sbg.extractor.extract(clip.encode_images(pixels[:1]), max_keywords=args.max_keywords)[0]
    prompt_tokens = len(tok.encode(generator.prompt(kw.keywords)))
    print(f"prompt: {len(kw.keywords)} keywords, {prompt_tokens} tokens", flush=True)
    # Rounds: each times the original on one image, then ours at every batch size, so that a load spike on a
    # shared machine hits both sides alike; medians over the rounds.
    base_t: list[float] = []
    ours_t: dict[int, list[float]] = {b: [] for b in args.batch_sizes}
    for r in range(args.repeats):
        base_t.append(original(r % n))
        for b in args.batch_sizes:
            ours_t[b].append(ours(b))
        print(f"round {r + 1}: original {base_t[-1]:.2f} s/img; ours " + ", ".join(
            f"batch {b}: {ours_t[b][-1]:.3f} s/img" for b in args.batch_sizes), flush=True)
    base = statistics.median(base_t)
    rows = []
    for b in args.batch_sizes:
        per_image = statistics.median(ours_t[b])
        rows.append({"batch": b, "original_s_per_image": base, "ours_s_per_image": per_image,
                     "images_per_s": 1 / per_image, "speedup": base / per_image, "peak_gpu_mib": None})
    if device.type == "cuda":
        rows[-1]["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    result = {"hardware": common.hardware(device), "threads": torch.get_num_threads(), "load_average": os.getloadavg(),
              "device": str(device), "dtype": args.dtype, "k": args.k,
              "tokens": args.tokens, "max_keywords": args.max_keywords, "prompt_tokens": prompt_tokens,
              "model": f"{args.clip} + GPT-2 small (random weights), natural vocabulary "
                       f"({len(extractor.texts)} cached texts)",
              "text_features_first_s": first_build, "text_features_cached_s": cached_build,
              "original_s_per_image_rounds": base_t, "ours_s_per_image_rounds": {str(b): v for b, v in ours_t.items()},
              "rows": rows}
    common.write_json(args.out, result)
    common.print_table(
        f"{result['hardware']}, {args.dtype}, {result['model']}; k={args.k}, {args.tokens} new tokens per candidate, "
        f"{prompt_tokens}-token prompt; medians of {args.repeats} interleaved rounds",
        ["batch", "original s/img", "ours s/img", "images/s", "speed-up", "peak GPU MiB"],
        [[f"{r['batch']}", f"{r['original_s_per_image']:.2f}", f"{r['ours_s_per_image']:.3f}",
          f"{r['images_per_s']:.2f}", f"{r['speedup']:.1f}x", common.gpu_mib(r["peak_gpu_mib"])] for r in rows])


if __name__ == "__main__":
    main()
