"""Batch tagging in a user's ordinary routine (issue 20): re-runs replace the tool's own text instead of stacking it,
trigger words always first, every run recorded and reversible (``tag --runs`` / ``--undo``, the API's
``/batch/runs`` and ``/batch/undo``), a dry run without the model, a preview, honest progress and summary categories.

Every step checks the bytes of every caption file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from _batch_data import one_torch_thread, shapes_pngs
from lib_clipcap.batch import TagOptions, run_tagging
from lib_clipcap.batch.errors import BatchError
from lib_clipcap.batch.runs import STATE_DIR, RunNotFoundError, StateFolder, list_runs, undo_run

HAND = "hand written caption, masterpiece, sks"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def cap(demo_captioner):
    return demo_captioner


def opts(folder, **kw) -> TagOptions:
    kw.setdefault("workers", 0)
    kw.setdefault("batch_size", 2)
    return TagOptions(inputs=[str(folder)], **kw)


def captions(folder: Path) -> dict:
    """Every caption file under ``folder`` (the state folder left out) with its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.txt"))
            if STATE_DIR not in p.relative_to(folder).parts}


def stop_after(batches: int):
    """A ``should_stop`` that lets ``batches`` batches through, then stops the run."""
    polls = []

    def should_stop() -> bool:
        polls.append(1)
        return len(polls) > batches

    return should_stop


def generated(cap, imgs) -> list:
    return [r.text for r in cap.caption([str(p) for p in imgs], decoding="greedy")]


@pytest.fixture
def lora_set(tmp_path, cap):
    """4 images; the first two with hand-written captions (one with the trigger in the middle)."""
    imgs = shapes_pngs(tmp_path / "set", 4, seed=3, prefix="img")
    imgs[0].with_suffix(".txt").write_bytes(HAND.encode())
    imgs[1].with_suffix(".txt").write_bytes(b"my own words\n")
    return tmp_path / "set", imgs, generated(cap, imgs)


# ------------------------------------------------------------------------------------------- re-runs stack (1)
def test_rerun_with_one_option_changed_replaces_its_own_text_not_stacks_it(cap, lora_set):
    folder, imgs, gen = lora_set
    run_tagging(opts(folder, existing="append", prefix="sks"), cap)
    first = captions(folder)
    assert first["img00.txt"] == f"{HAND}, sks, {gen[0]}".encode()
    assert first["img01.txt"] == f"my own words, sks, {gen[1]}".encode()
    assert first["img02.txt"] == f"sks, {gen[2]}".encode()
    # the same command with one option changed: every file holds ONE tool-written part, the new one
    s = run_tagging(opts(folder, existing="append", prefix="sks", replace=[["background", "backdrop"]]), cap)
    assert s.written == 4
    second = captions(folder)
    new = [g.replace("background", "backdrop") for g in gen]
    assert second["img00.txt"] == f"{HAND}, sks, {new[0]}".encode()
    assert second["img01.txt"] == f"my own words, sks, {new[1]}".encode()
    assert second["img02.txt"] == f"sks, {new[2]}".encode()
    assert second["img03.txt"] == f"sks, {new[3]}".encode()
    # prepend after append: still one own part, now in front of the user's text
    run_tagging(opts(folder, existing="prepend", prefix="sks"), cap)
    third = captions(folder)
    assert third["img01.txt"] == f"sks, {gen[1].rstrip('.')}, my own words".encode()
    assert third["img02.txt"] == f"sks, {gen[2]}".encode()


def test_a_file_whose_tool_text_was_edited_is_the_users_and_append_leaves_it(cap, lora_set):
    folder, imgs, gen = lora_set
    run_tagging(opts(folder, existing="append"), cap)
    edited = imgs[2].with_suffix(".txt")
    edited.write_bytes(b"a hand-fixed caption")  # e.g. corrected in review
    only_user_part = imgs[1].with_suffix(".txt")
    only_user_part.write_bytes(f"my better words, {gen[1]}".encode())  # the user edited their part only
    s = run_tagging(opts(folder, existing="append", prefix="x"), cap)
    assert edited.read_bytes() == b"a hand-fixed caption"
    assert only_user_part.read_bytes() == f"my better words, x, {gen[1]}".encode()  # their edit kept, ours replaced
    kept = [o for o in run_tagging(opts(folder, existing="append", prefix="y", dry_run=True), cap).plan
            if o.path == str(imgs[2])]
    assert kept[0].status == "skipped" and "--existing overwrite" in kept[0].reason
    assert s.kept == 1 and s.written == 3
    s = run_tagging(opts(folder, existing="overwrite"), cap)  # only overwrite replaces the user's text
    assert edited.read_bytes() == gen[2].encode()


