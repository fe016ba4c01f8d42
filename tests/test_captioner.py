"""The bundled demo captioner end to end: quality, batches with bad inputs, options, the CLI."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from lib_clipcap import Captioner, UnknownModelError, shapes

ROOT = Path(__file__).resolve().parents[1]


def test_heldout_bleu4_of_the_demo_model(demo_captioner):
    """Greedy BLEU-4 >= 0.5 on 200 held-out shapes images, with pycocoevalcap's BLEU."""
    from pycocoevalcap.bleu.bleu import Bleu

    scenes = shapes.heldout_scenes(200)
    res = demo_captioner.caption([s.render() for s in scenes], batch_size=64)
    norm = lambda t: t.lower().replace(".", " .").strip()
    gts = {i: [norm(c) for c in s.captions] for i, s in enumerate(scenes)}
    out = {i: [norm(r.text)] for i, r in enumerate(res)}
    bleu, _ = Bleu(4).compute_score(gts, out, verbose=0)
    assert bleu[3] >= 0.5, bleu


def test_bad_inputs_fail_alone(demo_captioner, tmp_path):
    good = shapes.heldout_scenes(1)[0].render()
    zero = tmp_path / "empty.jpg"
    zero.write_bytes(b"")
    buf = io.BytesIO()
    good.save(buf, "PNG")
    truncated = buf.getvalue()[: len(buf.getvalue()) // 2]
    res = demo_captioner.caption([good, str(zero), truncated, str(tmp_path / "missing.png"), buf.getvalue()])
    assert [r.ok for r in res] == [True, False, False, False, True]
    assert "empty.jpg" in res[1].error and "missing.png" in res[3].error
    assert res[0].text == res[4].text  # PIL image and PNG bytes of the same picture agree
    assert res[0].text.endswith(".")


def test_accepts_paths_bytes_arrays_and_a_single_image(demo_captioner, tmp_path):
    import numpy as np

    img = shapes.heldout_scenes(2)[1].render()
    p = tmp_path / "x.png"
    img.save(p)
    one = demo_captioner.caption(img)
    assert len(one) == 1
    many = demo_captioner.caption([str(p), p, np.asarray(img)])
    assert {r.text for r in many} == {one[0].text}


def test_candidates_are_ranked_and_sampling_varies(demo_captioner):
    img = shapes.heldout_scenes(3)[2].render()
    beam = demo_captioner.caption(img, decoding="beam", beam_size=4, num_candidates=4)[0]
    assert len(beam.candidates) == 4 and beam.text == beam.candidates[0].text
    assert [c.score for c in beam.candidates] == sorted((c.score for c in beam.candidates), reverse=True)
    s1 = demo_captioner.caption(img, decoding="sample", num_candidates=5, temperature=3.0, seed=1)[0]
    s2 = demo_captioner.caption(img, decoding="sample", num_candidates=5, temperature=3.0, seed=1)[0]
    assert [c.text for c in s1.candidates] == [c.text for c in s2.candidates]
    assert len({c.text for c in s1.candidates}) > 1


def test_banned_words_are_avoided(demo_captioner):
    scene = next(s for s in shapes.heldout_scenes(50) if "background" in s.captions[0])
    res = demo_captioner.caption(scene.render(), banned_words=["background"], max_new_tokens=20)[0]
    assert "background" not in res.text


def test_unknown_model_lists_valid_names():
    with pytest.raises(UnknownModelError, match="shapes-demo"):
        Captioner.from_pretrained("no-such-model")


@pytest.mark.slow
def test_cli_caption_json(tmp_path):
    img = tmp_path / "a b ü.png"
    shapes.heldout_scenes(1)[0].render().save(img)
    (tmp_path / "notes.txt").write_text("not an image")
    r = subprocess.run([sys.executable, "-m", "lib_clipcap", "caption", str(tmp_path), "--model", "shapes-demo",
                        "--json"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert len(data) == 1 and data[0]["source"].endswith("a b ü.png") and data[0]["text"]


@pytest.mark.slow
def test_cli_falls_back_to_the_demo_model_offline(tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "CLIPCAP_MODELS_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-m", "lib_clipcap", "caption"], cwd=ROOT, capture_output=True, text=True,
                       env=env)
    assert r.returncode == 0, r.stderr
    assert "falling back to the bundled demo model" in r.stderr
    assert "flickr8k" in r.stderr  # names the real model and how to get it
    lines = [l for l in r.stdout.splitlines() if not l.startswith("\t")]
    assert len(lines) == 6 and all(l.split("\t")[1] for l in lines)


def test_cli_reports_a_missing_explicit_model_clearly(tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "CLIPCAP_MODELS_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-m", "lib_clipcap", "caption", "--model", "coco"], cwd=ROOT,
                       capture_output=True, text=True, env=env)
    assert r.returncode == 2
    assert "coco_weights.pt" in r.stderr and str(tmp_path) in r.stderr


def test_import_is_cheap():
    code = "import sys, lib_clipcap; print(sorted(m for m in ('torch','open_clip','transformers','huggingface_hub') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("package", ["lib_clipcap", "lib_clipcap.sbg", "lib_clipcap.eval", "lib_clipcap.review"])
def test_every_lazy_export_resolves_to_its_submodules_object(package):
    import importlib

    mod = importlib.import_module(package)
    for name in mod.__all__:
        value = getattr(mod, name)
        assert value is getattr(mod, name)  # cached in the package after the first access
        origin = getattr(value, "__module__", None)
        assert origin is None or origin.startswith("lib_clipcap"), (package, name)
    with pytest.raises(AttributeError, match=r"has no attribute 'no_such_name'"):
        getattr(mod, "no_such_name")


@pytest.mark.slow
def test_cli_sbg_and_rerank(tmp_path):
    img = tmp_path / "x.png"
    shapes.heldout_scenes(1)[0].render().save(img)
    env = {"HF_HUB_OFFLINE": "1", "CLIPCAP_MODELS_DIR": str(tmp_path / "m"), "PATH": "/usr/bin:/bin"}
    sbg = subprocess.run([sys.executable, "-m", "lib_clipcap", "caption", str(img), "--method", "sbg", "--model",
                          "shapes-sbg", "--num-candidates", "3", "--seed", "1", "--json"], cwd=ROOT,
                         capture_output=True, text=True, env=env)
    assert sbg.returncode == 0, sbg.stderr
    res = json.loads(sbg.stdout)[0]
    assert res["keywords"] and 1 <= len(res["candidates"]) <= 3  # identical samples are merged
    assert all(c["clip_score"] is not None for c in res["candidates"])
    rr = subprocess.run([sys.executable, "-m", "lib_clipcap", "caption", str(img), "--model", "shapes-demo",
                         "--decoding", "beam", "--num-candidates", "3", "--rerank", "clip", "--json"], cwd=ROOT,
                        capture_output=True, text=True, env=env)
    assert rr.returncode == 0, rr.stderr
    cands = json.loads(rr.stdout)[0]["candidates"]
    assert [c["clip_score"] for c in cands] == sorted((c["clip_score"] for c in cands), reverse=True)


def test_caption_in_batches_keeps_order_sources_and_failures(tmp_path):
    """The input loop Captioner and BlindGuesser share: failures in place, batches of loadable images only."""
    from lib_clipcap.results import CaptionResult, caption_in_batches
    from lib_clipcap.errors import ClipCapError

    imgs = [s.render() for s in shapes.heldout_scenes(4)]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    calls = []

    def batch(pil, start):
        calls.append((len(pil), start))
        return [CaptionResult(text=f"img {start + j}", score=0.0) for j in range(len(pil))]

    res = caption_in_batches([imgs[0], str(bad), imgs[1], imgs[2], imgs[3]], 2, batch)
    assert calls == [(2, 0), (2, 2)]  # start: position among the loadable inputs (a per-batch seed offset)
    assert [r.text for r in res] == ["img 0", "", "img 1", "img 2", "img 3"]
    assert not res[1].ok and "bad.png" in res[1].error and res[1].source.endswith("bad.png")
    assert all(r.source for r in res)
    assert [r.text for r in caption_in_batches(imgs[0], 8, batch)] == ["img 0"]  # one input, not a list
    with pytest.raises(ClipCapError, match="batch_size must be >= 1; got 0"):
        caption_in_batches(imgs, 0, batch)


def test_lazy_exports_resolve_once_and_name_unknown_attributes():
    import lib_clipcap
    import lib_clipcap.sbg

    assert lib_clipcap.Captioner is Captioner and "Captioner" in vars(lib_clipcap)  # cached after first access
    from lib_clipcap.sbg.guesser import BlindGuesser

    assert lib_clipcap.BlindGuesser is BlindGuesser and lib_clipcap.sbg.BlindGuesser is BlindGuesser
    for mod, name in ((lib_clipcap, "lib_clipcap"), (lib_clipcap.sbg, "lib_clipcap.sbg")):
        with pytest.raises(AttributeError, match=f"module '{name}' has no attribute 'nope'"):
            mod.nope  # noqa: B018


def test_result_json_carries_the_chosen_captions_clip_score():
    from lib_clipcap.results import Candidate, CaptionResult

    r = CaptionResult(text="b", score=-1.0, candidates=[Candidate("b", -1.0, 0.7, 0.9), Candidate("a", -0.5, 0.6)])
    assert r.chosen is r.candidates[0] and r.to_dict()["clip_score"] == 0.7
    assert CaptionResult(text="", score=None, error="x").to_dict()["clip_score"] is None


def test_each_batch_draws_its_own_samples_and_a_call_is_reproducible(demo_captioner):
    img = shapes.heldout_scenes(3)[2].render()
    kw = dict(decoding="sample", temperature=3.0, num_candidates=4, seed=11, batch_size=2, max_new_tokens=20)
    first = demo_captioner.caption([img] * 4, **kw)
    texts = [[c.text for c in r.candidates] for r in first]
    # positions 0 and 2 are the first row of two batches: with one seed for every batch they were identical
    assert texts[0] != texts[2]
    assert [[c.text for c in r.candidates] for r in demo_captioner.caption([img] * 4, **kw)] == texts


def test_inputs_are_decoded_one_batch_at_a_time(monkeypatch):
    from lib_clipcap import images as images_mod
    from lib_clipcap.results import CaptionResult, caption_in_batches

    events: list[str] = []
    real = images_mod.try_load_image

    def spy(src):
        events.append(f"load {src}")
        return real(Image.new("RGB", (8, 8))) if src != "bad" else (None, "not an image")

    monkeypatch.setattr(images_mod, "try_load_image", spy)

    def batch(imgs, start):
        events.append(f"caption {start}+{len(imgs)}")
        return [CaptionResult(text=str(start + i), score=0.0) for i in range(len(imgs))]

    out = caption_in_batches(["a", "b", "bad", "c", "d"], 2, batch)
    assert events == ["load a", "load b", "caption 0+2", "load bad", "load c", "load d", "caption 2+2"]
    assert [r.text for r in out] == ["0", "1", "", "2", "3"] and out[2].error == "not an image"


def test_the_grammar_head_is_state_of_the_captioner():
    import torch

    from lib_clipcap.scoring import attach_grammar

    cap = Captioner.from_pretrained("shapes-demo", device="cpu")  # its own copy: this test moves and unloads it
    assert cap.grammar is None
    img = shapes.heldout_scenes(1)[0].render()
    cap.caption(img, decoding="beam", num_candidates=3, rerank="clip+grammar")
    head = cap.grammar
    assert head is not None  # loaded on first use, kept
    cap.to(dtype=torch.float64)
    assert head.text_model is not None and next(head.text_model.parameters()).dtype == torch.float64
    cap.to(dtype=torch.float32)
    assert attach_grammar(cap, head, weight=2.0) is head and cap.grammar_weight == 2.0
    cap.unload()
    assert cap.grammar is None and cap.model is None
