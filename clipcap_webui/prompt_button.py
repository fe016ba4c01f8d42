"""Prompt-from-image buttons in the txt2img/img2img prompt tool rows, and the Caption tab's "send to" buttons.

Placement (docs/hosts.md, prompt button): a global ``after_component`` hook sees every component the host builds. On
``{tab}_style_apply`` (the last fixed button of ``gr.Row(elem_id="{tab}_tools")``) it creates the host's
``ToolButton`` with ``elem_id="{tab}_clipcap_button"``, which lands right after the anchor. The inputs it needs are
built later (the prompt before, the init image and the gallery after), so the click is wired when ``{tab}_gallery``,
the last of them, appears.

Inputs:

- txt2img: the output gallery. ``clipcapGalleryArgs`` (javascript/clipcap.js) keeps only the selected image (else
  the first) before the request leaves the browser; gradio 3 then sends file dicts (opened by the host's
  ``infotext_utils.image_from_url_text``, which refuses files outside gradio's temp folders), gradio 4
  ``(PIL, caption)`` tuples;
- img2img: the init image. A1111: ``gr.Image(elem_id="img2img_image", type="pil")``. Forge: ``img2img_image`` is the
  ``gr.HTML`` of a ForgeCanvas, and the image is the next component with the ``logical_image_background`` class
  (PIL from Forge's ``LogicalImage``, or its base64 data URL).

The caption replaces the prompt or is appended to it (setting ``clipcap_insert_mode``). With the setting
``clipcap_prompt_style`` at ``fast`` or ``best`` the button writes a prompt instead of the sentence: the caption plus
CLIP-ranked modifiers (:mod:`lib_clipcap.tags.prompt`); with ``clipcap_prompt_negative`` on, the negative-prompt
suggestion goes into ``{tab}_neg_prompt`` the same way (replacing it, or appended with the terms it lacks). The
click therefore has the negative prompt box as its third input and second output, whatever the settings (they can
change without a UI reload); where the host has no such box, the button writes the prompt only.

Next to each button a small dropdown (``{tab}_clipcap_style``) picks the style for that tab's clicks: "Settings"
(the ``clipcap_prompt_style`` setting, read at each click), "Sentence", "Prompt: fast" or "Prompt: best". Its
choices are plain strings, which every gradio the hosts run (3.41 to 4.40) shows and sends as they are. The host
remembers its value across restarts in ui-config.json; "Settings" is the default, so a changed setting still takes
effect. The dropdown is an input and an output of the click (returned unchanged): the page script's gallery
filter (``clipcapGalleryArgs``) relies on the outputs being the inputs but the gallery.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
from typing import Any

from . import LOG_PREFIX, host, memory, models, settings

log = logging.getLogger(__name__)

ICON = "\U0001f4ac"  # speech balloon, beside the host's 📎 / 📦 interrogate buttons
BACKGROUND_CLASS = "logical_image_background"
GALLERY_JS = "clipcapGalleryArgs"

#: The style dropdown's choices: label -> prompt style (``None``: the ``clipcap_prompt_style`` setting).
STYLE_CHOICES: dict[str, str | None] = {"Settings": None, "Sentence": "sentence", "Prompt: fast": "fast",
                                        "Prompt: best": "best"}
STYLE_DEFAULT = "Settings"


# ---------------------------------------------------------------------------------------------- value -> PIL image
def _decode_data_url(text: str) -> Any:
    from lib_clipcap.images import load_image

    text = text.strip()
    if not text:
        return None
    if text[:5].lower() == "data:":
        header, _, text = text.partition(",")
        if ";base64" not in header.lower():
            return None
    try:
        raw = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        return None  # not base64: never treat a client string as a file path
    return load_image(raw) if raw else None


def to_image(value: Any) -> Any:
    """A PIL image from any value the hosts' image components send, or ``None`` when there is no image.

    Accepts PIL images, numpy arrays, base64 strings and data URLs (Forge's canvas), A1111's inpaint dicts
    ``{"image", "mask"}``, and gradio file dicts (opened through the host's ``image_from_url_text``).

    Raises:
        ValueError: A file outside the folders the host allows (the host's check failed).
        lib_clipcap.ImageLoadError: The data is not a readable image.
    """
    from PIL import Image

    if value is None or isinstance(value, Image.Image):
        return value
    if isinstance(value, str):
        return _decode_data_url(value)
    if isinstance(value, dict):
        if "image" in value and "mask" in value:
            return to_image(value["image"])  # A1111 sketch/inpaint editors
        from modules import infotext_utils

        try:
            return infotext_utils.image_from_url_text(value)
        except AssertionError as e:  # the host's "outside of allowed directories" check
            raise ValueError(f"the host refused to open that image: {e}") from None
    if type(value).__module__ == "numpy":
        import numpy as np

        return Image.fromarray(np.asarray(value)) if getattr(value, "size", 0) else None
    raise ValueError(f"unexpected image value of type {type(value).__name__}")


def gallery_image(value: Any) -> Any:
    """The image to caption from a gallery value: the one item the JS kept (the selection), else the first.

    Gradio 3 sends ``[{"name": ..., "is_file": True}, ...]`` or ``[[file, caption], ...]`` (or one bare dict from the
    host's own ``extract_image_from_gallery``); gradio 4 ``[(PIL, caption), ...]`` (``type="pil"``, Forge) or
    ``[(path, caption), ...]`` (the default ``type="filepath"``).
    """
    if not value:
        return None
    item = value[0] if isinstance(value, (list, tuple)) else value
    if isinstance(item, tuple) and item and isinstance(item[0], str) and os.path.isfile(item[0]):
        # gradio 4's own preprocessing with type="filepath": a file in gradio's cache, validated by gradio
        from lib_clipcap.images import load_image

        return load_image(item[0])
    if isinstance(item, (list, tuple)):
        item = item[0] if item else None  # (image, caption)
    return to_image(item)


def merge_prompt(prompt: str | None, caption: str, mode: str) -> str:
    """``caption`` replacing ``prompt`` (``"replace"``) or appended after a comma (``"append"``)."""
    from lib_clipcap.phrases import join_phrases

    caption = caption.strip()
    return join_phrases((prompt or "", caption)) if mode == "append" else caption


def merge_negative(negative: str | None, suggestion: str, mode: str) -> str:
    """The suggestion replacing ``negative`` (``"replace"``), or its terms the box lacks appended (``"append"``):
    clicking twice never writes a term twice."""
    from lib_clipcap.phrases import join_phrases

    if mode != "append":
        return suggestion.strip()
    have = {t.strip().casefold() for t in (negative or "").split(",")}
    new = [t.strip() for t in suggestion.split(",") if t.strip() and t.strip().casefold() not in have]
    return join_phrases((negative or "", ", ".join(new)))


# --------------------------------------------------------------------------------------------------- captioning
def caption_image(image: Any) -> str:
    """Caption ``image`` with the settings' model and decoding defaults, under the host's GPU etiquette.

    Raises:
        lib_clipcap.ClipCapError: The model cannot load or the options are invalid (message for the user).
    """
    return prompt_image(image, style="sentence")[0]


def prompt_image(image: Any, *, style: str | None = None) -> tuple[str, str]:
    """``(prompt, negative suggestion)`` for ``image``: with prompt style ``sentence`` (``style``, else the
    ``clipcap_prompt_style`` setting) the caption and ``""``; with ``fast``/``best`` the caption plus modifiers and
    the negative-prompt suggestion, from the settings' model and decoding defaults, under the host's GPU etiquette.

    Raises:
        lib_clipcap.ClipCapError: The model cannot load or the options are invalid (message for the user).
    """
    from lib_clipcap.errors import ClipCapError
    from lib_clipcap.options_table import caption_kwargs, prompt_settings, resolve_model

    from .generation_ui import model_from_control

    values = settings.option_values()
    manager = models.get_manager()
    try:  # the setting as a model control would send it (gradio 3.41 turned a pair choice into "('a', 'b')")
        default = model_from_control(values.get("model"))
    except TypeError:
        default = None  # not text: the table's default
    model, notice = resolve_model(None, default=default, models_dir=manager.models_dir)
    if notice:
        _warn(notice)
    setting, prompt_kw = prompt_settings(values)  # a bad stored value was reset to the default by option_values
    style = style or setting
    if style == "sentence":
        result = memory.run_caption(manager, [image], model=model, **caption_kwargs(values))[0]
        if result.error:
            raise ClipCapError(result.error)
        return result.text, ""
    result, prompt = memory.run_prompt(manager, [image], model=model, style=style, prompt=prompt_kw,
                                       **caption_kwargs(values))[0]
    if result.error or prompt is None:
        raise ClipCapError(result.error or "no prompt was made")
    return prompt.text, prompt.negative


def _warn(text: str) -> None:
    import gradio as gr

    print(f"{LOG_PREFIX} {text}")
    warn = getattr(gr, "Warning", None)
    if warn is not None:
        warn(f"ClipCap: {text}")


def prompt_from(image_value: Any, prompt: str | None, *, gallery: bool) -> str:
    """Click handler: the new prompt for ``image_value`` (a gallery or an init image)."""
    return prompts_from(image_value, prompt, None, gallery=gallery)[0]


def style_from_control(value: Any) -> str | None:
    """The prompt style a style dropdown's value names: ``"sentence"``, ``"fast"``, ``"best"``, or ``None`` for
    "Settings" (also for an empty or unknown value, e.g. a choice an older version stored in ui-config.json).

    Accepts the labels of :data:`STYLE_CHOICES` and the style names themselves (API callers, scripts)."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text in STYLE_CHOICES:
        return STYLE_CHOICES[text]
    return text.lower() if text.lower() in ("sentence", "fast", "best") else None


def prompts_from(image_value: Any, prompt: str | None, negative: str | None, *, gallery: bool,
                 style: Any = None) -> tuple[str, str]:
    """Click handler: ``(new prompt, new negative prompt)`` for ``image_value`` (a gallery or an init image); the
    negative prompt changes only with a prompt style and ``clipcap_prompt_negative`` on.

    ``style`` is the style dropdown's value (:func:`style_from_control`; "Settings" or ``None``: the setting)."""
    import gradio as gr

    from lib_clipcap.errors import ClipCapError

    try:
        image = gallery_image(image_value) if gallery else to_image(image_value)
    except (ValueError, ClipCapError) as e:
        raise gr.Error(f"ClipCap: {e}") from None
    if image is None:
        # An ordinary user action, not a failure: a warning toast, and the prompt stays as it is (gr.Error would
        # print a traceback in the host's console).
        _warn("No image in the gallery: generate one first." if gallery else "No init image: add one first.")
        return prompt or "", negative or ""
    try:
        text, suggestion = prompt_image(image, style=style_from_control(style))
    except ClipCapError as e:
        raise gr.Error(f"ClipCap: {e}") from None
    mode = settings.insert_mode()
    new_negative = negative or ""
    if suggestion and settings.prompt_negative():
        new_negative = merge_negative(negative, suggestion, mode)
    return merge_prompt(prompt, text, mode), new_negative


# ----------------------------------------------------------------------------------------------- placement/wiring
class PromptButtons:
    """The ``after_component`` hook of one UI build: places both buttons and wires them once their inputs exist."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.prompts: dict[str, Any] = {}
        self.negatives: dict[str, Any] = {}
        self.buttons: dict[str, Any] = {}
        self.styles: dict[str, Any] = {}
        self.init_image: Any = None
        self.wired: set[str] = set()
        self._want_background = False

    def after_component(self, component: Any, **kwargs: Any) -> None:
        elem_id = kwargs.get("elem_id") or getattr(component, "elem_id", None)
        if elem_id in ("txt2img_prompt", "img2img_prompt"):
            tab = elem_id.split("_")[0]
            if tab == "txt2img":  # a new UI build starts (Reload UI in the same process)
                self._reset()
            self.prompts[tab] = component
        elif elem_id in ("txt2img_neg_prompt", "img2img_neg_prompt"):
            self.negatives[elem_id.split("_")[0]] = component
        elif elem_id in ("txt2img_style_apply", "img2img_style_apply"):
            tab = elem_id.split("_")[0]
            if tab not in self.buttons:
                self.buttons[tab] = self._make_button(tab)
                self.styles[tab] = self._make_style(tab)
        elif elem_id == "img2img_image":
            import gradio as gr

            if isinstance(component, gr.Image):
                self.init_image = component  # A1111
            else:
                self._want_background = True  # Forge: the canvas' background textbox comes next
        elif elem_id in ("txt2img_gallery", "img2img_gallery"):
            self._wire(elem_id.split("_")[0], component)
        elif self._want_background and BACKGROUND_CLASS in _classes(component, kwargs):
            self.init_image = component
            self._want_background = False

    def _make_button(self, tab: str) -> Any:
        from modules.ui_components import ToolButton

        return ToolButton(value=ICON, elem_id=f"{tab}_clipcap_button")

    def _make_style(self, tab: str) -> Any:
        """The style dropdown beside the button (lands right after it in the tools row)."""
        import gradio as gr

        return gr.Dropdown(choices=list(STYLE_CHOICES), value=STYLE_DEFAULT, label="ClipCap prompt style",
                           show_label=False, elem_id=f"{tab}_clipcap_style", elem_classes=["clipcap-style"],
                           interactive=True, **_compact_kwargs(gr.Dropdown))

    def _wire(self, tab: str, gallery: Any) -> None:
        button, prompt = self.buttons.get(tab), self.prompts.get(tab)
        if button is None or prompt is None or tab in self.wired:
            return
        negative, style = self.negatives.get(tab), self.styles.get(tab)
        source = gallery if tab == "txt2img" else self.init_image
        if source is None:
            print(f"{LOG_PREFIX} img2img init image not found; the img2img caption button is inactive")
            return
        is_gallery = tab == "txt2img"
        js = _js_kwarg(button.click, GALLERY_JS) if is_gallery else {}
        # The style goes in and comes back unchanged: the outputs stay "the inputs but the image", which the page
        # script's gallery filter counts on.
        if negative is not None:
            def click(v: Any, p: Any, n: Any, st: Any) -> tuple[str, str, Any]:
                return (*prompts_from(v, p, n, gallery=is_gallery, style=st), st)

            button.click(fn=click, inputs=[source, prompt, negative, style], outputs=[prompt, negative, style], **js)
        else:
            def click_prompt_only(v: Any, p: Any, st: Any) -> tuple[str, Any]:
                return prompts_from(v, p, None, gallery=is_gallery, style=st)[0], st

            button.click(fn=click_prompt_only, inputs=[source, prompt, style], outputs=[prompt, style], **js)
        self.wired.add(tab)


def _js_kwarg(listener: Any, code: str) -> dict[str, str]:
    """``{"js": code}`` (gradio 4+) or ``{"_js": code}`` (gradio 3), read off the listener itself: gradio 3 binds
    listeners per instance, so the class has no ``click`` to inspect."""
    import inspect

    return {"js" if "js" in inspect.signature(listener).parameters else "_js": code}


def _compact_kwargs(component_cls: Any) -> dict[str, Any]:
    """``container=False`` and a small ``min_width`` where this gradio's component takes them (3.41 and 4.x do), so
    the dropdown sits in the tools row like a button instead of a labelled form field."""
    import inspect

    try:
        params = inspect.signature(component_cls.__init__).parameters
    except (TypeError, ValueError):
        return {}
    wanted = {"container": False, "min_width": 120}
    return {k: v for k, v in wanted.items() if k in params}


def _classes(component: Any, kwargs: dict[str, Any]) -> list[str]:
    classes = kwargs.get("elem_classes") or getattr(component, "elem_classes", None) or []
    return [classes] if isinstance(classes, str) else list(classes)


# ------------------------------------------------------------------------------------------------ Caption tab hooks
class HostHooks:
    """The ``host`` object of :func:`lib_clipcap.app.ui.build_ui`: the host's "send to" buttons and settings values."""

    def add_send_buttons(self, image_component: Any, text_component: Any) -> dict[str, Any]:
        try:
            from modules import infotext_utils
        except ImportError:  # A1111 before 1.8
            from modules import generation_parameters_copypaste as infotext_utils

        buttons = infotext_utils.create_buttons(["txt2img", "img2img", "inpaint", "extras"])
        for tabname, button in buttons.items():
            infotext_utils.register_paste_params_button(infotext_utils.ParamBinding(
                paste_button=button, tabname=tabname, source_text_component=text_component,
                source_image_component=image_component))
        return buttons

    def option_values(self) -> dict[str, Any]:
        return settings.option_values()

    def batch_values(self) -> dict[str, Any]:
        """The batch section's defaults (trigger words, runs kept) from the settings."""
        return settings.batch_values()

    def batch_unavailable_message(self) -> str:
        """Why the tab's batch section is off, naming the setting that turns it on."""
        return host.batch_unavailable_message()
