"""Zero-shot keywords: the hierarchy's rules on a controllable fake CLIP, the tiny CLIP on shapes, the feature cache."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lib_clipcap import shapes
from lib_clipcap.sbg.keywords import KeywordExtractor, TextFeatureCache
from lib_clipcap.sbg.vocabulary import vocabulary_from_dict


class FakeClip:
    """Every distinct text gets its own axis, so an "image" is a weight per text: cos(image, text) ∝ weight."""

    name = "fake"
    pretrained = "none"
    embed_dim = 512

    def __init__(self) -> None:
        self.model = nn.Linear(2, 2)
        self.axes: dict[str, int] = {}
        self.calls = 0
        self.device = torch.device("cpu")

    def encode_texts(self, texts, *, normalize=True, batch_size=256):
        self.calls += 1
        out = torch.zeros(len(texts), self.embed_dim)
        for i, t in enumerate(texts):
            out[i, self.axes.setdefault(t, len(self.axes))] = 1.0
        return out

    def image(self, weights: dict[str, float]) -> torch.Tensor:
        v = torch.zeros(self.embed_dim)
        for text, w in weights.items():
            v[self.axes[text]] = w
        return v


DOC = {
    "format": "clipcap-sbg-vocabulary", "version": 1, "name": "toy",
    "keywords": {"noun": ["dog", "beach", "man"], "adjective": ["red", "happy"]},
    "hierarchy": {
        "prime": {"template": "picture of {}.", "subjects": {"landscape": "landscape", "people": "people",
                                                              "animal": "animal"},
                  "max_combination": 2, "always": ["landscape"]},
        "branches": {
            "landscape": [{"name": "scenery", "template": "picture of {}.", "tertiary_top": 2,
                           "labels": {"beach": ["sand", "wave", "shell"], "kitchen": ["stove"]}}],
            "people": [{"name": "people", "template": "picture of {}.", "labels": {"a man": [], "two women": []}}],
            "animal": [{"name": "animal", "template": "picture of {}.", "tertiary_top": 1,
                        "labels": {"dog": ["puppy", "poodle"], "cat": ["kitten"]}}],
        },
        "context": [
            {"name": "time", "template": "picture during {}.", "labels": {"night": [], "daytime": []}},
            {"name": "weather", "template": "picture during {}.", "labels": {"rain": [], "snow": []},
             "skip_when_indoor": True},
            {"name": "activity", "template": "activity is {}.", "labels": {"sport": ["running", "jumping"],
                                                                           "rest": ["sitting"]},
             "add_label": False, "tertiary_top": 1, "requires": ["people", "animal"]},
        ],
        "indoor": ["kitchen"],
    },
}


@pytest.fixture()
def toy():
    clip = FakeClip()
    return clip, KeywordExtractor(clip, vocabulary_from_dict(DOC))


def test_hierarchy_adds_branch_secondary_tertiary_and_context_keywords(toy):
    clip, ex = toy
    img = clip.image({"dog": 0.9, "man": 0.3, "picture of people and animal.": 0.8, "picture of beach.": 0.7,
                      "picture of sand.": 0.6, "picture of wave.": 0.5, "picture of a man.": 0.6,
                      "picture of dog.": 0.5, "picture of poodle.": 0.4, "picture during daytime.": 0.3,
                      "picture during snow.": 0.3, "activity is sport.": 0.5, "activity is jumping.": 0.4,
                      # the bare words decide the final order
                      "beach": 0.8, "sand": 0.2, "wave": 0.1, "a man": 0.5, "poodle": 0.45, "daytime": 0.05,
                      "snow": 0.04, "jumping": 0.03})
    r = ex.extract(img[None], threshold=0.5)[0]
    assert r.vocabulary_keywords == ["dog"]  # softmax(100 cos): "dog" alone holds > 0.5 of the mass
    assert r.subjects == ["landscape", "people", "animal"]  # best prime + the "always" branch
    assert r.keywords == ["dog", "beach", "a man", "poodle", "sand", "wave", "daytime", "snow", "jumping"]
    assert r.similarities == sorted(r.similarities, reverse=True)
    assert "sport" not in r.keywords  # activity adds only its verb (add_label false), as the original
    assert r.prompt() == "dog, beach, a man, poodle, sand, wave, daytime, snow, jumping ###"


def test_indoor_skips_weather_and_activity_needs_people_or_animals(toy):
    clip, ex = toy
    img = clip.image({"red": 0.9, "picture of landscape.": 0.9, "picture of kitchen.": 0.9,
                      "picture during night.": 0.5, "picture during rain.": 0.5, "activity is sport.": 0.5})
    r = ex.extract(img[None])[0]
    assert r.subjects == ["landscape"]
    assert set(r.keywords) == {"red", "kitchen", "stove", "night"}  # no weather (indoors), no activity, no people


def test_threshold_and_cap(toy):
    clip, ex = toy
    img = clip.image({"dog": 0.9, "man": 0.88, "red": 0.86, "picture of landscape.": 1.0})
    vocab = lambda **kw: ex.extract(img[None], **kw)[0].vocabulary_keywords
    assert vocab(threshold=0.5) == ["dog"]
    assert vocab(threshold=0.95) == ["dog", "man", "red"]
    assert vocab(threshold=1.0, max_keywords=2) == ["dog", "man"]
    assert vocab(threshold=0.0) == ["dog"]
    with pytest.raises(ValueError, match="threshold"):
        ex.extract(img[None], threshold=1.5)


def test_text_features_are_cached_in_memory_and_on_disk(tmp_path):
    clip = FakeClip()
    cache = TextFeatureCache(tmp_path)
    KeywordExtractor(clip, vocabulary_from_dict(DOC), cache=cache)
    assert (clip.calls, cache.encode_calls) == (1, 1)
    KeywordExtractor(clip, vocabulary_from_dict(DOC), cache=cache)  # memory hit
    fresh = TextFeatureCache(tmp_path)
    ex = KeywordExtractor(clip, vocabulary_from_dict(DOC), cache=fresh)  # disk hit (a new process, in effect)
    assert (clip.calls, fresh.encode_calls) == (1, 0)
    assert len(list(tmp_path.glob("fake-*.safetensors"))) == 1
    img = clip.image({"dog": 1.0, "picture of animal.": 1.0})
    ex.extract(img[None])
    ex.extract(img[None])
    assert clip.calls == 1  # extraction never encodes text
    changed = dict(DOC, keywords={"noun": ["dog", "beach", "man", "cat"], "adjective": ["red", "happy"]})
    KeywordExtractor(clip, vocabulary_from_dict(changed), cache=fresh)
    assert (clip.calls, fresh.encode_calls) == (2, 1)  # another vocabulary is another key


def test_changed_clip_weights_miss_the_cache(tmp_path):
    clip = FakeClip()
    KeywordExtractor(clip, vocabulary_from_dict(DOC), cache=tmp_path)
    with torch.no_grad():
        clip.model.weight.add_(1.0)  # "retrained" text tower: same name, other weights
    cache = TextFeatureCache(tmp_path)
    KeywordExtractor(clip, vocabulary_from_dict(DOC), cache=cache)
    assert cache.encode_calls == 1


def test_tiny_clip_finds_the_colour_and_shape_of_heldout_scenes(tiny_clip, tmp_path):
    ex = KeywordExtractor(tiny_clip, "shapes", cache=tmp_path)
    scenes = shapes.heldout_scenes(120)
    feats = tiny_clip.encode_images(tiny_clip.preprocess_images([s.render() for s in scenes]))
    res = ex.extract(feats)
    words = [set(" ".join(r.keywords).split()) for r in res]
    colour = sum(any(sh.color in w for sh in s.shapes) for s, w in zip(scenes, words)) / len(scenes)
    shape = sum(any(sh.shape in w for sh in s.shapes) for s, w in zip(scenes, words)) / len(scenes)
    assert colour >= 0.85 and shape >= 0.6, (colour, shape)
    assert all(r.keywords and r.prompt().endswith(" ###") for r in res)
