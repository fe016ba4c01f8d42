"""Issue 21 (items 1, 2, 5, 6, 7): what a request may name and send, against the real standalone app on uvicorn.

Manifests are only new .jsonl/.csv files or an earlier run's; reads through symlinks leading out of the allowed
folders are refused like writes; one text rule and one case-folded suffix rule on every face; NaN/Infinity refused as
JSON errors; bounded decoding and a time-limited regular-expression filter.
"""

from __future__ import annotations

import base64
import io
import json
import os
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from PIL import Image  # noqa: E402

from _api_helpers import png_b64, wait_for_batch_job  # noqa: E402
from _live_server import serve  # noqa: E402
from lib_clipcap.app import api  # noqa: E402
from lib_clipcap.app.security import RequestPolicy  # noqa: E402
from lib_clipcap.app.server import create_app  # noqa: E402
from lib_clipcap.app.service import ModelManager  # noqa: E402
from lib_clipcap.batch.jobs import JobManager  # noqa: E402

DEMO = "shapes-demo"
SECRET = "TOP SECRET: the contents of a file outside the allowed folders"


class Shared:
    """The session's demo captioner; ``unload`` leaves it usable for the other tests."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def unload(self) -> None:
        pass

    def __getattr__(self, name):
        return getattr(self.inner, name)


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` (symlinks not followed) with its bytes: 'nothing created, nothing changed'."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(folder))] = ("link", os.readlink(p))
        elif p.is_file():
            out[str(p.relative_to(folder))] = p.read_bytes()
    return out


@pytest.fixture
def world(tmp_path, demo_captioner):
    """ROOT (allowed) with a data set ds/ of two captioned images, a folder outside it, and the served app."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "ds").mkdir(parents=True)
    outside.mkdir()
    for i in range(2):
        Image.new("RGB", (32, 32), (200, 60 * i, 0)).save(root / "ds" / f"{i:02d}.png")
        (root / "ds" / f"{i:02d}.txt").write_text(f"a red square number {i}", encoding="utf-8")
    (outside / "secret.txt").write_text(SECRET, encoding="utf-8")
    manager = ModelManager(models_dir=tmp_path / "models", loader=lambda name: Shared(demo_captioner))
    jobs = JobManager(manager, [root], caption_exts_hint="--caption-ext EXT")
    policy = RequestPolicy.for_bind("127.0.0.1", origin_hint="--cors-allow-origin ORIGIN",
                                    host_hint="--allow-host NAME")
    app = create_app(manager, job_manager=jobs, ui=False, default_model=DEMO, request_policy=policy)
    return {"root": root, "outside": outside, "jobs": jobs, "app": app, "tmp": tmp_path, "manager": manager}


def batch(c, **body):
    return c.post("/clipcap/v1/batch", {"inputs": ["ds"], "model": DEMO, "workers": 0, "max_new_tokens": 6, **body})


def error(r, status: int) -> dict:
    assert r.status == status, (r.status, r.body)
    assert r.headers["content-type"].startswith("application/json"), r.headers
    return r.json()["error"]


# ------------------------------------------------------------------------------------------------ 1. manifests
def test_a_manifest_is_never_a_dot_file_an_image_or_a_script(world):
    root = world["root"]
    before = snapshot(world["tmp"])
    with serve(world["app"]) as c:
        for field, value in (("manifest_csv", ".bashrc"), ("manifest_csv", "ds/00.png"), ("manifest_jsonl", "run.sh"),
                             ("manifest_csv", "ds/.hidden.csv"), ("manifest_jsonl", "ds/.clipcap-journal.jsonl"),
                             ("manifest_csv", "m.csv.sh"), ("manifest_jsonl", "m.json")):
            # the reproduction: request-chosen text in the rows of a file that a shell would run
            err = error(batch(c, replace=[["a red", "x;touch PWNED;"]], **{field: value}), 422)
            assert err["field"] == field and value in err["message"], err
            assert "name ends in" in err["message"]
    assert world["jobs"].jobs() == []  # nothing queued
    assert snapshot(world["tmp"]) == before  # nothing created, nothing appended
    assert not (root / ".bashrc").exists() and not (root / "run.sh").exists()


