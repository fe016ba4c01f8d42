"""The one table of user-facing captioning settings.

Each :class:`Option` ties together what the gradio UI shows (label, help, range, component), what the HTTP API accepts
(field name, type, default), what the WebUI stores in its settings (``clipcap_<key>``) and what
:meth:`lib_clipcap.captioner.Captioner.caption` receives (``caption_kwarg``). The UI, the API request model and the
WebUI settings are all generated from :data:`OPTIONS`, and a test checks that they agree, so adding a setting means
adding one row here.

No gradio, pydantic or torch is imported here: the WebUI settings callback, the API and the UI all read this module.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ClipCapError, DecodingError

__all__ = [
    "DECODING_CHOICES",
    "DEMO_MODEL",
    "OPTIONS",
    "RERANK_CHOICES",
    "SETTINGS_PREFIX",
    "Option",
    "OptionError",
    "PROMPT_STYLE_CHOICES",
    "caption_kwargs",
    "caption_options",
    "check_decoding",
    "check_decoding_values",
    "decoding_options",
    "decoding_keys",
    "default_num_candidates",
    "defaults",
    "demo_fallback_notice",
    "from_settings",
    "get_option",
    "model_installed",
    "pick_default_model",
    "prompt_settings",
    "resolve_decoding",
    "resolve_model",
    "settings_entries",
    "validate_options",
]

SETTINGS_PREFIX = "clipcap_"


class OptionError(DecodingError):
    """A setting has a bad value. ``field`` is the API field name, ``value`` the value given."""

    def __init__(self, field: str, value: Any, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{field}={value!r} is invalid: {reason}")


@dataclass(frozen=True)
class Option:
    """One user-facing setting.

    Attributes:
        key: Name used everywhere unless overridden (``decoding``, ``top_p`` ...).
        type: ``int``, ``float``, ``str``, ``bool`` or ``list`` (a list of strings).
        default: Default value (``None`` allowed where ``nullable``).
        label: UI label, also the WebUI settings label.
        help: One-sentence explanation (UI ``info``, API field description, WebUI settings help).
        minimum, maximum: Inclusive bounds for numbers (``None``: unbounded).
        exclusive_minimum: ``minimum`` itself is not allowed (``temperature > 0``).
        step: Slider step in the UI.
        choices: Allowed values for ``str`` options (``None``: any; ``model`` is checked against the registry).
        group: ``"model"``, ``"decoding"``, ``"rerank"`` or ``"prompt"``: where the UI puts it (``prompt``: what a
            caption becomes, :data:`PROMPT_STYLE_CHOICES`; not a caption option, see :func:`prompt_settings`).
        nullable: ``None`` is a valid value (API ``null``).
        ui_max: Upper end of the UI slider when ``maximum`` is unbounded or too large to be a useful slider.
        caption_kwarg: Keyword of :meth:`Captioner.caption` it maps to, or ``None`` when it is not a caption option.
        widget: Force a UI component kind (see :attr:`component`).
    """

    key: str
    type: type
    default: Any
    label: str
    help: str
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    step: float | None = None
    choices: tuple[str, ...] | None = None
    group: str = "decoding"
    nullable: bool = False
    ui_max: float | None = None
    caption_kwarg: str | None = None
    widget: str | None = None

    @property
    def api_field(self) -> str:
        """Field name in the HTTP API's JSON."""
        return self.key

    @property
    def settings_key(self) -> str:
        """Key of the WebUI setting (``shared.opts.clipcap_<key>``)."""
        return SETTINGS_PREFIX + self.key

    @property
    def elem_id(self) -> str:
        """elem_id of the option's component in the gradio UI."""
        return f"clipcap_opt_{self.key}"

    @property
    def component(self) -> str:
        """Which kind of gradio component shows it: ``dropdown``, ``radio``, ``slider``, ``number``, ``checkbox``,
        ``textbox``."""
        if self.widget:
            return self.widget
        if self.type is bool:
            return "checkbox"
        if self.type is str:
            if self.key == "model":
                return "dropdown"
            return "radio" if self.choices else "textbox"
        if self.type in (int, float):
            hi = self.ui_max if self.ui_max is not None else self.maximum
            return "slider" if self.minimum is not None and hi is not None else "number"
        return "textbox"  # list: comma-separated text

    def component_args(self) -> dict[str, Any]:
        """Keyword arguments for the gradio component (besides label/value/info), common to gradio 3, 4 and 6."""
        kind = self.component
        if kind == "slider":
            hi = self.ui_max if self.ui_max is not None else self.maximum
            lo = self.minimum
            if self.exclusive_minimum and self.step:
                lo = lo + self.step
            return {"minimum": lo, "maximum": hi, "step": self.step or (1 if self.type is int else 0.01)}
        if kind in ("radio", "dropdown") and self.choices:
            return {"choices": list(self.choices)}
        if kind == "number":
            return {"precision": 0} if self.type is int else {}
        return {}

    def ui_value(self, value: Any) -> Any:
        """A value as the UI shows it (lists as comma-separated text, ``None`` seed as -1)."""
        if self.type is list:
            return ", ".join(value or ())
        if value is None and self.key == "seed":
            return -1
        return value

    def coerce(self, value: Any) -> Any:
        """Convert a UI/settings/API value to the option's type and check it.

        Raises:
            OptionError: The value has the wrong type or is out of range; the message names the field and value.
        """
        field, given = self.api_field, value
        if value is None:
            if self.nullable:
                return None
            raise OptionError(field, value, "a value is required")
        t = self.type
        if t is list:
            if isinstance(value, str):
                value = [w for w in (part.strip() for part in value.split(",")) if w]
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise OptionError(field, value, "must be a list of strings (or one comma-separated string)")
            return [v.strip() for v in value if v.strip()]
        if t is bool:
            if isinstance(value, bool):
                return value
            raise OptionError(field, value, "must be true or false")
        if t is str:
            if not isinstance(value, str):
                raise OptionError(field, value, "must be a string")
            if self.choices is not None and value not in self.choices:
                raise OptionError(field, value, f"must be one of {', '.join(self.choices)}")
            return value
        # numbers (numpy's too); bool is an int subclass and never a valid number here
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise OptionError(field, given, f"must be a{'n integer' if t is int else ' number'}")
        if t is int:
            if not isinstance(value, numbers.Integral):
                if not float(value).is_integer():
                    raise OptionError(field, given, "must be a whole number")
            value = int(value)
        else:
            value = float(value)
            if not math.isfinite(value):
                raise OptionError(field, given, "must be a finite number")
        if self.key == "seed" and value == -1:
            return None  # the UI's "random"
        if self.minimum is not None:
            if self.exclusive_minimum and value <= self.minimum:
                raise OptionError(field, given, f"must be greater than {self.minimum:g}")
            if value < self.minimum:
                raise OptionError(field, given, f"must be at least {self.minimum:g}")
        if self.maximum is not None and value > self.maximum:
            raise OptionError(field, given, f"must be at most {self.maximum:g}")
        return value


