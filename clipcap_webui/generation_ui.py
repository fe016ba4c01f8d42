"""The "Caption generated images" section of txt2img/img2img: its controls, its arguments, and its infotext entries.

One list of controls is the section's argument list everywhere the host passes it: the UI, the host's API
(``"alwayson_scripts": {"ClipCap": {"args": [...]}}``) and the infotext paste. The order, fixed here as
:data:`ARG_NAMES`, is::

    enabled, model, preset, outputs, caption_ext, existing, prefix, suffix, prompt_mode, content

(``content``, last so that older positional calls keep their meaning: ``caption``, ``tags`` or ``caption+tags``,
what is written -- the sentence, CLIP-ranked tags with the batch tagger's default selection and the vocabulary of
the ``clipcap_tag_vocabulary`` setting, or both, kohya style.)

API callers may instead pass one JSON object with any of these names as the only argument
(``"args": [{"enabled": true, "outputs": ["sidecar"]}]``); missing names take their defaults. ``model`` ``""`` (the
default; "Settings default", the control's own value before gradio 3.44, means the same) is the ``clipcap_model``
setting as it is when the generation runs.

The settings are recorded in the infotext as ``ClipCap ...`` entries (:func:`infotext_entries`), and
:func:`infotext_fields` maps them back onto the controls, so PNG Info / "send to" / the API's ``infotext`` field
restore the section as it was.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

TITLE = "ClipCap"
LABEL = "Caption generated images (ClipCap)"

OUTPUTS = ("sidecar", "metadata", "panel")
OUTPUT_LABELS = {"sidecar": "Sidecar file", "metadata": "Image metadata (PNG Info)", "panel": "Results panel"}
DEFAULT_OUTPUTS = ("sidecar", "metadata")
PROMPT_MODE_LABELS = {"off": "Off", "replace": "Caption only", "append": "Prompt, then caption",
                      "prepend": "Caption, then prompt"}
CONTENT_LABELS = {"caption": "Caption", "tags": "Tags", "caption+tags": "Caption, then tags"}

ARG_NAMES = ("enabled", "model", "preset", "outputs", "caption_ext", "existing", "prefix", "suffix", "prompt_mode",
             "content")

# Infotext keys (the host parses "key: value" pairs of the last infotext line).
KEY_MODEL = "ClipCap model"
KEY_PRESET = "ClipCap preset"
KEY_OUTPUTS = "ClipCap output"
KEY_EXT = "ClipCap sidecar ext"
KEY_EXISTING = "ClipCap existing"
KEY_PREFIX = "ClipCap prefix"
KEY_SUFFIX = "ClipCap suffix"
KEY_PROMPT = "ClipCap prompt"
KEY_CONTENT = "ClipCap content"
KEY_CAPTION = "ClipCap caption"  # per image: the caption itself
SETTING_KEYS = (KEY_MODEL, KEY_PRESET, KEY_OUTPUTS, KEY_EXT, KEY_EXISTING, KEY_PREFIX, KEY_SUFFIX, KEY_PROMPT,
                KEY_CONTENT)


#: The model control's value for "the Settings' model, read when the generation runs". A concrete name here would be
#: frozen: the host's API caches each script's default arguments at its first request, so a later change of the
#: setting would never reach short positional ``alwayson_scripts`` args.
SETTINGS_MODEL = ""
SETTINGS_MODEL_LABEL = "Settings default"

#: The first gradio whose ``Dropdown`` takes ``(label, value)`` choices. Before it (3.41.2 in A1111 v1.10 and
#: reForge, 3.43 in Forge Classic) ``Dropdown`` stores ``str(choice)``: a pair becomes the text
#: ``"('label', 'value')"``, which the page shows and sends back as the value. ``Radio`` and ``CheckboxGroup`` take
#: pairs in 3.41 already.
DROPDOWN_PAIRS_SINCE = (3, 44)


def _gradio_version() -> tuple[int, int]:
    import gradio as gr

    numbers = re.findall(r"\d+", str(getattr(gr, "__version__", "") or ""))[:2]
    return tuple(int(n) for n in numbers) if len(numbers) == 2 else (0, 0)  # type: ignore[return-value]


def dropdown_takes_pairs() -> bool:
    """Whether this gradio's ``Dropdown`` shows ``(label, value)`` choices as label and sends the value."""
    return _gradio_version() >= DROPDOWN_PAIRS_SINCE


