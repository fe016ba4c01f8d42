// ClipCap: client side of the prompt-from-image buttons (scripts/clipcap_tab.py, clipcap_webui/prompt_button.py).
// The WebUI loads every javascript/*.js of an extension into the page's global scope, so the functions named in
// `_js=` / `js=` must be globals. Works with the gallery DOM of gradio 3.41 (A1111) and 4.40 (Forge): both mark the
// shown image with the class "selected" on a `.thumbnail-item` button, in the preview strip (`.thumbnail-small`)
// when one image is open, else in the grid.

function clipcapRoot() {
    return typeof gradioApp === "function" ? gradioApp() : document;
}

// Index of the selected image of `#<tabname>_gallery`, or -1 when none is selected.
function clipcapGallerySelectedIndex(tabname) {
    var gallery = clipcapRoot().querySelector("#" + tabname + "_gallery");
    if (!gallery) return -1;
    var strip = gallery.querySelectorAll(".thumbnail-item.thumbnail-small");
    var items = strip.length ? strip : gallery.querySelectorAll(".thumbnail-item");
    for (var i = 0; i < items.length; i++) {
        if (items[i].classList.contains("selected")) return i;
    }
    return -1;
}

// Pick the gallery item to caption before the request leaves the browser: the selected image, else the first.
// Gradio passes the inputs' values (gallery, prompt) followed by the outputs' (prompt); the returned list is what
// the Python handler receives. Gallery items are kept as they are (gradio 3: file dicts, gradio 4: {image, caption}).
function clipcapGalleryArgs(gallery, prompt) {
    var items = Array.isArray(gallery) ? gallery : [];
    if (!items.length) return [gallery, prompt];
    var index = clipcapGallerySelectedIndex("txt2img");
    if (index < 0 || index >= items.length) index = 0;
    return [[items[index]], prompt];
}

(function () {
    var titles = {
        txt2img_clipcap_button: "Caption the selected image of the gallery (else the first) into the prompt (ClipCap)",
        img2img_clipcap_button: "Caption the init image into the prompt (ClipCap)",
    };
    function setTitles() {
        Object.keys(titles).forEach(function (id) {
            var el = clipcapRoot().querySelector("#" + id);
            if (el && !el.title) el.title = titles[id];
        });
    }
    if (typeof onUiLoaded === "function") onUiLoaded(setTitles);
    else document.addEventListener("DOMContentLoaded", setTitles);
})();
