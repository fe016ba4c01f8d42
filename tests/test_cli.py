"""``python -m lib_clipcap caption`` / ``models``: per-method defaults, explicit choices, option checks, output."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lib_clipcap.errors import ClipCapError
from lib_clipcap.registry import package_path

ROOT = Path(__file__).resolve().parents[1]
GRAMMAR = package_path("bundled:assets/sbg/grammar")


def _parse(*argv: str):
    from lib_clipcap.app.cli import COMMANDS, build_parser

    return build_parser({"caption": COMMANDS["caption"]}).parse_args(["caption", *argv])


def _kwargs(*argv: str) -> dict:
    """What ``caption`` would pass to the model's ``caption`` (after its option checks), without loading a model."""
    from lib_clipcap.app.cli import check_caption_args, clipcap_caption_kwargs
    from lib_clipcap.sbg.cli import sbg_caption_kwargs

    args = _parse(*argv)
    check_caption_args(args)
    return sbg_caption_kwargs(args) if args.method == "sbg" else clipcap_caption_kwargs(args)


def _defaults(func) -> dict:
    return {n: p.default for n, p in inspect.signature(func).parameters.items() if p.default is not p.empty}


# ------------------------------------------------------------------------------------------- defaults and choices
def test_sbg_defaults_to_the_sbg_procedure_sampling_k_candidates():
    from lib_clipcap.options_table import resolve_decoding
    from lib_clipcap.sbg.defaults import DECODING_DEFAULTS
    from lib_clipcap.sbg.guesser import BlindGuesser

    kw = _kwargs("--method", "sbg")
    assert (kw["decoding"], kw["num_candidates"], kw["top_k"], kw["max_new_tokens"], kw["rerank"]) == (
        "sample", 5, 50, 67, "clip")
    assert kw["beam_size"] is None  # the guesser's own default (k beams) for --decoding beam
    assert {k: kw[k] for k in resolve_decoding({})} == resolve_decoding({}, method_defaults=DECODING_DEFAULTS)
    lib = _defaults(BlindGuesser.caption)
    for name in ("threshold", "max_keywords", "rerank"):
        assert kw[name] == lib[name], name


def test_clipcap_defaults_are_the_captioners():
    from lib_clipcap.options_table import resolve_decoding

    kw = _kwargs()
    assert (kw["decoding"], kw["num_candidates"], kw["beam_size"], kw["top_k"], kw["rerank"]) == (
        "beam", 3, 5, 0, "none")  # the options table's, as the WebUI settings and the Caption tab
    assert {k: v for k, v in kw.items() if k != "rerank"} == resolve_decoding({})  # what Captioner.caption uses


@pytest.mark.parametrize("argv, expected", [
    (["--method", "sbg", "--decoding", "greedy"], dict(decoding="greedy", num_candidates=1)),
    (["--method", "sbg", "--decoding", "beam", "-k", "3", "--beam-size", "6"],
     dict(decoding="beam", num_candidates=3, beam_size=6)),
    (["--method", "sbg", "--num-candidates", "1"], dict(num_candidates=1, decoding="sample")),
    (["--method", "sbg", "--num-candidates", "3", "--top-k-candidates", "3"], dict(num_candidates=3)),
    (["--method", "sbg", "--top-k", "0", "--temperature", "0.7", "--repetition-penalty", "1.3",
      "--no-repeat-ngram-size", "2", "--min-new-tokens", "3", "--ban", "red"],
     dict(top_k=0, temperature=0.7, repetition_penalty=1.3, no_repeat_ngram_size=2, min_new_tokens=3,
          banned_words=["red"])),
    (["--method", "sbg", "--threshold", "0.2", "--max-keywords", "3", "--rerank", "none"],
     dict(threshold=0.2, max_keywords=3, rerank="none")),
    (["--method", "sbg", "--grammar-weight", "0.5"], dict(rerank="clip+grammar")),
    (["--decoding", "sample", "--num-candidates", "4", "--top-k", "7"],
     dict(decoding="sample", num_candidates=4, top_k=7, rerank="none")),
    (["--decoding", "beam", "--num-candidates", "2", "--grammar", "bundled"],
     dict(decoding="beam", num_candidates=2, rerank="clip+grammar")),
])
def test_explicit_choices_win(argv, expected):
    kw = _kwargs(*argv)
    assert {k: kw.get(k) for k in expected} == expected


