"""Retrieval baselines (nearest neighbour, consensus) on toy feature sets with known answers, and as eval rows."""

from __future__ import annotations

import argparse
import itertools
import json

import pytest
import torch

from lib_clipcap.errors import ClipCapError
from lib_clipcap.eval.baselines import (NgramSimilarity, consensus_index, nearest_images, retrieve_captions,
                                        retrieval_inputs)

# Four training images on the axes of a 4-D space (one slightly off-axis), each with its references.
TRAIN = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0], [0.9, 0.1, 0, 0.4]])
CAPS = [["a red circle on a white background.", "there is a red circle on white."],
        ["a blue square on a black background.", "a blue square, on black."],
        ["a green triangle next to a tree.", "green triangle near a tree."],
        ["a red circle on a white background.", "a big red circle with a white background."]]


def test_nearest_copies_the_first_caption_of_the_most_similar_image():
    # Queries are scaled: cosine, not dot product, decides.
    queries = torch.tensor([[0, 5.0, 0.2, 0], [1.0, 0, 0, -0.1], [0.2, 0, 3.0, 0]])
    picks = retrieve_captions(TRAIN, CAPS, queries, method="nearest")
    assert [p.source for p in picks] == [1, 0, 2]
    assert [p.caption for p in picks] == [CAPS[1][0], CAPS[0][0], CAPS[2][0]]
    assert nearest_images(TRAIN, queries[:1], 2).tolist() == [[1, 3]]  # image 3 has a small e2 component


def test_consensus_picks_the_caption_the_neighbours_agree_on():
    # The query sits between images 0 and 3; with k=2 the pool is their 4 captions, two of which are identical:
    # that caption has the highest mean similarity to the rest.
    q = torch.tensor([[1.0, 0.05, 0, 0.2]])
    pick = retrieve_captions(TRAIN, CAPS, q, method="consensus", k=2)[0]
    assert sorted(pick.neighbours) == [0, 3]
    assert pick.caption == "a red circle on a white background."
    # k=1: only image 0's own two captions; both are equally central, so the first wins (stable ties).
    assert retrieve_captions(TRAIN, CAPS, q, method="consensus", k=1)[0].caption == CAPS[0][0]


def test_consensus_index_equals_brute_force_mean_similarity():
    sim = NgramSimilarity(CAPS)
    pool = [c for caps in CAPS for c in caps] + ["a red circle.", "blue square on black"]
    vecs = [sim.vector(c) for c in pool]
    brute = [sum(sim.similarity(a, b) for j, b in enumerate(pool) if j != i) for i, a in enumerate(pool)]
    assert consensus_index(vecs) == max(range(len(pool)), key=lambda i: (brute[i], -i))
    assert sim.similarity("a red circle on white.", "A red circle, on white") == pytest.approx(1.0)
    assert sim.similarity("a red circle", "green triangle near tree") == 0.0
    for a, b in itertools.combinations(pool, 2):
        assert sim.similarity(a, b) == pytest.approx(sim.similarity(b, a))
        assert 0.0 <= sim.similarity(a, b) <= 1.0 + 1e-9


def test_errors_name_the_bad_value():
    with pytest.raises(ClipCapError, match="'knn'"):
        retrieve_captions(TRAIN, CAPS, TRAIN, method="knn")
    with pytest.raises(ClipCapError, match="k >= 1"):
        retrieve_captions(TRAIN, CAPS, TRAIN, method="consensus", k=0)
    with pytest.raises(ClipCapError, match="same CLIP"):
        retrieve_captions(TRAIN, CAPS, torch.ones(1, 3), method="nearest")
    with pytest.raises(ClipCapError, match="features folder"):
        retrieval_inputs(object())


@pytest.fixture(scope="module")
def small_world(tmp_path_factory, tiny_clip):
    from lib_clipcap.eval.datasets import load_dataset
    from lib_clipcap.eval.shapes_data import write_shapes_dataset
    from lib_clipcap.train.features import extract_features

    folder = tmp_path_factory.mktemp("bl")
    captions = write_shapes_dataset(folder, train=120, test=30)
    ds = load_dataset(captions, split="all", test_images=30)
    extract_features(ds, folder / "features", clip=tiny_clip, clip_model="tiny", clip_pretrained="tiny",
                     batch_size=50, workers=0, shard_size=100, progress=False)
    return captions, folder / "features"


def _args(*, argv: list[str]) -> argparse.Namespace:
    from lib_clipcap.eval import cli

    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    return p.parse_args(argv)


def test_eval_baseline_rows_from_features_folder_match_computed_features(small_world, tmp_path, capsys):
    from lib_clipcap.eval import cli
    from _train_world import CLIP_MODEL, CLIP_WEIGHTS

    captions, feats = small_world
    common = ["--test-images", "30", "--metrics", "bleu,cider,clip", "--tokenizer-metrics", "simple", "--no-progress",
              "--baseline", "nearest", "consensus", "--baseline-k", "5", "--style", "all"]
    assert cli.run(_args(argv=[str(captions), *common, "--features", str(feats),
                               "--json", str(tmp_path / "a.json")])) == 0
    table = capsys.readouterr().out
    assert "baseline: nearest neighbour" in table and "baseline: consensus (k=5)" in table
    rows = json.loads((tmp_path / "a.json").read_text())
    assert [r["name"] for r in rows] == ["baseline: nearest neighbour", "baseline: consensus (k=5)"]
    for r in rows:
        assert r["images"] == 30 and r["scores"]["BLEU-4"] > 0.3 and "CLIP-S" in r["skipped"]
        assert all(p["copied_from"].startswith("shapes_train_") for p in r["per_image"])
    assert rows[1]["settings"]["k"] == 5
    # Without --features the same images are encoded with the CLIP given: same retrieval, same captions.
    assert cli.run(_args(argv=[str(captions), *common, "--clip-model", CLIP_MODEL, "--clip-pretrained",
                               CLIP_WEIGHTS, "--json", str(tmp_path / "b.json")])) == 0
    again = json.loads((tmp_path / "b.json").read_text())
    for a, b in zip(rows, again):
        assert [p["caption"] for p in a["per_image"]] == [p["caption"] for p in b["per_image"]]
        assert "CLIP-S" in b["scores"]  # a CLIP was at hand this time
