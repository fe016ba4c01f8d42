"""Text encoding under each host's open_clip: A1111 pins open-clip-torch 2.20, whose tokenizer pads to 77 tokens
whatever the model config says; the bundled demo CLIP has a 32-token context, so CLIP-S, re-ranking, the grammar head
and caption review failed there on every text until the backbone bound the model's own length."""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parents[2] / "lib_clipcap" / "assets"


def test_tiny_clip_encodes_texts_under_this_open_clip():
    from lib_clipcap.clip import ClipBackbone
    from lib_clipcap.grammar import bundled_grammar_for

    clip = ClipBackbone.load(str(ASSETS / "clip_configs" / "shapes-tiny.json"),
                             str(ASSETS / "shapes" / "clip.safetensors"))
    assert clip.tokenizer(["a red circle."]).shape == (1, 32)
    assert clip.encode_texts(["a red circle.", "a blue square."]).shape == (2, clip.embed_dim)
    assert bundled_grammar_for(clip).probability(["a red circle on a white background."]).shape == (1,)