@pytest.mark.parametrize("argv, match", [
    (["--method", "sbg", "--decoding", "greedy", "-k", "3"], r"--decoding greedy gives one caption, not 3"),
    (["--method", "sbg", "-k", "0"], r"--top-k-candidates 0: must be >= 1"),
    (["--method", "sbg", "-k", "2", "--num-candidates", "3"], r"--top-k-candidates 2 and --num-candidates 3"),
    (["--method", "sbg", "--threshold", "1.5"], r"--threshold 1.5: must be between 0 and 1"),
    (["--method", "sbg", "--threshold", "nan"], r"--threshold nan"),
    (["--method", "sbg", "--max-keywords", "0"], r"--max-keywords 0: must be >= 1"),
    (["--method", "sbg", "--vocabulary", "no-such-vocabulary"],
     r"--vocabulary 'no-such-vocabulary': neither a built-in vocabulary \(natural, shapes\)"),
    (["--method", "sbg", "--vocabulary", str(ROOT / "README.md")], r"is not a valid vocabulary.*check-vocabulary"),
    (["--threshold", "0.3"], r"--threshold 0.3 only applies to --method sbg"),
    (["--top-k-candidates", "3"], r"--top-k-candidates 3 only applies to --method sbg.*--num-candidates"),
    (["--vocabulary", "natural"], r"--vocabulary natural only applies to --method sbg"),
    (["--decoding", "greedy", "--num-candidates", "3"], r"--num-candidates 3: greedy decoding gives one caption"),
    (["--grammar", "/no/such/head"], r"--grammar '/no/such/head': nothing at .*train grammar"),
    (["--grammar", "bundled", "--rerank", "clip"], r"--grammar only applies to --rerank clip\+grammar"),
    (["--method", "sbg", "--grammar-weight", "1", "--rerank", "none"], r"--grammar-weight only applies"),
    (["--grammar-weight", "-1"], r"--grammar-weight -1.0: must be a number >= 0"),
])
def test_bad_options_name_the_value_and_what_to_do(argv, match):
    from lib_clipcap.app.cli import check_caption_args

    with pytest.raises(ClipCapError, match=match):
        check_caption_args(_parse(*argv))


def test_a_bad_option_fails_before_any_model_is_loaded(capsys, monkeypatch):
    from lib_clipcap.app import cli

    monkeypatch.setattr(cli, "load_captioner", lambda *a, **k: pytest.fail("model loaded"))
    assert cli.main(["caption", "--threshold", "0.3"]) == 2
    assert "clipcap: --threshold 0.3 only applies to --method sbg" in capsys.readouterr().err
    # decoding values are checked by the options table, and reported under the option's own name
    assert cli.main(["caption", "--top-p", "1.5"]) == 2
    assert "clipcap: --top-p 1.5: must be at most 1" in capsys.readouterr().err


def test_sbg_caption_checks_decoding_values_before_loading(capsys, monkeypatch):
    from lib_clipcap.app import cli
    from lib_clipcap.sbg import cli as sbg_cli

    monkeypatch.setattr(sbg_cli, "load_guesser", lambda *a, **k: pytest.fail("model loaded"))
    assert cli.main(["caption", "--method", "sbg", "--max-new-tokens", "0"]) == 2
    assert "clipcap: --max-new-tokens 0: must be at least 1" in capsys.readouterr().err
    assert cli.main(["sbg", "caption", "--temperature", "0"]) == 2
    assert "--temperature 0.0: must be greater than 0" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def image(tmp_path_factory) -> str:
    from lib_clipcap import shapes

    path = tmp_path_factory.mktemp("img") / "scene.png"
    shapes.heldout_scenes(1)[0].render().save(path)
    return str(path)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("models"))  # shared: the SBG text features are computed once


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    from lib_clipcap.app.cli import main

    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_sbg_text_output_shows_keywords_and_clip_s(capsys, image, models_dir):
    sbg = ["caption", image, "--method", "sbg", "--model", "shapes-sbg", "--seed", "0", "--models-dir", models_dir,
           "--device", "cpu"]
    rc, out, err = _run(capsys, *sbg)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"{image}\t") and lines[0].split("\t")[1]
    assert lines[1].startswith("\t  keywords: ") and len(lines[1]) > len("\t  keywords: ")
    assert lines[2].startswith("\t  CLIP-S ") and float(lines[2].split()[1]) > 0
    assert len(lines) == 3  # candidates only when asked for
    rc, out, _ = _run(capsys, *sbg, "-k", "3")
    cands = [l for l in out.splitlines() if "log-p" in l]
    assert rc == 0 and 1 <= len(cands) <= 3 and cands[0].startswith("\t  * ") and "CLIP-S" in cands[0]
    rc, out, _ = _run(capsys, *sbg, "-v")
    assert rc == 0 and any("log-p" in l for l in out.splitlines())


