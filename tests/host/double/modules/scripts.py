"""modules/scripts.py (docs/hosts.md, loading): script discovery, by-path loading, Script classes and runners.

Loading as the host does: ``<ext>/scripts/*.py`` of every active extension, sorted; for each file the extension
folder is prepended to ``sys.path`` and ``current_basedir`` set to it, the file is loaded by path under the name
``"<file>.py"`` (not in ``sys.modules``), then A1111 restores ``sys.path`` (the old list object) while Forge keeps
every script folder on it. Every ``Script`` subclass found in the module's globals is registered, imported ones too.
"""

import inspect
import os
import sys
from collections import namedtuple
from dataclasses import dataclass

from modules import errors, paths, script_callbacks, script_loading, shared
from modules._mode import FORGE

AlwaysVisible = object()


class MaskBlendArgs:
    def __init__(self, current_latent, nmask, init_latent, mask, blended_latent, denoiser=None, sigma=None):
        self.current_latent, self.nmask, self.init_latent = current_latent, nmask, init_latent
        self.mask, self.blended_latent, self.denoiser, self.sigma = mask, blended_latent, denoiser, sigma


class PostSampleArgs:
    def __init__(self, samples):
        self.samples = samples


class PostprocessImageArgs:
    def __init__(self, image, index=0):
        self.image = image
        self.index = index


class PostProcessMaskOverlayArgs:
    def __init__(self, index, mask_for_overlay, overlay_image):
        self.index, self.mask_for_overlay, self.overlay_image = index, mask_for_overlay, overlay_image


class PostprocessBatchListArgs:
    def __init__(self, images):
        self.images = images


@dataclass
class OnComponent:
    component: object


class Script:
    name = None
    section = None
    filename = None
    args_from = None
    args_to = None
    alwayson = False
    is_txt2img = False
    is_img2img = False
    tabname = None
    group = None
    create_group = True
    infotext_fields = None
    paste_field_names = None
    api_info = None
    on_before_component_elem_id = None
    on_after_component_elem_id = None
    setup_for_ui_only = False
    controls = None
    sorting_priority = 0  # Forge

    def title(self):
        raise NotImplementedError()

    def ui(self, is_img2img):
        pass

    def show(self, is_img2img):
        return True

    def run(self, p, *args):
        pass

    def setup(self, p, *args):
        pass

    def before_process(self, p, *args):
        pass

    def process(self, p, *args):
        pass

    def before_process_batch(self, p, *args, **kwargs):
        pass

    def after_extra_networks_activate(self, p, *args, **kwargs):
        pass

    def process_before_every_sampling(self, p, *args, **kwargs):
        pass

    def process_batch(self, p, *args, **kwargs):
        pass

    def postprocess_batch(self, p, *args, **kwargs):
        pass

    def postprocess_batch_list(self, p, pp, *args, **kwargs):
        pass

    def post_sample(self, p, ps, *args):
        pass

    def on_mask_blend(self, p, mba, *args):
        pass

    def postprocess_image(self, p, pp, *args):
        pass

    def postprocess_maskoverlay(self, p, ppmo, *args):
        pass

    def postprocess_image_after_composite(self, p, pp, *args):
        pass

    def before_process_init_images(self, p, pp, *args, **kwargs):  # Forge
        pass

    def before_component(self, component, **kwargs):
        pass

    def after_component(self, component, **kwargs):
        pass

    def on_before_component(self, callback, *, elem_id):
        if self.on_before_component_elem_id is None:
            self.on_before_component_elem_id = []
        self.on_before_component_elem_id.append((elem_id, callback))

    def on_after_component(self, callback, *, elem_id):
        if self.on_after_component_elem_id is None:
            self.on_after_component_elem_id = []
        self.on_after_component_elem_id.append((elem_id, callback))

    def describe(self):
        return ""

    def elem_id(self, item_id):
        import re

        need_tabname = self.show(True) == self.show(False)
        tabkind = 'img2img' if self.is_img2img else 'txt2img'
        tabname = f"{tabkind}_" if need_tabname else ""
        title = re.sub(r'[^a-z_0-9]', '', re.sub(r'\s', '_', self.title().lower()))
        return f'script_{tabname}{title}_{item_id}'

    def before_hr(self, p, *args):
        pass


