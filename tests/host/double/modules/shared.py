"""modules/shared.py (with shared_init and shared_options folded in): opts, cmd_opts, state and friends."""

import os

import gradio as gr

from modules import options, paths_internal, shared_cmd_options, shared_state
from modules._mode import CLASSIC, FORGE, NEO
from modules.options import OptionHTML, OptionInfo, options_section  # noqa: F401

cmd_opts = shared_cmd_options.cmd_opts
parser = shared_cmd_options.parser
options.cmd_opts = cmd_opts

script_path = paths_internal.script_path
data_path = paths_internal.data_path
models_path = getattr(cmd_opts, "models_dir", None) or paths_internal.models_path
config_filename = os.path.join(data_path, "config.json")
hide_dirs = {"visible": not cmd_opts.hide_ui_dir_config}
restricted_opts = {"samples_filename_pattern", "directories_filename_pattern", "outdir_samples", "outdir_txt2img_samples"}

options_templates = {}
options_templates.update(options_section(("saving-images", "Saving images/grids", "saving"), {
    "samples_save": OptionInfo(True, "Always save all generated images"),
    "samples_format": OptionInfo("png", "File format for images"),
    "save_images_add_number": OptionInfo(True, "Add number to filename when saving"),
    "save_images_replace_action": OptionInfo("Replace", "Saving the image to an existing file", gr.Radio, {"choices": ["Replace", "Add number suffix"]}),
    "grid_save": OptionInfo(True, "Always save all generated image grids"),
    "grid_format": OptionInfo("png", "File format for grids"),
    "grid_only_if_multiple": OptionInfo(True, "Do not save grids consisting of one picture"),
    "return_grid": OptionInfo(True, "Show grid in gallery"),
    "enable_pnginfo": OptionInfo(True, "Save text information about generation parameters as chunks to png files"),
    "save_txt": OptionInfo(False, "Create a text file with infotext next to every image"),
    "save_incomplete_images": OptionInfo(False, "Save incomplete images"),
    "jpeg_quality": OptionInfo(80, "Quality for saved jpeg and avif images"),
    "webp_lossless": OptionInfo(False, "Use lossless compression for webp images"),
    "save_to_dirs": OptionInfo(True, "Save images to a subdirectory"),
    "samples_filename_pattern": OptionInfo("", "Images filename pattern"),
    "use_original_name_batch": OptionInfo(True, "Use original name for output filename during batch process in extras tab"),
}))
options_templates.update(options_section(("saving-paths", "Paths for saving", "saving"), {
    "outdir_samples": OptionInfo("", "Output directory for images; if empty, defaults to three directories below"),
    "outdir_txt2img_samples": OptionInfo(os.path.join(data_path, "outputs", "txt2img-images"), "Output directory for txt2img images"),
    "outdir_img2img_samples": OptionInfo(os.path.join(data_path, "outputs", "img2img-images"), "Output directory for img2img images"),
    "outdir_extras_samples": OptionInfo(os.path.join(data_path, "outputs", "extras-images"), "Output directory for images from extras tab"),
    "outdir_txt2img_grids": OptionInfo(os.path.join(data_path, "outputs", "txt2img-grids"), "Output directory for txt2img grids"),
    "outdir_img2img_grids": OptionInfo(os.path.join(data_path, "outputs", "img2img-grids"), "Output directory for img2img grids"),
}))
options_templates.update(options_section(("img2img", "img2img", "sd"), {
    "img2img_batch_show_results_limit": OptionInfo(32, "Show the first N batch img2img results in UI"),
}))
options_templates.update(options_section(("postprocessing", "Postprocessing", "postprocessing"), {
    "postprocessing_enable_in_main_ui": OptionInfo([], "Enable postprocessing operations in txt2img and img2img tabs", gr.CheckboxGroup, {"choices": []}),
    "postprocessing_operation_order": OptionInfo([], "Postprocessing operation order", gr.CheckboxGroup, {"choices": []}),
    "postprocessing_existing_caption_action": OptionInfo("Ignore", "Action for existing captions", gr.Radio, {"choices": ["Ignore", "Keep", "Prepend", "Append"]}).info("when generating captions using postprocessing; Ignore = use generated; Keep = use original; Prepend/Append = combine both"),
}))
if not (NEO or CLASSIC):  # Neo and Classic removed the interrogator and its settings
    options_templates.update(options_section(("interrogate", "Interrogate"), {
        "interrogate_keep_models_in_memory": OptionInfo(False, "Keep models in VRAM"),
        "interrogate_clip_num_beams": OptionInfo(1, "BLIP: num_beams"),
    }))
