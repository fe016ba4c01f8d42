"""The extension's Settings section, generated from :mod:`lib_clipcap.options_table` plus the host-only settings.

Every captioning option of the table becomes ``clipcap_<key>`` (the same label and help as in the Caption tab and
the API); the host-only settings (:data:`HOST_SETTINGS`) are "Keep models in VRAM", the prompt-button insert mode and
negative prompt, the models folder, the batch-tagging folders and suffixes, and the batch section's trigger words and
run retention.
All live in one section with a tuple id, as the host requires (``Options.dumpjson`` indexes ``section[0]``).
"""

from __future__ import annotations

import html
import logging
from typing import Any

from . import LOG_PREFIX, host

log = logging.getLogger(__name__)

SECTION = ("clipcap", "Caption (ClipCap)")

KEEP_IN_VRAM = "clipcap_keep_in_vram"
INSERT_MODE = "clipcap_insert_mode"
MODELS_DIR = "clipcap_models_dir"
BATCH_ROOTS = "clipcap_batch_roots"
CAPTION_EXTS = "clipcap_caption_exts"
BATCH_TRIGGERS = "clipcap_batch_triggers"
KEEP_RUNS = "clipcap_keep_runs"
BATCH_CONTENT = "clipcap_batch_content"
TAG_VOCABULARY = "clipcap_tag_vocabulary"
PROMPT_NEGATIVE = "clipcap_prompt_negative"
INSERT_MODES = ("replace", "append")

#: Host-only settings: key -> (default, label, component kind, component args, help).
HOST_SETTINGS: dict[str, tuple[Any, str, str, dict[str, Any], str]] = {
    KEEP_IN_VRAM: (False, "Keep models in VRAM", "checkbox", {},
                   "Leave the captioning model on the GPU between captions (faster, but the memory stays taken; "
                   "A1111 only: Forge's memory manager decides by itself)."),
    INSERT_MODE: ("replace", "Prompt-from-image button", "radio", {"choices": list(INSERT_MODES)},
                  "What the caption button in the txt2img/img2img prompt tools does with the prompt: replace it, or "
                  "append the caption after a comma (with Prompt style fast or best: the prompt)."),
    PROMPT_NEGATIVE: (False, "Prompt-from-image button: negative prompt", "checkbox", {},
                      "With Prompt style fast or best, the button also puts the negative-prompt suggestion (the "
                      "flaws the image shows least: blurry, watermark, text...) into the negative prompt box, "
                      "replacing it or appended to it as the prompt is."),
    MODELS_DIR: ("", "Models folder", "textbox", {},
                 "Where captioning models are stored and downloaded; empty: <models>/clipcap."),
    BATCH_ROOTS: ("", "Batch tagging folders", "textbox", {"lines": 2},
                  "Folders batch tagging may read and write (Caption tab and HTTP API), one per line or "
                  "comma-separated. Empty: the Caption tab and the HTTP API may use only the WebUI's outputs and "
                  "train folders (name your training-set folders here), while the WebUI serves this computer "
                  "only; with --listen, --share, --ngrok, a non-local --server-name or --nowebui, neither may "
                  "(unless --enable-insecure-extension-access). See docs/security.md."),
    CAPTION_EXTS: ("", "Caption file suffixes", "textbox", {},
                   "Suffixes batch tagging may write besides .txt, .caption, .tags and .json (e.g. .cap); image "
                   "suffixes are always refused."),
    BATCH_TRIGGERS: ("", "Trigger words for batch tagging", "textbox", {},
                     "Comma-separated words the Caption tab's batch section puts first in every caption file, once "
                     "(kohya's keep_tokens counts them), e.g. sks; the section's Trigger words box starts with them."),
    KEEP_RUNS: (20, "Tag runs kept for undo", "slider", {"minimum": 1, "maximum": 200, "step": 1},
                "Run records and backups kept per folder for the tab's batch tagging; older runs are dropped, "
                "and each run's summary names the ones it dropped."),
    BATCH_CONTENT: ("caption", "What batch tagging writes", "radio",
                    {"choices": ["caption", "tags", "caption+tags"]},
                    "The Caption tab's batch section starts with this: the caption sentence, CLIP-ranked tags "
                    "(kohya style: red, triangle, white background), or the caption then the tags."),
    TAG_VOCABULARY: ("", "Tag vocabularies", "textbox", {},
                     "Comma-separated bundled names (general, subject, colour, material, setting, lighting, "
                     "composition, medium, style, shapes) or vocabulary files the batch section starts with; "
                     "empty: general."),
}


