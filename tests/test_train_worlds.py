"""The harder synthetic world: Flickr8k's layout, five paraphrases with quoted commas, held-out combinations."""

from __future__ import annotations

import pytest

from lib_clipcap.train import worlds


def test_written_in_flickr_layout_with_quoted_commas(tmp_path):
    from lib_clipcap.eval.datasets import load_dataset, read_flickr_captions

    captions = worlds.write_world(tmp_path / "w", train=30, test=10)
    assert captions == tmp_path / "w" / "captions.txt" and (tmp_path / "w" / "Images").is_dir()
    text = captions.read_text()
    assert text.startswith("image,caption\n") and ',"' in text  # captions with commas are CSV-quoted
    pairs = read_flickr_captions(captions)
    assert len(pairs) == 40 and all(len(caps) == 5 for _, caps in pairs)
    assert any("," in c for _, caps in pairs for c in caps)  # the reader kept the commas
    test = load_dataset(captions, test_images=10)
    assert [it.image_id for it in test.items] == [f"iid_test_{i:05d}.jpg" for i in range(10)]
    assert all(it.path.is_file() for it in test.items)
    scenes = [s for _, s in worlds.make_world(30, 10)]
    assert [caps for _, caps in pairs] == [s.captions for s in scenes]


def test_scenes_are_deterministic_and_captions_describe_them():
    a, b = worlds.make_scene(3, 7), worlds.make_scene(3, 7)
    assert a == b and a.render().tobytes() == b.render().tobytes()
    kinds = {worlds.make_scene(1, i).kind for i in range(60)}
    assert kinds == {"single", "count", "relation"}
    for i in range(200):
        s = worlds.make_scene(1, i)
        caps = s.captions
        assert len(set(caps)) == 5 and all(c.endswith(".") for c in caps)
        if s.kind == "relation":
            x, y = s.objects
            dx, dy = x.cx - y.cx, x.cy - y.cy
            expected = {"to the left of": dx < 0, "to the right of": dx > 0, "above": dy < 0, "below": dy > 0}
            assert expected[s.relation], (s, caps[0])
            assert worlds.RELATIONS[s.relation] in caps[1]  # the inverse relation, objects swapped
        if s.kind == "count":
            assert caps[0].split()[0] == worlds.NUMBERS[len(s.objects)]
            assert len({(o.shape, o.color, o.size) for o in s.objects}) == 1


def test_heldout_combinations_never_in_training_always_in_combo_test():
    scenes = worlds.make_world(300, 100, split="combo")
    train = [s for name, s in scenes if name == "train"]
    test = [s for name, s in scenes if name == "test"]
    assert not any(s.pairs & worlds.HELDOUT_PAIRS for s in train)
    assert all(s.pairs & worlds.HELDOUT_PAIRS for s in test)
    iid = [s for name, s in worlds.make_world(0, 100) if name == "test"]
    assert not any(s.pairs & worlds.HELDOUT_PAIRS for s in iid)
    # Every colour and every shape of a held-out pair is seen in training, only not together.
    seen = {(c, sh) for s in train for c, sh in s.pairs}
    assert {c for c, _ in worlds.HELDOUT_PAIRS} <= {c for c, _ in seen}
    assert {sh for _, sh in worlds.HELDOUT_PAIRS} <= {sh for _, sh in seen}
    with pytest.raises(ValueError, match="'ood'"):
        worlds.make_world(1, 1, split="ood")


def test_world_seeds_draw_other_scenes_and_seed_0_is_the_original():
    assert worlds.world_seeds(0) == (worlds.TRAIN_SEED, worlds.TEST_SEED)
    original = worlds.make_world(20, 5)
    assert worlds.make_world(20, 5, world_seed=0) == original
    other = worlds.make_world(20, 5, world_seed=1)
    assert [n for n, _ in other] == [n for n, _ in original] and other != original
    assert len({s.captions[0] for _, s in other}) > 10  # a new draw of the same kind of world
    with pytest.raises(ValueError, match="world_seed"):
        worlds.world_seeds(-1)
