"""The transformers CLIP backbone (lib_clipcap.clip_transformers) answers as the open_clip one: same tokens, same
preprocessing, same features for the same weights (fp32, atol 1e-4), same captions; and the automatic choice takes it
where open_clip is missing or too old (Forge Classic's 1.3.0)."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from lib_clipcap import clip as clip_mod
from lib_clipcap.clip import BACKEND_ENV, ClipBackbone, clip_backend
from lib_clipcap.clip_bpe import BUNDLED_VOCAB, VOCAB_SHA256, ClipBpeTokenizer, vocabulary_path
from lib_clipcap.clip_transformers import (OPEN_CLIP_CONFIGS, TransformersClip, TransformersClipBackbone,
                                           hf_clip_config, hf_state_dict_from_open_clip, open_clip_model_config,
                                           open_clip_state_dict_from_hf)
from lib_clipcap.errors import ClipCapError, IncompatibleCheckpointError, MissingFileError

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "lib_clipcap" / "assets"
TINY_CFG = str(ASSETS / "clip_configs" / "shapes-tiny.json")
TINY_WEIGHTS = str(ASSETS / "shapes" / "clip.safetensors")
ATOL = 1e-4  # fp32 features; measured differences are ~1e-6 (float rounding of two attention implementations)

TEXTS = ["a red circle.", "Two BLUE squares &amp;amp; a   triangle!!", "  tabs\tand\nnewlines  ", "",
         "don't they'll we've I'm", "naïve café, Ünïcödé ÆØÅ 東京 🙂🚀", "mojibake: cafÃ©", "1234567890 3.14",
         "<start_of_text> inside <end_of_text> text", "hyphen-ated, under_score and CamelCase",
         " ".join(["a long caption that goes on"] * 20)]


def _open_clip_ok() -> bool:
    return clip_backend("auto")[0] == "open_clip"


needs_open_clip = pytest.mark.skipif(not _open_clip_ok(), reason="needs open_clip >= 2.20 as the reference")


def _samples() -> list[Image.Image]:
    imgs = [Image.open(p) for p in sorted((ASSETS / "samples").iterdir())]
    # odd sizes and modes: the eval transform resizes the shortest side, crops the centre and converts to RGB
    imgs += [imgs[0].resize((97, 61)), imgs[1].convert("L").resize((50, 130)), imgs[2].convert("RGBA")]
    return imgs


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


# ------------------------------------------------------------------------------------------------------ tokens
def test_bundled_vocabulary_is_openais():
    import hashlib

    assert hashlib.sha256(BUNDLED_VOCAB.read_bytes()).hexdigest() == VOCAB_SHA256
    assert (BUNDLED_VOCAB.parent / "README.md").is_file()  # provenance and OpenAI's MIT licence


@needs_open_clip
@pytest.mark.parametrize("context_length", [77, 32, 8])
def test_tokens_equal_open_clips(context_length):
    import open_clip
    from open_clip.tokenizer import SimpleTokenizer

    ref = SimpleTokenizer()
    tokenize = ref if callable(ref) else open_clip.tokenize  # open_clip 2.20 (A1111's): a module function
    ours = ClipBpeTokenizer(context_length)
    assert torch.equal(ours(TEXTS), tokenize(TEXTS, context_length=context_length))
    assert [ours.encode(t) for t in TEXTS] == [ref.encode(t) for t in TEXTS]
    assert ours.decode(ours.encode("a red circle.")) == ref.decode(ref.encode("a red circle."))
    long = ours([TEXTS[-1]])[0]
    assert long[-1] == ours.eot_token_id  # truncation keeps the end-of-text token, as open_clip >= 2


def test_tokens_without_open_clip_use_the_bundled_vocabulary(monkeypatch):
    expected = ClipBpeTokenizer(77)(TEXTS)
    monkeypatch.setitem(sys.modules, "open_clip", None)  # hidden: find_spec answers None
    assert vocabulary_path() == BUNDLED_VOCAB
    tok = ClipBpeTokenizer(77)
    assert tok.vocab_path == BUNDLED_VOCAB
    assert torch.equal(tok(TEXTS), expected)


def test_tokenizer_and_preprocess_pickle():
    clip = TransformersClipBackbone.load(TINY_CFG, TINY_WEIGHTS)
    tok = pickle.loads(pickle.dumps(clip.tokenizer))
    assert torch.equal(tok(TEXTS), clip.tokenizer(TEXTS))
    pre = pickle.loads(pickle.dumps(clip.preprocess))  # the batch loader sends it to worker processes
    im = _samples()[0]
    assert torch.equal(pre(im), clip.preprocess(im))


# ---------------------------------------------------------------------------------------------------- features
def _compare(ref: ClipBackbone, ours: TransformersClipBackbone) -> dict[str, float]:
    imgs = _samples()
    pix_ref = ref.preprocess_images(imgs)
    pix = ours.preprocess_images(imgs)
    assert torch.equal(ours.tokenizer(TEXTS), ref.tokenizer(TEXTS))
    out = {"pixels": _max_diff(pix, pix_ref),
           "images": _max_diff(ours.encode_images(pix_ref), ref.encode_images(pix_ref)),
           "texts": _max_diff(ours.encode_texts(TEXTS, normalize=False), ref.encode_texts(TEXTS, normalize=False)),
           "scale": float(ref.encode_images(pix_ref).abs().max())}
    assert out["pixels"] <= 1e-6, out
    assert out["images"] <= ATOL and out["texts"] <= ATOL, out
    assert ours.embed_dim == ref.embed_dim and ours.model.context_length == ref.tokenizer(["x"]).shape[1]
    print(f"max |diff| {ours.name}: {out}")
    return out


@needs_open_clip
def test_demo_clip_features_equal_open_clips():
    ref = ClipBackbone.load(TINY_CFG, TINY_WEIGHTS, backend="open_clip")
    ours = ClipBackbone.load(TINY_CFG, TINY_WEIGHTS, backend="transformers")
    assert isinstance(ours, TransformersClipBackbone) and ours.backend == "transformers"
    assert (ours.name, ours.pretrained) == (ref.name, ref.pretrained)
    _compare(ref, ours)


def _vit_b32_shaped(tmp_path: Path, quick_gelu: bool) -> str:
    """A small config with ViT-B-32's shape rules (patch 32, 64-wide heads, text heads = width / 64, 77 tokens)."""
    cfg = {"embed_dim": 96, "quick_gelu": quick_gelu,
           "vision_cfg": {"image_size": 96, "layers": 2, "width": 128, "patch_size": 32},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 2}}
    path = tmp_path / f"vit-b32-small{'-quickgelu' if quick_gelu else ''}.json"
    path.write_text(json.dumps(cfg))
    return str(path)


