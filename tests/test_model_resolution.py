"""One model-resolution rule (lib_clipcap.options_table.resolve_model) for every face: the default falls back to the
bundled demo model when it is not installed, with one notice; a model named explicitly is never replaced."""

from __future__ import annotations

from lib_clipcap.options_table import DEMO_MODEL, demo_fallback_notice, pick_default_model, resolve_model


def test_default_not_installed_falls_back_with_the_notice(tmp_path):
    name, notice = resolve_model(None, default="flickr8k", models_dir=tmp_path)
    assert (name, notice) == (DEMO_MODEL, demo_fallback_notice("flickr8k"))
    assert "falling back to the bundled demo model" in notice and "Models section" in notice
    assert resolve_model("", default="flickr8k", models_dir=tmp_path) == (name, notice)  # "" is "the default"
    assert pick_default_model(models_dir=tmp_path, preferred="flickr8k") == (name, notice)


def test_installed_defaults_and_named_models_are_kept(tmp_path):
    assert resolve_model(None, default="shapes-sbg", models_dir=tmp_path) == ("shapes-sbg", None)
    assert resolve_model(None, default=None, models_dir=tmp_path)[0] == DEMO_MODEL  # table default flickr8k missing
    assert resolve_model("flickr8k", default="shapes-demo", models_dir=tmp_path) == ("flickr8k", None)
    assert resolve_model(" shapes-demo ", models_dir=tmp_path) == ("shapes-demo", None)


def test_a_hand_downloaded_default_is_used(tmp_path):
    assert resolve_model(None, default="coco", models_dir=tmp_path)[0] == DEMO_MODEL
    (tmp_path / "coco_weights.pt").write_bytes(b"weights")  # where the MissingFileError message says to put it
    assert resolve_model(None, default="coco", models_dir=tmp_path) == ("coco", None)


def test_unknown_default_names_it():
    name, notice = resolve_model(None, default="no-such-model")
    assert name == DEMO_MODEL and "'no-such-model' is not in the registry" in notice
