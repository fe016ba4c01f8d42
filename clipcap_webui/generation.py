"""Captions for the images a generation produces (the always-visible txt2img/img2img section), and the img2img
"caption as prompt".

When it runs, given the host's order in ``process_images`` (A1111 v1.10 and Forge alike)::

    before_process(p)                        -> read the section, record it in the infotext;
                                                img2img: caption the init image, make it the prompt
    for each batch n:
        before_process_batch(p, batch_number=n)  -> FLUSH batch n-1
        (sampling, decoding)
        for each image i of batch n:
            postprocess_image_after_composite  -> COLLECT the final image (after face restoration, the inpaint
                                                  composite and the other scripts' postprocess_image)
            images.save_image -> on_image_saved -> note the file written for it (matched by identity)
    (grid)
    postprocess(p, processed)                -> FLUSH the last batch; captions into the results (infotexts, the
                                                images' own info, comments, extra_generation_params)

Why this order: the host saves each image right after its per-image hooks, so the images of a batch are all
available only once the first ones are already saved. Captioning the decoded tensors in ``postprocess_batch_list``
would batch as well, but would describe what the sampler drew rather than the saved picture. So each batch is
captioned in **one** model call after its images are saved ("flush"), and the results are then written to the saved
files: the sidecar atomically (the batch tagger's existing-file policy, prefix and suffix), the ``ClipCap caption``
entry into the PNG text / EXIF UserComment that holds the infotext, atomically and without re-encoding
(:mod:`clipcap_webui.metadata`). Images that are not saved (API calls without ``save_images``) still get their
caption in the returned infotexts.

Safety: every hook catches everything. The first failure of a generation is reported once (the host's
``errors.report`` in the console, one line in the results panel) and captioning stops for that generation; images are
saved by the host regardless, since captioning only starts after the save. Model calls run under
:func:`clipcap_webui.memory.inside_generation` (the host already holds its queue lock) with the host's GPU etiquette.
"""

from __future__ import annotations

import glob
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import LOG_PREFIX
from .generation_ui import KEY_CAPTION, SETTING_KEYS, GenerationSettings, infotext_entries

log = logging.getLogger(__name__)

STATE_ATTR = "_clipcap_generation"
API_KEY = "ClipCap captions"  # processed.extra_generation_params: one caption (or None) per returned image
NOTES_KEY = "ClipCap notes"  # processed.extra_generation_params: what the results panel says (fallbacks, problems)


@dataclass
class Item:
    """One generated image: the picture, the file it was saved to, and its caption once known."""

    image: Any
    path: str | None = None
    saved_info: str | None = None  # the parameters text the host saved with it (identifies the file)
    caption: str | None = None
    done: bool = False


@dataclass
class State:
    """What the section knows during one ``process_images`` call (kept on ``p``)."""

    settings: GenerationSettings
    items: list[Item] = field(default_factory=list)
    failed: bool = False
    notes: list[str] = field(default_factory=list)  # results panel, console and the API's info
    panel: list[str] = field(default_factory=list)  # the captions' lines in the results panel
    typed_prompt: Any = None
    prompt_written: Any = None


# ------------------------------------------------------------------------------------------------------ reporting
def _report(state: State | None, message: str, *, exc_info: bool = True) -> None:
    """Log a failure in the host's console (once per generation) and keep one line for the results panel.

    ``exc_info``: add the traceback (for bugs; a ``ClipCapError`` already says what is wrong and what to do).
    """
    if state is not None:
        if state.failed:
            return
        state.failed = True
        state.notes.append(f"ClipCap: {message} (captioning skipped for the rest of this generation; images are "
                           "saved as usual)")
    try:
        from modules import errors

        errors.report(f"{LOG_PREFIX} {message}", exc_info=exc_info)
    except Exception:  # no host error module: our own log
        log.error("%s %s", LOG_PREFIX, message, exc_info=exc_info)


def _note_once(state: State, text: str) -> None:
    """One line for the results panel (``ClipCap: ...``) and the console (``[ClipCap] ...``), once per generation."""
    if text not in state.notes:
        state.notes.append(text)
        print(f"{LOG_PREFIX} {text.removeprefix('ClipCap: ')}")


def _user_error(e: BaseException) -> bool:
    """A failure the message explains (model not installed, bad option): no traceback in the console."""
    from lib_clipcap.errors import ClipCapError

    return isinstance(e, ClipCapError)


def _state(p: Any) -> State | None:
    return getattr(p, STATE_ATTR, None)


