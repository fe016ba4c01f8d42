"""The "Batch tagging" section of the captioning UI (standalone server and WebUI tab alike): tag a folder, follow the
job, list and undo its runs.

A job tags with the model and decoding options of the panel above, decoded as every batch face decodes
(:data:`~lib_clipcap.batch.options.TAG_DECODING_DEFAULTS`: greedy, one caption per file), and with the
:class:`~lib_clipcap.batch.TagOptions` fields the section shows (:data:`BATCH_FIELDS`); the host's batch defaults
(``batch_values``) start those fields and set the others. It uses the folders the job manager allows, and says why
when there are none. :class:`BatchUI` holds the handlers (plain values in and out, testable without a browser);
:func:`build_batch_section` lays out the gradio components.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ..errors import error_markdown
from ..options_table import caption_kwargs, caption_options
from ..tags.selection import DEFAULT_THRESHOLD
from .options import CONTENTS, EXISTING_POLICIES, TAG_DECODING_DEFAULTS, TagOptions

log = logging.getLogger(__name__)

__all__ = ["BATCH_FIELDS", "BatchUI", "build_batch_section", "format_job_status"]

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
    ("content", "Write", "radio", "the caption, CLIP-ranked tags (kohya style), or the caption then the tags"),
    ("tag_vocabulary", "Tag vocabularies", "textbox", "comma-separated bundled names (general, subject, colour, "
     "material, setting, lighting, composition, medium, style, shapes) or vocabulary files; empty: general"),
    ("tag_threshold", "Tag threshold", "number", "least share of its category a tag needs (0-1)"),
    ("tag_exclude", "Never write these tags", "textbox", "comma-separated"),
    ("tags_file", "Tags in their own .tags file", "checkbox", "with tags or caption+tags: the tags go to a.tags "
     "(the caption stays in a.txt)"),
)
#: The list fields the section shows as comma-separated text (no trigger, tag or vocabulary name holds a comma).
_COMMA_LISTS = ("triggers", "tag_vocabulary", "tag_exclude")


def _error_text(e: BaseException) -> str:
    return error_markdown(e, log=log)


class BatchUI:
    """The batch section's handlers, independent of gradio (handlers take and return plain values).

    Args:
        manager: The model manager (the job manager runs the jobs through it).
        job_manager: A :class:`lib_clipcap.batch.jobs.JobManager`, or ``None`` (the section then says why it is
            unavailable).
        unavailable: What the section says when ``job_manager`` is ``None`` (it should name the setting that allows
            folders); default: the standalone server's ``--batch-root``.
        batch_values: The host's batch defaults, ``{TagOptions field: value}``; the section's own fields win.
    """

    def __init__(self, manager: Any, *, job_manager: Any = None, unavailable: str | None = None,
                 batch_values: Mapping[str, Any] | None = None) -> None:
        self.manager = manager
        self.job_manager = job_manager
        self.batch_unavailable_text = unavailable
        self.batch_values = dict(batch_values or {})
        self.option_keys = [o.key for o in caption_options()]

    def values(self, raw: Sequence[Any]) -> dict[str, Any]:
        """The panel's option values in table order (as the UI passes them) as ``{key: value}``."""
        return dict(zip(self.option_keys, raw))

    def batch_unavailable(self) -> str | None:
        """Why batch tagging cannot run here, or ``None``."""
        if self.job_manager is None:
            if self.batch_unavailable_text:
                return self.batch_unavailable_text[0].upper() + self.batch_unavailable_text[1:] + "."
            return ("Batch tagging is not enabled here (no folders are allowed for it; the standalone server enables "
                    "it with `--batch-root FOLDER`).")
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
        accepted = {f.name for f in dataclasses.fields(TagOptions) if f.init}
        # One decoding default for every batch face: the CLI and the API decode greedily, one caption per file
        # (deterministic, so a resumed run gives the same text); the panel's beam settings are for single captions.
        panel = {k: v for k, v in caption_kwargs(values).items()
                 if k in accepted and k not in ("decoding", "beam_size", "num_candidates")}
        args = {**panel, **TAG_DECODING_DEFAULTS}
        args.update({k: v for k, v in {**self.batch_values, **dict(batch)}.items() if k in accepted})
        for name in _COMMA_LISTS:  # the text box: "sks, ohwx"
            if isinstance(args.get(name), str):
                args[name] = [t.strip() for t in args[name].split(",") if t.strip()]
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


