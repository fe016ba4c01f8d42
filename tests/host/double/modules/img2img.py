"""modules/img2img.py: the img2img button, and its batch mode (``process_batch``, A1111 v1.10 = Forge).

The batch reads images from a folder (``input`` is a path) or from uploaded files (a list of objects with ``.name``,
gradio's temp files), and runs one generation per input image with the **same** ``p``: ``p.init_images`` is set to
that image; the prompt is reset per image only when PNG info is used (``use_png_info``).
"""

import os
from pathlib import Path

from PIL import ImageOps, UnidentifiedImageError

from modules import images, processing, scripts, shared
from modules.infotext_utils import parse_generation_parameters
from modules.processing import Processed, StableDiffusionProcessingImg2Img, process_images
from modules.shared import opts, state


def process_batch(p, input, output_dir, inpaint_mask_dir, args, to_scale=False, scale_by=1.0, use_png_info=False, png_info_props=None, png_info_dir=None):
    output_dir = output_dir.strip()
    processing.fix_seed(p)
    if isinstance(input, str):
        batch_images = list(shared.walk_files(input, allowed_extensions=(".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff")))
    else:
        batch_images = [os.path.abspath(x.name) for x in input]
    state.job_count = len(batch_images) * p.n_iter
    prompt = p.prompt
    negative_prompt = p.negative_prompt
    seed = p.seed
    cfg_scale = p.cfg_scale
    steps = p.steps
    batch_results = None
    discard_further_results = False
    for i, image in enumerate(batch_images):
        state.job = f"{i+1} out of {len(batch_images)}"
        if state.skipped:
            state.skipped = False
        if state.interrupted or state.stopping_generation:
            break
        try:
            img = images.read(image)
        except UnidentifiedImageError as e:
            print(e)
            continue
        img = ImageOps.exif_transpose(img)
        if to_scale:
            p.width = int(img.width * scale_by)
            p.height = int(img.height * scale_by)
        p.init_images = [img] * p.batch_size
        image_path = Path(image)
        if use_png_info:
            try:
                info_img = img
                if png_info_dir:
                    info_img_path = os.path.join(png_info_dir, os.path.basename(image))
                    info_img = images.read(info_img_path)
                geninfo, _ = images.read_info_from_image(info_img)
                parsed_parameters = parse_generation_parameters(geninfo)
                parsed_parameters = {k: v for k, v in parsed_parameters.items() if k in (png_info_props or {})}
            except Exception:
                parsed_parameters = {}
            p.prompt = prompt + (" " + parsed_parameters["Prompt"] if "Prompt" in parsed_parameters else "")
            p.negative_prompt = negative_prompt + (" " + parsed_parameters["Negative prompt"] if "Negative prompt" in parsed_parameters else "")
            p.seed = int(parsed_parameters.get("Seed", seed))
            p.cfg_scale = float(parsed_parameters.get("CFG scale", cfg_scale))
            p.steps = int(parsed_parameters.get("Steps", steps))
        if output_dir:
            p.outpath_samples = output_dir
            p.override_settings['save_to_dirs'] = False
            p.override_settings['save_images_replace_action'] = "Add number suffix"
            if p.n_iter > 1 or p.batch_size > 1:
                p.override_settings['samples_filename_pattern'] = f'{image_path.stem}-[generation_number]'
            else:
                p.override_settings['samples_filename_pattern'] = f'{image_path.stem}'
        proc = scripts.scripts_img2img.run(p, *args)
        if proc is None:
            p.override_settings.pop('save_images_replace_action', None)
            proc = process_images(p)
        if not discard_further_results and proc:
            if batch_results:
                batch_results.images.extend(proc.images)
                batch_results.infotexts.extend(proc.infotexts)
            else:
                batch_results = proc
            if 0 <= shared.opts.img2img_batch_show_results_limit < len(batch_results.images):
                discard_further_results = True
                batch_results.images = batch_results.images[:int(shared.opts.img2img_batch_show_results_limit)]
                batch_results.infotexts = batch_results.infotexts[:int(shared.opts.img2img_batch_show_results_limit)]
    return batch_results


def img2img(prompt, *script_args, init_image=None, batch_source=None, batch_input=None, batch_output_dir="",
            use_png_info=False, png_info_props=None, outpath=None, **kwargs):
    """The img2img button (``modules/img2img.py`` ``img2img``), reduced to what matters here.

    ``batch_source``: ``None`` (one init image), ``"from dir"`` (``batch_input`` is a folder) or ``"upload"``
    (``batch_input`` is a list of uploaded files). Runs under the queue lock (on Forge's main thread in Forge mode).
    """
    p = StableDiffusionProcessingImg2Img(prompt=prompt, init_images=[init_image] if init_image is not None else [],
                                         outpath_samples=outpath or opts.outdir_img2img_samples,
                                         outpath_grids=opts.outdir_img2img_grids, **kwargs)
    p.scripts = scripts.scripts_img2img
    p.script_args = tuple(script_args)
    if batch_source is None:
        return processing.run_generation(p, scripts.scripts_img2img)

    class BatchRunner:  # process_batch in place of "the selectable script or process_images"
        def run(self, p, *args):
            if batch_source == "upload":
                processed = process_batch(p, batch_input, "", "", args, use_png_info=use_png_info, png_info_props=png_info_props)
            else:
                assert not shared.cmd_opts.hide_ui_dir_config, "Launched with --hide-ui-dir-config, batch img2img disabled"
                processed = process_batch(p, batch_input, batch_output_dir, "", args, use_png_info=use_png_info, png_info_props=png_info_props)
            return processed if processed is not None else Processed(p, [], p.seed, "")

    return processing.run_generation(p, BatchRunner())