# ---------------------------------------------------------------------------------------------------- captioning
def _caption(state: State, images: Sequence[Any]) -> list[Any]:
    """One model call for ``images`` with the section's model and preset, under the host's GPU etiquette."""
    from lib_clipcap.options_table import caption_kwargs
    from .presets import apply_preset

    from . import memory, models, settings

    values = apply_preset(settings.option_values(), state.settings.preset)
    kwargs = caption_kwargs(values)
    manager = models.get_manager()
    with memory.inside_generation():  # the host holds its queue lock for this generation (Forge: on our behalf)
        return memory.run_caption(manager, list(images), model=state.settings.model, **kwargs)


def tag_options(content: str) -> Any:
    """The batch tagger's options for the section's tags: ``content`` and the ``clipcap_tag_vocabulary`` setting,
    the tag selection at the batch tagger's defaults (threshold, maximum count, underscores as spaces).

    Raises:
        lib_clipcap.ClipCapError: a bad vocabulary setting (the message names the setting's value).
    """
    from lib_clipcap.batch.options import TagOptions

    from . import settings

    names = [v.strip() for v in settings.batch_values()["tag_vocabulary"].split(",") if v.strip()]
    return TagOptions(inputs=["-"], content=content, tag_vocabulary=names)


def _tagged(state: State, images: Sequence[Any], options: Any) -> list[Any]:
    """``(CaptionResult, tags)`` per image for the batch tagger's ``options`` (:func:`tag_options`), in one model
    call (see :func:`_caption`)."""
    from lib_clipcap.options_table import caption_kwargs
    from .presets import apply_preset

    from . import memory, models, settings

    values = apply_preset(settings.option_values(), state.settings.preset)
    manager = models.get_manager()
    with memory.inside_generation():
        return memory.run_model(manager, "caption_and_tag", list(images), model=state.settings.model,
                                content=options.content, vocabulary=options.tag_vocabulary,
                                selection=options.tag_selection(), **caption_kwargs(values))


def _caption_texts(state: State, images: Sequence[Any]) -> list[str | None]:
    """The section's text for each of ``images`` (``None`` for an image the model could not caption or tag): the
    caption, its tags or both (``content``); raises on a failed call."""
    if state.settings.content != "caption":
        return _tagged_texts(state, images)
    results = _caption(state, images)
    out: list[str | None] = []
    for res in results:
        if getattr(res, "error", None):
            _note_once(state, f"ClipCap: an image could not be captioned: {res.error}")
            out.append(None)
        else:
            out.append(" ".join(res.text.split()))  # one line: infotext entries and sidecars hold one line
    return out


def _tagged_texts(state: State, images: Sequence[Any]) -> list[str | None]:
    """As :func:`_caption_texts` with tags: the batch tagger's text for the content (kohya style, the caption's
    post-processing settings of the batch tagger at their defaults)."""
    from lib_clipcap.batch.policy import with_tags
    from lib_clipcap.batch.runner import TaggedResult, own_texts

    options = tag_options(state.settings.content)
    out: list[str | None] = []
    for res, tags in _tagged(state, images, options):
        if getattr(res, "error", None):
            _note_once(state, f"ClipCap: an image could not be captioned: {res.error}")
            out.append(None)
            continue
        caption, chosen, reason = own_texts(TaggedResult(res, tags), options)
        if reason:
            _note_once(state, f"ClipCap: nothing written for an image: {reason}")
            out.append(None)
            continue
        text = with_tags(caption, [t.tag for t in chosen], options)
        out.append(" ".join(text.split()))
    return out


# ------------------------------------------------------------------------------------------------------- outputs
def write_sidecar(image_path: str | Path, caption: str, s: GenerationSettings) -> Path | None:
    """Write the caption file of ``image_path`` with the batch tagger's rules; ``None`` when ``skip`` kept an
    existing file.

    Raises:
        OSError: the file cannot be written (the old one, if any, is left as it was).
    """
    from lib_clipcap.batch.options import TagOptions
    from lib_clipcap.batch.policy import final_text
    from lib_clipcap.batch.writer import read_existing, sidecar_name
    from lib_clipcap.fileio import atomic_write_text

    image_path = Path(image_path)
    options = TagOptions(inputs=[str(image_path)], caption_ext=s.caption_ext, existing=s.existing, prefix=s.prefix,
                         suffix=s.suffix)
    target = image_path.with_name(sidecar_name(image_path.name, options.caption_ext))
    existing = read_existing(target)
    if existing is not None and options.existing == "skip":
        return None
    _, text = final_text(existing, caption, options)
    atomic_write_text(target, text)
    return target