@needs_open_clip
@pytest.mark.parametrize("quick_gelu", [False, True])
def test_random_vit_b32_shaped_features_equal_open_clips(tmp_path, quick_gelu):
    from safetensors.torch import save_file

    cfg = _vit_b32_shaped(tmp_path, quick_gelu)
    torch.manual_seed(0)
    ref = ClipBackbone.load(cfg, None, backend="open_clip")  # random weights ...
    with torch.no_grad():  # ... made less uniform than open_clip's init (zero biases, unit norms)
        for p in ref.model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    weights = tmp_path / "clip.safetensors"
    save_file({k: v.contiguous() for k, v in ref.model.state_dict().items()}, str(weights))
    ref = ClipBackbone.load(cfg, str(weights), backend="open_clip")
    ours = ClipBackbone.load(cfg, str(weights), backend="transformers")
    assert ours.model.text_model.config.hidden_act == ("quick_gelu" if quick_gelu else "gelu")
    _compare(ref, ours)

    # the same weights already in transformers' layout load as well
    hf, unknown = hf_state_dict_from_open_clip(ref.model.state_dict())
    assert unknown == []
    hf_file = tmp_path / "hf_clip.safetensors"
    save_file({k: v.contiguous() for k, v in hf.items()}, str(hf_file))
    again = TransformersClipBackbone.load(cfg, str(hf_file))
    pix = again.preprocess_images(_samples()[:2])
    assert _max_diff(again.encode_images(pix), ours.encode_images(pix)) == 0.0
    assert open_clip_state_dict_from_hf(hf).keys() == ref.model.state_dict().keys()


@needs_open_clip
def test_named_configs_are_open_clips_and_convert_key_for_key():
    """The bundled name table equals the installed open_clip's model configs, and ViT-B-32's full-size open_clip
    state dict converts to exactly transformers' keys and shapes (built on the meta device: no memory, no time)."""
    import open_clip
    from transformers import CLIPModel

    folder = Path(open_clip.__file__).parent / "model_configs"
    for name, cfg in OPEN_CLIP_CONFIGS.items():
        theirs = json.loads((folder / f"{name}.json").read_text())
        assert cfg == theirs, name
    assert open_clip_model_config("ViT-B-32-quickgelu")[1]["quick_gelu"] is True
    hf_cfg = hf_clip_config(open_clip_model_config("ViT-L-14")[1])
    assert (hf_cfg.vision_config.num_attention_heads, hf_cfg.text_config.num_attention_heads) == (16, 12)
    with torch.device("meta"):
        oc = open_clip.create_model("ViT-B-32", device="meta")
        hf = CLIPModel(hf_clip_config(open_clip_model_config("ViT-B-32")[1]))
    converted, unknown = hf_state_dict_from_open_clip(oc.state_dict())
    want = {k: tuple(v.shape) for k, v in hf.state_dict().items() if not k.endswith("position_ids")}
    assert unknown == [] and {k: tuple(v.shape) for k, v in converted.items()} == want


