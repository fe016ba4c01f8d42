"""modules/script_callbacks.py (docs/hosts.md, loading): named callbacks, each run in its own try/except.

Names are ``"{extension canonical name}/{caller file}/{category}[/{name}]"``, made unique with ``-1``, ``-2``...;
``before_ui`` and ``script_unloaded`` run in reverse order. ``load_scripts`` clears everything first.
"""

import dataclasses
import os
import sys
from typing import Any, Optional

from modules import errors, extensions


def report_exception(c, job):
    errors.report(f"Error executing callback {job} for {c.script}", exc_info=True)


class ImageSaveParams:
    def __init__(self, image, p, filename, pnginfo):
        self.image = image
        self.p = p
        self.filename = filename
        self.pnginfo = pnginfo


class UiTrainTabParams:
    def __init__(self, txt2img_preview_params):
        self.txt2img_preview_params = txt2img_preview_params


class ImageGridLoopParams:
    def __init__(self, imgs, cols, rows):
        self.imgs = imgs
        self.cols = cols
        self.rows = rows


@dataclasses.dataclass
class ScriptCallback:
    script: str
    callback: Any
    name: Optional[str] = None


def _caller_file():
    """The file of the nearest caller outside this module, as A1111 finds it with ``inspect.stack()``. That call
    reads every frame's source lines and looks each frame's module up in ``sys.modules``: seconds per boot of the
    double under pytest's deep stacks, and the host tests boot one per test. The frames' code file names are the
    same names."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back
    return frame.f_code.co_filename if frame is not None else 'unknown file'


def add_callback(callbacks, fun, *, name=None, category='unknown', filename=None):
    if filename is None:
        filename = _caller_file()
    extension = extensions.find_extension(filename)
    extension_name = extension.canonical_name if extension else 'base'
    callback_name = f"{extension_name}/{os.path.basename(filename)}/{category}"
    if name is not None:
        callback_name += f'/{name}'
    unique_callback_name = callback_name
    for index in range(1000):
        existing = any(x.name == unique_callback_name for x in callbacks)
        if not existing:
            break
        unique_callback_name = f'{callback_name}-{index+1}'
    callbacks.append(ScriptCallback(filename, fun, unique_callback_name))


_CATEGORIES = ["app_started", "model_loaded", "ui_tabs", "ui_train_tabs", "ui_settings", "before_image_saved",
               "image_saved", "extra_noise", "cfg_denoiser", "cfg_denoised", "cfg_after_cfg", "before_component",
               "after_component", "image_grid", "infotext_pasted", "script_unloaded", "before_ui", "on_reload",
               "list_optimizers", "list_unets", "before_token_counter"]
callback_map = {f"callbacks_{c}": [] for c in _CATEGORIES}


def clear_callbacks():
    for callback_list in callback_map.values():
        callback_list.clear()


def _run(category, job, *args, reverse=False):
    items = callback_map[f"callbacks_{category}"]
    for c in (reversed(items) if reverse else list(items)):
        try:
            c.callback(*args)
        except Exception:
            report_exception(c, job)


def app_started_callback(demo, app):
    _run("app_started", "app_started_callback", demo, app)


def app_reload_callback():
    _run("on_reload", "callbacks_on_reload")


def model_loaded_callback(sd_model):
    _run("model_loaded", "model_loaded_callback", sd_model)


def ui_tabs_callback():
    res = []
    for c in callback_map['callbacks_ui_tabs']:
        try:
            res += c.callback() or []
        except Exception:
            report_exception(c, 'ui_tabs_callback')
    return res


def ui_train_tabs_callback(params):
    _run("ui_train_tabs", "callbacks_ui_train_tabs", params)


def ui_settings_callback():
    _run("ui_settings", "ui_settings_callback")


def before_image_saved_callback(params):
    _run("before_image_saved", "before_image_saved_callback", params)


def image_saved_callback(params):
    _run("image_saved", "image_saved_callback", params)


def before_component_callback(component, **kwargs):
    for c in list(callback_map['callbacks_before_component']):
        try:
            c.callback(component, **kwargs)
        except Exception:
            report_exception(c, 'before_component_callback')


def after_component_callback(component, **kwargs):
    for c in list(callback_map['callbacks_after_component']):
        try:
            c.callback(component, **kwargs)
        except Exception:
            report_exception(c, 'after_component_callback')


def image_grid_callback(params):
    _run("image_grid", "image_grid", params)


def infotext_pasted_callback(infotext, params):
    _run("infotext_pasted", "infotext_pasted", infotext, params)


def script_unloaded_callback():
    _run("script_unloaded", "script_unloaded", reverse=True)


def before_ui_callback():
    _run("before_ui", "before_ui", reverse=True)


def remove_current_script_callbacks():
    filename = _caller_file()
    if filename == 'unknown file':
        return
    for callback_list in callback_map.values():
        for callback_to_remove in [cb for cb in callback_list if cb.script == filename]:
            callback_list.remove(callback_to_remove)


def remove_callbacks_for_function(callback_func):
    for callback_list in callback_map.values():
        for callback_to_remove in [cb for cb in callback_list if cb.callback == callback_func]:
            callback_list.remove(callback_to_remove)


def _register(category):
    def on(callback, *, name=None):
        add_callback(callback_map[f"callbacks_{category}"], callback, name=name, category=category)

    on.__name__ = f"on_{category}"
    return on


on_app_started = _register("app_started")
on_model_loaded = _register("model_loaded")
on_ui_tabs = _register("ui_tabs")
on_ui_train_tabs = _register("ui_train_tabs")
on_ui_settings = _register("ui_settings")
on_before_image_saved = _register("before_image_saved")
on_image_saved = _register("image_saved")
on_extra_noise = _register("extra_noise")
on_cfg_denoiser = _register("cfg_denoiser")
on_cfg_denoised = _register("cfg_denoised")
on_cfg_after_cfg = _register("cfg_after_cfg")
on_before_component = _register("before_component")
on_after_component = _register("after_component")
on_image_grid = _register("image_grid")
on_infotext_pasted = _register("infotext_pasted")
on_script_unloaded = _register("script_unloaded")
on_before_ui = _register("before_ui")
on_list_optimizers = _register("list_optimizers")
on_list_unets = _register("list_unets")
on_before_token_counter = _register("before_token_counter")


def on_before_reload(callback, *, name=None):
    add_callback(callback_map['callbacks_on_reload'], callback, name=name, category='on_reload')