RERANK_CHOICES = ("none", "clip", "clip+grammar")
DECODING_CHOICES = ("greedy", "beam", "sample")
#: ``prompt_style``: the caption alone, or a prompt (:mod:`lib_clipcap.tags.prompt`'s styles; a test checks that the
#: two agree: this module imports no torch).
PROMPT_STYLE_CHOICES = ("sentence", "fast", "best")

OPTIONS: tuple[Option, ...] = (
    Option("model", str, "flickr8k", "Model",
           "Captioning model from the registry: ClipCap models, and SBG (blind guessing) where installed.",
           group="model"),
    Option("decoding", str, "beam", "Decoding",
           "greedy: fastest, one caption; beam: best-scoring captions; sample: varied captions (uses temperature, "
           "top-k, top-p).", choices=DECODING_CHOICES, caption_kwarg="decoding"),
    Option("beam_size", int, 5, "Beam size", "Beams kept per image in beam search; more is slower and often better.",
           minimum=1, maximum=64, ui_max=16, step=1, caption_kwarg="beam_size"),
    Option("num_candidates", int, 3, "Candidates",
           "Captions returned per image (beam: best beams; sample: independent samples). Re-ranking picks among "
           "them.", minimum=1, maximum=64, ui_max=16, step=1, caption_kwarg="num_candidates"),
    Option("temperature", float, 1.0, "Temperature",
           "Sampling temperature: below 1 safer, above 1 more adventurous.", minimum=0.0, exclusive_minimum=True,
           maximum=10.0, ui_max=2.0, step=0.05, caption_kwarg="temperature"),
    Option("top_k", int, 0, "Top-k", "Sample only among the k most likely tokens (0: off).", minimum=0,
           maximum=100000, ui_max=200, step=1, caption_kwarg="top_k"),
    Option("top_p", float, 1.0, "Top-p", "Sample only among the most likely tokens covering this probability "
           "(1: off).", minimum=0.0, exclusive_minimum=True, maximum=1.0, step=0.01, caption_kwarg="top_p"),
    Option("repetition_penalty", float, 1.0, "Repetition penalty",
           "Above 1 discourages repeating tokens already written (1: off).", minimum=0.0, exclusive_minimum=True,
           maximum=10.0, ui_max=2.0, step=0.05, caption_kwarg="repetition_penalty"),
    Option("no_repeat_ngram_size", int, 0, "No-repeat n-gram size",
           "Forbid repeating any sequence of this many tokens (0: off).", minimum=0, maximum=16, ui_max=6, step=1,
           caption_kwarg="no_repeat_ngram_size"),
    Option("max_new_tokens", int, 40, "Max tokens", "Longest caption, in tokens.", minimum=1, maximum=200, step=1,
           caption_kwarg="max_new_tokens"),
    Option("min_new_tokens", int, 0, "Min tokens", "Shortest caption, in tokens (0: no minimum).", minimum=0,
           maximum=200, ui_max=50, step=1, caption_kwarg="min_new_tokens"),
    Option("seed", int, None, "Seed", "Makes sampling reproducible; -1 or empty: random.", minimum=-1,
           maximum=2**32 - 1, nullable=True, caption_kwarg="seed", widget="number"),
    Option("banned_words", list, (), "Banned words", "Words the caption must not contain (comma-separated).",
           caption_kwarg="banned_words"),
    Option("rerank", str, "none", "Re-ranking",
           "Re-rank the candidates by CLIP image-text similarity (clip), optionally combined with a grammar "
           "score (clip+grammar); none keeps the decoder's order.", choices=RERANK_CHOICES, group="rerank",
           caption_kwarg="rerank"),
    Option("prompt_style", str, "sentence", "Prompt style",
           "sentence: the caption alone; fast: the caption plus each category's best modifier (medium, style, "
           "lighting, composition...) and a negative-prompt suggestion; best: a search for the modifiers that "
           "raise CLIP's image-text similarity most, within the token budget (slower).",
           choices=PROMPT_STYLE_CHOICES, group="prompt"),
    Option("prompt_max_tokens", int, 75, "Prompt token budget",
           "Longest prompt, in CLIP tokens (75 fills CLIP's context and one Stable Diffusion chunk); the caption "
           "is kept whole and modifiers fill what is left.", minimum=1, maximum=75, step=1, group="prompt"),
)

