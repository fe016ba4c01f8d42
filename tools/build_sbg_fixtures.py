"""Build the tiny SBG fixtures (generator + grammar head) on the shapes world and write them into the package.

    python tools/build_sbg_fixtures.py                    # all stages (a few minutes on 2 CPU cores)
    python tools/build_sbg_fixtures.py --stage generator  # or: vocabulary, grammar, eval

Outputs (committed; well under 1 MB in all):
    lib_clipcap/sbg/data/natural.json, shapes.json       vocabularies (from tools/build_vocabulary.py)
    lib_clipcap/assets/sbg/generator/                    HF-format GPT-2 folder: config.json, model.safetensors (fp16),
                                                         tokenizer.json (BPE trained on the prompts+captions), sbg.json
    lib_clipcap/assets/sbg/grammar/                      grammar head (+ fine-tuned tiny-CLIP text tower): grammar.*

The generator learns ``"k1, k2 ### caption"`` where the keywords come from the SAME extractor that inference uses
(:class:`lib_clipcap.sbg.keywords.KeywordExtractor`, tiny CLIP, the "shapes" vocabulary, threshold 0.5), so it sees
at training time exactly the kind of (imperfect) keywords it will get later. Needs the tiny CLIP of
tools/build_fixtures.py. Deterministic: fixed seeds.
"""

from __future__ import annotations

import argparse
import random
import sys
import time

import torch
import torch.nn.functional as F

import _fixture_common as common  # first: puts the repository on sys.path
from _fixture_common import CLIP_CONFIG, CLIP_WEIGHTS, load_tiny_clip
from lib_clipcap import shapes
from lib_clipcap.train.data import write_legacy_tokenizer_json

ROOT = common.ROOT
SBG_DIR = common.ASSETS / "sbg"
GEN_DIR = SBG_DIR / "generator"
GRAMMAR_DIR = SBG_DIR / "grammar"
MAX_LEN = 48


def scene_keywords(clip, scenes: list[shapes.Scene], *, threshold: float = 0.5) -> list[list[str]]:
    """Keywords of rendered scenes, through the inference pipeline (preprocess, encode, extract)."""
    from lib_clipcap.sbg.keywords import KeywordExtractor

    ex = KeywordExtractor(clip, "shapes")
    out: list[list[str]] = []
    for i in range(0, len(scenes), 256):
        pixels = clip.preprocess_images([s.render() for s in scenes[i:i + 256]])
        feats = clip.encode_images(pixels, normalize=True)
        out += [r.keywords for r in ex.extract(feats, threshold=threshold)]
    return out


def build_generator(train_size: int, steps: int, batch: int) -> None:
    from tokenizers import ByteLevelBPETokenizer

    from lib_clipcap.gpt2 import GPT2Config, GPT2LMHead
    from lib_clipcap.sbg.generator import SEPARATOR, SbgGenerator
    from lib_clipcap.tokenizer import Tokenizer

    clip = load_tiny_clip()
    train = shapes.make_scenes(shapes.TRAIN_SEED, train_size)
    t0 = time.time()
    kws = scene_keywords(clip, train)
    print(f"keywords for {len(train)} training scenes in {time.time() - t0:.0f}s; e.g. {kws[0]} -> "
          f"{train[0].captions[0]!r}", flush=True)
    prompts = [", ".join(k) + " " + SEPARATOR for k in kws]
    GEN_DIR.mkdir(parents=True, exist_ok=True)
    corpus = sorted({p for p in prompts} | {c for s in train for c in s.captions})
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus, vocab_size=400, min_frequency=2, special_tokens=["<|endoftext|>"],
                            show_progress=False)
    tok_path = GEN_DIR / "tokenizer.json"
    bpe.save(str(tok_path))
    write_legacy_tokenizer_json(tok_path)
    tok = Tokenizer.from_path(tok_path)
    eos = tok.eos_token_id
    print(f"tokenizer: {tok.vocab_size} tokens; prompt {prompts[0]!r} -> {len(tok.encode(prompts[0]))} tokens")

    # Rows: prompt tokens, then " caption" + EOS; the loss covers only the caption and EOS.
    p_ids = tok.encode_batch(prompts)
    c_ids = {c: tok.encode(" " + c) for s in train for c in s.captions}

    def batch_of(idx: list[int], step: int):
        ids = torch.full((len(idx), MAX_LEN), eos, dtype=torch.long)
        labels = torch.full((len(idx), MAX_LEN), -100, dtype=torch.long)
        for r, i in enumerate(idx):
            cap = train[i].captions[0] if (i + step) % 4 else train[i].captions[1]
            seq = (p_ids[i] + c_ids[cap] + [eos])[:MAX_LEN]
            ids[r, :len(seq)] = torch.tensor(seq)
            start = len(p_ids[i])
            labels[r, start:len(seq)] = torch.tensor(seq[start:])
        return ids, labels

    torch.manual_seed(0)
    gpt = GPT2LMHead(GPT2Config(vocab_size=tok.vocab_size, n_positions=64, n_embd=64, n_layer=2, n_head=2,
                                eos_token_id=eos))
    print(f"generator parameters: {sum(p.numel() for p in gpt.parameters()) / 1e3:.0f}K")

    def loss_at(step: int, g: torch.Generator) -> torch.Tensor:
        idx = torch.randint(len(train), (batch,), generator=g).tolist()
        ids, labels = batch_of(idx, step)
        logits = gpt(gpt.embed_tokens(ids))[:, :-1]
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)

    common.train(gpt, steps, lr=3e-3, weight_decay=0.01, seed=1, name="generator", loss_at=loss_at, clip_grad=1.0)
    SbgGenerator(gpt, tok, separator=SEPARATOR, name="shapes-sbg").save(GEN_DIR)
    print(f"wrote {GEN_DIR}")


