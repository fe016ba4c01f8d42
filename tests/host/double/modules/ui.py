"""modules/ui.py ``create_ui``: a minimal txt2img/img2img with the real elem_ids, Settings, and extension tabs.

Order as in the host (docs/hosts.md, loading): ``on_ui_settings``; txt2img (``scripts_current`` set; toprow with the
prompt and the tools row ``paste``, ``txt2img_clear_prompt``, ``txt2img_style_apply``...; the scripts' UI; the output
gallery); img2img likewise with ``interrogate``/``deepbooru`` and the init image (A1111 ``gr.Image``; Forge a
ForgeCanvas: ``gr.HTML`` + hidden foreground/background textboxes); Settings; ``on_ui_tabs``; the root Blocks
rendering every tab, then ``connect_paste_params_buttons``.
"""

import uuid

import gradio as gr

from modules import infotext_utils, script_callbacks, scripts, shared
from modules._mode import FORGE
from modules.ui_components import ToolButton

GRADIO3 = hasattr(gr.components, "IOComponent")
tabs_built = {}
fake_outputs = []  # what "Generate" puts in the output gallery (PIL images; tests and the browser test set it)


class ForgeCanvas:
    """modules_forge/forge_canvas/canvas.py: not a component; the image lives in two hidden textboxes."""

    def __init__(self, elem_id, **kwargs):
        self.uuid = 'uuid_' + uuid.uuid4().hex
        self.block = gr.HTML(value=f"<div id='{self.uuid}'></div>", elem_id=elem_id, elem_classes=["forge-container"])
        self.foreground = gr.Textbox(visible=False, elem_id=self.uuid + '_foreground',
                                     elem_classes=['logical_image_foreground'])
        self.background = gr.Textbox(visible=False, elem_id=self.uuid + '_background',
                                     elem_classes=['logical_image_background'])


def toprow(id_part, is_img2img):
    with gr.Row(elem_id=f"{id_part}_toprow", variant="compact"):
        with gr.Column(elem_id=f"{id_part}_prompt_container", scale=6):
            with gr.Row(elem_id=f"{id_part}_prompt_row"):
                prompt = gr.Textbox(label="Prompt", elem_id=f"{id_part}_prompt", show_label=False, lines=3,
                                    placeholder="Prompt", **({"value": ""} if FORGE else {}))
            with gr.Row(elem_id=f"{id_part}_neg_prompt_row"):
                gr.Textbox(label="Negative prompt", elem_id=f"{id_part}_neg_prompt", show_label=False, lines=3)
        with gr.Column(scale=1, elem_id=f"{id_part}_actions_column"):
            generate = gr.Button('Generate', elem_id=f"{id_part}_generate", variant='primary')
            with gr.Row(elem_id=f"{id_part}_tools"):
                ToolButton(value='\u2199\ufe0f', elem_id="paste")
                ToolButton(value='\U0001f5d1\ufe0f', elem_id=f"{id_part}_clear_prompt")
                ToolButton(value='\U0001f4cb', elem_id=f"{id_part}_style_apply")
                if is_img2img:
                    ToolButton('\U0001f4ce', elem_id="interrogate")
                    ToolButton('\U0001f4e6', elem_id="deepbooru")
                ToolButton(value='\U0001f504', elem_id=f"{id_part}_restore_progress", visible=False)
                gr.HTML(value="<span>0/75</span>", elem_id=f"{id_part}_token_counter")
                gr.Button(visible=False, elem_id=f"{id_part}_token_button")
    return prompt, generate


def output_panel(tabname):
    with gr.Column(elem_id=f"{tabname}_results"):
        with gr.Column(elem_id=f"{tabname}_gallery_container"):
            kw = {"type": "pil", "interactive": False} if FORGE and not GRADIO3 else {}
            gallery = gr.Gallery(label='Output', show_label=False, elem_id=f"{tabname}_gallery", columns=4,
                                 preview=True, **kw)
        with gr.Row(elem_id=f"image_buttons_{tabname}"):
            gr.Button("Save", elem_id=f"save_{tabname}")
        generation_info = gr.Textbox(visible=False, elem_id=f"generation_info_{tabname}")
        gr.HTML(elem_id=f"html_info_{tabname}")
    return gallery, generation_info


def setting_component(key):
    info = shared.opts.data_labels[key]
    t = type(info.default)
    args = info.component_args() if callable(info.component_args) else info.component_args
    if info.component is not None:
        comp = info.component
    elif t == str:
        comp = gr.Textbox
    elif t == int:
        comp = gr.Number
    elif t == bool:
        comp = gr.Checkbox
    else:
        raise Exception(f'bad options item type: {t} for key {key}')
    value = shared.opts.data[key] if key in shared.opts.data else info.default
    return comp(label=info.label, value=value, elem_id=f"setting_{key}", **(args or {}))


