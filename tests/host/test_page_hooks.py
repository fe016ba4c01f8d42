"""javascript/clipcap.js binds to stable hooks only and degrades with a console message when one is missing.

Runs the page script in Node with a minimal DOM (no browser): the host helpers ``gradioApp`` / ``onUiLoaded`` present
or absent, the gallery present, restyled (a host UI rewrite) or absent. The browser suites (test_webui_browser.py)
exercise it against each gradio's real gallery DOM.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from webui_double import REPO

NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="needs node")

HARNESS = r"""
const warnings = [];
global.console = {warn: (m) => warnings.push(String(m)), log: () => {}};
const cfg = JSON.parse(process.argv[2]);
function el(id, classes, children) {
  return {id, title: "", classList: {contains: (c) => classes.includes(c)}, children: children || [],
    querySelectorAll(sel) { return this.children.filter((c) => sel.split(".").slice(1).every((k) => c.classList.contains(k))); },
    querySelector(sel) { return sel === "img" ? (this.children.length ? {} : null) : null; }};
}
const thumbs = (cfg.thumbs || []).map((sel) => el("", cfg.restyled ? ["tile"].concat(sel ? ["picked"] : [])
                                                              : ["thumbnail-item"].concat(sel ? ["selected"] : [])));
const byId = {};
if (cfg.gallery) byId["txt2img_gallery"] = el("txt2img_gallery", [], thumbs);
if (cfg.buttons) { byId["txt2img_clipcap_button"] = el("txt2img_clipcap_button", []); byId["img2img_clipcap_button"] = el("img2img_clipcap_button", []); }
const root = {querySelector: (sel) => byId[sel.slice(1)] || null};
global.document = {readyState: "complete", querySelector: root.querySelector, addEventListener: () => {}};
let loaded = [];
if (cfg.helpers) { global.gradioApp = () => root; global.onUiLoaded = (cb) => loaded.push(cb); }
global.setInterval = (fn) => { for (let i = 0; i < 60; i++) fn(); return 1; };
global.clearInterval = () => {};
require("vm").runInThisContext(require("fs").readFileSync(cfg.script, "utf8"));  // as a page <script>
loaded.forEach((cb) => cb());
const out = clipcapGalleryArgs(["a", "b", "c"], "prompt");
console.log = process.stdout.write.bind(process.stdout);
process.stdout.write(JSON.stringify({args: out, warnings,
  title: byId["txt2img_clipcap_button"] ? byId["txt2img_clipcap_button"].title : null}));
"""


def run(tmp_path, **cfg):
    harness = tmp_path / "harness.js"
    harness.write_text(HARNESS)
    cfg["script"] = str(REPO / "javascript" / "clipcap.js")
    r = subprocess.run([NODE, str(harness), json.dumps(cfg)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_selected_image_through_the_host_helpers(tmp_path):
    out = run(tmp_path, helpers=True, gallery=True, buttons=True, thumbs=[False, True, False])
    assert out["args"] == [["b"], "prompt"]
    assert out["warnings"] == []
    assert out["title"].startswith("Caption the selected image")  # our own element id got its tooltip


def test_missing_host_helpers_say_so_and_still_work(tmp_path):
    out = run(tmp_path, helpers=False, gallery=True, buttons=True, thumbs=[False, False, True])
    assert out["args"] == [["c"], "prompt"]  # document lookups instead of gradioApp()
    assert any("gradioApp() is missing" in w for w in out["warnings"])
    assert any("onUiLoaded() is missing" in w for w in out["warnings"])
    assert out["title"]


@pytest.mark.parametrize("cfg, message", [
    ({"gallery": False}, "#txt2img_gallery is not on this page"),
    ({"gallery": True, "restyled": True, "thumbs": [False, True]}, "thumbnails (.thumbnail-item) are not found"),
])
def test_a_rewritten_host_ui_costs_the_selection_not_the_button(tmp_path, cfg, message):
    out = run(tmp_path, helpers=True, buttons=True, **cfg)
    assert out["args"] == [["a"], "prompt"]  # the first image, as documented
    assert sum(message in w for w in out["warnings"]) == 1, out["warnings"]  # said once, clearly


def test_missing_buttons_are_reported(tmp_path):
    out = run(tmp_path, helpers=True, gallery=True, buttons=False, thumbs=[True])
    assert any("caption buttons" in w and "not on this page" in w for w in out["warnings"])