# ------------------------------------------------------------------------------------------- trigger first (3)
@pytest.mark.parametrize("policy", ["append", "prepend", "overwrite"])
def test_trigger_is_always_the_first_segment_and_never_twice(cap, lora_set, policy):
    folder, imgs, gen = lora_set
    run_tagging(opts(folder, existing=policy, triggers=["sks"]), cap)
    got = {k: v.decode() for k, v in captions(folder).items()}
    assert all(t.startswith("sks, ") and t.count("sks") == 1 for t in got.values()), got
    if policy == "append":
        assert got["img00.txt"] == f"sks, hand written caption, masterpiece, {gen[0]}"
    run_tagging(opts(folder, existing=policy, triggers=["sks"], lowercase=True, max_length=200), cap)
    again = {k: v.decode() for k, v in captions(folder).items()}
    assert again == got  # a re-run with other settings but the same text: nothing stacked, trigger once


def test_trigger_options_are_checked_and_named():
    from lib_clipcap.options_table import OptionError

    with pytest.raises(OptionError) as e:
        TagOptions(inputs=["x"], triggers=["sks, woman"])
    assert e.value.field == "triggers" and "separator" in e.value.reason
    assert TagOptions(inputs=["x"], triggers=["sks", "SKS", " ohwx "]).triggers == ["sks", "ohwx"]


# ----------------------------------------------------------------------------------------------------- undo (2)
@pytest.mark.parametrize("policy", ["overwrite", "append", "prepend"])
def test_undo_restores_byte_identical_files_and_removes_created_ones(cap, lora_set, policy):
    folder, imgs, _ = lora_set
    before = captions(folder)
    s = run_tagging(opts(folder, existing=policy, triggers=["sks"]), cap)
    assert s.written == 4 and captions(folder) != before
    (run_id,) = s.run_ids.values()
    runs = list_runs(folder)
    assert [(r["id"], r["created"], r["changed"], r["state"]) for r in runs] == [(run_id, 2, 2, "done")]
    report = undo_run(folder)
    assert report.complete and sorted(report.restored) == ["img00.txt", "img01.txt"]
    assert sorted(report.removed) == ["img02.txt", "img03.txt"]
    assert captions(folder) == before  # byte for byte
    assert list_runs(folder)[0]["undone"]
    with pytest.raises(RunNotFoundError, match="already undone"):
        undo_run(folder)
    report = undo_run(folder, run_id)  # undoing again is harmless
    assert report.complete and len(report.already) == 4 and captions(folder) == before


def test_undo_refuses_a_file_edited_since_and_reports_it(cap, lora_set):
    folder, imgs, _ = lora_set
    before = captions(folder)
    run_tagging(opts(folder, existing="overwrite"), cap)
    imgs[0].with_suffix(".txt").write_bytes(b"edited after the run")
    imgs[3].with_suffix(".txt").write_bytes(b"edited new file")
    report = undo_run(folder)
    assert not report.complete
    assert sorted(r["path"] for r in report.refused) == ["img00.txt", "img03.txt"]
    assert all("changed since" in r["reason"] for r in report.refused)
    after = captions(folder)
    assert after["img00.txt"] == b"edited after the run" and after["img03.txt"] == b"edited new file"
    assert after["img01.txt"] == before["img01.txt"] and "img02.txt" not in after
    assert not list_runs(folder)[0]["undone"]  # not complete: --undo may be rerun once the user decides