_BY_KEY = {o.key: o for o in OPTIONS}


def get_option(key: str) -> Option:
    """The option ``key`` (raises ``KeyError`` listing the valid keys)."""
    try:
        return _BY_KEY[key]
    except KeyError:
        raise KeyError(f"unknown option {key!r}; valid: {', '.join(_BY_KEY)}") from None


def caption_options() -> tuple[Option, ...]:
    """The options a caption call takes (everything but ``model``: the decoding settings and ``rerank``), in table
    order: what the UI shows in its panel and :func:`caption_kwargs` checks."""
    return tuple(o for o in OPTIONS if o.caption_kwarg)


#: The old name of :func:`caption_options`, kept for the review UI and tests that import it. ``decoding_options``
#: otherwise names one thing: a captioner's method that builds :class:`~lib_clipcap.decoding.DecodingOptions`.
decoding_options = caption_options


def defaults() -> dict[str, Any]:
    """``{key: default}`` for every option (lists as new lists)."""
    return {o.key: list(o.default) if o.type is list else o.default for o in OPTIONS}


def decoding_keys() -> tuple[str, ...]:
    """The decoding settings' names, in table order: what every captioner's ``caption`` and ``decoding_options``
    accept, what ``--<name>`` the command line offers and what a batch run's options carry."""
    return tuple(o.key for o in OPTIONS if o.group == "decoding")