# ------------------------------------------------------------------------------------------------------ errors
def test_weights_must_fit_strictly(tmp_path):
    from safetensors.torch import load_file, save_file

    sd = load_file(TINY_WEIGHTS)
    cases = {"missing": {k: v for k, v in sd.items() if k != "ln_final.bias"},
             "unexpected": {**sd, "visual.extra": torch.zeros(1)},
             "shape": {**sd, "text_projection": torch.zeros(32, 65)}}
    for what, bad in cases.items():
        path = tmp_path / f"{what}.safetensors"
        save_file(bad, str(path))
        with pytest.raises(IncompatibleCheckpointError, match=str(path)):
            TransformersClipBackbone.load(TINY_CFG, str(path))


def test_tags_and_missing_files_are_missing_file_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingFileError, match="downloads only ViT-B-32/openai.*local weights file"):
        TransformersClipBackbone.load("ViT-B-32", "laion2b_s34b_b79k", why="open-clip-torch 1.3.0 is older than 2.20")
    # the registry's tag: fetched as open_clip fetches it; offline, the error says from where and to where
    with pytest.raises(MissingFileError, match="timm/vit_large_patch14_clip_224.openai.*timm__vit_large_patch14"):
        TransformersClipBackbone.load("ViT-L-14", "openai", cache_dir=tmp_path)
    with pytest.raises(MissingFileError, match="not found"):
        TransformersClipBackbone.load(TINY_CFG, str(tmp_path / "nope.safetensors"))


@needs_open_clip
def test_the_openai_tag_is_fetched_from_open_clips_hub_copy_and_runs_with_quick_gelu(tmp_path, monkeypatch):
    """``pretrained="openai"`` (the registry's published models): the weights open_clip itself downloads (timm's Hub
    copy, safetensors first, else the .bin), in the models folder's hub layout, built with QuickGELU as open_clip
    builds OpenAI's weights; a file already there is used without any network."""
    import huggingface_hub
    from safetensors.torch import save_file

    import lib_clipcap.clip_transformers as ct
    from lib_clipcap import hub

    cfg = _vit_b32_shaped(tmp_path, quick_gelu=False)  # the config says GELU: the tag must switch it
    torch.manual_seed(1)
    (tmp_path / "q").mkdir()
    quick_cfg = _vit_b32_shaped(tmp_path / "q", quick_gelu=True)  # the reference: open_clip told QuickGELU
    ref = ClipBackbone.load(quick_cfg, None, backend="open_clip")
    with torch.no_grad():
        for p in ref.model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    weights = {k: v.contiguous() for k, v in ref.model.state_dict().items()}
    monkeypatch.setitem(ct.OPENAI_HUB_REPOS, Path(cfg).stem, "timm/small.openai")
    calls = []

    def fake_download(repo_id, filename, revision, local_dir, **kw):  # the repository has only the .bin
        calls.append(filename)
        if filename.endswith(".safetensors"):
            raise FileNotFoundError(f"{repo_id} has no {filename}")
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.save(weights, target)
        return str(target)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "_hub_unreachable", lambda *a, **k: None)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    ours = TransformersClipBackbone.load(cfg, "openai", cache_dir=tmp_path / "models")
    assert calls == ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    assert (tmp_path / "models" / "timm__small.openai" / "open_clip_pytorch_model.bin").is_file()
    assert ours.model.text_model.config.hidden_act == "quick_gelu"
    ref_file = tmp_path / "ref.safetensors"
    save_file(weights, str(ref_file))
    _compare(ClipBackbone.load(quick_cfg, str(ref_file), backend="open_clip"), ours)
    # a file already in the folder (downloaded before, or copied in by hand) is used as it is: no network
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda **kw: pytest.fail("downloaded again"))
    again = TransformersClipBackbone.load(cfg, "openai", cache_dir=tmp_path / "models")
    pix = again.preprocess_images(_samples()[:1])
    assert _max_diff(again.encode_images(pix), ours.encode_images(pix)) == 0.0


