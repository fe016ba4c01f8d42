"""modules/ui_gradio_extensions.py: extension JS and CSS reach the page by patching gradio's TemplateResponse.

Like the host: every ``javascript/*.js`` of the webui root and each active extension goes into ``<head>`` (after the
host's own helpers), every ``style.css`` before ``</body>``. The double inlines them instead of linking ``file=``
URLs, and its "script.js" is the two helpers extensions lean on (``gradioApp``, ``onUiLoaded``).
"""

import gradio as gr

from modules import scripts

SCRIPT_JS = """
function gradioApp() {
    const elems = document.getElementsByTagName('gradio-app');
    const elem = elems.length == 0 ? document : elems[0];
    if (elem !== document) elem.getElementById = function(id) { return document.getElementById(id); };
    return elem.shadowRoot ? elem.shadowRoot : elem;
}
var uiLoadedCallbacks = [];
function onUiLoaded(callback) { uiLoadedCallbacks.push(callback); }
document.addEventListener("DOMContentLoaded", function() {
    var mutationObserver = new MutationObserver(function() {
        if (gradioApp().querySelector('#txt2img_prompt')) {
            mutationObserver.disconnect();
            uiLoadedCallbacks.forEach(function(cb) { cb(); });
        }
    });
    mutationObserver.observe(gradioApp(), {childList: true, subtree: true});
});
"""


def javascript_html():
    head = f'<script type="text/javascript">{SCRIPT_JS}</script>\n'
    for script in scripts.list_scripts("javascript", ".js"):
        with open(script.path, encoding="utf8") as f:
            head += f'<script type="text/javascript">\n{f.read()}\n</script>\n'
    return head


def css_html():
    head = ""
    for path in scripts.list_files_with_name("style.css"):
        with open(path, encoding="utf8") as f:
            head += f"<style>\n{f.read()}\n</style>\n"
    return head


def reload_javascript():
    templates = getattr(gr.routes, "templates", None)
    if templates is None:  # gradio 5+: no host runs it
        return
    js = javascript_html()
    css = css_html()
    original = getattr(templates, "webui_double_original", None) or templates.TemplateResponse
    templates.webui_double_original = original

    def template_response(*args, **kwargs):
        res = original(*args, **kwargs)
        res.body = res.body.replace(b'</head>', f'{js}</head>'.encode("utf8"))
        res.body = res.body.replace(b'</body>', f'{css}</body>'.encode("utf8"))
        res.init_headers()
        return res

    templates.TemplateResponse = template_response


def unpatch():
    templates = getattr(gr.routes, "templates", None)
    original = getattr(templates, "webui_double_original", None)
    if original is not None:
        templates.TemplateResponse = original
        del templates.webui_double_original
