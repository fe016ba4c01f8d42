"""Metric parity with direct pycocoevalcap calls, CLIP-S, FineCapEval criteria, tables and the eval command."""

from __future__ import annotations

import json

import pytest

from lib_clipcap.eval.metrics import (clip_metrics, compute_metrics, finecap_scores, java_path, simple_tokenize,
                                      spice_unavailable)
from lib_clipcap.eval.report import format_table

needs_java = pytest.mark.skipif(java_path() is None, reason="pycocoevalcap's PTB tokenizer and METEOR need Java")

REFS = {
    "a": ["A large red circle on a white background.", "There is a large red circle on a white background."],
    "b": ["A dog runs through the grass!", "a brown dog is running in a field"],
    "c": ["Two people ride bikes, down a hill.", "cyclists on a steep road", "Two men riding bicycles."],
    "d": ["A child in a pink dress climbs stairs.", "A little girl climbing into a wooden playhouse."],
}
CANDS = {"a": "a large red circle on a black background.", "b": "A dog running in the grass",
         "c": "two people riding bikes", "d": "a girl in a pink dress"}


@pytest.mark.slow
@needs_java
def test_parity_with_pycocoevalcap():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    ours = compute_metrics(REFS, CANDS, metrics=("bleu", "meteor", "rouge", "cider", "spice"))
    tok = PTBTokenizer()
    gts = tok.tokenize({k: [{"caption": c} for c in v] for k, v in REFS.items()})
    res = tok.tokenize({k: [{"caption": CANDS[k]}] for k in REFS})
    bleu, bleu_each = Bleu(4).compute_score(gts, res)
    meteor, meteor_each = Meteor().compute_score(gts, res)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, cider_each = Cider().compute_score(gts, res)
    expected = {"BLEU-1": bleu[0], "BLEU-2": bleu[1], "BLEU-3": bleu[2], "BLEU-4": bleu[3], "METEOR": meteor,
                "ROUGE-L": rouge, "CIDEr": cider}
    for k, v in expected.items():
        assert ours.scores[k] == pytest.approx(v, abs=1e-6), k
    assert ours.scores["METEOR"] > 0 and ours.scores["CIDEr"] > 0
    assert [ours.per_image[k]["BLEU-4"] for k in gts] == pytest.approx(bleu_each[3], abs=1e-6)
    assert [ours.per_image[k]["METEOR"] for k in gts] == pytest.approx(meteor_each, abs=1e-6)
    assert [ours.per_image[k]["CIDEr"] for k in gts] == pytest.approx(list(cider_each), abs=1e-6)
    if spice_unavailable():
        assert "SPICE" not in ours.scores and "CoreNLP" in ours.skipped["SPICE"] or "Java" in ours.skipped["SPICE"]


def test_inputs_are_checked():
    with pytest.raises(ValueError, match="same image ids"):
        compute_metrics(REFS, {"a": "x"}, metrics=("bleu",), tokenizer="simple")
    with pytest.raises(ValueError, match="unknown metric"):
        compute_metrics(REFS, CANDS, metrics=("bleurt",), tokenizer="simple")


def test_simple_tokenizer_needs_no_java():
    out = simple_tokenize({"x": ["A dog, running!  It's  here."]})
    assert out == {"x": ["a dog running it's here"]}
    r = compute_metrics(REFS, CANDS, metrics=("bleu", "rouge", "cider"), tokenizer="simple")
    assert r.tokenizer == "simple" and 0 < r.scores["BLEU-1"] <= 1


