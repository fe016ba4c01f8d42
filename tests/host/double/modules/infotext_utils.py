"""modules/infotext_utils.py (alias ``modules.generation_parameters_copypaste``): the "send to" plumbing.

``register_paste_params_button`` queues a binding; the root Blocks wires them all in ``connect_paste_params_buttons``
(after ``on_ui_tabs``). The double records what was wired in ``connected`` instead of building the paste machinery.
"""

import base64
import io
import os
import sys

from modules import images, shared
from modules._mode import FORGE

paste_fields = {}
registered_param_bindings = []
connected = []


class ParamBinding:
    def __init__(self, paste_button, tabname, source_text_component=None, source_image_component=None,
                 source_tabname=None, override_settings_component=None, paste_field_names=None):
        self.paste_button = paste_button
        self.tabname = tabname
        self.source_text_component = source_text_component
        self.source_image_component = source_image_component
        self.source_tabname = source_tabname
        self.override_settings_component = override_settings_component
        self.paste_field_names = paste_field_names or []


def reset():
    paste_fields.clear()
    registered_param_bindings.clear()
    connected.clear()


def quote(text):
    if ',' not in str(text) and '\n' not in str(text) and ':' not in str(text):
        return text
    import json

    return json.dumps(text, ensure_ascii=False)


def allowed_tmp_dirs():
    """gradio's temp folders (the host's ``ui_tempdir.check_tmp_file`` allows files only there)."""
    import tempfile

    dirs = [os.path.join(tempfile.gettempdir(), "gradio"), os.environ.get("GRADIO_TEMP_DIR", "")]
    demo = shared.demo
    if demo is not None and getattr(demo, "temp_file_sets", None):
        dirs += [os.path.dirname(f) for s in demo.temp_file_sets for f in s]
    return [os.path.realpath(d) for d in dirs if d]


def check_tmp_file(filename):
    path = os.path.realpath(filename.rsplit('?', 1)[0])
    return any(path.startswith(d + os.sep) for d in allowed_tmp_dirs())


def image_from_url_text(filedata):
    if filedata is None:
        return None
    if FORGE and isinstance(filedata, (list, tuple)) and len(filedata) == 2 and not isinstance(filedata[0], (dict, str)) \
            and filedata[0] is not None and hasattr(filedata[0], "size"):
        return filedata[0]  # gradio 4 (PIL, caption)
    if type(filedata) == list and filedata and type(filedata[0]) == dict and filedata[0].get("is_file", False):
        filedata = filedata[0]
    if type(filedata) == dict and filedata.get("is_file", False):
        filename = filedata["name"]
        is_in_right_dir = check_tmp_file(filename)
        assert is_in_right_dir, 'trying to open image file outside of allowed directories'
        filename = filename.rsplit('?', 1)[0]
        return images.read(filename)
    if type(filedata) == list:
        if len(filedata) == 0:
            return None
        filedata = filedata[0]
    if filedata.startswith("data:image/png;base64,"):
        filedata = filedata[len("data:image/png;base64,"):]
    filedata = base64.decodebytes(filedata.encode('utf-8'))
    return images.read(io.BytesIO(filedata))


def add_paste_fields(tabname, init_img, fields, override_settings_component=None):
    paste_fields[tabname] = {"init_img": init_img, "fields": fields,
                             "override_settings_component": override_settings_component}


def create_buttons(tabs_list):
    import gradio as gr

    buttons = {}
    for tab in tabs_list:
        buttons[tab] = gr.Button(f"Send to {tab}", elem_id=f"{tab}_tab")
    return buttons


def register_paste_params_button(binding: ParamBinding):
    registered_param_bindings.append(binding)


def connect_paste_params_buttons():
    for binding in registered_param_bindings:
        destination = paste_fields.get(binding.tabname, {})
        connected.append({"button": binding.paste_button, "tabname": binding.tabname,
                          "text": binding.source_text_component, "image": binding.source_image_component,
                          "destination_image": destination.get("init_img")})


def parse_generation_parameters(x: str, skip_fields=None):
    lines = x.strip().split("\n")
    prompt, negative = [], []
    done_with_prompt = False
    for line in lines:
        if line.startswith("Negative prompt:"):
            done_with_prompt = True
            line = line[16:].strip()
        (negative if done_with_prompt else prompt).append(line)
    return {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}


sys.modules["modules.generation_parameters_copypaste"] = sys.modules[__name__]
