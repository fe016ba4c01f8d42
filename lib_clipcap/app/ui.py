"""The gradio UI: one :func:`build_ui` for the standalone server and the WebUI's "Caption" tab.

The same Blocks code runs under gradio 3.41 (A1111), 4.40 (Forge) and current gradio (standalone); version differences
go through :mod:`lib_clipcap.compat`. The caption panel's and the Models section's event handlers live on
:class:`CaptionUI`, a plain object that tests can call without a browser (``demo.clipcap``); the "Batch tagging" and
"Review" sections belong to their packages (:mod:`lib_clipcap.batch.ui`, :mod:`lib_clipcap.review.ui`), which
:func:`build_ui` lays out in its Blocks, their handlers on ``demo.clipcap_batch`` and ``demo.clipcap_review``. Every
handler reports problems in the status box (never a traceback in the page).

Host integration (the WebUI adapter passes ``host``): an object with

- ``add_send_buttons(image_component, text_component)`` (required when ``host`` is given): called inside the result
  column, right under the caption box, to add the host's "Send to txt2img / img2img" buttons;
- ``option_values() -> dict`` (optional): the user's defaults from the WebUI settings, ``{option key: value}``
  (see :func:`lib_clipcap.options_table.from_settings`);
- ``batch_values() -> dict`` (optional): defaults of the batch section from the WebUI settings, ``{TagOptions field:
  value}`` (``triggers`` as comma-separated text, ``keep_runs``); fields the section shows start with them, the
  others apply to every job it starts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import MissingFileError, error_markdown
from ..options_table import Option, caption_kwargs, caption_options, defaults, get_option, pick_default_model

log = logging.getLogger(__name__)

__all__ = ["CANDIDATE_HEADERS", "CaptionUI", "MODEL_HEADERS", "MODIFIER_HEADERS", "build_ui"]

CANDIDATE_HEADERS = ["#", "Caption", "Score", "CLIP score"]
MODIFIER_HEADERS = ["Modifier", "Category", "Score"]
MODEL_HEADERS = ["Model", "Kind", "Installed", "Loaded", "Source", "Description"]


def _fmt(x: Any) -> str:
    return "" if x is None else f"{float(x):.3f}"


def _error_text(e: BaseException) -> str:
    return error_markdown(e, log=log)


class CaptionUI:
    """The caption panel's and the Models section's state and event handlers, independent of gradio (handlers take
    and return plain values).

    Args:
        manager: The :class:`~lib_clipcap.app.service.ModelManager`.
    """

    def __init__(self, manager: Any) -> None:
        self.manager = manager
        self.option_keys = [o.key for o in caption_options()]

    # ------------------------------------------------------------------------------------------------ caption
    def values(self, raw: Sequence[Any]) -> dict[str, Any]:
        """Option values in table order (as the UI passes them) as ``{key: value}``."""
        return dict(zip(self.option_keys, raw))

    def caption(self, image: Any, model: str, *raw_values: Any) -> tuple[str, list[list[str]], str]:
        """Caption one image. Returns ``(caption, candidate rows, status markdown)``."""
        if image is None:
            return "", [], "Upload an image first."
        try:
            from ..registry import get_model

            model = get_model(model).name  # unknown names fail here, listing the valid ones
            kwargs = caption_kwargs(self.values(raw_values))
            t0 = time.perf_counter()
            res = self.manager.caption(image, model=model, **kwargs)[0]
            took = time.perf_counter() - t0
        except Exception as e:  # noqa: BLE001 - shown in the status box
            return "", [], _error_text(e)
        if res.error:
            return "", [], f"**Error:** {res.error}"
        rows = [[str(i + 1), c.text, _fmt(c.score), _fmt(getattr(c, "clip_score", None))]
                for i, c in enumerate(res.candidates)]
        status = f"{model}: {len(rows)} candidate{'s' if len(rows) != 1 else ''} in {took:.2f} s"
        if getattr(res, "keywords", None):
            status += f" · keywords: {', '.join(res.keywords)}"
        return res.text, rows, status

    def prompt(self, image: Any, model: str, style: str, max_tokens: Any, *raw_values: Any
               ) -> tuple[str, list[list[str]], str, str, list[list[str]]]:
        """Caption one image and make its prompt (``style`` ``fast`` or ``best``; ``sentence``: :meth:`caption`).

        Returns:
            ``(prompt, candidate rows, status markdown, negative prompt, modifier rows)``; each modifier row is
            ``[tag, category, score]`` (:data:`MODIFIER_HEADERS`).
        """
        from ..options_table import prompt_settings

        if image is None:
            return "", [], "Upload an image first.", "", []
        try:
            style, prompt_kw = prompt_settings({"prompt_style": style, "prompt_max_tokens": max_tokens})
            if style == "sentence":
                return (*self.caption(image, model, *raw_values), "", [])
            from ..registry import get_model

            model = get_model(model).name
            kwargs = caption_kwargs(self.values(raw_values))
            t0 = time.perf_counter()
            res, p = self.manager.prompt(image, model=model, style=style, prompt=prompt_kw, **kwargs)[0]
            took = time.perf_counter() - t0
        except Exception as e:  # noqa: BLE001 - shown in the status box
            return "", [], _error_text(e), "", []
        if res.error or p is None:
            return "", [], f"**Error:** {res.error}", "", []
        rows = [[str(i + 1), c.text, _fmt(c.score), _fmt(getattr(c, "clip_score", None))]
                for i, c in enumerate(res.candidates)]
        mods = [[m.tag, m.category, _fmt(m.score)] for m in p.modifiers]
        status = (f"{model}: {style} prompt in {took:.2f} s · CLIP-S {p.clip_s:.3f} · {p.tokens} tokens · caption: "
                  f"{p.caption}")
        return p.text, rows, status, p.negative, mods

    # ------------------------------------------------------------------------------------------------- models
    @property
    def models_dir(self) -> Path:
        from ..hub import default_models_dir

        return getattr(self.manager, "models_dir", None) or default_models_dir()

    def model_rows(self) -> list[list[str]]:
        from ..options_table import model_installed
        from ..registry import get_model, list_models

        loaded = set(self.manager.loaded())
        rows = []
        for name in list_models():
            e = get_model(name)
            rows.append([e.name, e.kind, "yes" if model_installed(e.name, models_dir=self.models_dir) else "no",
                         "yes" if e.name in loaded else "", e.source.type, e.description])
        return rows

    def download(self, name: str, *, poll: float = 1.0) -> Iterator[tuple[str, list[list[str]]]]:
        """Download ``name``'s checkpoint, yielding ``(progress text, model rows)`` about once per ``poll`` s."""
        from .. import hub
        from ..registry import get_model

        try:
            entry = get_model(name)
            path = hub.resolve_model_files(entry, models_dir=self.models_dir, download=False, progress=False)
            yield f"{entry.name} is installed: `{path}`", self.model_rows()
            return
        except MissingFileError:
            pass
        except Exception as e:  # noqa: BLE001
            yield _error_text(e), self.model_rows()
            return
        if entry.source.type != "hub":  # manual: the message says where to get it and where to put it
            try:
                hub.resolve_model_files(entry, models_dir=self.models_dir, download=True, progress=False)
            except Exception as e:  # noqa: BLE001
                yield _error_text(e), self.model_rows()
            return
        folder = hub.hub_folder(entry.source.repo or "", self.models_dir)
        outcome: dict[str, Any] = {}

        def work() -> None:
            try:
                outcome["path"] = hub.resolve_model_files(entry, models_dir=self.models_dir, download=True,
                                                         progress=False)
            except BaseException as e:  # noqa: BLE001 - reported by the generator
                outcome["error"] = e

        thread = threading.Thread(target=work, name=f"clipcap-download-{entry.name}", daemon=True)
        t0 = time.monotonic()
        thread.start()
        while thread.is_alive():
            thread.join(poll)
            if thread.is_alive():
                mb = _folder_bytes(folder) / 1e6
                yield (f"Downloading {entry.source.filename} for {entry.name}: {mb:,.1f} MB so far "
                       f"({time.monotonic() - t0:.0f} s)"), []
        if "error" in outcome:
            yield _error_text(outcome["error"]), self.model_rows()
        else:
            yield f"Downloaded {entry.name} to `{outcome['path']}`", self.model_rows()

    def unload(self, name: str | None) -> tuple[str, list[list[str]]]:
        """Unload ``name`` (empty: every model). Returns ``(status, model rows)``."""
        try:
            done = self.manager.unload(name or None)
        except Exception as e:  # noqa: BLE001
            return _error_text(e), self.model_rows()
        msg = f"Unloaded {', '.join(done)}." if done else "Nothing to unload."
        return msg, self.model_rows()