options_templates.update(options_section(("ui", "User interface", "ui"), {
    "hidden_tabs": OptionInfo([], "Hidden UI tabs", gr.CheckboxGroup, lambda: {"choices": list(tab_names)}),
    "ui_tab_order": OptionInfo([], "UI tab order", gr.CheckboxGroup, lambda: {"choices": list(tab_names)}),
    ("quick_setting_list" if FORGE else "quicksettings_list"): OptionInfo(
        ["sd_model_checkpoint"], "Quicksettings list", gr.CheckboxGroup, {"choices": ["sd_model_checkpoint"]}),
}))
options_templates.update(options_section(("system", "System", "system"), {
    "disable_all_extensions": OptionInfo("none", "Disable all extensions"),
    "disabled_extensions": OptionInfo([], "Disable these extensions", gr.CheckboxGroup, {"choices": []}),
    "api_enable_requests": OptionInfo(True, "Allow http:// and https:// URLs for input images in API"),
    "api_forbid_local_requests": OptionInfo(True, "Forbid URLs to local resources"),
}))
opts = options.Options(options_templates, restricted_opts)
opts.load(config_filename)

state = shared_state.State()
demo = None
sd_model = None  # the real one is a property that loads a checkpoint; never read it from an extension
if not (NEO or CLASSIC):
    interrogator = None  # A1111 / Forge: shared_init sets an InterrogateModels (the driver does)
prompt_styles = None
settings_components = {}
tab_names = []
parallel_processing_allowed = not (getattr(cmd_opts, "lowvram", False) or getattr(cmd_opts, "medvram", False))
device = None
weight_load_location = None
xformers_available = False


def _init_devices():
    global device
    from modules import devices

    if FORGE:
        from modules._mode import memory_management

        mm = memory_management()
        devices.device = mm.get_torch_device()
        devices.device_interrogate = mm.text_encoder_device()
    else:
        for task in ("sd", "interrogate", "gfpgan", "esrgan", "codeformer"):
            dev = devices.cpu if any(y in cmd_opts.use_cpu for y in (task, "all")) else devices.get_optimal_device()
            setattr(devices, "device" if task == "sd" else f"device_{task}", dev)
    device = devices.device


_init_devices()


def natural_sort_key(s, regex=None):
    import re

    regex = regex or re.compile(r"([0-9]+)")
    return [int(text) if text.isdigit() else text.lower() for text in regex.split(s)]


def listfiles(dirname):
    filenames = [os.path.join(dirname, x) for x in sorted(os.listdir(dirname), key=natural_sort_key) if not x.startswith(".")]
    return [file for file in filenames if os.path.isfile(file)]


def html_path(filename):
    return os.path.join(script_path, "html", filename)


def html(filename):
    path = html_path(filename)
    if os.path.exists(path):
        with open(path, encoding="utf8") as file:
            return file.read()
    return ""


def walk_files(path, allowed_extensions=None):
    if not os.path.exists(path):
        return
    if allowed_extensions is not None:
        allowed_extensions = set(allowed_extensions)
    for root, _, files in os.walk(path, followlinks=True):
        for filename in sorted(files, key=natural_sort_key):
            if allowed_extensions is not None:
                _, ext = os.path.splitext(filename)
                if ext.lower() not in allowed_extensions:
                    continue
            yield os.path.join(root, filename)
