"""The CLIP-S grammar head: negatives, the fixture head's held-out accuracy, persistence, and grammar re-ranking."""

from __future__ import annotations

import functools
import random

import pytest
import torch

from lib_clipcap import scoring, shapes
from lib_clipcap.results import Candidate, CaptionResult
from lib_clipcap.grammar import CORRUPTIONS, GrammarScorer, corrupt, evaluate_grammar, make_negatives
from lib_clipcap.registry import package_path
from lib_clipcap.train.grammar import split_captions

GRAMMAR_DIR = package_path("bundled:assets/sbg/grammar")


@pytest.fixture(scope="module")
def grammar(tiny_clip):
    if not (GRAMMAR_DIR / "grammar.safetensors").is_file():
        pytest.fail("the fixture grammar head is missing: run tools/build_sbg_fixtures.py --stage grammar")
    return GrammarScorer.load(GRAMMAR_DIR, tiny_clip)


@functools.lru_cache(maxsize=1)
def _all_shapes_captions() -> tuple[str, ...]:
    return tuple(sorted({c for s in shapes.make_scenes(shapes.TRAIN_SEED, 20000) for c in s.captions}
                        | {c for s in shapes.heldout_scenes(400) for c in s.captions}))


@pytest.mark.parametrize("op", CORRUPTIONS)
def test_each_corruption_breaks_the_caption_and_keeps_the_period(op):
    rng = random.Random(0)
    cap = "a large red circle on a white background."
    orig = cap[:-1].split()
    for _ in range(20):
        bad = corrupt(cap, rng, op=op, filler=["dog", "blue"])
        assert bad != cap and bad.endswith(".")
        words = bad[:-1].split()
        if op in ("swap", "shuffle"):
            assert sorted(words) == sorted(orig)
        expected_len = {"insert": [len(orig) + 1], "remove": [len(orig) - 1], "repeat": [len(orig) + 1, len(orig) + 2]}
        assert len(words) in expected_len.get(op, [len(orig)])
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(cap, rng, op="reverse")


def test_negatives_never_equal_a_clean_caption():
    caps = _all_shapes_captions()
    neg = make_negatives(caps[:300], random.Random(1), per_caption=3, clean=caps)
    assert len(neg) == 900 and not set(neg) & set(caps)


def test_fixture_head_accuracy_on_heldout_pairs(grammar):
    """>= 0.9 on clean captions never seen in training and fresh corruptions of them."""
    _, held = split_captions(list(_all_shapes_captions()), 0.2)
    assert len(held) > 100
    m = evaluate_grammar(grammar, held, seed=99, clean=_all_shapes_captions())
    assert m["accuracy"] >= 0.9, m
    assert grammar.config.finetuned_text and grammar.config.metrics["val_accuracy"] >= 0.9


def test_grammar_reranking_prefers_grammatical_over_higher_clip_score(tiny_clip, grammar):
    rng = random.Random(5)
    found = None
    for scene in shapes.heldout_scenes(60):
        feats = tiny_clip.encode_images(tiny_clip.preprocess_images([scene.render()]))
        clean = scene.captions[0]
        bad = make_negatives([clean] * 12, rng, clean=_all_shapes_captions())
        cs = scoring.clip_score(tiny_clip, feats.expand(len(bad) + 1, -1), [clean, *bad])
        better = [b for b, s in zip(bad, cs[1:]) if s > cs[0] + 0.02]
        if better:
            found = (feats, clean, better[0])
            break
    assert found, "no corrupted caption with a higher CLIP-S than the clean one in 60 scenes"
    feats, clean, bad = found

    def result():
        return [CaptionResult(text=bad, score=0.0, candidates=[Candidate(bad, -0.1), Candidate(clean, -0.2)])]

    by_clip = scoring.rerank_results(result(), feats, tiny_clip, mode="clip")[0]
    assert by_clip.text == bad and by_clip.candidates[0].clip_score > by_clip.candidates[1].clip_score
    by_both = scoring.rerank_results(result(), feats, tiny_clip, mode="clip+grammar", grammar=grammar)[0]
    assert by_both.text == clean
    assert by_both.candidates[0].grammar > 0.5 > by_both.candidates[1].grammar


def test_captioner_clip_grammar_uses_the_bundled_head(demo_captioner):
    img = shapes.heldout_scenes(3)[2].render()
    res = demo_captioner.caption(img, decoding="beam", beam_size=3, num_candidates=3, rerank="clip+grammar")[0]
    assert all(c.grammar is not None and c.clip_score is not None for c in res.candidates)
    assert res.text == res.candidates[0].text


def test_save_load_round_trip_and_training(tiny_clip, tmp_path):
    from lib_clipcap.grammar import train_grammar_head

    train, held = split_captions(list(_all_shapes_captions()), 0.2)
    scorer, metrics = train_grammar_head(tiny_clip, train[:200], val_captions=held[:50], steps=30, batch_size=64,
                                         hidden=32, log_every=0)
    assert {"train_loss", "val_accuracy"} <= set(metrics)
    scorer.save(tmp_path / "g")
    again = GrammarScorer.load(tmp_path / "g", tiny_clip)
    texts = held[:5] + ["a a a circle."]
    torch.testing.assert_close(again.probability(texts), scorer.probability(texts))
    assert again.config.metrics == metrics


def test_train_grammar_cli(tmp_path, capsys):
    """``python -m lib_clipcap train grammar`` (in-process, only the train command; a few steps)."""
    from lib_clipcap.app.cli import build_parser
    from lib_clipcap.train import cli

    caps = tmp_path / "captions.txt"
    caps.write_text("image,caption\n" + "\n".join(f"img{i}.jpg,{c}" for i, c in
                                                   enumerate(_all_shapes_captions()[:120])))
    cfg = str(package_path("bundled:assets/clip_configs/shapes-tiny.json"))
    weights = str(package_path("bundled:assets/shapes/clip.safetensors"))
    argv = ["train", "grammar", "--captions", str(caps), "--out", str(tmp_path / "head"), "--clip-model", cfg,
            "--clip-pretrained", weights, "--steps", "5", "--batch-size", "16", "--device", "cpu"]
    args = build_parser({"train": (cli.HELP, cli.add_arguments, cli.run)}).parse_args(argv)
    assert cli.run(args) == 0
    assert (tmp_path / "head" / "grammar.safetensors").is_file()
    assert "val_accuracy" in capsys.readouterr().out


def test_saved_config_names_clip_weights_without_a_machine_path(tmp_path):
    from lib_clipcap.grammar import portable_weights_name
    from lib_clipcap.registry import package_path

    bundled = package_path("bundled:assets/shapes/clip.safetensors")
    assert portable_weights_name(str(bundled)) == "bundled:assets/shapes/clip.safetensors"
    assert package_path(portable_weights_name(str(bundled))) == bundled  # and it resolves back
    assert portable_weights_name(str(tmp_path / "my_clip.safetensors")) == "my_clip.safetensors"
    assert portable_weights_name("openai") == "openai" and portable_weights_name(None) is None
