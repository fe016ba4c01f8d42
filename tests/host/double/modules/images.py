"""modules/images.py: ``read``, ``save_image`` (with the image-saved callbacks), ``read_info_from_image``, grids.

``save_image`` follows the host's order (A1111 v1.10 = Forge): build ``pnginfo`` (``existing_info`` plus ``info``
under ``pnginfo_section_name``), fire ``before_image_saved`` (which may change image, filename and pnginfo), write to
``<name>.tmp`` and rename ("atomically"), the optional infotext ``.txt`` (``save_txt``), then ``image_saved``.
Metadata as the host writes it (``save_image_with_geninfo``): PNG text chunks for every ``pnginfo`` item when
``enable_pnginfo``; for JPEG/WebP the image is saved, then an EXIF block holding only ``UserComment`` =
``UNICODE`` + UTF-16BE(infotext) is inserted with piexif. Where piexif is not installed (the main dev venv; both hosts
pin it), the same EXIF block is built by hand and passed to Pillow instead.

File names are simpler than the host's patterns: ``<5-digit number>-<seed>[-<basename>]<suffix>.<ext>``, or a
literal ``samples_filename_pattern``. As in the host, when "Add number suffix" resolves a clash the file is renamed
to ``<name>-N`` but ``params.filename`` (what ``on_image_saved`` sees) keeps the name without ``-N``.
"""

import os
import struct

from PIL import Image, ImageOps, PngImagePlugin

from modules import script_callbacks, shared

try:
    import piexif
    import piexif.helper
except ImportError:  # the dev venv; the hosts pin piexif 1.1.3
    piexif = None

IGNORED_INFO_KEYS = {'jfif', 'jfif_version', 'jfif_unit', 'jfif_density', 'dpi', 'exif', 'loop', 'background',
                     'timestamp', 'duration', 'progressive', 'progression', 'icc_profile', 'chromaticity',
                     'photoshop'}


def read(fp, **kwargs):
    image = Image.open(fp, **kwargs)
    image = ImageOps.exif_transpose(image) if image.mode != "P" else image
    return image


def fix_image(image):
    if image is None:
        return None
    try:
        image = ImageOps.exif_transpose(image)
    except Exception:
        pass
    return image


def resize_image(resize_mode, im, width, height, upscaler_name=None):
    return im.resize((width, height))