def test_an_existing_file_the_tool_did_not_write_is_refused(world):
    root = world["root"]
    (root / "notes.csv").write_text("name,price\nfoo,3\n")  # a user's spreadsheet
    (root / "log.jsonl").write_text('{"event": "start"}\n')
    (root / ".profile").write_text("export PATH=$HOME/bin:$PATH\n")
    os.symlink(root / ".profile", root / "ds" / "link.csv")  # a manifest name leading to a shell start-up file
    (root / "folder.csv").mkdir()
    before = snapshot(world["tmp"])
    with serve(world["app"]) as c:
        for field, value, words in (("manifest_csv", "notes.csv", "not written by ClipCap"),
                                    ("manifest_jsonl", "log.jsonl", "not written by ClipCap"),
                                    ("manifest_csv", "ds/link.csv", "symlink"),
                                    ("manifest_csv", "folder.csv", "folder")):
            err = error(batch(c, **{field: value}), 422)
            assert err["field"] == field and value in err["message"] and words in err["message"], err
        assert world["jobs"].jobs() == []
    assert snapshot(world["tmp"]) == before


def test_a_manifest_the_tool_wrote_is_extended_by_a_second_run(world):
    root = world["root"]
    with serve(world["app"]) as c:
        body = {"manifest_csv": "out/M.CSV", "manifest_jsonl": "out/m.jsonl"}  # suffixes compare case-folded
        for existing in ("skip", "overwrite"):
            r = batch(c, existing=existing, **body)
            assert r.status == 202, r.body
            assert wait_for_batch_job(c, r.json()["id"], timeout=120)["state"] == "done"
    csv_lines = (root / "out" / "M.CSV").read_text().splitlines()
    assert csv_lines[0] == "path,output,status,caption,model,score,keywords,reason,tags,tags_output"
    assert len(csv_lines) == 5 and csv_lines.count(csv_lines[0]) == 1  # one header, two rows per run
    rows = [json.loads(line) for line in (root / "out" / "m.jsonl").read_text().splitlines()]
    assert [r["status"] for r in rows] == ["skipped", "skipped", "written", "written"]


# ------------------------------------------------------------------------------------------------ 2. symlinks
def test_review_does_not_read_through_symlinks_leading_out(world):
    root, outside = world["root"], world["outside"]
    (root / "ds" / "00.txt").unlink()
    os.symlink(outside / "secret.txt", root / "ds" / "00.txt")
    os.symlink(outside / "secret.txt", root / "ds" / "01.ref")  # a reference caption leading out
    with serve(world["app"]) as c:
        for body in ({"folder": "ds", "scores": False}, {"folder": "ds", "scores": False, "ref_ext": ".ref"},
                     {"folder": "ds", "model": DEMO}):
            r = c.post("/clipcap/v1/review", body)
            assert r.status == 200, r.body
            assert "TOP SECRET" not in r.text  # not in a row, a message or anywhere else
            rows = {Path(row["image"]).name: row for row in r.json()["rows"]}
            assert rows["00.png"]["caption"] is None
            assert "outside the allowed folders" in rows["00.png"]["caption_error"]
            assert rows["01.png"]["caption"] == "a red square number 1"  # the rest of the folder still works
            if "ref_ext" in body:
                assert rows["01.png"]["ref_caption"] is None and "reference caption" in rows["01.png"]["caption_error"]
            else:
                assert rows["01.png"]["caption_error"] is None
        r = c.request("PUT", "/clipcap/v1/review/caption", {"folder": "ds", "image": "00.png", "caption": "planted"})
        assert r.status == 403 and r.error_type == "forbidden_path", r.body  # writing: refused as before
    assert (outside / "secret.txt").read_text(encoding="utf-8") == SECRET


# ------------------------------------------------------------------------------------------------ 5. text rules
@pytest.mark.parametrize("char", ["\u2028", "\u2029", "\x85", "\n", "\x1b"])
def test_one_text_rule_for_review_saves_and_batch_text(world, char):
    ds = world["root"] / "ds"
    before = snapshot(world["tmp"])
    code = f"U+{ord(char):04X}"
    with serve(world["app"]) as c:
        r = c.request("PUT", "/clipcap/v1/review/caption", {"folder": "ds", "image": "01.png", "caption": f"a{char}b"})
        review_err = error(r, 422)
        assert review_err["type"] == "invalid_caption" and code in review_err["message"], review_err
        for field in ("prefix", "suffix", "separator"):
            err = error(batch(c, **{field: f"a{char}b"}), 422)
            assert err["field"] == field and code in err["message"], err
        # the same sentence on both faces (the batch one names the setting that allows line breaks)
        assert review_err["message"].split(": ", 1)[1].split(" (")[0] in err["message"]
    assert (ds / "01.txt").read_text(encoding="utf-8") == "a red square number 1"
    assert snapshot(world["tmp"]) == before and world["jobs"].jobs() == []