def test_sbg_json_carries_keywords_clip_s_and_candidates(capsys, image, models_dir):
    rc, out, err = _run(capsys, "caption", image, "--method", "sbg", "--model", "shapes-sbg", "--seed", "0",
                        "--models-dir", models_dir, "--device", "cpu", "--json", "--vocabulary", "shapes",
                        "--threshold", "0.3", "--max-keywords", "2")
    assert rc == 0, err
    res = json.loads(out)[0]
    assert res["keywords"] and 1 <= len(res["candidates"]) <= 5  # k = 5 by default (identical samples merged)
    assert res["clip_score"] == res["candidates"][0]["clip_score"] and res["clip_score"] > 0
    assert res["text"] == res["candidates"][0]["text"]
    scores = [c["clip_score"] for c in res["candidates"]]
    assert scores == sorted(scores, reverse=True)  # re-ranked by CLIP-S, as the procedure


def test_clipcap_grammar_rerank_with_a_head_folder_and_weight(capsys, image, models_dir):
    base = ["caption", image, "--model", "shapes-demo", "--models-dir", models_dir, "--device", "cpu",
            "--decoding", "beam", "--num-candidates", "3", "--json"]
    rc, out, err = _run(capsys, *base, "--grammar", str(GRAMMAR), "--grammar-weight", "0.5")
    assert rc == 0, err
    res = json.loads(out)[0]
    keys = [c["clip_score"] + 0.5 * c["grammar"] for c in res["candidates"]]
    assert all(c["grammar"] is not None for c in res["candidates"]) and keys == sorted(keys, reverse=True)
    assert res["clip_score"] == res["candidates"][0]["clip_score"]
    rc, out, err = _run(capsys, *base[:-1], "--grammar", "bundled:assets/sbg/grammar")
    assert rc == 0, err
    assert "grammar" in out.splitlines()[1] and out.count("log-p") == 3  # asked for 3: all shown


def test_clipcap_text_output_without_scores_is_one_line(capsys, image, models_dir):
    rc, out, err = _run(capsys, "caption", image, "--model", "shapes-demo", "--models-dir", models_dir,
                        "--device", "cpu")
    assert rc == 0, err
    assert len(out.splitlines()) == 1 and out.startswith(f"{image}\t")


# -------------------------------------------------------------------------------------------------------- models
def _models(capsys, models_dir: Path) -> dict:
    rc, out, _ = _run(capsys, "models", "--json", "--models-dir", str(models_dir))
    assert rc == 0
    return {r["name"]: r["installed"] for r in json.loads(out)}


def test_models_reports_sbg_generators_installed(capsys, tmp_path):
    rows = _models(capsys, tmp_path)
    assert rows["shapes-sbg"] == str(package_path("bundled:assets/sbg/generator"))
    assert rows["shapes-demo"] and rows["sbg-flickr"] is None and rows["coco"] is None
    folder = tmp_path / "top_hierarchy"  # where sbg-flickr's error message says to put the generator
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert _models(capsys, tmp_path)["sbg-flickr"] is None  # incomplete: model.safetensors missing
    (folder / "model.safetensors").write_bytes(b"x")
    assert _models(capsys, tmp_path)["sbg-flickr"] == str(folder)
    rc, out, _ = _run(capsys, "models", "--models-dir", str(tmp_path))
    line = next(l for l in out.splitlines() if l.startswith("sbg-flickr"))
    assert line.rstrip().endswith("installed") and "not installed" not in line


def test_models_command_imports_no_torch():
    code = ("import sys, io, contextlib; from lib_clipcap.app.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()): main(['models'])\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_loading_is_a_library_function_the_cli_shares(tmp_path):
    from lib_clipcap.errors import ClipCapError, MissingFileError
    from lib_clipcap.loading import load_captioner

    notes: list[str] = []
    cap = load_captioner(models_dir=tmp_path, device="cpu", offline=True, notify=notes.append)
    assert cap.name == "shapes-demo" and "flickr8k" in notes[0] and len(notes) == 2
    with pytest.raises(MissingFileError):
        load_captioner(models_dir=tmp_path, device="cpu", offline=True, allow_demo_fallback=False)
    with pytest.raises(ClipCapError, match="CLIP model"):
        load_captioner(checkpoint=tmp_path / "x.pt")
