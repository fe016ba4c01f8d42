"""Every published checkpoint layout loads, with its architecture read from tensor names and shapes.

The checkpoints here are small but use the real key names and file formats of the originals: rmokady's MLP and
transformer ClipCap (`.pt` state dicts), Anshler's Flickr files, HF-format GPT-2 folders, and our safetensors+JSON.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lib_clipcap import CheckpointError, IncompatibleCheckpointError, inspect_checkpoint
from lib_clipcap.captioner import Captioner
from lib_clipcap.checkpoint import convert_checkpoint, read_state_dict, save_checkpoint
from lib_clipcap.gpt2 import GPT2Config
from lib_clipcap.model import ClipCapConfig, ClipCapModel

ROOT = Path(__file__).resolve().parents[1]
CLIP_CFG = str(ROOT / "lib_clipcap/assets/clip_configs/shapes-tiny.json")
CLIP_W = str(ROOT / "lib_clipcap/assets/shapes/clip.safetensors")
TOKENIZER = str(ROOT / "lib_clipcap/assets/shapes/tokenizer.json")
GPT = GPT2Config(vocab_size=320, n_positions=64, n_embd=64, n_layer=3, n_head=1, eos_token_id=0)


def hf_style_state_dict(model: ClipCapModel) -> dict[str, torch.Tensor]:
    """What torch.save(model.state_dict()) gave in the original repos (old transformers kept attention buffers)."""
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    for i in range(model.config.gpt2.n_layer):
        n = model.config.gpt2.n_positions
        sd[f"gpt.transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(n, n)).view(1, 1, n, n)
        sd[f"gpt.transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    return sd


def write_pt(tmp_path: Path, name: str, cfg: ClipCapConfig, *, with_gpt: bool = True) -> Path:
    torch.manual_seed(0)
    sd = hf_style_state_dict(ClipCapModel(cfg))
    if not with_gpt:
        sd = {k: v for k, v in sd.items() if not k.startswith("gpt.")}
    path = tmp_path / name
    torch.save(sd, path)
    return path


def hf_gpt2_folder(tmp_path: Path) -> Path:
    """A GPT-2 base in the real Hugging Face layout, written by transformers itself."""
    transformers = pytest.importorskip("transformers")
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=GPT.vocab_size, n_positions=GPT.n_positions, n_embd=GPT.n_embd, n_layer=GPT.n_layer,
        n_head=GPT.n_head, bos_token_id=0, eos_token_id=0))
    folder = tmp_path / "gpt2-base"
    model.save_pretrained(folder)
    return folder


MLP = ClipCapConfig(mapping="mlp", prefix_length=5, prefix_size=64, mlp_hidden=(160,), gpt2=GPT)
TRANSFORMER = ClipCapConfig(mapping="transformer", prefix_length=6, clip_length=3, prefix_size=64, mapper_layers=2,
                            mlp_hidden=(), gpt2=GPT)


def test_original_mlp_layout_is_inferred(tmp_path):
    cfg = inspect_checkpoint(write_pt(tmp_path, "coco_weights.pt", MLP))
    assert cfg.summary() | {} == cfg.summary()
    s = cfg.summary()
    assert (s["mapping"], s["prefix_length"], s["prefix_size"], s["mapper_layers"]) == ("mlp", 5, 64, 2)
    assert (s["gpt2_layers"], s["gpt2_width"], s["has_gpt_weights"], s["clip_length"]) == (3, 64, True, None)


def test_deeper_mlp_is_inferred(tmp_path):
    cfg = MLP.replace(mlp_hidden=(96, 128), mapper_layers=3)
    s = inspect_checkpoint(write_pt(tmp_path, "deep.pt", cfg)).summary()
    assert s["mapper_layers"] == 3 and s["prefix_length"] == 5


def test_transformer_layout_without_gpt_uses_the_base(tmp_path):
    path = write_pt(tmp_path, "transformer_weights.pt", TRANSFORMER, with_gpt=False)
    s = inspect_checkpoint(path).summary()
    assert (s["mapping"], s["prefix_length"], s["clip_length"], s["mapper_layers"], s["has_gpt_weights"]) == \
        ("transformer", 6, 3, 2, False)
    cap = Captioner.from_checkpoint(path, clip_model=CLIP_CFG, clip_pretrained=CLIP_W, tokenizer=TOKENIZER,
                                    gpt2=str(hf_gpt2_folder(tmp_path)), device="cpu")
    assert cap.config.gpt2.n_layer == 3
    res = cap.caption([torch.zeros(64, 64, 3, dtype=torch.uint8).numpy()], decoding="greedy", max_new_tokens=5)
    assert res[0].ok and len(res[0].candidates) == 1


@pytest.mark.parametrize("layout", ["mlp", "transformer"])
def test_layouts_caption_end_to_end(tmp_path, layout):
    cfg = MLP if layout == "mlp" else TRANSFORMER
    path = write_pt(tmp_path, f"{layout}.pt", cfg)
    cap = Captioner.from_checkpoint(path, clip_model=CLIP_CFG, clip_pretrained=CLIP_W, tokenizer=TOKENIZER,
                                    device="cpu")
    res = cap.caption([torch.zeros(64, 64, 3, dtype=torch.uint8).numpy()] * 2, decoding="beam", beam_size=3,
                      num_candidates=3, max_new_tokens=6)
    assert all(r.ok and len(r.candidates) == 3 for r in res)


def test_anshler_flickr_layout(tmp_path):
    """Anshler's files: full MLP ClipCap, 768-d ViT-L/14 features, prefix 10, GPT-2 small shapes (sliced here)."""
    gpt = GPT2Config(vocab_size=50257, n_positions=64, n_embd=768, n_layer=1, n_head=12)
    cfg = ClipCapConfig(mapping="mlp", prefix_length=10, prefix_size=768, mlp_hidden=(768 * 10 // 2,), gpt2=gpt)
    s = inspect_checkpoint(write_pt(tmp_path, "flickr8k.pt", cfg)).summary()
    assert (s["prefix_size"], s["prefix_length"], s["gpt2_width"], s["gpt2_vocab_size"]) == (768, 10, 768, 50257)


def test_feature_size_mismatch_names_both_sizes(tmp_path):
    cfg = MLP.replace(prefix_size=512)
    path = write_pt(tmp_path, "coco_weights.pt", cfg)
    with pytest.raises(IncompatibleCheckpointError, match=r"512-d.*64-d"):
        Captioner.from_checkpoint(path, clip_model=CLIP_CFG, clip_pretrained=CLIP_W, tokenizer=TOKENIZER)


def test_pickled_code_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"clip_project.model.0.weight": Evil()}, f)
    with pytest.raises(CheckpointError, match="weights_only"):
        read_state_dict(path)
    assert not marker.exists()