def test_clip_metrics_match_scoring(tiny_clip):
    from lib_clipcap import shapes
    from lib_clipcap.scoring import clip_score, ref_clip_score

    scenes = shapes.heldout_scenes(6)
    imgs = [s.render() for s in scenes]
    cands = [s.captions[0] for s in scenes[:3]] + [s.captions[0] for s in scenes[:3]]  # half of them wrong
    refs = [s.captions for s in scenes]
    m = clip_metrics(tiny_clip, imgs, cands, refs, prefix="")
    direct = clip_score(tiny_clip, imgs, cands)
    assert m.scores["CLIP-S"] == pytest.approx(float(direct.mean()), abs=1e-6)
    assert m.scores["RefCLIP-S"] == pytest.approx(float(ref_clip_score(tiny_clip, imgs, cands, refs).mean()), abs=1e-6)
    assert m.per_image["0"]["CLIP-S"] > m.per_image["3"]["CLIP-S"] or scenes[0].captions == scenes[3].captions


def test_finecap_criteria():
    crit = {"1": {"background": ["blue sky"], "object": ["red bike", "man"], "relation": []}}
    r = finecap_scores({"1": "a man rides a red bicycle under the sky"}, crit)
    assert r.scores["FineCap-background"] == pytest.approx(0.5)  # "sky" found, "blue" not
    assert r.scores["FineCap-object"] == pytest.approx((0.5 + 1.0) / 2)
    assert r.scores["FineCap-relation"] == 0.0


def test_table_styles():
    row = {"name": "ours", "dataset": "flickr8k", "split": "test", "images": 1000, "tokenizer": "ptb",
           "scores": {"BLEU-1": 0.698, "BLEU-2": 0.508, "BLEU-3": 0.363, "BLEU-4": 0.259, "METEOR": 0.257,
                      "ROUGE-L": 0.565, "CIDEr": 1.0835},
           "skipped": {"SPICE": "no CoreNLP"}}
    text = format_table([row], style="flickr")
    assert "ours    0.698   0.508   0.363   0.259   0.257    0.565" in text
    md = format_table([row], style="coco", markdown=True)
    assert "| ours | 25.90 | 25.70 | 56.50 | 108.35 | - |" in md and "SPICE skipped: no CoreNLP" in md
    with pytest.raises(ValueError, match="unknown table style"):
        format_table([row], style="nope")


@needs_java
def test_eval_command_on_shapes_jsonl(tmp_path, capsys):
    from lib_clipcap import shapes
    from lib_clipcap.app.cli import main
    from lib_clipcap.eval.datasets import EvalItem, write_jsonl

    items = []
    (tmp_path / "img").mkdir()
    for i, s in enumerate(shapes.heldout_scenes(12)):
        p = tmp_path / "img" / f"{i}.png"
        s.render().save(p)
        items.append(EvalItem(str(i), p, s.captions))
    items.append(EvalItem("bad", tmp_path / "img" / "missing.png", ["a red circle."]))
    write_jsonl(tmp_path / "references.jsonl", items)
    out = tmp_path / "res.json"
    rc = main(["eval", str(tmp_path / "references.jsonl"), "--model", "shapes-demo", "--device", "cpu",
               "--metrics", "bleu,rouge,cider,clip", "--style", "all", "--json", str(out), "--no-progress",
               "--markdown", str(tmp_path / "t.md")])
    text = capsys.readouterr().out
    assert rc == 1  # one image is missing: reported, scored as an empty caption
    assert "shapes-demo" in text and "BLEU-4" in text and "CLIP-S" in text
    data = json.loads(out.read_text())
    assert data["images"] == 13 and data["failed"] == 1
    assert data["scores"]["BLEU-4"] > 0.5 and data["scores"]["CLIP-S"] > 0.5
    row = data["per_image"][0]
    assert row["caption"] and row["references"] == items[0].references and "BLEU-4" in row["scores"]
    assert "error" in data["per_image"][-1]
    assert (tmp_path / "t.md").read_text().startswith("**references")
    rc = main(["eval", "--from-json", str(out), "--style", "flickr"])
    assert rc == 0 and "shapes-demo" in capsys.readouterr().out


def test_eval_help_is_cheap():
    import subprocess
    import sys

    code = ("import sys, lib_clipcap.eval.cli as c, argparse; p = argparse.ArgumentParser(); c.add_arguments(p); "
            "print('torch' in sys.modules, 'pycocoevalcap' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