def _component(gr: Any, kind: str) -> Any:
    return {"slider": gr.Slider, "radio": gr.Radio, "dropdown": gr.Dropdown, "number": gr.Number,
            "checkbox": gr.Checkbox, "textbox": gr.Textbox}[kind]


def _model_choices() -> dict[str, Any]:
    from lib_clipcap.registry import list_models

    return {"choices": list_models()}


def setting_keys() -> list[str]:
    """Every settings key the extension registers, in display order."""
    from lib_clipcap.options_table import settings_entries

    return [e["settings_key"] for e in settings_entries()] + list(HOST_SETTINGS)


def register() -> None:
    """Add the section to ``shared.opts`` (``on_ui_settings``). Idempotent: a UI reload re-registers the same keys."""
    import gradio as gr
    from modules import shared

    from lib_clipcap.options_table import settings_entries

    def add(key: str, default: Any, label: str, kind: str, args: Any, help_text: str) -> None:
        info = shared.OptionInfo(default, label, _component(gr, kind), args, section=SECTION)
        if help_text:
            # The host puts the help into HTML as it is: "<models>/clipcap" would lose "<models>" as a tag.
            info = info.info(html.escape(help_text, quote=False))
        shared.opts.add_option(key, info)

    for e in settings_entries():
        args = _model_choices if e["key"] == "model" else (e["component_args"] or None)
        add(e["settings_key"], e["default"], e["label"], e["component"], args, e["help"])
    for key, (default, label, kind, args, help_text) in HOST_SETTINGS.items():
        add(key, default, label, kind, args or None, help_text)


def option_values() -> dict[str, Any]:
    """``{option key: value}`` from the settings (bad or missing values fall back to the table's defaults)."""
    from lib_clipcap.options_table import from_settings

    return from_settings(lambda key, default: host.opt(key, default))


def batch_values() -> dict[str, Any]:
    """The batch section's defaults from the settings: ``{"triggers": "sks, ohwx", "keep_runs": 20, "content":
    "caption", "tag_vocabulary": ""}`` (a bad stored value falls back to the default, with a log line; a setting must
    never break the tab)."""
    from lib_clipcap.batch.options import DEFAULT_KEEP_RUNS

    triggers = str(host.opt(BATCH_TRIGGERS, "") or "").strip()
    try:
        keep = int(host.opt(KEEP_RUNS, DEFAULT_KEEP_RUNS))
        if keep < 1:
            raise ValueError(keep)
    except (TypeError, ValueError):
        log.warning("%s ignoring %s=%r: not a whole number >= 1", LOG_PREFIX, KEEP_RUNS, host.opt(KEEP_RUNS, None))
        keep = DEFAULT_KEEP_RUNS
    from lib_clipcap.batch.options import CONTENTS

    content = str(host.opt(BATCH_CONTENT, "caption") or "caption")
    if content not in CONTENTS:
        log.warning("%s ignoring %s=%r: not one of %s", LOG_PREFIX, BATCH_CONTENT, content, ", ".join(CONTENTS))
        content = "caption"
    vocabulary = str(host.opt(TAG_VOCABULARY, "") or "").strip()
    return {"triggers": triggers, "keep_runs": keep, "content": content, "tag_vocabulary": vocabulary}


def prompt_negative() -> bool:
    """Whether the prompt button fills the negative prompt box (``clipcap_prompt_negative``; only ``True`` counts)."""
    return host.opt(PROMPT_NEGATIVE, False) is True


def insert_mode() -> str:
    mode = str(host.opt(INSERT_MODE, "replace") or "replace")
    return mode if mode in INSERT_MODES else "replace"