def model_choices(names: Sequence[str] | None = None) -> tuple[list[Any], str]:
    """``(choices, value)`` of a model dropdown: "Settings default" first, then the registry's models.

    The one place every ClipCap model dropdown (the generation section, the Extras step) gets its choices. Where
    ``Dropdown`` takes pairs, "Settings default" is the label of the value ``""``; before gradio 3.44 every choice is
    a plain string, and "Settings default" is its own value, which :func:`model_from_control` reads as ``""``. Either
    way the value a handler gets is a model name or means the setting.
    """
    if names is None:
        from lib_clipcap.registry import list_models

        names = list_models()
    names = [n for n in names if n not in (SETTINGS_MODEL, SETTINGS_MODEL_LABEL)]
    if dropdown_takes_pairs():
        return [(SETTINGS_MODEL_LABEL, SETTINGS_MODEL), *((n, n) for n in names)], SETTINGS_MODEL
    return [SETTINGS_MODEL_LABEL, *names], SETTINGS_MODEL_LABEL


def model_dropdown(gr: Any, **kwargs: Any) -> Any:
    """A ``gr.Dropdown`` of :func:`model_choices` (its value: "Settings default")."""
    choices, value = model_choices()
    return gr.Dropdown(choices=choices, value=value, **kwargs)


_PAIR_TEXT = re.compile(r"^\s*[(\[].*[)\]]\s*$", re.S)


def model_from_control(value: Any) -> str:
    """The model a model control's value names; ``""`` (:data:`SETTINGS_MODEL`) for "Settings default".

    Accepts what the hosts' pages and APIs send: a model name, ``""`` / ``None`` / "Settings default", a
    ``[label, value]`` pair, and the text ``"('label', 'value')"`` that gradio before 3.44 made of a pair choice
    (stored by an older version of this extension in ui-config.json or an API script's saved arguments).

    Raises:
        TypeError: ``value`` is not text (nor a pair of texts).
    """
    if value is None:
        return SETTINGS_MODEL
    if isinstance(value, (list, tuple)):
        if len(value) == 2 and all(isinstance(v, str) for v in value):
            return model_from_control(value[1])
        raise TypeError("must be a model name")
    if not isinstance(value, str):
        raise TypeError("must be a model name")
    text = value.strip()
    if len(text) <= 400 and _PAIR_TEXT.match(text):  # a model name is short: no parsing of long client texts
        import ast

        try:
            pair = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            pair = None
        if isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(v, str) for v in pair):
            return model_from_control(pair[1])
    if text.casefold() == SETTINGS_MODEL_LABEL.casefold():
        return SETTINGS_MODEL
    return text