def locate_saved_file(item: Item) -> Path | None:
    """The file that holds ``item``'s image, checked by its stored parameters.

    ``on_image_saved`` reports the name the host chose *before* "Add number suffix" resolved a clash (the host renames
    to ``<name>-1.png`` but does not update the name it reports), so the reported path may be an older image. The
    file whose parameters equal the text saved with this image is the right one: the reported path, else its
    ``-N`` siblings, newest first. Without stored parameters (PNG info disabled) the reported path is trusted.
    """
    from lib_clipcap.errors import ClipCapError
    from .metadata import read_parameters

    path = Path(item.path)
    if item.saved_info is None or path.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
        return path if path.exists() else None

    def holds_this_image(candidate: Path) -> bool:
        try:
            return read_parameters(candidate) == item.saved_info
        except (OSError, ClipCapError):
            return False

    if holds_this_image(path):  # the usual case: no clash, so no listing of a possibly large output folder
        return path
    siblings = sorted(path.parent.glob(f"{glob.escape(path.stem)}-*{glob.escape(path.suffix)}"),
                      key=lambda p: p.stat().st_mtime, reverse=True)
    return next((c for c in siblings if holds_this_image(c)), None)


def _write_files(state: State, item: Item) -> None:
    from lib_clipcap.errors import ClipCapError
    from .metadata import set_file_param

    s = state.settings
    if item.path is None or item.caption is None:
        return
    path = locate_saved_file(item)
    if path is None:
        _note_once(state, f"ClipCap: could not find the saved file of an image ({item.path}); its caption is in the "
                          "results only")
        return
    item.path = str(path)
    if "sidecar" in s.outputs:
        try:
            if write_sidecar(item.path, item.caption, s) is None:
                _note_once(state, f"ClipCap: a sidecar {s.caption_ext} file already existed and was kept (policy "
                                  "'skip'; the WebUI's own infotext .txt files count too): choose another extension "
                                  "or policy to write captions")
        except (OSError, ClipCapError, UnicodeDecodeError) as e:
            _note_once(state, f"ClipCap: could not write the caption file for {item.path}: {e}")
    if "metadata" in s.outputs:
        try:
            set_file_param(item.path, KEY_CAPTION, item.caption)
        except (OSError, ClipCapError) as e:
            _note_once(state, f"ClipCap: could not add the caption to {item.path}: {e}")


def flush(p: Any) -> None:
    """Caption every collected image that has no caption yet (one model call), then write its files."""
    state = _state(p)
    if state is None or state.failed:
        return
    pending = [it for it in state.items if not it.done]
    if not pending:
        return
    for it in pending:
        it.done = True
    try:
        captions = _caption_texts(state, [it.image for it in pending])
    except Exception as e:
        _report(state, f"captioning failed: {type(e).__name__}: {e}", exc_info=not _user_error(e))
        return
    for it, caption in zip(pending, captions):
        it.caption = caption
        try:
            _write_files(state, it)
        except Exception as e:  # never into the generation
            _report(state, f"writing the caption of {it.path} failed: {type(e).__name__}: {e}")


# ---------------------------------------------------------------------------------------------------------- hooks
def before_process(p: Any, args: Sequence[Any], *, is_img2img: bool) -> None:
    """Start a generation: settings, infotext entries, and (img2img) the caption as the prompt."""
    try:
        _before_process(p, args, is_img2img=is_img2img)
    except Exception as e:
        _report(_state(p), f"setup failed: {type(e).__name__}: {e}")


def _before_process(p: Any, args: Sequence[Any], *, is_img2img: bool) -> None:
    previous = _state(p)  # img2img batch: the same p comes back for every input image
    for key in (*SETTING_KEYS, KEY_CAPTION):
        p.extra_generation_params.pop(key, None)
    s = GenerationSettings.from_args(args)
    if not s.enabled:
        setattr(p, STATE_ATTR, None)
        return
    state = State(settings=s)
    if previous is not None:
        state.typed_prompt, state.prompt_written = previous.typed_prompt, previous.prompt_written
    setattr(p, STATE_ATTR, state)
    if s.problems:
        _note_once(state, "ClipCap: ignored invalid settings: " + "; ".join(s.problems))
    _resolve_model(state)
    p.extra_generation_params.update(infotext_entries(s, is_img2img=is_img2img))
    if is_img2img and s.captions_prompt:
        _prompt_from_init_image(p, state)


def _resolve_model(state: State) -> None:
    """The section's model as it runs now: "Settings default" is the setting's model, or the bundled demo model (with
    a note) when that one is not installed -- the rule of every other face."""
    from lib_clipcap.options_table import resolve_model

    from . import host, settings

    model, notice = resolve_model(state.settings.model, default=settings.option_values()["model"],
                                  models_dir=host.models_dir())
    state.settings.model = model
    if notice:
        _note_once(state, f"ClipCap: {notice}")


