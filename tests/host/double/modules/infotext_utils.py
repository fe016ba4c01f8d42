"""modules/infotext_utils.py (alias ``modules.generation_parameters_copypaste``): the "send to" plumbing.

``register_paste_params_button`` queues a binding; the root Blocks wires them all in ``connect_paste_params_buttons``
(after ``on_ui_tabs``). The double records what was wired in ``connected`` instead of building the paste machinery.
"""

import base64
import io
import json
import os
import re
import sys

from modules import errors, images, shared
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


class PasteField(tuple):
    def __new__(cls, component, target, *, api=None):
        return super().__new__(cls, (component, target))

    def __init__(self, component, target, *, api=None):
        super().__init__()
        self.api = api
        self.component = component
        self.label = target if isinstance(target, str) else None
        self.function = target if callable(target) else None


def add_paste_fields(tabname, init_img, fields, override_settings_component=None):
    if fields:
        for i in range(len(fields)):
            if not isinstance(fields[i], PasteField):
                fields[i] = PasteField(*fields[i])
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


re_param_code = r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)'
re_param = re.compile(re_param_code)
re_imagesize = re.compile(r"^(\d+)x(\d+)$")


def unquote(text):
    if len(text) == 0 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        return json.loads(text)
    except Exception:
        return text


def parse_generation_parameters(x: str, skip_fields=None):
    """The host's parser (A1111 v1.10): the last line holds the parameters when it has at least 3 of them."""
    if skip_fields is None:
        skip_fields = []
    res = {}
    prompt = ""
    negative_prompt = ""
    done_with_prompt = False
    *lines, lastline = x.strip().split("\n")
    if len(re_param.findall(lastline)) < 3:
        lines.append(lastline)
        lastline = ''
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            done_with_prompt = True
            line = line[16:].strip()
        if done_with_prompt:
            negative_prompt += ("" if negative_prompt == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line
    for k, v in re_param.findall(lastline):
        try:
            if v[0] == '"' and v[-1] == '"':
                v = unquote(v)
            m = re_imagesize.match(v)
            if m is not None:
                res[f"{k}-1"] = m.group(1)
                res[f"{k}-2"] = m.group(2)
            else:
                res[k] = v
        except Exception:
            print(f"Error parsing \"{k}: {v}\"")
    res["Prompt"] = prompt
    res["Negative prompt"] = negative_prompt
    if "Clip skip" not in res:
        res["Clip skip"] = "1"
    for key in skip_fields:
        res.pop(key, None)
    return res


def paste_func_for(tabname):
    """The function a paste button runs for ``tabname`` (the host's ``connect_paste`` ``paste_func``): infotext in,
    one ``gr.update`` per paste field out (``gr.update()`` = leave the component as it is)."""
    import gradio as gr

    from modules import script_callbacks

    fields = paste_fields[tabname]["fields"]
    type_of_gr_update = type(gr.update())

    def paste_func(prompt):
        params = parse_generation_parameters(prompt)
        script_callbacks.infotext_pasted_callback(prompt, params)
        res = []
        for output, key in fields:
            if callable(key):
                try:
                    v = key(params)
                except Exception:
                    errors.report(f"Error executing {key}", exc_info=True)
                    v = None
            else:
                v = params.get(key, None)
            if v is None:
                res.append(gr.update())
            elif isinstance(v, type_of_gr_update):
                res.append(v)
            else:
                try:
                    valtype = type(output.value)
                    if valtype == bool and v == "False":
                        val = False
                    elif valtype == int:
                        val = float(v)
                    else:
                        val = valtype(v)
                    res.append(gr.update(value=val))
                except Exception:
                    res.append(gr.update())
        return res

    return paste_func


sys.modules["modules.generation_parameters_copypaste"] = sys.modules[__name__]