class ScriptBuiltinUI(Script):
    setup_for_ui_only = True


current_basedir = paths.script_path


def basedir():
    return current_basedir


ScriptFile = namedtuple("ScriptFile", ["basedir", "filename", "path"])
ScriptClassData = namedtuple("ScriptClassData", ["script_class", "path", "basedir", "module"])

scripts_data = []
postprocessing_scripts_data = []


def list_scripts(scriptdirname, extension, *, include_extensions=True):
    from modules import extensions

    scripts_list = []
    basedir = os.path.join(paths.script_path, scriptdirname)
    if os.path.exists(basedir):
        for filename in sorted(os.listdir(basedir)):
            scripts_list.append(ScriptFile(paths.script_path, filename, os.path.join(basedir, filename)))
    if include_extensions:
        for ext in extensions.active():
            scripts_list += ext.list_files(scriptdirname, extension)
    return [x for x in scripts_list if os.path.splitext(x.path)[1].lower() == extension and os.path.isfile(x.path)]


def list_files_with_name(filename):
    from modules import extensions

    res = []
    dirs = [paths.script_path] + [ext.path for ext in extensions.active()]
    for dirpath in dirs:
        if not os.path.isdir(dirpath):
            continue
        path = os.path.join(dirpath, filename)
        if os.path.isfile(path):
            res.append(path)
    return res


def load_scripts():
    global current_basedir
    from modules import scripts_postprocessing

    scripts_data.clear()
    postprocessing_scripts_data.clear()
    script_callbacks.clear_callbacks()

    scripts_list = list_scripts("scripts", ".py")
    syspath = sys.path

    def register_scripts_from_module(module):
        for script_class in module.__dict__.values():
            if not inspect.isclass(script_class):
                continue
            if issubclass(script_class, Script):
                scripts_data.append(ScriptClassData(script_class, scriptfile.path, scriptfile.basedir, module))
            elif issubclass(script_class, scripts_postprocessing.ScriptPostprocessing):
                postprocessing_scripts_data.append(ScriptClassData(script_class, scriptfile.path, scriptfile.basedir, module))

    if FORGE:  # Forge puts every script folder on sys.path, for good, before importing any
        for scriptfile in scripts_list:
            if scriptfile.basedir != paths.script_path and scriptfile.basedir not in sys.path:
                sys.path.insert(0, scriptfile.basedir)

    for scriptfile in scripts_list:
        try:
            if scriptfile.basedir != paths.script_path and not FORGE:
                sys.path = [scriptfile.basedir] + sys.path
            current_basedir = scriptfile.basedir
            script_module = script_loading.load_module(scriptfile.path)
            register_scripts_from_module(script_module)
        except Exception:
            errors.report(f"Error loading script: {scriptfile.filename}", exc_info=True)
        finally:
            if not FORGE:
                sys.path = syspath
            current_basedir = paths.script_path

    global scripts_txt2img, scripts_img2img, scripts_postproc
    scripts_txt2img = ScriptRunner()
    scripts_img2img = ScriptRunner()
    scripts_postproc = scripts_postprocessing.ScriptPostprocessingRunner()


def wrap_call(func, filename, funcname, *args, default=None, **kwargs):
    try:
        return func(*args, **kwargs)
    except Exception:
        errors.report(f"Error calling: {filename}/{funcname}", exc_info=True)
    return default