def image_grid(imgs, batch_size=1, rows=None):
    rows = rows or (1 if len(imgs) <= 1 else 2 if len(imgs) <= 4 else 3)
    cols = (len(imgs) + rows - 1) // rows
    w, h = imgs[0].size
    grid = Image.new('RGB', size=(cols * w, rows * h), color='black')
    for i, img in enumerate(imgs):
        grid.paste(img, box=(i % cols * w, i // cols * h))
    return grid


def _exif_user_comment(text):
    """``piexif.dump({"Exif": {UserComment: UserComment.dump(text, encoding="unicode")}})`` without piexif."""
    if piexif is not None:
        return piexif.dump({"Exif": {piexif.ExifIFD.UserComment: piexif.helper.UserComment.dump(text or "", encoding="unicode")}})
    comment = b"UNICODE\x00" + (text or "").encode("utf-16-be")
    ifd0 = struct.pack("<H", 1) + struct.pack("<HHII", 0x8769, 4, 1, 26) + struct.pack("<I", 0)
    exif_ifd = struct.pack("<H", 1) + struct.pack("<HHII", 0x9286, 7, len(comment), 44) + struct.pack("<I", 0)
    return b"Exif\x00\x00II*\x00" + struct.pack("<I", 8) + ifd0 + exif_ifd + comment


def save_image_with_geninfo(image, geninfo, filename, extension=None, existing_pnginfo=None, pnginfo_section_name='parameters'):
    if extension is None:
        extension = os.path.splitext(filename)[1]
    image_format = Image.registered_extensions()[extension]
    if extension.lower() == '.png':
        existing_pnginfo = existing_pnginfo or {}
        if shared.opts.enable_pnginfo:
            existing_pnginfo[pnginfo_section_name] = geninfo
            pnginfo_data = PngImagePlugin.PngInfo()
            for k, v in (existing_pnginfo or {}).items():
                pnginfo_data.add_text(k, str(v))
        else:
            pnginfo_data = None
        image.save(filename, format=image_format, quality=shared.opts.jpeg_quality, pnginfo=pnginfo_data)
    elif extension.lower() in (".jpg", ".jpeg", ".webp"):
        if image.mode == 'RGBA':
            image = image.convert("RGB")
        exif_bytes = _exif_user_comment(geninfo) if shared.opts.enable_pnginfo and geninfo is not None else None
        if piexif is not None or exif_bytes is None:
            image.save(filename, format=image_format, quality=shared.opts.jpeg_quality, lossless=shared.opts.webp_lossless)
            if exif_bytes is not None:
                piexif.insert(exif_bytes, filename)
        else:
            image.save(filename, format=image_format, quality=shared.opts.jpeg_quality, lossless=shared.opts.webp_lossless, exif=exif_bytes)
    else:
        image.save(filename, format=image_format, quality=shared.opts.jpeg_quality)


def save_image(image, path, basename, seed=None, prompt=None, extension='png', info=None, short_filename=False,
               no_prompt=False, grid=False, pnginfo_section_name='parameters', p=None, existing_info=None,
               forced_filename=None, suffix="", save_to_dirs=None):
    os.makedirs(path, exist_ok=True)
    if forced_filename is None:
        pattern = shared.opts.samples_filename_pattern if not grid else ""
        if pattern:  # the double knows literal patterns only (img2img batch output folders use the input's stem)
            file_decoration = pattern
        else:
            number = len([x for x in os.listdir(path) if not x.endswith(".txt")])
            parts = [f"{number:05}"] + ([str(seed)] if seed is not None else []) + ([basename] if basename else [])
            file_decoration = "-".join(parts)
        fullfn = os.path.join(path, f"{file_decoration}{suffix}.{extension}")
    else:
        fullfn = os.path.join(path, f"{forced_filename}.{extension}")

    pnginfo = existing_info or {}
    if info is not None:
        pnginfo[pnginfo_section_name] = info

    params = script_callbacks.ImageSaveParams(image, p, fullfn, pnginfo)
    script_callbacks.before_image_saved_callback(params)

    image = params.image
    fullfn = params.filename
    info = params.pnginfo.get(pnginfo_section_name, None)

    def _atomically_save_image(image_to_save, filename_without_extension, extension):
        temp_file_path = f"{filename_without_extension}.tmp"
        save_image_with_geninfo(image_to_save, info, temp_file_path, extension, existing_pnginfo=params.pnginfo, pnginfo_section_name=pnginfo_section_name)
        filename = filename_without_extension + extension
        if shared.opts.save_images_replace_action != "Replace":
            n = 0
            while os.path.exists(filename):
                n += 1
                filename = f"{filename_without_extension}-{n}{extension}"
        os.replace(temp_file_path, filename)

    fullfn_without_extension, extension = os.path.splitext(params.filename)
    _atomically_save_image(image, fullfn_without_extension, extension)
    image.already_saved_as = fullfn

    if shared.opts.save_txt and info is not None:
        txt_fullfn = f"{fullfn_without_extension}.txt"
        with open(txt_fullfn, "w", encoding="utf8") as file:
            file.write(f"{info}\n")
    else:
        txt_fullfn = None

    script_callbacks.image_saved_callback(params)
    return fullfn, txt_fullfn


def read_info_from_image(image):
    items = (image.info or {}).copy()
    geninfo = items.pop('parameters', None)
    if "exif" in items:
        exif_data = items.pop("exif")
        if piexif is not None:
            try:
                exif = piexif.load(exif_data)
            except OSError:
                exif = None
            exif_comment = (exif or {}).get("Exif", {}).get(piexif.ExifIFD.UserComment, b'')
            try:
                exif_comment = piexif.helper.UserComment.load(exif_comment)
            except ValueError:
                exif_comment = exif_comment.decode('utf8', errors="ignore")
        else:  # same decoding, with Pillow's EXIF reader
            exif = Image.Exif()
            exif.load(exif_data)
            raw = exif.get_ifd(0x8769).get(0x9286, b'')
            raw = bytes(raw) if isinstance(raw, tuple) else raw
            exif_comment = raw[8:].decode("utf_16_be") if raw.startswith(b"UNICODE\x00") else raw.decode('utf8', errors="ignore")
        if exif_comment:
            geninfo = exif_comment
    elif "comment" in items:
        geninfo = items["comment"].decode('utf8', errors="ignore") if isinstance(items["comment"], bytes) else items["comment"]
    for field in IGNORED_INFO_KEYS:
        items.pop(field, None)
    return geninfo, items


def image_data(data):
    import io

    image = read(io.BytesIO(data))
    textinfo, _ = read_info_from_image(image)
    return textinfo, None