def _batch_defaults() -> dict[str, Any]:
    """Defaults and choices of :data:`BATCH_FIELDS` from ``TagOptions``."""
    fields = {f.name: f.default for f in dataclasses.fields(TagOptions)}
    out = {name: fields[name] for name, *_ in BATCH_FIELDS if name in fields}
    for name in _COMMA_LISTS:  # list fields, shown as comma-separated text
        out[name] = ""
    out["existing_choices"] = list(EXISTING_POLICIES)
    out["content_choices"] = list(CONTENTS)
    out["tag_threshold"] = DEFAULT_THRESHOLD  # None means the library's default: show it
    return out


def _status_dict(status: Any) -> dict[str, Any]:
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


def build_batch_section(manager: Any, *, job_manager: Any, model: Any, option_inputs: Sequence[Any],
                        unavailable: str | None = None,
                        batch_values: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Lay out the "Batch tagging" section inside the current ``gr.Blocks`` (called by
    :func:`lib_clipcap.app.ui.build_ui`).

    Args:
        manager, job_manager, unavailable, batch_values: As for :class:`BatchUI` (``batch_values`` also start the
            section's own fields).
        model: The panel's model dropdown (jobs tag with its model).
        option_inputs: The panel's decoding-option components, in the options table's order.

    Returns:
        The section's components by name (the :data:`BATCH_FIELDS` ones under ``"fields"``), and the handlers under
        ``"ui"``.
    """
    import gradio as gr

    from .. import compat

    ui = BatchUI(manager, job_manager=job_manager, unavailable=unavailable, batch_values=batch_values)
    c: dict[str, Any] = {"ui": ui}
    with gr.Accordion("Batch tagging", open=False, elem_id="clipcap_batch"):
        why = ui.batch_unavailable()
        compat.component(gr.Markdown, value=why or "Writes a caption file next to each image of the folder, "
                         "with the model and options chosen above.", elem_id="clipcap_batch_info")
        with gr.Row():
            c["folder"] = compat.component(gr.Textbox, label="Folder", placeholder="/path/to/images",
                                           elem_id="clipcap_batch_folder", interactive=why is None, scale=3)
            c["job_id"] = compat.component(gr.Textbox, label="Job", interactive=False, elem_id="clipcap_batch_job",
                                           scale=1)
        batch_defaults = {**_batch_defaults(), **ui.batch_values}
        fields: dict[str, Any] = {}
        for row_kinds in (("radio", "textbox"), ("checkbox",), ("number",)):
            with gr.Row():
                for name, label, kind, help_ in BATCH_FIELDS:
                    if kind not in row_kinds:
                        continue
                    common = dict(label=label, info=help_ or None, value=batch_defaults.get(name),
                                  elem_id=f"clipcap_batch_{name}", interactive=why is None)
                    if kind == "radio":
                        fields[name] = compat.component(
                            gr.Radio, choices=batch_defaults.get(f"{name}_choices", []), **common)
                    elif kind == "number":
                        fields[name] = compat.component(gr.Number, minimum=0, maximum=1, step=0.05, **common)
                    elif kind == "checkbox":
                        fields[name] = compat.component(gr.Checkbox, **common)
                    else:
                        fields[name] = compat.component(gr.Textbox, **common)
        batch_inputs = [fields[name] for name, *_ in BATCH_FIELDS]
        with gr.Row():
            c["start"] = compat.component(gr.Button, value="Start", variant="primary",
                                          elem_id="clipcap_batch_start", interactive=why is None)
            c["cancel"] = compat.component(gr.Button, value="Cancel", elem_id="clipcap_batch_cancel",
                                           interactive=why is None)
        c["progress"] = compat.component(gr.Markdown, value="", elem_id="clipcap_batch_progress")
        c["start"].click(fn=ui.batch_start, inputs=[c["folder"], model, *batch_inputs, *option_inputs],
                         outputs=[c["job_id"], c["progress"]])
        c["cancel"].click(fn=ui.batch_cancel, inputs=[c["job_id"]], outputs=[c["progress"]])
        with gr.Row():  # every run that writes is recorded in the folder's .clipcap state folder: list / undo
            c["runs"] = compat.component(gr.Button, value="List runs", elem_id="clipcap_batch_runs",
                                         interactive=why is None)
            c["run_id"] = compat.component(gr.Textbox, label="Run to undo (empty: the newest)",
                                           elem_id="clipcap_batch_run_id", interactive=why is None, scale=2)
            c["undo"] = compat.component(gr.Button, value="Undo run", elem_id="clipcap_batch_undo",
                                         interactive=why is None)
        c["runs_list"] = compat.component(gr.Markdown, value="", elem_id="clipcap_batch_runs_list")
        c["runs"].click(fn=ui.batch_runs, inputs=[c["folder"]], outputs=[c["runs_list"]])
        c["undo"].click(fn=ui.batch_undo, inputs=[c["folder"], c["run_id"]], outputs=[c["runs_list"]])
    c["fields"] = fields
    return c
