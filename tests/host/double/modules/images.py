"""modules/images.py: ``read`` and a ``save_image`` that fires the image-saved callbacks like the host's."""

import os

from PIL import Image, ImageOps, PngImagePlugin

from modules import script_callbacks, shared


def read(fp, **kwargs):
    image = Image.open(fp, **kwargs)
    image = ImageOps.exif_transpose(image) if image.mode != "P" else image
    return image


def resize_image(resize_mode, im, width, height, upscaler_name=None):
    return im.resize((width, height))


def read_info_from_image(image):
    items = (image.info or {}).copy()
    geninfo = items.pop('parameters', None)
    return geninfo, items


def image_data(data):
    import io

    image = read(io.BytesIO(data))
    textinfo, _ = read_info_from_image(image)
    return textinfo, None


def save_image(image, path, basename, seed=None, prompt=None, extension='png', info=None, short_filename=False,
               no_prompt=False, grid=False, pnginfo_section_name='parameters', p=None, existing_info=None,
               forced_filename=None, suffix="", save_to_dirs=None):
    os.makedirs(path, exist_ok=True)
    if forced_filename is None:
        existing = len([x for x in os.listdir(path) if x.endswith(f".{extension}")])
        forced_filename = f"{existing:05}-{seed}{suffix}" if seed is not None else f"{existing:05}{suffix}"
    pnginfo = existing_info or {}
    if info is not None:
        pnginfo[pnginfo_section_name] = info
    params = script_callbacks.ImageSaveParams(image, p, os.path.join(path, f"{forced_filename}.{extension}"), pnginfo)
    script_callbacks.before_image_saved_callback(params)
    image = params.image
    fullfn = params.filename
    info = params.pnginfo.get(pnginfo_section_name, None)
    if extension.lower() == "png":
        meta = PngImagePlugin.PngInfo()
        for k, v in params.pnginfo.items():
            meta.add_text(k, str(v))
        image.save(fullfn, pnginfo=meta)
    else:
        image.convert("RGB").save(fullfn)
    params.filename = fullfn
    if shared.opts.save_txt and info is not None:
        with open(os.path.splitext(fullfn)[0] + ".txt", "w", encoding="utf8") as file:
            file.write(info + "\n")
    script_callbacks.image_saved_callback(params)
    return fullfn, None