def test_not_a_clipcap_checkpoint(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"encoder.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(CheckpointError, match="not a ClipCap checkpoint.*encoder.weight"):
        inspect_checkpoint(path)


def test_wrapped_and_ddp_state_dicts(tmp_path):
    torch.manual_seed(0)
    sd = {"module." + k: v for k, v in ClipCapModel(MLP).state_dict().items()}
    path = tmp_path / "wrapped.pt"
    torch.save({"state_dict": sd, "epoch": 3}, path)
    assert inspect_checkpoint(path).prefix_length == 5


def test_convert_roundtrip_gives_identical_captions(tmp_path):
    src = write_pt(tmp_path, "orig.pt", MLP)
    convert_checkpoint(src, tmp_path / "conv.safetensors", overrides={"normalize": True})
    saved = json.loads((tmp_path / "conv.json").read_text())
    assert saved["normalize"] is True and saved["mapping"] == "mlp"
    kw = dict(clip_model=CLIP_CFG, clip_pretrained=CLIP_W, tokenizer=TOKENIZER, device="cpu")
    img = [torch.full((64, 64, 3), 200, dtype=torch.uint8).numpy()]
    a = Captioner.from_checkpoint(src, normalize=True, **kw).caption(img, decoding="beam", max_new_tokens=8)
    b = Captioner.from_checkpoint(tmp_path / "conv.safetensors", **kw).caption(img, decoding="beam", max_new_tokens=8)
    assert [c.text for c in a[0].candidates] == [c.text for c in b[0].candidates]


def test_saved_config_keeps_what_weights_cannot_show(tmp_path):
    cfg = MLP.replace(gpt2=GPT2Config(**{**GPT.to_dict(), "n_head": 4}), normalize=True, stop_token="!")
    torch.manual_seed(0)
    path = save_checkpoint(ClipCapModel(cfg), tmp_path / "m.safetensors")
    got = inspect_checkpoint(path)
    assert got.gpt2.n_head == 4 and got.normalize and got.stop_token == "!"


@pytest.mark.slow
def test_inspect_cli_json(tmp_path):
    path = write_pt(tmp_path, "transformer.pt", TRANSFORMER)
    out = subprocess.run([sys.executable, "-m", "lib_clipcap", "inspect", str(path), "--json"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    data = json.loads(out)
    for key in ("mapping", "prefix_length", "clip_length", "prefix_size", "mapper_layers", "gpt2_layers",
                "gpt2_width", "has_gpt_weights"):
        assert key in data
    assert data["mapping"] == "transformer" and data["clip_length"] == 3
    # the weights cannot show normalisation: inspect says so, and what loading will do and why
    assert data["normalize"] == "unknown" and data["normalize_default"] is True
    assert "original ClipCap" in data["normalize_decided_by"]


@pytest.mark.parametrize("cfg, expected", [("transformer", True), ("mlp768", True), ("mlp512", False)])
def test_normalisation_follows_the_publishers_code_when_the_file_does_not_say(tmp_path, cfg, expected):
    from lib_clipcap.checkpoint import inspect_summary

    config = {"transformer": TRANSFORMER, "mlp768": MLP.replace(prefix_size=768), "mlp512": MLP}[cfg]
    path = write_pt(tmp_path, f"{cfg}.pt", config)
    assert inspect_checkpoint(path).normalize is expected
    summary = inspect_summary(path)
    assert summary["normalize"] == "unknown" and summary["normalize_default"] is expected
    assert summary["normalize_decided_by"].startswith("unknown from the weights")


def test_a_saved_or_given_normalisation_wins_over_the_layout(tmp_path):
    from lib_clipcap.checkpoint import inspect_summary, load_config

    path = save_checkpoint(ClipCapModel(TRANSFORMER.replace(normalize=False)), tmp_path / "t.safetensors")
    summary = inspect_summary(path)
    assert summary["normalize"] is False and summary["normalize_decided_by"] == "saved with the checkpoint"
    raw = write_pt(tmp_path, "raw.pt", TRANSFORMER)
    assert load_config(raw, overrides={"normalize": False})[0].normalize is False
