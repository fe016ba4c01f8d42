"""The Extras ("Postprocessing") caption step: ClipCap captions for existing images, single or batch.

The host's Extras runs each postprocessing step on one image at a time (``ScriptPostprocessing.process(pp, **args)``)
and, after saving the image, writes ``pp.caption`` to ``<image>.txt`` following its own setting *Action for existing
captions* (``postprocessing_existing_caption_action``: Ignore, Keep, Prepend, Append). This step only sets
``pp.caption`` -- joined after a caption an earlier step produced, as the host's own BLIP/DeepBooru step does -- so
those rules apply unchanged. A1111 ships that step for BLIP/DeepBooru; Forge lacks it, and both have the
``pp.caption`` handling this relies on.

A captioning failure is reported (the host's ``errors.report``) and leaves the image to be saved without a caption.
Extras runs under the host's queue lock (its button goes through ``wrap_gradio_gpu_call``, its API routes take
``queue_lock``), so the model call declares :func:`clipcap_webui.memory.inside_generation` like generation hooks do.
"""

from __future__ import annotations

import logging
from typing import Any

from . import LOG_PREFIX

log = logging.getLogger(__name__)

NAME = "ClipCap caption"
ORDER = 4050  # after the host's upscalers and face restorers (and right after its own Caption step, 4040)


def build() -> dict[str, Any]:
    """``ScriptPostprocessing.ui``: ``{name: component}``; the names are :func:`process`'s keyword arguments."""
    import gradio as gr

    from .presets import PRESET_LABELS

    try:
        from modules.ui_components import InputAccordion
    except ImportError:
        InputAccordion = None
    if InputAccordion is not None:
        with InputAccordion(False, label=NAME, elem_id="extras_clipcap") as enable:
            model, preset = _controls(gr, PRESET_LABELS)
    else:
        with gr.Accordion(NAME, open=False):
            enable = gr.Checkbox(False, label="Enable", elem_id="extras_clipcap")
            model, preset = _controls(gr, PRESET_LABELS)
    return {"enable": enable, "model": model, "preset": preset}


def _controls(gr: Any, labels: dict[str, str]) -> tuple[Any, Any]:
    from .generation_ui import model_dropdown

    with gr.Row():
        # "Settings default", not the setting's current name: the host's API caches the UI's default values.
        model = model_dropdown(gr, label="Model", elem_id="extras_clipcap_model")
        preset = gr.Radio(label="Decoding", choices=[(v, k) for k, v in labels.items()], value="settings",
                          elem_id="extras_clipcap_preset")
    return model, preset


def process(pp: Any, enable: Any = False, model: Any = None, preset: Any = None, **_: Any) -> None:
    """Caption ``pp.image`` into ``pp.caption`` when enabled (``None`` arguments, as the host's API passes for steps
    it was not told about, mean "off" / the default)."""
    if not enable or getattr(pp, "image", None) is None:
        return
    try:
        caption = caption_image(pp.image, model=model, preset=preset or "settings")
    except Exception as e:
        from lib_clipcap.errors import ClipCapError

        # A ClipCapError says what is wrong and what to do; a traceback is for bugs.
        _report(f"Extras caption failed: {type(e).__name__}: {e}", exc_info=not isinstance(e, ClipCapError))
        return
    if caption:
        from lib_clipcap.phrases import join_phrases

        pp.caption = join_phrases((getattr(pp, "caption", None) or "", caption))


def caption_image(image: Any, *, model: str | None, preset: str) -> str:
    """One caption with the settings, ``preset`` laid over them, and ``model`` (default: the settings' model).

    Raises:
        lib_clipcap.ClipCapError: bad model or options, missing model files; the message says what to do.
    """
    from lib_clipcap.errors import ClipCapError
    from lib_clipcap.options_table import caption_kwargs, resolve_model
    from .generation_ui import model_from_control
    from .presets import apply_preset

    from . import memory, models, settings

    try:
        model = model_from_control(model)  # "Settings default" (and gradio 3.41's "('label', 'value')") -> a name
    except TypeError:
        raise ClipCapError(f"The model control sent {model!r}, which is not a model name; pick a model in the "
                           "ClipCap step.") from None
    values = apply_preset(settings.option_values(), preset)
    manager = models.get_manager()
    name, notice = resolve_model(model, default=values["model"], models_dir=manager.models_dir)
    if notice:
        print(f"{LOG_PREFIX} {notice}")
    with memory.inside_generation():  # Extras runs under the host's queue lock (wrap_gradio_gpu_call / the API)
        result = memory.run_caption(manager, [image], model=name, **caption_kwargs(values))[0]
    if result.error:
        raise ClipCapError(result.error)
    return " ".join(result.text.split())


def _report(message: str, *, exc_info: bool = True) -> None:
    try:
        from modules import errors

        errors.report(f"{LOG_PREFIX} {message}", exc_info=exc_info)
    except Exception:
        log.error("%s %s", LOG_PREFIX, message, exc_info=exc_info)
