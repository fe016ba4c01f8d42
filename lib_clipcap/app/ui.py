"""The gradio UI: one :func:`build_ui` for the standalone server and the WebUI's "Caption" tab.

The same Blocks code runs under gradio 3.41 (A1111), 4.40 (Forge) and current gradio (standalone); version differences
go through :mod:`lib_clipcap.compat`. The event handlers live on :class:`CaptionUI`, a plain object that tests can call
without a browser; every handler reports problems in the status box (never a traceback in the page).

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
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from ..errors import ClipCapError, MissingFileError
from ..options_table import Option, caption_kwargs, caption_options, defaults, get_option, pick_default_model

log = logging.getLogger(__name__)

__all__ = ["BATCH_FIELDS", "CANDIDATE_HEADERS", "CaptionUI", "MODEL_HEADERS", "build_ui", "format_job_status"]

CANDIDATE_HEADERS = ["#", "Caption", "Score", "CLIP score"]
MODEL_HEADERS = ["Model", "Kind", "Installed", "Loaded", "Source", "Description"]


def _fmt(x: Any) -> str:
    return "" if x is None else f"{float(x):.3f}"


def _error_text(e: BaseException) -> str:
    if isinstance(e, ClipCapError):
        return f"**Error:** {e}"
    log.exception("clipcap UI: unexpected error")
    return f"**Unexpected error** ({type(e).__name__}): {e}"


class CaptionUI:
    """The UI's state and event handlers, independent of gradio (handlers take and return plain values).

    Args:
        manager: The :class:`~lib_clipcap.app.service.ModelManager`.
        job_manager: A :class:`lib_clipcap.batch.jobs.JobManager`, or ``None`` (the batch section then says why it is
            unavailable).
        batch_unavailable: What the batch section says when ``job_manager`` is ``None`` (it should name the setting
            that allows folders); default: the standalone server's ``--batch-root``.
    """

    def __init__(self, manager: Any, *, job_manager: Any = None, batch_unavailable: str | None = None,
                 batch_values: Mapping[str, Any] | None = None) -> None:
        self.manager = manager
        self.job_manager = job_manager
        self.batch_unavailable_text = batch_unavailable
        self.batch_values = dict(batch_values or {})  # the host's batch defaults; the section's own fields win
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

    # -------------------------------------------------------------------------------------------------- batch
    def batch_unavailable(self) -> str | None:
        """Why batch tagging cannot run here, or ``None``."""
        if self.job_manager is None:
            if self.batch_unavailable_text:
                return self.batch_unavailable_text[0].upper() + self.batch_unavailable_text[1:] + "."
            return ("Batch tagging is not enabled here (no folders are allowed for it; the standalone server enables "
                    "it with `--batch-root FOLDER`).")
        try:
            from ..batch import TagOptions  # noqa: F401
        except ImportError as e:
            return f"Batch tagging is not available in this build ({e})."
        return None

    def batch_start(self, folder: str, model: str, *raw_values: Any, poll: float = 1.0
                    ) -> Iterator[tuple[str, str]]:
        """Start tagging ``folder`` and follow the job: yields ``(job id, progress markdown)``.

        ``raw_values``: the values of :data:`BATCH_FIELDS` (in order), then the decoding options (table order).
        """
        why = self.batch_unavailable()
        if why:
            yield "", why
            return
        if not folder or not str(folder).strip():
            yield "", "Enter a folder of images first."
            return
        try:
            from ..registry import get_model

            n = len(BATCH_FIELDS)
            batch = {name: v for (name, *_), v in zip(BATCH_FIELDS, raw_values[:n])}
            options = self.make_tag_options(str(folder).strip(), self.values(raw_values[n:]), batch)
            job_id = str(self.job_manager.start(options, get_model(model).name))
        except Exception as e:  # noqa: BLE001
            yield "", _error_text(e)
            return
        yield from self.batch_follow(job_id, poll=poll)

    def make_tag_options(self, folder: str, values: Mapping[str, Any], batch: Mapping[str, Any] = ()) -> Any:
        """``lib_clipcap.batch.TagOptions`` for ``folder``: the decoding ``values`` plus the ``batch`` settings.

        Raises:
            OptionError: a value is invalid (the message names it).
        """
        import dataclasses

        from ..batch import TagOptions

        from ..batch.options import TAG_DECODING_DEFAULTS

        accepted = {f.name for f in dataclasses.fields(TagOptions) if f.init}
        # One decoding default for every batch face: the CLI and the API decode greedily, one caption per file
        # (deterministic, so a resumed run gives the same text); the panel's beam settings are for single captions.
        panel = {k: v for k, v in caption_kwargs(values).items()
                 if k in accepted and k not in ("decoding", "beam_size", "num_candidates")}
        args = {**panel, **TAG_DECODING_DEFAULTS}
        args.update({k: v for k, v in {**self.batch_values, **dict(batch)}.items() if k in accepted})
        if isinstance(args.get("triggers"), str):  # the text box: "sks, ohwx" (a trigger never holds a comma)
            args["triggers"] = [t.strip() for t in args["triggers"].split(",") if t.strip()]
        return TagOptions(inputs=[folder], **args)

    def batch_runs(self, folder: str) -> str:
        """Markdown list of the runs recorded for ``folder`` (same folder rules as jobs)."""
        if not folder or not str(folder).strip():
            return "Enter the folder that was tagged first."
        try:
            runs = self.job_manager.runs(str(folder).strip())
        except Exception as e:  # noqa: BLE001
            return _error_text(e)
        if not runs:
            return "No runs recorded for this folder."
        rows = ["| Run | Started | State | Created | Changed | Policy |", "|---|---|---|---|---|---|"]
        for r in reversed(runs):
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["started"])) if r.get("started") else "?"
            rows.append(f"| `{r['id']}` | {when} | {'undone' if r.get('undone') else r.get('state')} | "
                        f"{r['created']} | {r['changed']} | {(r.get('options') or {}).get('existing', '?')} |")
        return "\n".join(rows)

    def batch_undo(self, folder: str, run_id: str) -> str:
        """Undo run ``run_id`` (empty: the newest not undone) of ``folder``; markdown report."""
        if not folder or not str(folder).strip():
            return "Enter the folder that was tagged first."
        try:
            r = self.job_manager.undo(str(folder).strip(), (run_id or "").strip() or None)
        except Exception as e:  # noqa: BLE001
            return _error_text(e)
        text = (f"Undo `{r['run']}`: restored {len(r['restored'])}, removed {len(r['removed'])}, already undone "
                f"{len(r['already'])}, refused {len(r['refused'])}")
        if r["refused"]:
            text += "\n\nLeft alone:\n" + "\n".join(f"- `{f['path']}`: {f['reason']}" for f in r["refused"][:50])
        return text

    def batch_follow(self, job_id: str, *, poll: float = 1.0) -> Iterator[tuple[str, str]]:
        """Yield ``(job id, progress markdown)`` until the job ends."""
        while True:
            try:
                status = self.job_manager.status(job_id)
            except Exception as e:  # noqa: BLE001
                yield job_id, _error_text(e)
                return
            yield job_id, format_job_status(job_id, status)
            if _job_finished(status):
                return
            time.sleep(poll)

    def batch_cancel(self, job_id: str) -> str:
        if not job_id:
            return "No batch job is running."
        try:
            self.job_manager.cancel(job_id)
            return format_job_status(job_id, self.job_manager.status(job_id))
        except Exception as e:  # noqa: BLE001
            return _error_text(e)


#: The batch-tagging settings the UI shows (TagOptions field, UI label, component kind, help). The decoding options
#: come from the main panel; the rest of TagOptions (globs, manifests, output folder...) are CLI/API-only.
BATCH_FIELDS: tuple[tuple[str, str, str, str], ...] = (
    ("existing", "Existing caption files", "radio", "skip keeps them; overwrite, append or prepend change them"),
    ("prefix", "Prefix", "textbox", "text put before every generated caption (mid-file with append)"),
    ("triggers", "Trigger words", "textbox", "comma-separated; always the first words of every file, never twice"),
    ("suffix", "Suffix", "textbox", "text put after every caption"),
    ("caption_ext", "Caption file suffix", "textbox", "a.jpg gets a.txt with .txt"),
    ("recursive", "Include sub-folders", "checkbox", ""),
    ("lowercase", "Lower-case captions", "checkbox", ""),
    ("strip_period", "Remove trailing period", "checkbox", ""),
    ("dry_run", "Dry run (write nothing)", "checkbox", "what each file would get; loads no model"),
)


def _batch_defaults() -> dict[str, Any]:
    """Defaults and choices of :data:`BATCH_FIELDS` from ``TagOptions`` (empty when batch tagging is unavailable)."""
    import dataclasses

    try:
        from ..batch import EXISTING_POLICIES, TagOptions
    except ImportError:
        return {}
    fields = {f.name: f.default for f in dataclasses.fields(TagOptions)}
    out = {name: fields[name] for name, *_ in BATCH_FIELDS if name in fields}
    out["triggers"] = ""  # a list field, shown as comma-separated text
    out["existing_choices"] = list(EXISTING_POLICIES)
    return out


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


def _status_dict(status: Any) -> dict[str, Any]:
    import dataclasses

    if dataclasses.is_dataclass(status) and not isinstance(status, type):
        return dataclasses.asdict(status)
    return dict(status) if isinstance(status, Mapping) else {"state": str(status)}


_DONE_STATES = {"done", "finished", "completed", "complete", "cancelled", "canceled", "failed", "error", "succeeded"}


def _job_finished(status: Any) -> bool:
    d = _status_dict(status)
    if d.get("finished") is True or d.get("done") is True:
        return True
    state = str(d.get("state") or d.get("status") or "").lower()
    return state in _DONE_STATES


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def format_job_status(job_id: str, status: Any) -> str:
    """A short markdown summary of a job status dict (whatever keys the job manager reports)."""
    d = _status_dict(status)
    state = d.get("state") or d.get("status") or "?"
    parts = [f"Job `{job_id}`: **{state}**"]
    done, total = d.get("done", d.get("processed")), d.get("total")
    if isinstance(done, (int, float)) and isinstance(total, (int, float)) and total:
        parts.append(f"{int(done)}/{int(total)} images ({100 * done / total:.0f}%)")
    if isinstance(d.get("images_per_s"), (int, float)) and d.get("images_per_s"):
        eta = d.get("eta_s")
        parts.append(f"{d['images_per_s']:.2f} images/s" + (f", ETA {_duration(eta)}" if isinstance(
            eta, (int, float)) and state == "running" else ""))
    names = {"resumed": "already done (resume)", "kept": "had a caption (policy)"}
    keys = ("written", "resumed", "kept", "failed") if "resumed" in d else ("written", "skipped", "failed")
    counts = [f"{names.get(k, k)} {d[k]}" for k in keys if isinstance(d.get(k), (int, float))]
    if counts:
        parts.append(", ".join(counts))
    text = " · ".join(parts)
    failures = d.get("failures") or d.get("errors")
    if isinstance(failures, (list, tuple)) and failures:
        shown = "\n".join(f"- `{f.get('path')}`: {f.get('reason')}" if isinstance(f, Mapping) else f"- {f}"
                          for f in failures[:20])
        listed = d.get("failed") if isinstance(d.get("failed"), int) else len(failures)
        more = f"\n- … and {listed - 20} more" if listed > 20 else ""
        text += f"\n\nFailed files:\n{shown}{more}"
    if d.get("error"):
        text += f"\n\n**Error:** {d['error']}"
    return text


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
    ctl = CaptionUI(manager, job_manager=job_manager,
                    batch_unavailable=unavailable() if callable(unavailable) else None, batch_values=host_batch)
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
        option_inputs = [option_components[k] for k in ctl.option_keys]

        def on_caption(img, model_name, *raw):
            text, rows, msg = ctl.caption(img, model_name, *raw)
            return text, cand_value(rows), msg

        caption_btn.click(fn=on_caption, inputs=[image, model_dd, *option_inputs],
                          outputs=[caption_box, candidates, status])

        # ------------------------------------------------------------------------------------------------ batch
        with gr.Accordion("Batch tagging", open=False, elem_id="clipcap_batch"):
            why = ctl.batch_unavailable()
            compat.component(gr.Markdown, value=why or "Writes a caption file next to each image of the folder, "
                             "with the model and options chosen above.", elem_id="clipcap_batch_info")
            with gr.Row():
                folder = compat.component(gr.Textbox, label="Folder", placeholder="/path/to/images",
                                          elem_id="clipcap_batch_folder", interactive=why is None, scale=3)
                job_id = compat.component(gr.Textbox, label="Job", interactive=False, elem_id="clipcap_batch_job",
                                          scale=1)
            batch_defaults = {**_batch_defaults(), **host_batch}
            batch_comps: dict[str, Any] = {}
            for row_kinds in (("radio", "textbox"), ("checkbox",)):
                with gr.Row():
                    for name, label, kind, help_ in BATCH_FIELDS:
                        if kind not in row_kinds:
                            continue
                        common = dict(label=label, info=help_ or None, value=batch_defaults.get(name),
                                      elem_id=f"clipcap_batch_{name}", interactive=why is None)
                        if kind == "radio":
                            batch_comps[name] = compat.component(
                                gr.Radio, choices=batch_defaults.get("existing_choices", []), **common)
                        elif kind == "checkbox":
                            batch_comps[name] = compat.component(gr.Checkbox, **common)
                        else:
                            batch_comps[name] = compat.component(gr.Textbox, **common)
            batch_inputs = [batch_comps[name] for name, *_ in BATCH_FIELDS]
            with gr.Row():
                start_btn = compat.component(gr.Button, value="Start", variant="primary",
                                             elem_id="clipcap_batch_start", interactive=why is None)
                cancel_btn = compat.component(gr.Button, value="Cancel", elem_id="clipcap_batch_cancel",
                                              interactive=why is None)
            progress = compat.component(gr.Markdown, value="", elem_id="clipcap_batch_progress")
            start_btn.click(fn=ctl.batch_start, inputs=[folder, model_dd, *batch_inputs, *option_inputs],
                            outputs=[job_id, progress])
            cancel_btn.click(fn=ctl.batch_cancel, inputs=[job_id], outputs=[progress])
            with gr.Row():  # every run that writes is recorded in the folder's .clipcap state folder: list / undo
                runs_btn = compat.component(gr.Button, value="List runs", elem_id="clipcap_batch_runs",
                                            interactive=why is None)
                run_id = compat.component(gr.Textbox, label="Run to undo (empty: the newest)",
                                          elem_id="clipcap_batch_run_id", interactive=why is None, scale=2)
                undo_btn = compat.component(gr.Button, value="Undo run", elem_id="clipcap_batch_undo",
                                            interactive=why is None)
            runs_md = compat.component(gr.Markdown, value="", elem_id="clipcap_batch_runs_list")
            runs_btn.click(fn=ctl.batch_runs, inputs=[folder], outputs=[runs_md])
            undo_btn.click(fn=ctl.batch_undo, inputs=[folder, run_id], outputs=[runs_md])

        # ----------------------------------------------------------------------------------------------- review
        from ..review.ui import build_review_section  # its own module: gallery, edits, undo, bulk edits, keys

        review = build_review_section(manager, job_manager=job_manager, model=model_dd, option_inputs=option_inputs,
                                      unavailable=ctl.batch_unavailable() if job_manager is None else None)

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
    demo.clipcap_review = review["ui"]
    demo.clipcap_components = {"image": image, "model": model_dd, "caption": caption_box, "candidates": candidates,
                               "status": status, "notice": notice_box, **option_components}
    return demo