@dataclass
class GenerationSettings:
    """The section's values, checked. Build with :meth:`from_args`."""

    enabled: bool = False
    model: str = SETTINGS_MODEL  # resolved when the generation starts (lib_clipcap.options_table.resolve_model)
    preset: str = "settings"
    outputs: tuple[str, ...] = DEFAULT_OUTPUTS
    caption_ext: str = ".txt"
    existing: str = "skip"
    prefix: str = ""
    suffix: str = ""
    prompt_mode: str = "off"
    content: str = "caption"
    problems: list[str] = field(default_factory=list)

    @classmethod
    def from_args(cls, args: Sequence[Any]) -> GenerationSettings:
        """Settings from the script arguments: positional (:data:`ARG_NAMES`) or one dict.

        Never raises: ``None`` (a control the API left out) takes the default; a bad value takes the default too and
        is listed in ``problems``, so generation is never stopped by this section.
        """
        from lib_clipcap.batch.options import CONTENTS, EXISTING_POLICIES
        from .presets import DECODING_PRESETS
        from .prompting import PROMPT_MODES

        args = list(args or ())
        if args and isinstance(args[0], dict):
            named = dict(args[0])
        else:
            named = dict(zip(ARG_NAMES, args))
        s = cls()
        for name in named:
            if name not in ARG_NAMES:
                s.problems.append(f"unknown argument {name!r} (valid: {', '.join(ARG_NAMES)})")

        def take(name: str, check: Callable[[Any], Any]) -> None:
            value = named.get(name)
            if value is None:
                return
            try:
                setattr(s, name, check(value))
            except (TypeError, ValueError) as e:
                s.problems.append(f"{name}={value!r}: {e}")

        def choice(options: Sequence[str]) -> Callable[[Any], str]:
            def check(v: Any) -> str:
                if v not in options:
                    raise ValueError(f"must be one of {', '.join(options)}")
                return v
            return check

        def text(v: Any) -> str:
            if not isinstance(v, str):
                raise TypeError("must be a string")
            return v

        def outputs(v: Any) -> tuple[str, ...]:
            items = [v] if isinstance(v, str) else list(v)
            bad = [x for x in items if x not in OUTPUTS]
            if bad:
                raise ValueError(f"unknown output {bad[0]!r}; valid: {', '.join(OUTPUTS)}")
            return tuple(x for x in OUTPUTS if x in items)

        take("enabled", lambda v: v if isinstance(v, bool) else _raise(TypeError("must be true or false")))
        take("model", model_from_control)
        take("preset", choice(tuple(DECODING_PRESETS)))
        take("outputs", outputs)
        take("caption_ext", _caption_ext)
        take("existing", choice(EXISTING_POLICIES))
        take("prefix", text)
        take("suffix", text)
        take("prompt_mode", choice(PROMPT_MODES))
        take("content", choice(CONTENTS))
        return s

    def args(self) -> list[Any]:
        """The positional argument list (the inverse of :meth:`from_args`)."""
        return [self.enabled, self.model, self.preset, list(self.outputs), self.caption_ext, self.existing,
                self.prefix, self.suffix, self.prompt_mode, self.content]

    @property
    def captions_outputs(self) -> bool:
        """Generated images get captioned (some output is chosen)."""
        return self.enabled and bool(self.outputs)

    @property
    def captions_prompt(self) -> bool:
        """img2img: the init image's caption becomes the prompt."""
        return self.enabled and self.prompt_mode != "off"


def _raise(e: Exception) -> Any:
    raise e


def _caption_ext(value: Any) -> str:
    from lib_clipcap.batch.options import TagOptions
    from lib_clipcap.errors import ClipCapError

    if not isinstance(value, str):
        raise TypeError("must be a string like .txt")
    value = value.strip()
    value = value if value.startswith(".") else "." + value
    try:  # the batch tagger's rules: a plain suffix, never an image's
        return TagOptions(inputs=["-"], caption_ext=value).caption_ext
    except ClipCapError as e:
        raise ValueError(getattr(e, "reason", str(e))) from None


# ------------------------------------------------------------------------------------------------------ infotext
def infotext_entries(s: GenerationSettings, *, is_img2img: bool) -> dict[str, str]:
    """The ``ClipCap ...`` entries recording ``s`` (defaults of the sidecar options are left out)."""
    out = {KEY_MODEL: s.model, KEY_PRESET: s.preset, KEY_OUTPUTS: "+".join(s.outputs) or "none"}
    if s.content != "caption":
        out[KEY_CONTENT] = s.content
    if "sidecar" in s.outputs:
        if s.caption_ext != ".txt":
            out[KEY_EXT] = s.caption_ext
        if s.existing != "skip":
            out[KEY_EXISTING] = s.existing
        if s.prefix:
            out[KEY_PREFIX] = s.prefix
        if s.suffix:
            out[KEY_SUFFIX] = s.suffix
    if is_img2img and s.prompt_mode != "off":
        out[KEY_PROMPT] = s.prompt_mode
    return out


def _from_params(key: str, default: Any, convert: Callable[[str], Any] = str) -> Callable[[dict], Any]:
    """A paste function: the entry's value, its default when the infotext has ClipCap entries but not this one, and
    ``None`` (leave the control alone) when the infotext has no ClipCap entries at all."""
    def paste(params: dict) -> Any:
        if KEY_MODEL not in params:
            return None
        value = params.get(key)
        return default if value is None else convert(value)
    return paste