def _folder_bytes(folder: Path) -> int:
    total = 0
    try:
        for p in folder.rglob("*"):
            try:
                if p.is_file():
                    total += p.stat().st_size
            except OSError:
                pass
    except OSError:
        pass
    return total


# ------------------------------------------------------------------------------------------------------------ gradio
def _option_component(gr: Any, opt: Option, value: Any) -> Any:
    from .. import compat

    common = dict(label=opt.label, info=opt.help, elem_id=opt.elem_id, value=opt.ui_value(value))
    kind = opt.component
    if kind == "slider":
        return compat.component(gr.Slider, **common, **opt.component_args())
    if kind == "radio":
        return compat.component(gr.Radio, **common, **opt.component_args())
    if kind == "dropdown":
        return compat.component(gr.Dropdown, **common, **opt.component_args())
    if kind == "number":
        return compat.component(gr.Number, **common, **opt.component_args())
    if kind == "checkbox":
        return compat.component(gr.Checkbox, **common)
    return compat.component(gr.Textbox, **common, lines=1)


def _table_value(headers: list[str]) -> Callable[[list[list[str]]], Any]:
    def to_value(rows: list[list[str]]) -> Any:
        import pandas as pd  # a gradio dependency in every version; gives empty tables the right columns

        return pd.DataFrame(rows, columns=headers)

    return to_value


