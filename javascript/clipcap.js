// ClipCap: client side of the prompt-from-image buttons (scripts/clipcap_tab.py, clipcap_webui/prompt_button.py).
// The WebUI loads every javascript/*.js of an extension into the page's global scope, so the functions named in
// `_js=` / `js=` must be globals.
//
// Hooks, from the most to the least stable (docs/hosts.md, "Page scripts"):
// - element ids this extension owns (`txt2img_clipcap_button`, `img2img_clipcap_button`);
// - the host's documented helpers `gradioApp()` and `onUiLoaded(cb)` (script.js in A1111, Forge, Forge Neo and
//   Forge Classic); without them this file falls back to `document` and DOMContentLoaded and says so in the console;
// - the output gallery `#txt2img_gallery` and gradio's thumbnail classes, only to learn which image is selected:
//   gradio 3.41 (A1111, Classic) and 4.40 (Forge, Neo) both mark the shown image with the class "selected" on a
//   `.thumbnail-item` button, in the preview strip (`.thumbnail-small`) when one image is open, else in the grid.
//   When a host UI rewrite moves these (Neo's February 2026 one did for other extensions), the button still works
//   on the first image and the console says why.
// Nothing here throws: a missing hook costs a feature, never the button.

var clipcapWarned = {};

function clipcapWarnOnce(key, message) {
    if (clipcapWarned[key]) return;
    clipcapWarned[key] = true;
    if (typeof console !== "undefined" && console.warn) console.warn("[ClipCap] " + message);
}

function clipcapRoot() {
    if (typeof gradioApp === "function") {
        try {
            var root = gradioApp();
            if (root && typeof root.querySelector === "function") return root;
        } catch (e) {
            // fall through to the document
        }
    }
    clipcapWarnOnce("gradioApp", "the WebUI's gradioApp() is missing here; looking up elements in the document");
    return document;
}

// Index of the selected image of `#<tabname>_gallery`, or -1 when none is selected (or the gallery is not found).
function clipcapGallerySelectedIndex(tabname) {
    var gallery = clipcapRoot().querySelector("#" + tabname + "_gallery");
    if (!gallery) {
        clipcapWarnOnce("gallery-" + tabname, "#" + tabname + "_gallery is not on this page (the WebUI's layout " +
            "changed?): the caption button uses the first generated image");
        return -1;
    }
    var strip = gallery.querySelectorAll(".thumbnail-item.thumbnail-small");
    var items = strip.length ? strip : gallery.querySelectorAll(".thumbnail-item");
    if (!items.length && gallery.querySelector("img")) {
        clipcapWarnOnce("thumbnails-" + tabname, "the gallery's thumbnails (.thumbnail-item) are not found (another " +
            "gradio?): the caption button uses the first generated image");
    }
    for (var i = 0; i < items.length; i++) {
        if (items[i].classList.contains("selected")) return i;
    }
    return -1;
}

// Pick the gallery item to caption before the request leaves the browser: the selected image, else the first.
// Gradio passes the inputs' values (gallery, prompt[, negative prompt]) followed by the outputs' (the inputs but the
// gallery: prompt[, negative prompt]); the returned list is what the Python handler receives: the inputs, the
// gallery reduced to one item (gradio 3: file dicts, gradio 4: {image, caption}), the others unchanged.
function clipcapGalleryArgs(gallery) {
    var inputs = Math.max(2, Math.floor((arguments.length + 1) / 2));
    var rest = Array.prototype.slice.call(arguments, 1, inputs);
    var items = Array.isArray(gallery) ? gallery : [];
    if (!items.length) return [gallery].concat(rest);
    var index = -1;
    try {
        index = clipcapGallerySelectedIndex("txt2img");
    } catch (e) {
        clipcapWarnOnce("select", "could not read the selected image (" + e + "): using the first");
    }
    if (index < 0 || index >= items.length) index = 0;
    return [[items[index]]].concat(rest);
}

(function () {
    var titles = {
        txt2img_clipcap_button: "Caption the selected image of the gallery (else the first) into the prompt (ClipCap)",
        img2img_clipcap_button: "Caption the init image into the prompt (ClipCap)",
    };
    function setTitles() {
        var found = 0;
        Object.keys(titles).forEach(function (id) {
            var el = clipcapRoot().querySelector("#" + id);
            if (el) {
                found++;
                if (!el.title) el.title = titles[id];
            }
        });
        return found;
    }
    function afterLoad() {
        if (setTitles()) return;
        // the buttons may render later than the host's "UI loaded" moment: watch for them a while, then say so
        var tries = 0;
        var timer = setInterval(function () {
            if (setTitles() || ++tries > 50) {
                clearInterval(timer);
                if (tries > 50) clipcapWarnOnce("buttons", "the caption buttons (#txt2img_clipcap_button, " +
                    "#img2img_clipcap_button) are not on this page: is ClipCap's prompt-button setting off, or the " +
                    "WebUI's prompt toolbar gone?");
            }
        }, 200);
    }
    if (typeof onUiLoaded === "function") {
        onUiLoaded(afterLoad);
    } else {
        clipcapWarnOnce("onUiLoaded", "the WebUI's onUiLoaded() is missing here; waiting for the page instead");
        if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", afterLoad);
        else afterLoad();
    }
})();