def infotext_fields(controls: Sequence[Any]) -> list[tuple[Any, Any]]:
    """``(component, infotext key or function)`` pairs for ``Script.infotext_fields`` (the order of :data:`ARG_NAMES`)."""
    enabled, model, preset, outputs, ext, existing, prefix, suffix, prompt_mode, content = controls
    return [
        (enabled, lambda params: KEY_MODEL in params),
        (model, KEY_MODEL),
        (preset, _from_params(KEY_PRESET, "settings")),
        (outputs, _from_params(KEY_OUTPUTS, list(DEFAULT_OUTPUTS),
                               lambda v: [x for x in v.split("+") if x in OUTPUTS])),
        (ext, _from_params(KEY_EXT, ".txt")),
        (existing, _from_params(KEY_EXISTING, "skip")),
        (prefix, _from_params(KEY_PREFIX, "")),
        (suffix, _from_params(KEY_SUFFIX, "")),
        (prompt_mode, _from_params(KEY_PROMPT, "off")),
        (content, _from_params(KEY_CONTENT, "caption")),
    ]


# ------------------------------------------------------------------------------------------------------------ UI
def build(script: Any, is_img2img: bool) -> list[Any]:
    """``Script.ui``: the accordion and its controls; sets ``infotext_fields`` and ``paste_field_names``.

    Gradio 3.41 and 4.x alike (no ``.style()``): ``Radio`` and ``CheckboxGroup`` take ``(label, value)`` pairs
    there; the model ``Dropdown`` gets its choices from :func:`model_choices` (plain strings before gradio 3.44).
    Called again by the host's API to read default values, so it keeps no state besides the script's attributes.
    """
    import gradio as gr

    from lib_clipcap.batch.options import EXISTING_POLICIES
    from .presets import PRESET_LABELS

    with _accordion(script) as enabled:
        with gr.Row():
            model = model_dropdown(gr, label="Model", elem_id=script.elem_id("model"),
                                   info="Settings default: the model chosen in Settings when the generation runs "
                                        "(the bundled demo model when that one is not installed).")
            preset = gr.Radio(label="Decoding", choices=[(v, k) for k, v in PRESET_LABELS.items()], value="settings",
                              elem_id=script.elem_id("preset"))
        with gr.Row():
            outputs = gr.CheckboxGroup(label="Write the caption to", value=list(DEFAULT_OUTPUTS),
                                       choices=[(OUTPUT_LABELS[k], k) for k in OUTPUTS],
                                       elem_id=script.elem_id("outputs"))
            content = gr.Radio(label="What to write", value="caption",
                               choices=[(v, k) for k, v in CONTENT_LABELS.items()],
                               info="Tags: CLIP-ranked, comma-separated (vocabulary: the batch tagging setting).",
                               elem_id=script.elem_id("content"))
        with gr.Row():
            ext = gr.Textbox(label="Sidecar extension", value=".txt", elem_id=script.elem_id("caption_ext"))
            existing = gr.Radio(label="When the sidecar exists", choices=list(EXISTING_POLICIES), value="skip",
                                elem_id=script.elem_id("existing"))
        with gr.Row():
            prefix = gr.Textbox(label="Sidecar prefix", value="", placeholder="e.g. a trigger word",
                                elem_id=script.elem_id("prefix"))
            suffix = gr.Textbox(label="Sidecar suffix", value="", elem_id=script.elem_id("suffix"))
        prompt_mode = gr.Radio(label="Use the init image's caption as the prompt", value="off",
                               choices=[(v, k) for k, v in PROMPT_MODE_LABELS.items()], visible=is_img2img,
                               info="Each input image (batch folders and uploads too) is captioned first; "
                                    "{caption} in the prompt marks where the caption goes.",
                               elem_id=script.elem_id("prompt_mode"))
    controls = [enabled, model, preset, outputs, ext, existing, prefix, suffix, prompt_mode, content]
    script.infotext_fields = infotext_fields(controls)
    script.paste_field_names = list(SETTING_KEYS)
    return controls


def _accordion(script: Any) -> Any:
    """The host's ``InputAccordion`` (a checkbox that opens and closes the section); a checkbox inside an accordion
    on hosts without it."""
    try:
        from modules.ui_components import InputAccordion
    except ImportError:
        InputAccordion = None
    if InputAccordion is not None:
        return InputAccordion(False, label=LABEL, elem_id=script.elem_id("enabled"))
    import contextlib

    import gradio as gr

    @contextlib.contextmanager
    def fallback():
        with gr.Accordion(LABEL, open=False):
            yield gr.Checkbox(False, label="Enable", elem_id=script.elem_id("enabled"))
    return fallback()