def test_undo_of_an_older_run_leaves_files_a_later_run_changed(cap, lora_set):
    folder, imgs, _ = lora_set
    first = run_tagging(opts(folder, existing="overwrite"), cap)
    run_tagging(opts(folder, existing="overwrite", prefix="x"), cap)
    latest = captions(folder)
    report = undo_run(folder, next(iter(first.run_ids.values())))
    assert len(report.refused) == 4 and captions(folder) == latest
    undo_run(folder)  # the newest first...
    assert undo_run(folder).complete  # ...then the older one: back to the start
    assert captions(folder) == {"img00.txt": HAND.encode(), "img01.txt": b"my own words\n"}


def test_undo_with_output_dir_and_after_resume(cap, tmp_path):
    imgs = shapes_pngs(tmp_path / "in", 3, seed=4)
    out = tmp_path / "out"
    s = run_tagging(opts(tmp_path / "in", output_dir=str(out)), cap, should_stop=stop_after(1))
    assert s.stopped and s.written == 2
    s2 = run_tagging(opts(tmp_path / "in", output_dir=str(out)), cap)  # resumes, with a run record of its own
    assert (s2.written, s2.resumed) == (1, 2)
    assert [(r["created"], r["state"]) for r in list_runs(out)] == [(2, "stopped"), (1, "done")]
    assert len(undo_run(out).removed) == 1 and len(undo_run(out).removed) == 2
    assert captions(out) == {} and not list((tmp_path / "in").glob("*.txt"))


SIGKILL_SCRIPT = r"""
import os, signal, sys
from lib_clipcap.batch import runs
done = []
real = runs._restore
def restore(target, data):
    real(target, data)
    done.append(target)
    if len(done) == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)
runs._restore = restore
runs.undo_run(sys.argv[1])
"""


def test_sigkill_during_undo_leaves_files_old_or_new_and_a_rerun_finishes(cap, tmp_path):
    imgs = shapes_pngs(tmp_path / "set", 6, seed=5)
    originals = {}
    for i, p in enumerate(imgs):
        p.with_suffix(".txt").write_bytes(f"original {i}\n".encode())
        originals[p.with_suffix(".txt").name] = f"original {i}\n".encode()
    run_tagging(opts(tmp_path / "set", existing="overwrite"), cap)
    written = captions(tmp_path / "set")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1]), *sys.path]))
    r = subprocess.run([sys.executable, "-c", SIGKILL_SCRIPT, str(tmp_path / "set"), "3"], env=env,
                       capture_output=True, timeout=120)
    assert r.returncode == -signal.SIGKILL, r.stderr.decode()
    mid = captions(tmp_path / "set")
    assert all(mid[n] in (originals[n], written[n]) for n in originals)  # every file old or new, none torn
    assert sum(mid[n] == originals[n] for n in originals) == 3
    report = undo_run(tmp_path / "set")  # the lock died with the process; the rerun finishes
    assert report.complete and len(report.already) == 3 and len(report.restored) == 3
    assert captions(tmp_path / "set") == originals


def test_state_folder_symlink_is_refused(cap, tmp_path):
    shapes_pngs(tmp_path / "set", 1, seed=6)
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "set" / STATE_DIR)
    with pytest.raises(BatchError, match="symlink"):
        run_tagging(opts(tmp_path / "set"), cap)
    assert list((tmp_path / "elsewhere").iterdir()) == [] and not list((tmp_path / "set").glob("*.txt"))


def test_undo_never_writes_outside_the_folder_a_record_names(cap, tmp_path):
    shapes_pngs(tmp_path / "set", 1, seed=6)
    run_tagging(opts(tmp_path / "set", existing="overwrite"), cap)
    state = StateFolder(tmp_path / "set")
    rec = json.loads(state.files_path.read_text().splitlines()[0])
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"safe")
    rec.update(out="../victim.txt", after=rec["after"])
    with open(state.files_path, "a") as f:
        f.write(json.dumps(rec) + "\n")
    report = undo_run(tmp_path / "set")
    assert any(r["path"] == "../victim.txt" for r in report.refused) and victim.read_bytes() == b"safe"