def test_one_case_folded_suffix_rule(world):
    ds = world["root"] / "ds"
    with serve(world["app"]) as c:
        for ext in (".PNG", ".Png", ".png", ".txt.PNG", ".JPEG"):  # an image's suffix, in any case: refused
            err = error(batch(c, caption_ext=ext), 422)
            assert err["field"] == "caption_ext" and ext in err["message"], err
            err = error(c.post("/clipcap/v1/review", {"folder": "ds", "caption_ext": ext, "scores": False}), 422)
            assert err["field"] == "caption_ext", err
            err = error(c.post("/clipcap/v1/review", {"folder": "ds", "ref_ext": ext, "scores": False}), 422)
            assert err["field"] == "ref_ext", err
        for ext in (".SH", ".Desktop"):  # not on the allow-list, in any case
            assert "not an allowed suffix" in error(batch(c, caption_ext=ext), 422)["message"]
        # .TXT is .txt for the allow-list; the file gets the suffix as typed
        r = batch(c, caption_ext=".TXT")
        assert r.status == 202, r.body
        assert wait_for_batch_job(c, r.json()["id"], timeout=120)["written"] == 2
        assert sorted(p.name for p in ds.glob("*.TXT")) == ["00.TXT", "01.TXT"]
        r = c.post("/clipcap/v1/review", {"folder": "ds", "caption_ext": ".TXT", "scores": False})
        assert r.status == 200 and all(row["caption"] for row in r.json()["rows"]), r.body


def test_the_suffix_rule_itself():
    from lib_clipcap.options_table import OptionError
    from lib_clipcap.textrules import check_suffix, suffix_key

    assert suffix_key(".TXT") == suffix_key(".txt") and suffix_key(".PNG") == suffix_key(".png")
    assert check_suffix("caption_ext", ".TXT", allowed=[".txt"]) == ".TXT"  # kept as typed
    for bad in (".PNG", ".x.png", "txt", ".", "./x", ".a\u2028b"):
        with pytest.raises(OptionError, match="caption_ext"):
            check_suffix("caption_ext", bad, forbidden=[".png"])


# ------------------------------------------------------------------------------------------------ 6. NaN, Infinity
@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_are_a_json_422_naming_the_field(world, token):
    with serve(world["app"]) as c:
        for path, body in (("/clipcap/v1/caption", f'{{"image": "{png_b64((16, 16))}", "temperature": {token}}}'),
                           ("/clipcap/v1/batch", f'{{"inputs": ["ds"], "replace": [["a", "b"]], "top_p": {token}}}'),
                           ("/clipcap/v1/review", f'{{"folder": "ds", "min_score": {token}}}')):
            r = c.post(path, body)
            err = error(r, 422)
            assert err["type"] == "invalid_number" and token in err["message"], err
            assert err["field"] in ("temperature", "top_p", "min_score") and err["field"] in err["message"]
        ok = c.post("/clipcap/v1/caption", {"image": png_b64((16, 16)), "max_new_tokens": 3})
        assert ok.status == 200, ok.body  # the server keeps answering
    assert world["jobs"].jobs() == []


def test_error_bodies_stay_json_whatever_value_they_quote():
    for value in (float("nan"), float("inf"), b"bytes", {1, 2}):
        r = api.ApiError(422, "invalid_option", "bad", field="x", value=value).response()
        assert r.status_code == 422 and json.loads(r.body)["error"]["value"] == repr(value)


# ------------------------------------------------------------------------------------------------ 7. bounded work
def test_a_backtracking_regex_answers_422_quickly_and_the_server_stays_responsive(world):
    pytest.importorskip("regex")
    ds = world["root"] / "ds"
    (ds / "00.txt").write_text("a" * 40 + "!", encoding="utf-8")  # (a|aa)+$ backtracks 2^40 ways on it
    (ds / "01.txt").write_text("a" * 23 + "b", encoding="utf-8")  # the caption for ^(a+)+$
    with serve(world["app"]) as c:
        assert c.post("/clipcap/v1/review", {"folder": "ds", "scores": False}).status == 200  # warm: tokenizer loaded
        assert c.get("/clipcap/v1/models").status == 200  # warm: checkpoint look-ups done once
        t0 = time.monotonic()
        r = c.post("/clipcap/v1/review", {"folder": "ds", "scores": False, "text": "^(a+)+$", "regex": True})
        assert r.status == 200 and r.json()["total"] == 0, r.body  # the pattern: no backtracking blow-up
        # (a blow-up would have hit the 1 s limit: a 422, not this 200); the wall clock only says it was not close
        assert time.monotonic() - t0 < 5.0

        answer: dict = {}

        def hostile() -> None:
            t = time.monotonic()
            answer["reply"] = c.post("/clipcap/v1/review", {"folder": "ds", "scores": False, "text": "(a|aa)+$",
                                                            "regex": True})
            answer["s"] = time.monotonic() - t

        thread = threading.Thread(target=hostile)
        thread.start()
        time.sleep(0.3)  # the expression is running now
        t = time.monotonic()
        models = c.get("/clipcap/v1/models")
        models_s = time.monotonic() - t
        thread.join(30)
    assert models.status == 200 and models_s < 1.0, models_s  # other requests are answered meanwhile
    err = error(answer["reply"], 422)
    assert err["field"] == "text" and "took longer than" in err["message"] and "plain text" in err["message"]
    assert answer["s"] < 2.5, answer["s"]
    print(f"hostile regex answered 422 in {answer['s']:.2f} s; GET /models meanwhile in {models_s * 1e3:.0f} ms")