def _prompt_from_init_image(p: Any, state: State) -> None:
    """Replace ``p.prompt`` by the init image's caption combined with the typed prompt.

    The host's img2img batch reuses one ``p`` for every input image and only resets its prompt when it reads PNG
    info, so the typed prompt is remembered: a prompt this function wrote is never taken for a typed one.
    """
    from .prompting import caption_prompt

    images = list(getattr(p, "init_images", None) or [])
    if not images or images[0] is None:
        _note_once(state, "ClipCap: no init image to caption; the prompt was left as typed")
        return
    if state.prompt_written is None or p.prompt != state.prompt_written:
        state.typed_prompt = p.prompt  # the user's (or the batch's PNG-info) prompt
    try:
        caption = _caption_texts(state, [images[0]])[0]
    except Exception as e:
        _report(state, f"captioning the init image failed: {type(e).__name__}: {e}", exc_info=not _user_error(e))
        return
    if caption is None:
        return
    typed = state.typed_prompt
    if isinstance(typed, list):
        new: Any = [caption_prompt(t, caption, state.settings.prompt_mode) for t in typed]
    else:
        new = caption_prompt(typed, caption, state.settings.prompt_mode)
    p.prompt = new
    state.prompt_written = new


def before_process_batch(p: Any) -> None:
    """A new batch starts: the previous one is complete and saved."""
    try:
        flush(p)
    except Exception as e:
        _report(_state(p), f"captioning failed: {type(e).__name__}: {e}")


def collect(p: Any, image: Any) -> None:
    """``postprocess_image_after_composite``: remember the final image of this position."""
    state = _state(p)
    if state is None or not state.settings.captions_outputs or state.failed or image is None:
        return
    state.items.append(Item(image=image))


def on_image_saved(params: Any) -> None:
    """``on_image_saved``: note which file holds a collected image (other saves -- grids, masks -- are ignored)."""
    try:
        state = _state(getattr(params, "p", None))
        if state is None or not state.items:
            return
        item = next((it for it in reversed(state.items) if it.image is params.image), None)
        if item is None:  # a before_image_saved callback may have swapped the image: the latest unsaved one
            last = state.items[-1]
            if last.path is None and not last.done and getattr(last.image, "size", None) == params.image.size:
                item = last
        if item is not None and item.path is None:
            item.path = str(params.filename)
            item.image = params.image  # caption exactly what was saved
            pnginfo = getattr(params, "pnginfo", None) or {}
            item.saved_info = pnginfo.get("parameters") if _host_writes_pnginfo() else None
    except Exception as e:
        _report(_state(getattr(params, "p", None)), f"image_saved: {type(e).__name__}: {e}")


def _host_writes_pnginfo() -> bool:
    from . import host

    return bool(host.opt("enable_pnginfo", True))


def postprocess(p: Any, processed: Any) -> None:
    """The generation ended: caption the last batch and put every caption into the results."""
    state = _state(p)
    if state is None:
        return
    try:
        flush(p)
        _into_results(state, processed)
    except Exception as e:
        _report(state, f"finishing failed: {type(e).__name__}: {e}")
    lines = state.panel + state.notes
    if lines:
        processed.comments = (getattr(processed, "comments", "") or "") + "".join(f"{n}\n" for n in lines)
    if state.notes:  # API callers get what the panel says in the info's extra_generation_params (a copy: see below)
        processed.extra_generation_params = {**(processed.extra_generation_params or {}),
                                             NOTES_KEY: list(state.notes)}
    state.items, state.panel = [], []  # the images belong to the results now


def _into_results(state: State, processed: Any) -> None:
    from .metadata import set_infotext_param

    by_image = {id(it.image): it for it in state.items if it.caption is not None}
    captions: list[str | None] = []
    panel: list[str] = []
    images = list(getattr(processed, "images", None) or [])
    infotexts = getattr(processed, "infotexts", None)
    for j, image in enumerate(images):
        item = by_image.get(id(image))
        captions.append(item.caption if item else None)
        if item is None:
            continue
        panel.append(f"ClipCap caption {len(panel) + 1}: {item.caption}")
        if "metadata" not in state.settings.outputs:
            continue
        if infotexts is not None and j < len(infotexts):
            old = infotexts[j]
            infotexts[j] = set_infotext_param(old, KEY_CAPTION, item.caption)
            if getattr(processed, "info", None) == old and j == getattr(processed, "index_of_first_image", 0):
                processed.info = infotexts[j]
        info = getattr(image, "info", None)
        if isinstance(info, dict) and "parameters" in info:  # what the API and the gallery's Save embed
            info["parameters"] = set_infotext_param(info["parameters"], KEY_CAPTION, item.caption)
    if any(c is not None for c in captions):
        # A copy: the host's p keeps its own dict (an img2img batch reuses p, and a list there would be indexed
        # into the next image's infotext).
        processed.extra_generation_params = {**(processed.extra_generation_params or {}), API_KEY: captions}
    if "panel" in state.settings.outputs:
        state.panel = panel