def build_ui(manager: Any, *, host: Any = None, job_manager: Any = None, values: Mapping[str, Any] | None = None,
             notice: str | None = None, title: str = "ClipCap captioning") -> Any:
    """Build the captioning UI as a ``gr.Blocks``.

    Args:
        manager: The :class:`~lib_clipcap.app.service.ModelManager` every model call goes through.
        host: ``None`` standalone; in the WebUI, an object with ``add_send_buttons(image, text)`` and optionally
            ``option_values()`` (see the module docstring).
        job_manager: For the batch section (``None``: the section explains that batch tagging is unavailable).
        values: Initial option values ``{key: value}`` (e.g. from settings); overrides ``host.option_values()``.
        notice: A line shown at the top (e.g. "the default model is missing, using the demo model"); when ``None``
            and the preselected model is a fallback, the fallback's own notice is shown.
        title: The page title (standalone).

    Returns:
        The Blocks; launch it, mount it (``gr.mount_gradio_app``) or return it from ``on_ui_tabs``.
    """
    import gradio as gr

    from .. import compat
    from ..registry import list_models

    unavailable = getattr(host, "batch_unavailable_message", None)
    host_batch: dict[str, Any] = {}
    if callable(getattr(host, "batch_values", None)):
        try:
            host_batch = dict(host.batch_values() or {})
        except Exception:  # noqa: BLE001 - bad settings must not break the tab
            log.warning("clipcap: could not read the host's batch defaults", exc_info=True)
    batch_unavailable = unavailable() if callable(unavailable) else None
    ctl = CaptionUI(manager)
    initial = defaults()
    if host is not None and callable(getattr(host, "option_values", None)):
        try:
            initial.update(host.option_values() or {})
        except Exception:  # noqa: BLE001 - bad settings must not break the tab
            log.warning("clipcap: could not read the host's option values", exc_info=True)
    initial.update(values or {})
    model, fallback_notice = pick_default_model(models_dir=ctl.models_dir, preferred=initial.get("model"))
    notice = notice if notice is not None else fallback_notice
    cand_value, model_value = _table_value(CANDIDATE_HEADERS), _table_value(MODEL_HEADERS)
    mod_value = _table_value(MODIFIER_HEADERS)

    with gr.Blocks(analytics_enabled=False, title=title) as demo:
        notice_box = compat.component(gr.Markdown, value=f"⚠ {notice}" if notice else "", visible=bool(notice),
                                      elem_id="clipcap_notice")
        with gr.Row():
            with gr.Column():
                image = compat.component(gr.Image, type="pil", label="Image", elem_id="clipcap_image", height=360)
                model_dd = compat.component(gr.Dropdown, choices=list_models(), value=model,
                                            label=get_option("model").label, info=get_option("model").help,
                                            elem_id=get_option("model").elem_id)
                rerank = _option_component(gr, get_option("rerank"), initial["rerank"])
                prompt_style = _option_component(gr, get_option("prompt_style"), initial["prompt_style"])
                prompt_budget = _option_component(gr, get_option("prompt_max_tokens"), initial["prompt_max_tokens"])
                with gr.Accordion("Decoding options", open=False, elem_id="clipcap_decoding"):
                    option_components = {"rerank": rerank}
                    for opt in caption_options():
                        if opt.key != "rerank":
                            option_components[opt.key] = _option_component(gr, opt, initial[opt.key])
                caption_btn = compat.component(gr.Button, value="Caption", variant="primary",
                                               elem_id="clipcap_caption_button")
            with gr.Column():
                caption_box = compat.component(gr.Textbox, label="Caption", lines=3, elem_id="clipcap_caption",
                                               interactive=True, copy_button=True)
                if host is not None:
                    with gr.Row(elem_id="clipcap_send_row"):
                        host.add_send_buttons(image, caption_box)
                candidates = compat.component(gr.Dataframe, headers=CANDIDATE_HEADERS, value=cand_value([]),
                                              label="Candidates", interactive=False, wrap=True,
                                              column_widths=["7%", "63%", "15%", "15%"],
                                              elem_id="clipcap_candidates")
                status = compat.component(gr.Markdown, value="", elem_id="clipcap_status")
                negative_box = compat.component(gr.Textbox, label="Negative prompt (prompt styles fast and best)",
                                                lines=2, elem_id="clipcap_negative", interactive=True,
                                                copy_button=True)
                modifiers = compat.component(gr.Dataframe, headers=MODIFIER_HEADERS, value=mod_value([]),
                                             label="Modifiers (prompt styles fast and best)", interactive=False,
                                             wrap=True, elem_id="clipcap_modifiers")
        option_inputs = [option_components[k] for k in ctl.option_keys]

        def on_caption(img, model_name, style, budget, *raw):
            text, rows, msg, negative, mods = ctl.prompt(img, model_name, style, budget, *raw)
            return text, cand_value(rows), msg, negative, mod_value(mods)

        caption_btn.click(fn=on_caption, inputs=[image, model_dd, prompt_style, prompt_budget, *option_inputs],
                          outputs=[caption_box, candidates, status, negative_box, modifiers])
        option_components.update(prompt_style=prompt_style, prompt_max_tokens=prompt_budget)

        # ------------------------------------------------------------------------------------------------ batch
        from ..batch.ui import build_batch_section  # its own module: folder, fields, progress, runs and undo

        batch = build_batch_section(manager, job_manager=job_manager, model=model_dd, option_inputs=option_inputs,
                                    unavailable=batch_unavailable, batch_values=host_batch)

        # ----------------------------------------------------------------------------------------------- review
        from ..review.ui import build_review_section  # its own module: gallery, edits, undo, bulk edits, keys

        review = build_review_section(manager, job_manager=job_manager, model=model_dd, option_inputs=option_inputs,
                                      unavailable=batch["ui"].batch_unavailable() if job_manager is None else None)

        # ----------------------------------------------------------------------------------------------- models
        with gr.Accordion("Models", open=False, elem_id="clipcap_models"):
            models_table = compat.component(gr.Dataframe, headers=MODEL_HEADERS, value=model_value(ctl.model_rows()),
                                            interactive=False, wrap=True, elem_id="clipcap_models_table",
                                            column_widths=["17%", "8%", "10%", "9%", "9%", "47%"])
            with gr.Row():
                manage_dd = compat.component(gr.Dropdown, choices=list_models(), value=model, label="Model",
                                             elem_id="clipcap_manage_model")
                download_btn = compat.component(gr.Button, value="Download", elem_id="clipcap_download")
                unload_btn = compat.component(gr.Button, value="Unload", elem_id="clipcap_unload")
                unload_all_btn = compat.component(gr.Button, value="Unload all", elem_id="clipcap_unload_all")
                refresh_btn = compat.component(gr.Button, value="Refresh", elem_id="clipcap_refresh_models")
            models_status = compat.component(gr.Markdown, value=f"Models folder: `{ctl.models_dir}`",
                                             elem_id="clipcap_models_status")

        def on_download(name):
            for msg, rows in ctl.download(name):
                yield msg, (model_value(rows) if rows else compat.update())

        def on_unload(name):
            msg, rows = ctl.unload(name)
            return msg, model_value(rows)

        def on_unload_all():
            msg, rows = ctl.unload(None)
            return msg, model_value(rows)

        def on_refresh():
            return f"Models folder: `{ctl.models_dir}`", model_value(ctl.model_rows())

        download_btn.click(fn=on_download, inputs=[manage_dd], outputs=[models_status, models_table])
        unload_btn.click(fn=on_unload, inputs=[manage_dd], outputs=[models_status, models_table])
        unload_all_btn.click(fn=on_unload_all, inputs=[], outputs=[models_status, models_table])
        refresh_btn.click(fn=on_refresh, inputs=[], outputs=[models_status, models_table])

    demo.clipcap = ctl  # tests and hosts reach the handlers through the Blocks
    demo.clipcap_batch = batch["ui"]
    demo.clipcap_review = review["ui"]
    demo.clipcap_components = {"image": image, "model": model_dd, "caption": caption_box, "candidates": candidates,
                               "status": status, "notice": notice_box, "negative": negative_box,
                               "modifiers": modifiers, **option_components}
    return demo