def create_ui():
    from modules import ui_gradio_extensions

    ui_gradio_extensions.reload_javascript()
    script_callbacks.ui_settings_callback()  # settings.register_settings()
    shared.opts.dumpjson()  # the Settings page needs a tuple section for every option

    scripts.scripts_current = scripts.scripts_txt2img
    scripts.scripts_txt2img.initialize_scripts(is_img2img=False)
    with gr.Blocks(analytics_enabled=False) as txt2img_interface:
        txt2img_prompt, txt2img_generate = toprow("txt2img", is_img2img=False)
        with gr.Row(elem_id="txt2img_settings"):
            scripts.scripts_txt2img.setup_ui()
        txt2img_gallery, _ = output_panel("txt2img")
        txt2img_generate.click(fn=lambda: list(fake_outputs), inputs=[], outputs=[txt2img_gallery])
    txt2img_paste_fields = [infotext_utils.PasteField(txt2img_prompt, "Prompt", api="prompt"),
                            *scripts.scripts_txt2img.infotext_fields]
    infotext_utils.add_paste_fields("txt2img", None, txt2img_paste_fields)

    scripts.scripts_current = scripts.scripts_img2img
    scripts.scripts_img2img.initialize_scripts(is_img2img=True)
    with gr.Blocks(analytics_enabled=False) as img2img_interface:
        img2img_prompt, _ = toprow("img2img", is_img2img=True)
        with gr.Tabs(elem_id="mode_img2img"):
            with gr.TabItem('img2img', id='img2img', elem_id="img2img_img2img_tab"):
                if FORGE:
                    init_img = ForgeCanvas(elem_id="img2img_image").background
                else:
                    legacy = {"source": "upload", "tool": "editor"} if GRADIO3 else {"sources": ["upload"]}
                    init_img = gr.Image(label="Image for img2img", elem_id="img2img_image", show_label=False,
                                        interactive=True, type="pil", image_mode="RGBA", **legacy)
        with gr.Row(elem_id="img2img_settings"):
            scripts.scripts_img2img.setup_ui()
        img2img_gallery, _ = output_panel("img2img")
    img2img_paste_fields = [infotext_utils.PasteField(img2img_prompt, "Prompt", api="prompt"),
                            *scripts.scripts_img2img.infotext_fields]
    infotext_utils.add_paste_fields("img2img", init_img, img2img_paste_fields)
    scripts.scripts_current = None

    with gr.Blocks(analytics_enabled=False) as extras_interface:  # modules/ui_postprocessing.py
        with gr.Tabs(elem_id="mode_extras"):
            with gr.TabItem('Single Image', id="single_image", elem_id="extras_single_tab"):
                legacy = {"source": "upload"} if GRADIO3 else {"sources": ["upload"]}
                gr.Image(label="Source", interactive=True, type="pil", elem_id="extras_image", image_mode="RGBA", **legacy)
            with gr.TabItem('Batch from Directory', id="batch_from_directory", elem_id="extras_batch_directory_tab"):
                gr.Textbox(label="Input directory", **shared.hide_dirs, elem_id="extras_batch_input_dir")
                gr.Textbox(label="Output directory", **shared.hide_dirs, elem_id="extras_batch_output_dir")
        extras_script_inputs = scripts.scripts_postproc.setup_ui()

    with gr.Blocks(analytics_enabled=False) as settings_interface:
        for key in list(shared.opts.data_labels):
            shared.settings_components[key] = setting_component(key)

    interfaces = [(txt2img_interface, "Txt2img" if FORGE else "txt2img", "txt2img"),
                  (img2img_interface, "Img2img" if FORGE else "img2img", "img2img"),
                  (extras_interface, "Extras", "extras")]
    interfaces += script_callbacks.ui_tabs_callback()
    interfaces += [(settings_interface, "Settings", "settings")]
    tabs_built.clear()
    tabs_built.update(txt2img_prompt=txt2img_prompt, img2img_prompt=img2img_prompt, init_img=init_img,
                      txt2img_gallery=txt2img_gallery, img2img_gallery=img2img_gallery, interfaces=interfaces,
                      extras_script_inputs=extras_script_inputs)

    with gr.Blocks(analytics_enabled=False, title="Stable Diffusion") as demo:
        with gr.Tabs(elem_id="tabs"):
            for interface, label, ifid in interfaces:
                if label in shared.opts.hidden_tabs:
                    continue
                with gr.TabItem(label, id=ifid, elem_id=f"tab_{ifid}"):
                    interface.render()
        infotext_utils.connect_paste_params_buttons()
    shared.demo = demo
    return demo