def default_num_candidates(decoding: str, beam_size: int | None = None, *, default: int | None = None) -> int:
    """Candidates per image when none were asked for: 1 with greedy decoding (it has one caption), else ``default``
    (the table's when ``None``), at most ``beam_size`` in beam search (``beam_size=2`` alone must not be an error)."""
    if decoding == "greedy":
        return 1
    n = default if default is not None else get_option("num_candidates").default
    return min(n, beam_size) if decoding == "beam" and beam_size else n


def resolve_decoding(given: Mapping[str, Any], *, method_defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The decoding settings a caption call runs with: the one place their names, checks and defaults meet.

    Every captioner (:meth:`Captioner.decoding_options <lib_clipcap.captioner.Captioner.decoding_options>`, the SBG
    guesser), the command line and batch runs resolve their decoding keywords here, so a new decoding setting is a row
    of :data:`OPTIONS` and a field of the decoder's options, and nothing else.

    Args:
        given: ``{name: value}`` the caller asked for; a value of ``None`` means "not given". Names are
            :func:`decoding_keys`.
        method_defaults: A method's own defaults over the table's (the SBG procedure samples 5 candidates with top-k 50);
            taken as they are, and ``beam_size: None`` stays ``None`` for the method to fill in.

    Returns:
        ``{name: value}`` for every decoding key: given values checked as the table checks them (``seed`` -1 becomes
        ``None``), the others defaulted; ``num_candidates`` not given is :func:`default_num_candidates` (1 with
        greedy decoding).

    Raises:
        DecodingError: an unknown name (the message lists the valid ones), or an :class:`OptionError` naming a bad
            value.
    """
    keys = decoding_keys()
    unknown = [k for k in given if k not in keys]
    if unknown:
        raise DecodingError(f"unknown decoding option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))};"
                            f" valid: {', '.join(keys)}")
    table = defaults()
    base = {k: table[k] for k in keys}
    base.update(method_defaults or {})
    out = {k: get_option(k).coerce(given[k]) if given.get(k) is not None else base[k] for k in keys}
    if given.get("num_candidates") is None:
        out["num_candidates"] = default_num_candidates(out["decoding"], out["beam_size"],
                                                       default=base["num_candidates"])
    return out


def check_decoding(settings: Mapping[str, Any]) -> None:
    """The rules between decoding settings: the one place each is written (:class:`DecodingOptions
    <lib_clipcap.decoding.DecodingOptions>`, batch options and the UIs' :func:`caption_kwargs` all call it).

    A rule whose settings are absent or ``None`` is skipped: the SBG procedure leaves ``beam_size`` to be filled in
    (at least k) after its settings are resolved.

    Args:
        settings: ``{name: value}`` by the table's names (``decoding``, not the decoder's ``mode``), each value
            already checked on its own (:meth:`Option.coerce`).

    Raises:
        OptionError: naming the setting that breaks a rule and what to change.
    """
    decoding, n = settings.get("decoding"), settings.get("num_candidates")
    beams = settings.get("beam_size")
    if decoding == "beam" and n is not None and beams is not None and n > beams:
        raise OptionError("num_candidates", n, f"cannot exceed beam_size ({beams}) in beam search; raise beam_size")
    if decoding == "greedy" and n is not None and n > 1:
        raise OptionError("num_candidates", n, "greedy decoding gives one caption; use decoding beam or sample")
    lo, hi = settings.get("min_new_tokens"), settings.get("max_new_tokens")
    if lo is not None and hi is not None and lo > hi:
        raise OptionError("min_new_tokens", lo, f"cannot exceed max_new_tokens ({hi})")


def check_decoding_values(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Each setting of ``settings`` that is a table row checked as the table checks it (:meth:`Option.coerce`: type,
    range, choices), then the rules between them (:func:`check_decoding`). Names that are not rows are returned as
    they are: the decoder may have fields of its own (token ids) that no face shows.

    Returns:
        ``{name: checked value}`` (``seed`` -1 becomes ``None``).

    Raises:
        OptionError: naming the first bad setting and its value.
    """
    out = {k: _BY_KEY[k].coerce(v) if k in _BY_KEY else v for k, v in settings.items()}
    check_decoding(out)
    return out


def validate_options(values: Mapping[str, Any], *, keys: Iterable[str] | None = None) -> dict[str, Any]:
    """Coerce and check ``values`` (missing keys get their defaults).

    Args:
        values: ``{key: value}``; unknown keys raise.
        keys: Restrict the result to these keys (default: every option).

    Returns:
        ``{key: checked value}``.

    Raises:
        OptionError: A value is invalid or a key unknown; the message names the field and the value.
    """
    wanted = list(keys) if keys is not None else [o.key for o in OPTIONS]
    for k in values:
        if k not in _BY_KEY:
            raise OptionError(k, values[k], f"unknown setting; valid: {', '.join(_BY_KEY)}")
    out = {}
    for k in wanted:
        opt = get_option(k)
        out[k] = opt.coerce(values[k]) if k in values else defaults()[k]
    return out


def caption_kwargs(values: Mapping[str, Any]) -> dict[str, Any]:
    """Checked keyword arguments for :meth:`Captioner.caption` from option values (defaults filled in).

    Only the sampling options matter for greedy/beam, but every value is passed: the captioner ignores what its mode
    does not use. The rules between settings (:func:`check_decoding`) are checked here too, so a face reports them
    before any work starts; greedy decoding takes one candidate whatever the candidates slider says.

    Raises:
        OptionError: As :func:`validate_options`.
    """
    checked = validate_options({k: v for k, v in values.items() if k != "model"},
                               keys=[o.key for o in caption_options()])
    kw = {get_option(k).caption_kwarg: v for k, v in checked.items()}
    if kw.get("decoding") == "greedy":
        kw["num_candidates"] = 1  # greedy has one caption; the UI's candidates slider must not make it an error
    check_decoding(kw)
    if kw.get("rerank") == "none":
        kw.pop("rerank")  # the default: keep working with captioners that predate re-ranking
    return kw


def prompt_settings(values: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The prompt rows of ``values`` (``prompt_style``, ``prompt_max_tokens``), checked, defaults filled in.

    Returns:
        ``(style, settings)``: ``style`` one of :data:`PROMPT_STYLE_CHOICES`; ``settings`` the keywords of
        :func:`lib_clipcap.tags.prompt.prompt_images` (``{"max_tokens": 75}``).

    Raises:
        OptionError: a bad value; the message names the field (``prompt_style``) and the value.
    """
    checked = validate_options({k: values[k] for k in ("prompt_style", "prompt_max_tokens") if k in values},
                               keys=["prompt_style", "prompt_max_tokens"])
    return checked["prompt_style"], {"max_tokens": checked["prompt_max_tokens"]}


def settings_entries() -> list[dict[str, Any]]:
    """What the WebUI registers in its settings section, one dict per option, host-free.

    Each: ``settings_key``, ``key``, ``default`` (in the UI's form: lists as text, seed -1), ``label``, ``help``,
    ``component`` (see :attr:`Option.component`) and ``component_args``. The host maps ``component`` to a gradio
    class (``slider`` -> ``gr.Slider`` ...). ``model``'s choices are dynamic: the host fills them from
    :func:`lib_clipcap.registry.list_models`.
    """
    return [
        {"settings_key": o.settings_key, "key": o.key, "default": o.ui_value(o.default), "label": o.label,
         "help": o.help, "component": o.component, "component_args": o.component_args()}
        for o in OPTIONS
    ]


def from_settings(get: Any) -> dict[str, Any]:
    """Option values from host settings: ``get(settings_key, default)`` for each option; bad values fall back to the
    default (a hand-edited config must not break the UI).

    Args:
        get: e.g. ``lambda k, d: shared.opts.data.get(k, d)``.
    """
    out = {}
    for o in OPTIONS:
        raw = get(o.settings_key, o.ui_value(o.default))
        try:
            out[o.key] = o.coerce(raw) if o.key != "model" else (raw or o.default)
        except ClipCapError:
            out[o.key] = defaults()[o.key]
    return out


DEMO_MODEL = "shapes-demo"


def model_installed(name: str, *, models_dir: Any = None) -> bool:
    """True when registry model ``name``'s files (checkpoint, or SBG generator folder) are available locally (never downloads, never raises)."""
    from . import hub
    from .registry import get_model

    try:
        hub.resolve_model_files(get_model(name), models_dir=models_dir, download=False, progress=False)
        return True
    except (ClipCapError, OSError):
        return False


def demo_fallback_notice(want: str) -> str:
    """What every face says when the bundled demo model stands in for ``want`` (not installed, not downloadable)."""
    return (
        f"The model {want!r} is not installed here, so ClipCap is falling back to the bundled demo model "
        f"{DEMO_MODEL!r} (a tiny model trained on synthetic shapes: it only describes coloured shapes). To get "
        f"{want!r}: download it in the Caption tab's Models section, or run `python -m lib_clipcap caption --model "
        f"{want} IMAGE` once with network access (its message says where a hand-downloaded checkpoint goes)."
    )


def resolve_model(requested: str | None = None, *, default: str | None = None,
                  models_dir: Any = None) -> tuple[str, str | None]:
    """The model to load, and a notice when it is not the one asked for: the one model-resolution rule of every face
    (Caption tab, prompt buttons, generation section, HTTP API, standalone server, command line).

    Args:
        requested: A model the user named for this call. Empty or ``None`` means "the default", resolved now (not
            when a UI was built): ``default``, else the table's default.
        default: The configured default (the WebUI's ``clipcap_model`` setting, ``serve --model``).
        models_dir: The models folder to look in (never downloads).

    Returns:
        ``(model name, notice or None)``. A named model is returned as it is (loading it raises
        ``MissingFileError`` saying what to download, or ``UnknownModelError`` listing the names). The default falls
        back to the bundled demo model when it is not installed or not in the registry, with a notice that says so
        and how to get the real one.
    """
    if requested and requested.strip():
        return requested.strip(), None
    from .registry import get_model

    want = (default or "").strip() or get_option("model").default
    try:
        want = get_model(want).name
    except ClipCapError:
        return DEMO_MODEL, f"Model {want!r} is not in the registry; using the bundled demo model {DEMO_MODEL!r}."
    if want == DEMO_MODEL or model_installed(want, models_dir=models_dir):
        return want, None
    return DEMO_MODEL, demo_fallback_notice(want)


def pick_default_model(*, models_dir: Any = None, preferred: str | None = None) -> tuple[str, str | None]:
    """The model the UI and API preselect, and a notice when it is a fallback: :func:`resolve_model` of the default
    ``preferred`` (a setting or ``--model``).

    Returns:
        ``(model name, notice or None)``.
    """
    return resolve_model(None, default=preferred, models_dir=models_dir)
