"""The original SBG pickles are read with a data-only unpickler: plain data imports, anything else is refused."""

from __future__ import annotations

import os
import pickle

import pytest

from lib_clipcap.sbg.importer import (UnsafePickleError, convert_original, import_original, safe_load_pickle)
from lib_clipcap.sbg.vocabulary import VocabularyError, load_vocabulary

ENCYCLOPEDIA = {
    "human": ["police officer", "chef", "Surfer ", "doctor!!"],  # noisy, as the original
    "scenery": {"beach": ["sand", "wave", "shore"], "kitchen": ["stove", "sink"], "indoor": []},
    "animal": {"dog": ["puppy", "poodle"], "bird": ["pigeon"]},
    "plant": {"tree": ["oak", "pine"], "flower": ["rose"]},
    "object": {"vehicle": ["car", "bus"], "clothing and fashion": ["hat"], "toy": ["ball"]},
    "activity": {"sport": ["running", "jumping"], "rest": ["sitting"]},
    "time": {"night": [], "daytime": []},
    "weather": {"rain": [], "snow": []},
}
LABELS = [("dog", "NOUN", 900), ("run", "VERB", 800), ("red", "ADJ", 700), ("together", "ADV", 600),
          ("dog", "NOUN", 500), ("Beach", "NOUN", 400), ("1990s", "NOUN", 300), ("the", "DET", 200),
          ["grassy", "ADJ", 100]]


def _write(tmp_path, obj, name, protocol=pickle.HIGHEST_PROTOCOL):
    p = tmp_path / name
    p.write_bytes(pickle.dumps(obj, protocol=protocol))
    return p


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_plain_data_loads_with_every_protocol(tmp_path, protocol):
    data = {"a": [1, 2.5, True, None, ("x", "y")], "b": {"c": []}}
    assert safe_load_pickle(_write(tmp_path, data, "d.pkl", protocol)) == data


class Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED_MARKER",))


class Plain:
    pass


@pytest.mark.parametrize("payload,match", [
    (Evil(), "refused to load global (posix|nt|os).system"),
    ({"ok": [Evil()]}, "refused to load global"),
    (Plain(), "refused to load global .*Plain"),
    ({"s": {1, 2}}, "set"),
    ({"b": b"bytes"}, "bytes"),
    (complex(1, 2), "refused to load global builtins.complex"),
])
def test_anything_but_plain_data_is_refused_and_nothing_runs(tmp_path, monkeypatch, payload, match):
    monkeypatch.chdir(tmp_path)
    p = _write(tmp_path, payload, "evil.pkl")
    with pytest.raises(UnsafePickleError, match=match):
        safe_load_pickle(p)
    assert not (tmp_path / "PWNED_MARKER").exists()


def test_shared_reference_blow_up_is_refused():
    x: list = ["a"]
    for _ in range(40):  # 2**40 items when expanded, a few hundred bytes as a pickle
        x = [x, x]
    with pytest.raises(UnsafePickleError, match="more than"):
        safe_load_pickle(pickle.dumps(x), max_items=100_000)


def test_truncated_and_oversized_pickles(tmp_path):
    with pytest.raises(VocabularyError, match="not a readable pickle"):
        safe_load_pickle(pickle.dumps({"a": [1, 2, 3]})[:-3])
    with pytest.raises(UnsafePickleError, match="allowed"):
        safe_load_pickle(b"x" * 100, max_bytes=10)


def test_import_maps_the_original_structure(tmp_path):
    enc = _write(tmp_path, ENCYCLOPEDIA, "encyclopedia.pkl")
    lab = _write(tmp_path, LABELS, "all_labels.pkl")
    vocab, report = import_original(enc, lab, limit=1000)
    assert vocab.keywords == {"noun": ("dog", "beach"), "adjective": ("red", "grassy"), "adverb": ("together",)}
    assert any("1990s" in d for d in report.dropped) and any("doctor!!" in d for d in report.dropped)
    h = vocab.hierarchy
    assert h.prime.always == ("landscape", "object")
    levels = dict(h.levels())
    assert set(levels["people/occupation"].labels) == {"police officer", "chef", "surfer"}
    assert "two women" in levels["people/people"].labels and "a crowd of people" in levels["people/people"].labels
    assert "red shirt" in levels["people/clothing"].labels and levels["people/clothing"].template == "wearing {}."
    assert "clothing and fashion" not in levels["object/object"].labels  # as the extension did
    assert levels["animal/animal"].tertiary_top == 1 and levels["landscape/scenery"].tertiary_top == 3
    act = levels["context/activity"]
    assert act.template == "activity is {}." and not act.add_label and set(act.requires) == {"people", "animal"}
    assert levels["context/weather"].skip_when_indoor and h.indoor == ("indoor",)
    out, _ = convert_original(enc, lab, tmp_path / "v.json")
    assert load_vocabulary(out).to_dict() == vocab.to_dict()


def test_limit_and_structure_errors(tmp_path):
    enc = _write(tmp_path, ENCYCLOPEDIA, "encyclopedia.pkl")
    vocab, report = import_original(enc, _write(tmp_path, LABELS, "all_labels.pkl"), limit=2)
    assert vocab.words == ("dog", "red") and report.keywords == 2
    with pytest.raises(VocabularyError, match="missing categories"):
        import_original(_write(tmp_path, {"human": []}, "e2.pkl"), _write(tmp_path, LABELS, "l.pkl"))
    with pytest.raises(VocabularyError, match="list of"):
        import_original(enc, _write(tmp_path, {"not": "a list"}, "l2.pkl"))


def _sbg_cli(argv: list[str]) -> int:
    """Run ``python -m lib_clipcap sbg ...`` in-process with only the sbg command (no other command's imports)."""
    from lib_clipcap.app.cli import build_parser
    from lib_clipcap.sbg import cli

    args = build_parser({"sbg": (cli.HELP, cli.add_arguments, cli.run)}).parse_args(["sbg", *argv])
    return cli.run(args)


def test_cli_import_and_check(tmp_path, capsys):
    enc = _write(tmp_path, ENCYCLOPEDIA, "encyclopedia.pkl")
    lab = _write(tmp_path, LABELS, "all_labels.pkl")
    out = tmp_path / "vocab.json"
    assert _sbg_cli(["import-vocabulary", str(enc), str(lab), "--out", str(out)]) == 0
    assert "dropped 2 noisy entries" in capsys.readouterr().err
    assert _sbg_cli(["check-vocabulary", str(out)]) == 0
    assert "landscape/scenery" in capsys.readouterr().out
    evil = _write(tmp_path, Evil(), "evil.pkl")
    with pytest.raises(UnsafePickleError, match="refused to load global"):
        _sbg_cli(["import-vocabulary", str(evil), str(lab), "--out", str(tmp_path / "x.json")])
    assert not (tmp_path / "x.json").exists()