def grammar_split() -> tuple[list[str], list[str]]:
    """Shapes captions split by a stable hash (1 in 5 held out): held-out captions are never seen in training."""
    from lib_clipcap.train.grammar import split_captions

    caps = sorted({c for s in shapes.make_scenes(shapes.TRAIN_SEED, 20000) for c in s.captions}
                  | {c for s in shapes.heldout_scenes(400) for c in s.captions})
    return split_captions(caps, 0.2)


def build_grammar(steps: int) -> None:
    from lib_clipcap.grammar import train_grammar_head

    clip = load_tiny_clip()
    train, held = grammar_split()
    print(f"grammar head: {len(train)} training captions, {len(held)} held-out captions")
    scorer, metrics = train_grammar_head(clip, train, val_captions=held, steps=steps, batch_size=128, hidden=128,
                                         lr=3e-3, finetune_text=True, text_lr=1e-3, seed=0, progress=print,
                                         log_every=100)
    scorer.save(GRAMMAR_DIR)
    print(f"wrote {GRAMMAR_DIR}: {metrics}")


def evaluate() -> None:
    from pycocoevalcap.bleu.bleu import Bleu

    from lib_clipcap.sbg import BlindGuesser

    sbg = BlindGuesser.from_files(GEN_DIR, clip_model=str(CLIP_CONFIG), clip_pretrained=str(CLIP_WEIGHTS),
                                  vocabulary="shapes", device="cpu", cache_dir=None)
    scenes = shapes.heldout_scenes(200)
    images = [s.render() for s in scenes]
    norm = lambda t: t.lower().replace(".", " .").strip()
    gts = {i: [norm(c) for c in s.captions] for i, s in enumerate(scenes)}
    for k in (1, 2, 5):
        res = sbg.caption(images, top_k_candidates=k, seed=0, batch_size=64)
        bleu, _ = Bleu(4).compute_score(gts, {i: [norm(r.text)] for i, r in enumerate(res)}, verbose=0)
        clip_s = sum(r.candidates[0].clip_score for r in res) / len(res)
        print(f"top-{k}: BLEU-1..4 {[round(b, 3) for b in bleu]}, mean CLIP-S {clip_s:.3f}")
    for s, r in list(zip(scenes, res))[:5]:
        print(f"  {s.captions[0]!r}: keywords {r.keywords} -> {r.text!r}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", choices=["all", "vocabulary", "generator", "grammar", "eval"], default="all")
    ap.add_argument("--train-size", type=int, default=8000)
    ap.add_argument("--generator-steps", type=int, default=2000)
    ap.add_argument("--grammar-steps", type=int, default=400)
    args = ap.parse_args()
    random.seed(0)
    st = args.stage
    if st in ("all", "vocabulary"):
        sys.path.insert(0, str(ROOT / "tools"))
        import build_vocabulary

        if build_vocabulary.main():
            raise SystemExit("vocabulary check failed")
    if st in ("all", "generator"):
        build_generator(args.train_size, args.generator_steps, 64)
    if st in ("all", "grammar"):
        build_grammar(args.grammar_steps)
    if st in ("all", "generator", "eval"):
        evaluate()


if __name__ == "__main__":
    main()