class ScriptRunner:
    def __init__(self):
        self.scripts = []
        self.selectable_scripts = []
        self.alwayson_scripts = []
        self.titles = []
        self.title_map = {}
        self.infotext_fields = []
        self.paste_field_names = []
        self.inputs = [None]
        self.callback_map = {}
        self.callback_names = []
        self.on_before_component_elem_id = {}
        self.on_after_component_elem_id = {}

    def initialize_scripts(self, is_img2img):
        self.scripts.clear()
        self.alwayson_scripts.clear()
        self.selectable_scripts.clear()
        for script_data in scripts_data:
            script = script_data.script_class()
            script.filename = script_data.path
            script.is_txt2img = not is_img2img
            script.is_img2img = is_img2img
            script.tabname = "img2img" if is_img2img else "txt2img"
            visibility = script.show(script.is_img2img)
            if visibility == AlwaysVisible:
                self.scripts.append(script)
                self.alwayson_scripts.append(script)
                script.alwayson = True
            elif visibility:
                self.scripts.append(script)
                self.selectable_scripts.append(script)
        self.on_before_component_elem_id = {}
        self.on_after_component_elem_id = {}
        for script in self.scripts:
            for elem_id, callback in script.on_before_component_elem_id or []:
                self.on_before_component_elem_id.setdefault(elem_id, []).append((callback, script))
            for elem_id, callback in script.on_after_component_elem_id or []:
                self.on_after_component_elem_id.setdefault(elem_id, []).append((callback, script))

    def setup_ui(self):
        import gradio as gr

        self.inputs = [None]
        self.infotext_fields = []
        self.paste_field_names = []
        self.title_map = {}
        for script in self.alwayson_scripts + self.selectable_scripts:
            self.title_map[script.title().lower()] = script
            with gr.Group(visible=script.alwayson) as group:
                script.args_from = len(self.inputs)
                controls = wrap_call(script.ui, script.filename, "ui", script.is_img2img) or []
                script.controls = controls
                self.inputs += list(controls)
                script.args_to = len(self.inputs)
                script.group = group
                if script.infotext_fields is not None:
                    self.infotext_fields += script.infotext_fields
                if script.paste_field_names is not None:
                    self.paste_field_names += script.paste_field_names
        return self.inputs

    # ------------------------------------------------------------------------------------------- processing hooks
    def run(self, p, *args):
        script_index = args[0] if args else 0
        if script_index == 0 or script_index is None:
            return None
        script = self.selectable_scripts[script_index - 1]
        script_args = args[script.args_from:script.args_to]
        return script.run(p, *script_args)

    def _alwayson(self, hook, p, *extra, **kwargs):
        for script in self.alwayson_scripts:
            script_args = p.script_args[script.args_from:script.args_to]
            wrap_call(getattr(script, hook), script.filename, hook, p, *extra, *script_args, **kwargs)

    def before_process(self, p):
        self._alwayson("before_process", p)

    def process(self, p):
        self._alwayson("process", p)

    def before_process_batch(self, p, **kwargs):
        self._alwayson("before_process_batch", p, **kwargs)

    def process_batch(self, p, **kwargs):
        self._alwayson("process_batch", p, **kwargs)

    def postprocess(self, p, processed):
        self._alwayson("postprocess", p, processed)

    def postprocess_batch(self, p, images, **kwargs):
        self._alwayson("postprocess_batch", p, images=images, **kwargs)

    def postprocess_batch_list(self, p, pp, **kwargs):
        self._alwayson("postprocess_batch_list", p, pp, **kwargs)

    def postprocess_image(self, p, pp):
        self._alwayson("postprocess_image", p, pp)

    def postprocess_maskoverlay(self, p, ppmo):
        self._alwayson("postprocess_maskoverlay", p, ppmo)

    def postprocess_image_after_composite(self, p, pp):
        self._alwayson("postprocess_image_after_composite", p, pp)

    def before_component(self, component, **kwargs):
        for callback, script in self.on_before_component_elem_id.get(kwargs.get("elem_id"), []):
            wrap_call(callback, script.filename, "on_before_component", OnComponent(component=component))
        for script in self.scripts:
            wrap_call(script.before_component, script.filename, "before_component", component, **kwargs)

    def after_component(self, component, **kwargs):
        for callback, script in self.on_after_component_elem_id.get(getattr(component, "elem_id", None), []):
            wrap_call(callback, script.filename, "on_after_component", OnComponent(component=component))
        for script in self.scripts:
            wrap_call(script.after_component, script.filename, "after_component", component, **kwargs)

    def script(self, title):
        return self.title_map.get(title.lower())

    def run_alwayson(self, hook, p, *extra, **kwargs):
        self._alwayson(hook, p, *extra, **kwargs)


scripts_txt2img = None
scripts_img2img = None
scripts_postproc = None
scripts_current = None


def reload_scripts():
    load_scripts()
