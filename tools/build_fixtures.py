"""Build the tiny shapes-world models that the tests and the offline demo use, and write them into the package.

    python tools/build_fixtures.py            # all stages (about 5 minutes on 2 CPU cores)
    python tools/build_fixtures.py --stage clipcap

Outputs (committed; a few MB in all):
    lib_clipcap/assets/clip_configs/shapes-tiny.json   open_clip model config of the tiny CLIP
    lib_clipcap/assets/shapes/tokenizer.json           byte-level BPE trained on the captions (custom-tokenizer variant)
    lib_clipcap/assets/shapes/clip.safetensors         tiny CLIP weights (fp16)
    lib_clipcap/assets/shapes/clipcap.safetensors      tiny ClipCap (MLP mapper, prefix 4) + its .json config
    lib_clipcap/assets/samples/*.png|jpg               sample images for the demo

Deterministic: fixed seeds, single-threaded data generation.
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import torch
import torch.nn.functional as F

import _fixture_common as common  # first: puts the repository on sys.path
from _fixture_common import CLIP_CONFIG, load_tiny_clip
from lib_clipcap import shapes
from lib_clipcap.train.data import write_legacy_tokenizer_json

ASSETS = common.ASSETS
SHAPES_DIR = ASSETS / "shapes"
MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)

TINY_CLIP = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def render_batch(scenes: list[shapes.Scene]) -> torch.Tensor:
    arr = np.stack([np.asarray(s.render()) for s in scenes])  # [n, 64, 64, 3] uint8
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def to_pixels(u8: torch.Tensor) -> torch.Tensor:
    """The same transform open_clip's preprocessing applies to a 64x64 image: ToTensor + Normalize."""
    return (u8.float() / 255.0 - MEAN) / STD


def build_tokenizer(train: list[shapes.Scene]) -> None:
    from tokenizers import ByteLevelBPETokenizer

    corpus = sorted({c for s in train for c in s.captions})
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(corpus, vocab_size=320, min_frequency=1, special_tokens=["<|endoftext|>"],
                            show_progress=False)
    SHAPES_DIR.mkdir(parents=True, exist_ok=True)
    path = SHAPES_DIR / "tokenizer.json"
    tok.save(str(path))
    write_legacy_tokenizer_json(path)
    print(f"tokenizer: {tok.get_vocab_size()} tokens")


def build_clip(train: list[shapes.Scene], steps: int, batch: int) -> None:
    import open_clip
    from safetensors.torch import save_file

    CLIP_CONFIG.parent.mkdir(parents=True, exist_ok=True)
    CLIP_CONFIG.write_text(json.dumps(TINY_CLIP, indent=2) + "\n")
    open_clip.add_model_config(CLIP_CONFIG)
    torch.manual_seed(0)
    model = open_clip.create_model("shapes-tiny")
    tokenizer = open_clip.get_tokenizer("shapes-tiny")
    print(f"CLIP parameters: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M")
    images = render_batch(train)
    captions = [s.captions[0] for s in train]
    uniq = sorted(set(captions))
    cap_id = torch.tensor([uniq.index(c) for c in captions])
    text_tokens = tokenizer(uniq)

    def loss_at(step: int, g: torch.Generator) -> torch.Tensor:
        idx = torch.randint(len(train), (batch,), generator=g)
        ids = cap_id[idx]
        img_f = model.encode_image(to_pixels(images[idx]), normalize=True)
        txt_f = model.encode_text(text_tokens[ids], normalize=True)
        logits = model.logit_scale.exp() * img_f @ txt_f.t()
        # Identical captions in a batch are positives too (soft targets), not false negatives.
        same = (ids[:, None] == ids[None, :]).float()
        target = same / same.sum(1, keepdim=True)
        return (torch.sum(-target * logits.log_softmax(1), 1).mean()
                + torch.sum(-target * logits.t().log_softmax(1), 1).mean()) / 2

    def clamp_logit_scale() -> None:
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))

    common.train(model, steps, lr=2e-3, weight_decay=0.05, seed=0, name="clip", loss_at=loss_at,
                 after_step=clamp_logit_scale)
    sd = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(SHAPES_DIR / "clip.safetensors"))


def clip_accuracy(clip, scenes: list[shapes.Scene]) -> float:
    caps = sorted({s.captions[0] for s in scenes})
    tf = clip.encode_texts(caps)
    imf = clip.encode_images(to_pixels(render_batch(scenes)), normalize=True)
    pred = (imf @ tf.t()).argmax(1).tolist()
    return float(np.mean([caps[p] == s.captions[0] for p, s in zip(pred, scenes)]))