def test_regex_filters_without_the_regex_package_are_refused_clearly(monkeypatch):
    import sys

    from lib_clipcap.options_table import OptionError
    from lib_clipcap.textrules import UserPattern

    monkeypatch.setitem(sys.modules, "regex", None)  # import regex -> ImportError
    with pytest.raises(OptionError, match="need the 'regex' package"):
        UserPattern("text", "a+", regex=True)
    assert UserPattern("text", "A red").search("a RED square")  # plain text needs no package


@pytest.mark.parametrize("flag", [None, "1", "3"])
def test_at_most_max_decodes_images_are_decoded_at_once(world, monkeypatch, flag):
    """Default 2 (api.DEFAULT_MAX_DECODES); ``serve --max-decodes N`` sets N, parsed as the command line does."""
    import argparse

    from lib_clipcap.app.server import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--max-decodes", flag] if flag else [])
    app = create_app(world["manager"], ui=False, default_model=DEMO, max_decodes=args.max_decodes)
    active, peak, lock = [0], [0], threading.Lock()
    real = api.open_image

    def counting(*a, **kw):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            time.sleep(0.3)
            return real(*a, **kw)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(api, "open_image", counting)
    replies: list = [None] * 6
    with serve(app) as c:
        def post(i: int) -> None:
            replies[i] = c.post("/clipcap/v1/caption", {"image": png_b64((24, 24)), "max_new_tokens": 3})

        threads = [threading.Thread(target=post, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert [r.status for r in replies] == [200] * 6
    assert peak[0] == (int(flag) if flag else api.DEFAULT_MAX_DECODES) and api.DEFAULT_MAX_DECODES == 2


def test_huge_uploads_are_reduced_while_decoding():
    from lib_clipcap.images import load_image

    buf = io.BytesIO()
    Image.new("RGB", (4000, 2000), (10, 200, 30)).save(buf, "JPEG", exif=_exif_rotated())
    img = load_image(buf.getvalue(), reduce_to=1024)
    assert img.size == (1024, 2048) and img.mode == "RGB"  # shorter side 1024, EXIF rotation still applied
    assert img.getpixel((5, 5))[1] > 150
    small = io.BytesIO()
    Image.new("RGB", (300, 200), "red").save(small, "PNG")
    assert load_image(small.getvalue(), reduce_to=1024).tobytes() == load_image(small.getvalue()).tobytes()


def _exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    return exif.tobytes()


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc to measure memory")
def test_a_burst_of_huge_images_leaves_memory_near_its_base(world):
    """Issue 21.7: eight concurrent 8192x8192 PNGs (200 KB each, 200 MB of pixels each). The server runs in this
    process, so its RSS is this process's."""
    buf = io.BytesIO()
    Image.new("RGB", (8192, 8192), (30, 120, 200)).save(buf, "PNG")
    big = base64.b64encode(buf.getvalue()).decode()
    replies: list = [None] * 8
    with serve(world["app"]) as c:
        assert c.post("/clipcap/v1/caption", {"image": png_b64((64, 64)), "max_new_tokens": 3}).status == 200
        before = _rss_mb()
        peak = [before]
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], _rss_mb())
                time.sleep(0.05)

        def post(i: int) -> None:
            replies[i] = c.post("/clipcap/v1/caption", {"image": big, "max_new_tokens": 3})

        watcher = threading.Thread(target=watch)
        watcher.start()
        t0 = time.monotonic()
        threads = [threading.Thread(target=post, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        took = time.monotonic() - t0
        done.set()
        watcher.join()
        time.sleep(0.5)
        after = _rss_mb()
    assert [r.status for r in replies] == [200] * 8, [r.body[:200] for r in replies if r.status != 200]
    print(f"RSS before {before:.0f} MB, peak {peak[0]:.0f} MB, after {after:.0f} MB; burst took {took:.1f} s")
    assert after <= before * 1.2, (before, peak[0], after)
