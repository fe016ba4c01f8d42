"""CLIPScore / RefCLIPScore against values computed by hand from the fixture CLIP, and CLIP re-ranking of captions."""

from __future__ import annotations

import pytest
import torch

from lib_clipcap import scoring, shapes
from lib_clipcap.results import Candidate, CaptionResult
from lib_clipcap.errors import ClipCapError


def _by_hand(clip, image, texts):
    """cos(image, text) straight from open_clip's encoders: normalise both, dot product."""
    with torch.no_grad():
        v = clip.model.encode_image(clip.preprocess(image).unsqueeze(0)).float()[0]
        t = clip.model.encode_text(clip.tokenizer(texts)).float()
    v = v / v.norm()
    t = t / t.norm(dim=-1, keepdim=True)
    return t @ v, t


def test_clip_score_matches_the_formula(tiny_clip):
    scenes = shapes.heldout_scenes(4)
    images = [s.render() for s in scenes]
    captions = [scenes[0].captions[0], scenes[1].captions[1], "a purple circle on a white background.", "dog"]
    got = scoring.clip_score(tiny_clip, images, captions)
    expected = []
    for img, cap in zip(images, captions):
        cos, _ = _by_hand(tiny_clip, img, [cap])
        expected.append(2.5 * max(float(cos[0]), 0.0))  # CLIP-S = w * max(cos, 0), w = 2.5
    torch.testing.assert_close(got, torch.tensor(expected), atol=1e-5, rtol=1e-4)
    # Features in, same numbers out; and the prefix of Hessel's code changes the text that is encoded.
    feats = tiny_clip.encode_images(tiny_clip.preprocess_images(images))
    torch.testing.assert_close(scoring.clip_score(tiny_clip, feats, captions), got, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(scoring.clip_score(tiny_clip, feats, captions, prefix=scoring.HESSEL_PREFIX), got)
    assert scoring.clip_score_from_cosine(torch.tensor([-0.3, 0.0, 0.4])).tolist() == pytest.approx([0, 0, 1.0])


def test_ref_clip_score_is_the_harmonic_mean(tiny_clip):
    scene = shapes.heldout_scenes(2)[1]  # "a red triangle and a blue triangle on a black background."
    img = scene.render()
    cand = "a red triangle and a blue square on a black background."
    refs = scene.captions + ["a green triangle and a blue circle on a white background."]
    cos_all, feats = _by_hand(tiny_clip, img, [cand, *refs])
    a = 2.5 * max(float(cos_all[0]), 0.0)  # CLIP-S(c, v)
    b = max(float((feats[1:] @ feats[0]).max()), 0.0)  # max over references of cos(c, r), clipped at 0
    assert a > 0 and b > 0
    expected = 2 * a * b / (a + b)
    got = scoring.ref_clip_score(tiny_clip, [img], [cand], [refs])
    assert float(got[0]) == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert scoring.harmonic_mean(torch.tensor([0.0]), torch.tensor([0.0])).tolist() == [0.0]
    with pytest.raises(ValueError, match="at least one reference"):
        scoring.ref_clip_score(tiny_clip, [img], [cand], [[]])


def test_batched_scores_equal_one_by_one(tiny_clip):
    scenes = shapes.heldout_scenes(8)
    feats = tiny_clip.encode_images(tiny_clip.preprocess_images([s.render() for s in scenes]))
    texts = [[s.captions[0], scenes[(i + 1) % 8].captions[0]] for i, s in enumerate(scenes)]
    cos, cs, gp = scoring.score_candidates(tiny_clip, feats, texts)
    assert gp is None
    for i in range(8):
        one = scoring.clip_score(tiny_clip, feats[i:i + 1].expand(2, -1), texts[i])
        assert cs[i] == pytest.approx(one.tolist(), abs=1e-5)


def test_rank_candidates_orders_by_clip_then_grammar():
    cands = [Candidate("a", -1.0), Candidate("b", -2.0), Candidate("", -0.1)]
    ranked = scoring.rank_candidates(cands, [0.1, 0.3, 0.9], [0.25, 0.75, 2.25])
    assert [c.text for c in ranked] == ["b", "a", ""]  # empty text always last
    ranked = scoring.rank_candidates(cands, [0.1, 0.3, 0.9], [0.25, 0.75, 2.25], [0.99, 0.01, 0.5],
                                     grammar_weight=1.0)
    assert [c.text for c in ranked] == ["a", "b", ""] and ranked[0].grammar == pytest.approx(0.99)
    ranked = scoring.rank_candidates(cands[:2], [-0.2, -0.1], [0.0, 0.0])  # ties at CLIP-S 0 fall to the cosine
    assert [c.text for c in ranked] == ["b", "a"]


def test_captioner_rerank_modes(demo_captioner):
    img = shapes.heldout_scenes(12)[11].render()
    plain = demo_captioner.caption(img, decoding="beam", beam_size=4, num_candidates=4)[0]
    assert all(c.clip_score is None for c in plain.candidates)
    res = demo_captioner.caption(img, decoding="beam", beam_size=4, num_candidates=4, rerank="clip")[0]
    scores = [c.clip_score for c in res.candidates]
    assert scores == sorted(scores, reverse=True) and res.text == res.candidates[0].text
    assert {c.text for c in res.candidates} == {c.text for c in plain.candidates}
    expected = scoring.clip_score(demo_captioner.clip, [img] * 4, [c.text for c in res.candidates])
    assert scores == pytest.approx(expected.tolist(), abs=1e-5)
    with pytest.raises(ClipCapError, match="rerank must be one of"):
        demo_captioner.caption(img, rerank="bleu")


def test_rerank_results_keeps_results_aligned(tiny_clip):
    scenes = shapes.heldout_scenes(3)
    feats = tiny_clip.encode_images(tiny_clip.preprocess_images([s.render() for s in scenes]))
    results = [CaptionResult(text="x", score=0.0, candidates=[Candidate(scenes[(i + 1) % 3].captions[0], 0.0),
                                                               Candidate(s.captions[0], -5.0)])
               for i, s in enumerate(scenes)]
    scoring.rerank_results(results, feats, tiny_clip, mode="clip")
    for s, r in zip(scenes, results):
        assert r.text == r.candidates[0].text and r.candidates[0].clip_score >= r.candidates[1].clip_score
    assert scoring.rerank_results(results, feats, tiny_clip, mode="none") is results