def test_towers_transformers_lacks_are_refused(tmp_path):
    rn = {"embed_dim": 640, "vision_cfg": {"image_size": 288, "layers": [4, 6, 10, 6], "width": 80},
          "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 640, "heads": 10, "layers": 12}}
    path = tmp_path / "RN50x4.json"
    path.write_text(json.dumps(rn))
    with pytest.raises(ClipCapError, match="ResNet"):
        TransformersClipBackbone.load(str(path), None)
    with pytest.raises(ClipCapError, match="unknown CLIP model"):
        TransformersClipBackbone.load("no-such-clip", None)


# ----------------------------------------------------------------------------------------------- backend choice
def test_auto_takes_transformers_without_a_usable_open_clip(monkeypatch):
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    monkeypatch.setattr(clip_mod, "open_clip_version", lambda: "1.3.0")  # Forge Classic's pin
    assert clip_backend() == ("transformers", "open-clip-torch 1.3.0 is older than 2.20")
    assert isinstance(ClipBackbone.load(TINY_CFG, TINY_WEIGHTS), TransformersClipBackbone)
    monkeypatch.setattr(clip_mod, "open_clip_version", lambda: "2.20.0")
    monkeypatch.setattr(clip_mod, "_open_clip_import_error", lambda v: "ImportError: broken")
    assert clip_backend()[0] == "transformers"
    monkeypatch.undo()
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    monkeypatch.setitem(sys.modules, "open_clip", None)  # not installed at all
    assert clip_backend() == ("transformers", "open_clip is not installed")
    clip = ClipBackbone.load(TINY_CFG, TINY_WEIGHTS)
    assert isinstance(clip, TransformersClipBackbone) and clip.tokenizer.vocab_path == BUNDLED_VOCAB


@needs_open_clip
def test_auto_keeps_a_current_open_clip_and_the_env_var_forces(monkeypatch):
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    assert clip_backend()[0] == "open_clip"
    monkeypatch.setattr(clip_mod, "open_clip_version", lambda: "2.20.0")
    assert clip_backend()[0] == "open_clip"
    monkeypatch.setenv(BACKEND_ENV, "transformers")
    assert clip_backend() == ("transformers", f"{BACKEND_ENV}=transformers")
    monkeypatch.setenv(BACKEND_ENV, "open-clip")
    assert clip_backend()[0] == "open_clip"
    monkeypatch.setenv(BACKEND_ENV, "tensorflow")
    with pytest.raises(ClipCapError, match="unknown CLIP backend"):
        clip_backend()


# ------------------------------------------------------------------------------------------ the library on top
@needs_open_clip
def test_captioner_captions_alike_with_either_backend(monkeypatch):
    from lib_clipcap import Captioner

    images = sorted((ASSETS / "samples").iterdir())
    runs = {}
    for backend in ("open_clip", "transformers"):
        monkeypatch.setenv(BACKEND_ENV, backend)
        cap = Captioner.from_pretrained("shapes-demo", device="cpu")
        assert cap.clip.backend == backend
        runs[backend] = [[(r.text, [round(c.score, 4) for c in r.candidates]) for r in cap.caption(images, **opts)]
                         for opts in ({"decoding": "greedy"}, {"decoding": "beam", "num_candidates": 3})]
    assert runs["open_clip"] == runs["transformers"]
    assert all(text for mode in runs["transformers"] for text, _ in mode)


@needs_open_clip
def test_bundled_grammar_head_reads_alike_and_saves_in_open_clips_layout(tmp_path):
    from safetensors.torch import load_file

    from lib_clipcap.grammar import GrammarScorer, bundled_grammar_for

    ref_clip = ClipBackbone.load(TINY_CFG, TINY_WEIGHTS, backend="open_clip")
    ours_clip = ClipBackbone.load(TINY_CFG, TINY_WEIGHTS, backend="transformers")
    ref, ours = bundled_grammar_for(ref_clip), bundled_grammar_for(ours_clip)
    assert isinstance(ours.text_model, TransformersClip) and ours.text_model.visual is None  # fine-tuned text copy
    texts = ["a red circle.", "circle red a a.", "two blue squares."]
    assert _max_diff(ours.probability(texts), ref.probability(texts)) <= ATOL
    ours.save(tmp_path / "g")
    saved = load_file(str(tmp_path / "g" / "grammar.safetensors"))
    bundled = load_file(str(ASSETS / "sbg" / "grammar" / "grammar.safetensors"))
    assert saved.keys() == bundled.keys()  # open_clip's names: the head loads under either backbone
    again = GrammarScorer.load(tmp_path / "g", ref_clip)
    assert _max_diff(again.probability(texts), ref.probability(texts)) <= 1e-3  # saved in fp16


def test_text_tower_names_round_trip():
    from safetensors.torch import load_file

    sd = {k: v for k, v in load_file(TINY_WEIGHTS).items() if not k.startswith("visual.")}
    own = TransformersClip.state_dict_from_open_clip(sd)
    clip = TransformersClipBackbone.load(TINY_CFG, TINY_WEIGHTS)
    assert set(own) <= set(dict(clip.model.named_parameters()))
    back = TransformersClip.state_dict_to_open_clip(own)
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)