def test_retention_drops_old_runs_and_says_so(cap, tmp_path):
    imgs = shapes_pngs(tmp_path / "set", 1, seed=7)
    imgs[0].with_suffix(".txt").write_bytes(b"v0")
    ids, pruned = [], []
    for i in range(3):
        s = run_tagging(opts(tmp_path / "set", existing="overwrite", prefix=f"p{i}", keep_runs=2), cap)
        ids += list(s.run_ids.values())
        pruned += s.pruned_runs
    assert pruned == [ids[0]] and [r["id"] for r in list_runs(tmp_path / "set")] == ids[1:]
    with pytest.raises(RunNotFoundError, match="retention"):
        undo_run(tmp_path / "set", ids[0])


# --------------------------------------------------------------------------------- dry run, preview, progress
class NoModel:
    """A captioner a dry run must never touch."""

    name = "shapes-demo"

    def __getattr__(self, item):
        raise AssertionError(f"the dry run used the model ({item})")


def test_dry_run_needs_no_model_and_says_what_the_policy_would_do(cap, lora_set):
    folder, imgs, _ = lora_set
    run_tagging(opts(folder, existing="append", triggers=["sks"]), cap)
    imgs[2].with_suffix(".txt").write_bytes(b"edited")
    imgs[3].with_suffix(".txt").unlink()
    before = captions(folder)
    s = run_tagging(opts(folder, existing="append", triggers=["sks"], prefix="x", dry_run=True), NoModel())
    plan = {Path(o.path).name: (o.status, o.reason) for o in s.plan}
    assert plan["img00.png"][1].startswith("replace own part (run ")
    assert plan["img02.png"][0] == "skipped" and "edited since" in plan["img02.png"][1]
    assert plan["img03.png"] == ("would_write", "create")
    assert captions(folder) == before


def test_preview_prints_the_exact_text_and_writes_nothing(cap, lora_set, tmp_path):
    folder, imgs, gen = lora_set
    before = captions(folder)
    state_before = sorted(folder.rglob("*"))
    s = run_tagging(opts(folder, existing="append", triggers=["sks"], preview=2), cap)
    assert [o.text for o in s.plan] == [f"sks, hand written caption, masterpiece, {gen[0]}",
                                        f"sks, my own words, {gen[1]}"]
    assert captions(folder) == before and sorted(folder.rglob("*")) == state_before


def test_resume_progress_counts_only_processed_files_and_the_summary_separates_skips(cap, tmp_path):
    imgs = shapes_pngs(tmp_path / "set", 5, seed=8)
    imgs[0].with_suffix(".txt").write_bytes(b"mine")
    first = run_tagging(opts(tmp_path / "set", batch_size=2), cap, should_stop=stop_after(1))
    assert first.written == 2
    seen = []
    s = run_tagging(opts(tmp_path / "set", batch_size=2), cap, on_progress=seen.append)
    assert s.kept == 1 and s.resumed == first.written and s.written == 4 - first.written and s.failed == 0
    assert s.line() == (f"written {s.written}, already done (resume) {s.resumed}, had a caption (policy) 1, "
                        f"failed 0")
    started = [p for p in seen if p.to_process]
    assert started[0].processed == 0 and started[0].to_process == s.written  # the bar starts at 0 of what is left
    assert started[-1].processed == s.written and started[-1].images_per_s > 0 and started[-1].eta_s == 0