def build_clipcap(train: list[shapes.Scene], steps: int, batch: int) -> None:
    from lib_clipcap.checkpoint import save_checkpoint
    from lib_clipcap.gpt2 import GPT2Config
    from lib_clipcap.model import ClipCapConfig, ClipCapModel
    from lib_clipcap.tokenizer import Tokenizer

    clip = load_tiny_clip()
    tok = Tokenizer.from_path(SHAPES_DIR / "tokenizer.json")
    feats = torch.cat([clip.encode_images(to_pixels(render_batch(train[i : i + 512])))
                       for i in range(0, len(train), 512)])
    prefix_length = 4
    config = ClipCapConfig(
        mapping="mlp", prefix_length=prefix_length, prefix_size=clip.embed_dim,
        mlp_hidden=(64 * prefix_length // 2,), mapper_layers=2,
        gpt2=GPT2Config(vocab_size=tok.vocab_size, n_positions=64, n_embd=64, n_layer=2, n_head=2,
                        eos_token_id=tok.eos_token_id),
        has_gpt_weights=True, gpt2_base="gpt2", normalize=True,
        clip_model="shapes-tiny", clip_pretrained="bundled:assets/shapes/clip.safetensors",
        tokenizer="bundled:assets/shapes/tokenizer.json", stop_token=".",
    )
    torch.manual_seed(0)
    model = ClipCapModel(config)
    # Token sequences: caption + EOS; padding positions get label -100 (never a real token id).
    all_caps = [s.captions for s in train]
    max_len = 24
    def encode(texts):
        ids = torch.full((len(texts), max_len), tok.eos_token_id, dtype=torch.long)
        labels = torch.full((len(texts), max_len), -100, dtype=torch.long)
        for r, t in enumerate(tok.encode_batch(texts)):
            t = (t + [tok.eos_token_id])[:max_len]
            ids[r, : len(t)] = torch.tensor(t)
            labels[r, : len(t)] = torch.tensor(t)
        return ids, labels

    def loss_at(step: int, g: torch.Generator) -> torch.Tensor:
        idx = torch.randint(len(train), (batch,), generator=g).tolist()
        # The canonical caption 3 times in 4, so greedy decoding settles on it.
        texts = [all_caps[i][0] if (i + step) % 4 else all_caps[i][1] for i in idx]
        ids, labels = encode(texts)
        logits = model(ids, feats[idx])[:, prefix_length - 1 : -1]
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)

    common.train(model, steps, lr=3e-3, weight_decay=0.01, seed=1, name="clipcap", loss_at=loss_at, clip_grad=1.0)
    save_checkpoint(model, SHAPES_DIR / "clipcap.safetensors")


def evaluate() -> float:
    from pycocoevalcap.bleu.bleu import Bleu

    from lib_clipcap.captioner import Captioner

    cap = Captioner.from_checkpoint(
        SHAPES_DIR / "clipcap.safetensors", clip_model=str(CLIP_CONFIG),
        clip_pretrained=str(SHAPES_DIR / "clip.safetensors"), tokenizer=str(SHAPES_DIR / "tokenizer.json"),
        device="cpu",
    )
    scenes = shapes.heldout_scenes(200)
    res = cap.caption([s.render() for s in scenes], decoding="greedy", batch_size=64)
    norm = lambda t: t.lower().replace(".", " .").strip()
    gts = {i: [norm(c) for c in s.captions] for i, s in enumerate(scenes)}
    out = {i: [norm(r.text)] for i, r in enumerate(res)}
    bleu, _ = Bleu(4).compute_score(gts, out, verbose=0)
    print("held-out BLEU-1..4:", [round(b, 3) for b in bleu])
    for s, r in list(zip(scenes, res))[:5]:
        print(f"  {s.captions[0]!r} -> {r.text!r}")
    return bleu[3]


def write_samples() -> None:
    out = ASSETS / "samples"
    out.mkdir(parents=True, exist_ok=True)
    for i, scene in enumerate(shapes.make_scenes(3, 6)):
        img = scene.render(256)
        name = f"shapes_{i:02d}"
        (img.save(out / f"{name}.jpg", quality=92) if i % 2 else img.save(out / f"{name}.png"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", choices=["all", "tokenizer", "clip", "clipcap", "eval", "samples"], default="all")
    ap.add_argument("--train-size", type=int, default=20000)
    ap.add_argument("--clip-steps", type=int, default=1500)
    ap.add_argument("--clipcap-steps", type=int, default=2500)
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    train = shapes.make_scenes(shapes.TRAIN_SEED, args.train_size)
    st = args.stage
    if st in ("all", "tokenizer"):
        build_tokenizer(train)
    if st in ("all", "clip"):
        build_clip(train, args.clip_steps, 256)
        print(f"CLIP held-out caption retrieval accuracy: {clip_accuracy(load_tiny_clip(), shapes.heldout_scenes()):.3f}")
    if st in ("all", "clipcap"):
        build_clipcap(train, args.clipcap_steps, 128)
    if st in ("all", "clipcap", "eval"):
        evaluate()
    if st in ("all", "samples"):
        write_samples()


if __name__ == "__main__":
    main()
