"""SBG vocabularies as JSON: the shipped ones are valid and curated, and malformed files fail with the field named."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest

from lib_clipcap.sbg.vocabulary import (POS, VocabularyError, load_vocabulary, vocabulary_from_dict)

DATA = Path(__file__).resolve().parents[1] / "lib_clipcap" / "sbg" / "data"
TOOLS = Path(__file__).resolve().parents[1] / "tools"


@pytest.fixture(scope="module")
def natural():
    return load_vocabulary("natural")


def _doc() -> dict:
    return copy.deepcopy(json.loads((DATA / "shapes.json").read_text(encoding="utf-8")))


def test_natural_vocabulary_has_about_1000_keywords_and_the_papers_hierarchy(natural):
    words = natural.words
    assert 950 <= len(words) <= 1100
    assert len(set(words)) == len(words)
    assert set(natural.keywords) == set(POS)
    assert {"dog", "beach", "man", "bicycle"} <= set(natural.keywords["noun"])
    assert {"red", "young", "wet"} <= set(natural.keywords["adjective"])
    assert {"together", "outside", "quickly"} <= set(natural.keywords["adverb"])
    h = natural.hierarchy
    assert h.prime.template == "picture of {}." and h.prime.max_combination == 3
    assert list(h.prime.subjects) == ["landscape", "people", "animal", "plant", "object"]
    assert h.prime.subjects["object"] == "some object"
    assert len(h.prime.combinations()) == 5 + 10 + 10  # subjects, pairs, triples
    assert [lv.name for lv in h.branches["people"]] == ["people", "occupation", "clothing"]
    ctx = {lv.name: lv for lv in h.context}
    assert ctx["weather"].skip_when_indoor and not ctx["time"].skip_when_indoor
    assert set(ctx["activity"].requires) == {"people", "animal"}
    assert "kitchen" in h.indoor and "kitchen" in dict(h.levels())["landscape/scenery"].labels


def test_parts_of_speech_are_filed_correctly(natural):
    kw = natural.keywords
    for w in ("red", "blue", "small", "happy", "wooden"):
        assert w in kw["adjective"] and w not in kw["noun"]
    for w in ("quickly", "together", "outdoors"):
        assert w in kw["adverb"]
    for w in ("dog", "water", "street"):
        assert w in kw["noun"]


def test_every_word_is_spelled_right():
    """Checked against the system word list (Debian's wamerican), as the build script does."""
    if not Path("/usr/share/dict/words").is_file():
        pytest.skip("no /usr/share/dict/words (apt-get install wamerican) to check spelling against")
    sys.path.insert(0, str(TOOLS))
    import build_vocabulary

    assert build_vocabulary._spelling_problems(json.loads((DATA / "natural.json").read_text())) == []


def test_shipped_json_is_what_the_build_script_writes():
    sys.path.insert(0, str(TOOLS))
    import build_vocabulary

    for name in ("natural", "shapes"):
        built = vocabulary_from_dict(getattr(build_vocabulary, name)()).to_dict()
        assert built == load_vocabulary(name).to_dict(), f"{name}.json was edited by hand or not rebuilt"


def test_content_hash_ignores_name_but_not_content():
    a = vocabulary_from_dict(_doc())
    d = _doc()
    d["name"] = "other"
    d["description"] = "changed"
    assert vocabulary_from_dict(d).content_hash == a.content_hash
    d["keywords"]["noun"].append("ellipse")
    assert vocabulary_from_dict(d).content_hash != a.content_hash


def test_round_trip(tmp_path):
    v = load_vocabulary("natural")
    again = load_vocabulary(v.save(tmp_path / "v.json"))
    assert again.to_dict() == v.to_dict() and again.content_hash == v.content_hash


@pytest.mark.parametrize("mutate,match", [
    (lambda d: d.update(format="something"), "format"),
    (lambda d: d.update(version=2), "version 1"),
    (lambda d: d.update(colour="red"), "unknown field.*'colour'"),
    (lambda d: d["keywords"]["noun"].append("Circle"), r"keywords\.noun\[\d+\].*'Circle'"),
    (lambda d: d["keywords"]["noun"].append("cir cle "), "not a lower-case word"),
    (lambda d: d["keywords"]["noun"].append("circle"), "duplicate word.*'circle'"),
    (lambda d: d["keywords"]["adjective"].append("circle"), "two parts of speech.*'circle'"),
    (lambda d: d["keywords"].update(verb=["run"]), "unknown field.*'verb'"),
    (lambda d: d.update(keyword_template="a photo"), "exactly one '{}'"),
    (lambda d: d["hierarchy"]["prime"].update(template="{} and {}"), r"prime\.template"),
    (lambda d: d["hierarchy"]["prime"].update(always=["three"]), r"prime\.always"),
    (lambda d: d["hierarchy"]["prime"].update(max_combination=5), "max_combination.*between 1 and 2"),
    (lambda d: d["hierarchy"]["branches"].pop("two"), "one entry per prime subject"),
    (lambda d: d["hierarchy"]["branches"]["one"][0].update(top=0), r"\(object\)\.top"),
    (lambda d: d["hierarchy"]["branches"]["one"][0].update(labels={}), "non-empty object"),
    (lambda d: d["hierarchy"]["branches"]["one"][1].update(tpo=1), "unknown field.*'tpo'"),
    (lambda d: d["hierarchy"]["context"][0].update(requires=["people"]), "not prime subjects"),
    (lambda d: d["hierarchy"]["context"][0].update(add_label=False), "never add a keyword"),
    (lambda d: d["hierarchy"]["context"][0]["labels"].update(grey=["Dark"]), r"labels\['grey'\]"),
    (lambda d: d["hierarchy"]["branches"]["one"].append(dict(d["hierarchy"]["branches"]["one"][0])), "unique"),
])
def test_malformed_documents_name_the_field(mutate, match):
    d = _doc()
    mutate(d)
    with pytest.raises(VocabularyError, match=match):
        vocabulary_from_dict(d, source="test.json")


def test_missing_and_broken_files(tmp_path):
    from lib_clipcap.errors import MissingFileError

    with pytest.raises(MissingFileError, match="natural, shapes"):
        load_vocabulary(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(VocabularyError, match="bad.json"):
        load_vocabulary(bad)