# ------------------------------------------------------------------------------------------------------- CLI
def test_cli_runs_and_undo(cap, lora_set, capsys, monkeypatch):
    from lib_clipcap.app import cli as app_cli
    from lib_clipcap.batch import cli as tag_cli

    folder, imgs, _ = lora_set
    before = captions(folder)
    monkeypatch.setattr(tag_cli, "load_captioner", lambda args, allow_demo_fallback: cap)
    assert app_cli.main(["tag", str(folder), "--existing", "overwrite", "--trigger", "sks", "--workers", "0"]) == 0
    err = capsys.readouterr().err
    assert "tag --undo" in err
    assert app_cli.main(["tag", "--runs", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "created 2, changed 2" in out and "existing=overwrite" in out
    assert app_cli.main(["tag", "--undo", str(folder)]) == 0
    assert "restored 2, removed 2" in capsys.readouterr().out and captions(folder) == before
    assert app_cli.main(["tag", "--undo", str(folder), "nonsense"]) == 2
    assert "--runs" in capsys.readouterr().err


def test_cli_messages_name_the_flags(tmp_path, capsys, monkeypatch):
    from lib_clipcap.app import cli as app_cli
    from lib_clipcap.batch import cli as tag_cli

    shapes_pngs(tmp_path, 1, seed=9)
    assert app_cli.main(["tag", str(tmp_path), "--prefix", "a\nb"]) == 2
    err = capsys.readouterr().err
    assert "--prefix" in err and "--multiline" in err and "set multiline" not in err
    assert app_cli.main(["tag", str(tmp_path), "--trigger", "a, b"]) == 2
    assert "--trigger" in capsys.readouterr().err
    monkeypatch.setattr(tag_cli, "load_captioner", lambda *a, **k: pytest.fail("--dry-run loaded the model"))
    assert app_cli.main(["tag", str(tmp_path), "--dry-run"]) == 0
    assert "create\t" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        app_cli.main(["tag", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "falling back to the bundled demo model" not in help_text and "exit status 2" in help_text


# ------------------------------------------------------------------------------------------------------- API
def test_api_lists_and_undoes_runs_json_only_inside_the_allowed_folders(cap, tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from lib_clipcap.app.api import API_PREFIX, mount_api
    from lib_clipcap.app.security import RequestPolicy
    from lib_clipcap.app.service import ModelManager
    from lib_clipcap.batch.jobs import JobManager

    root = tmp_path / "allowed"
    imgs = shapes_pngs(root / "set", 2, seed=10)
    imgs[0].with_suffix(".txt").write_bytes(b"mine")
    (tmp_path / "elsewhere").mkdir()
    manager = ModelManager(models_dir=tmp_path, loader=lambda name: cap)
    jobs = JobManager(manager, [root])
    app = FastAPI()
    mount_api(app, manager, job_manager=jobs, default_model="shapes-demo",
              request_policy=RequestPolicy.for_bind("127.0.0.1"))
    client = TestClient(app, base_url="http://127.0.0.1")
    job = jobs.start(TagOptions(inputs=["set"], existing="append", triggers=["sks"], workers=0), "shapes-demo")
    status = jobs.wait(job, 60)
    assert status["state"] == "done" and status["run_ids"] and status["kept"] == 0
    assert status["images_per_s"] and status["to_process"] == 2 and status["processed"] == 2
    assert imgs[0].with_suffix(".txt").read_bytes().startswith(b"sks, mine, ")

    r = client.post(f"{API_PREFIX}/batch/runs", json={"folder": "set"})
    assert r.status_code == 200, r.text
    (run,) = r.json()["runs"]
    assert (run["created"], run["changed"]) == (1, 1)
    # not JSON, or from another site: refused before anything happens
    assert client.post(f"{API_PREFIX}/batch/undo", data={"folder": "set"}).status_code == 415
    r = client.post(f"{API_PREFIX}/batch/undo", json={"folder": "set"}, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403
    assert imgs[0].with_suffix(".txt").read_bytes().startswith(b"sks, ")
    for body, code, kind in (({"folder": str(tmp_path / "elsewhere")}, 403, "forbidden_path"),
                             ({"folder": "../elsewhere"}, 403, "forbidden_path"),
                             ({"folder": "missing"}, 404, "folder_not_found"),
                             ({"folder": "set", "run": "20000101-000000-abcdef"}, 404, "unknown_run"),
                             ({"folder": "set", "frobnicate": 1}, 422, "invalid_option")):
        r = client.post(f"{API_PREFIX}/batch/undo", json=body)
        assert r.status_code == code and r.json()["error"]["type"] == kind, r.text
    r = client.post(f"{API_PREFIX}/batch/undo", json={"folder": "set", "run": run["id"]})
    assert r.status_code == 200 and r.json()["complete"], r.text
    assert imgs[0].with_suffix(".txt").read_bytes() == b"mine" and not imgs[1].with_suffix(".txt").exists()
