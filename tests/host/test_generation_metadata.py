"""The host-independent pieces behind captioning inside generation: infotext entries, the caption written into an
existing PNG/JPEG/WebP file (atomically, pixels untouched), the caption-as-prompt template and decoding presets.

No WebUI needed: files are read back with Pillow (and piexif, the hosts' EXIF library, where installed).
"""

from __future__ import annotations

import io
import os
import re
import struct
import time

import pytest
from PIL import Image, PngImagePlugin

from clipcap_webui import metadata as md
from clipcap_webui.presets import DECODING_PRESETS, apply_preset
from clipcap_webui.prompting import caption_prompt

INFOTEXT = ("a castle, on a hill\nNegative prompt: blurry, low quality\n"
            "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 64x48, Lora hashes: \"a: 1, b: 2\"")
KEY = "ClipCap caption"
# The hosts' parser of the last infotext line (infotext_utils.re_param_code).
HOST_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def host_params(text: str) -> dict[str, str]:
    last = text.strip().split("\n")[-1]
    return {k: md.unquote(v) for k, v in HOST_PARAM.findall(last)}


# -------------------------------------------------------------------------------------------------- the text
@pytest.mark.parametrize("caption", ["a dog", "a dog, a cat: friends", 'a "quoted" word', "ünïcödé 猫", "a, b\\c"])
def test_caption_entry_round_trips_through_the_hosts_parser(caption):
    text = md.set_infotext_param(INFOTEXT, KEY, caption)
    assert text.startswith(INFOTEXT + ", ")  # everything the host wrote stays byte for byte
    params = host_params(text)
    assert params[KEY] == caption
    assert params["Lora hashes"] == "a: 1, b: 2" and params["Steps"] == "20"
    assert md.infotext_param(text, KEY) == caption


def test_setting_again_replaces_and_none_removes():
    text = md.set_infotext_param(md.set_infotext_param(INFOTEXT, KEY, "first, one"), KEY, "second")
    assert text.count(KEY) == 1 and md.infotext_param(text, KEY) == "second"
    assert md.set_infotext_param(text, KEY, None) == INFOTEXT


def test_without_host_parameters_a_line_of_our_own():
    text = md.set_infotext_param(None, KEY, "a red ball, big")
    assert text == 'ClipCap caption: "a red ball, big"'
    assert md.infotext_param(md.set_infotext_param(text, KEY, "x"), KEY) == "x"
    assert md.set_infotext_param(text, KEY, "x") == "ClipCap caption: x"
    with pytest.raises(ValueError, match="infotext key"):
        md.set_infotext_param(INFOTEXT, "bad:key", "x")


# ------------------------------------------------------------------------------------------------- the files
def _png(path, text=INFOTEXT, extra=True):
    meta = PngImagePlugin.PngInfo()
    meta.add_text("parameters", text)
    if extra:
        meta.add_text("other", "kept")
    Image.new("RGBA", (24, 16), (200, 10, 10, 128)).save(path, pnginfo=meta)


def _pixels(path):
    with Image.open(path) as im:
        return im.mode, im.size, im.tobytes()


def _no_temp_files(folder):
    return [p for p in os.listdir(folder) if p.endswith(".tmp")] == []


def test_png_text_chunk_replaced_in_place(tmp_path):
    path = tmp_path / "a.png"
    _png(path)
    before = _pixels(path)
    new = md.set_file_param(path, KEY, "猫 on a mat")  # not Latin-1: iTXt (UTF-8)
    assert _pixels(path) == before and _no_temp_files(tmp_path)
    with Image.open(path) as im:  # a reader that stops at the image data still sees it (chunk before IDAT)
        assert im.info["parameters"] == new and im.info["other"] == "kept"
    assert md.read_parameters(path) == new and md.infotext_param(new, KEY) == "猫 on a mat"
    md.set_file_param(path, KEY, "plain")  # Latin-1 again: tEXt, still one chunk
    data = path.read_bytes()
    assert data.count(b"parameters\x00") == 1
    assert md.infotext_param(md.read_parameters(path), KEY) == "plain"


def test_png_without_parameters_gets_our_line(tmp_path):
    path = tmp_path / "b.png"
    Image.new("RGB", (8, 8)).save(path)
    md.set_file_param(path, KEY, "x, y")
    with Image.open(path) as im:
        assert im.info["parameters"] == 'ClipCap caption: "x, y"'


def _user_comment_pillow(path):
    with Image.open(path) as im:
        raw = im.getexif().get_ifd(0x8769)[0x9286]
    raw = bytes(raw) if isinstance(raw, tuple) else raw
    return raw[8:].decode("utf-16-be") if raw.startswith(b"UNICODE\x00") else None


def _user_comment_piexif(path):
    piexif = pytest.importorskip("piexif")
    helper = pytest.importorskip("piexif.helper")

    with Image.open(path) as im:
        exif = piexif.load(im.info["exif"])
    return helper.UserComment.load(exif["Exif"][piexif.ExifIFD.UserComment])


def _scan_data(data: bytes) -> bytes:
    return data[data.index(b"\xff\xda"):]


def _jpeg_segments(data: bytes) -> list[bytes]:
    """The segments between SOI and the scan data."""
    out, pos = [], 2
    while data[pos:pos + 2] != b"\xff\xda":
        end = pos + 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
        out.append(data[pos:end])
        pos = end
    return out


def _exif_segments(data: bytes) -> list[bytes]:
    return [s for s in _jpeg_segments(data) if s[:2] == b"\xff\xe1" and s[4:10] == b"Exif\x00\x00"]


def test_jpeg_exif_user_comment_without_reencoding(tmp_path):
    path = tmp_path / "a.jpg"
    im = Image.new("RGB", (32, 24), "green")
    icc = b"\x00" * 128  # an APP2 segment that must survive
    old_exif = Image.Exif()
    old_exif[0x010E] = "old description"
    im.save(path, quality=90, icc_profile=icc, exif=old_exif.tobytes(), dpi=(300, 300))
    before = path.read_bytes()
    text = md.set_infotext_param(INFOTEXT, KEY, "a green field, sunny")
    md.write_parameters(path, text)
    after = path.read_bytes()
    assert _scan_data(after) == _scan_data(before)  # the compressed image is the same bytes
    assert _no_temp_files(tmp_path)
    assert _user_comment_pillow(path) == text
    assert md.read_parameters(path) == text
    with Image.open(path) as reread:
        assert reread.info.get("icc_profile") == icc
        assert reread.size == (32, 24)
        assert reread.info.get("dpi") == (300, 300)  # the JFIF APP0 segment is kept (piexif.insert alone drops it)
    assert len(_exif_segments(after)) == 1 and _jpeg_segments(after)[0].startswith(b"\xff\xe0")
    assert _user_comment_piexif(path) == text  # what the hosts' PNG Info uses


def test_jpeg_exif_after_another_segment_is_replaced_not_doubled(tmp_path):
    """piexif.insert replaces an EXIF segment only right after SOI/APP0; one after the ICC segment must not stay."""
    path = tmp_path / "a.jpg"
    exif = Image.Exif()
    exif[0x010E] = "kept"
    Image.new("RGB", (16, 16), "red").save(path, icc_profile=b"\x00" * 128, exif=exif.tobytes())
    data = path.read_bytes()
    segments, (old,) = _jpeg_segments(data), _exif_segments(data)
    moved = [s for s in segments if s != old]
    moved.insert(2, old)  # APP0, APP2 (ICC), APP1 (EXIF), ...
    path.write_bytes(data[:2] + b"".join(moved) + _scan_data(data))
    md.set_file_param(path, KEY, "a red square")
    after = path.read_bytes()
    assert len(_exif_segments(after)) == 1 and _scan_data(after) == _scan_data(data)
    assert md.infotext_param(md.read_parameters(path), KEY) == "a red square"
    with Image.open(path) as im:
        assert im.info["icc_profile"] == b"\x00" * 128


def _frames(path):
    with Image.open(path) as im:
        frames = []
        for i in range(getattr(im, "n_frames", 1)):
            im.seek(i)
            frames.append((im.mode, im.size, im.convert("RGBA").tobytes()))
        return frames


@pytest.mark.parametrize("kind", ["lossy", "lossless-alpha", "lossy-alpha", "extended", "icc-xmp", "animated"])
def test_webp_exif_chunk(tmp_path, kind):
    path = tmp_path / "a.webp"
    exif = Image.Exif()
    exif[0x010E] = "kept"
    if kind == "lossy":
        Image.new("RGB", (30, 20), "blue").save(path, quality=80)
    elif kind == "lossless-alpha":
        Image.new("RGBA", (30, 20), (0, 0, 255, 100)).save(path, lossless=True)
    elif kind == "lossy-alpha":  # VP8X + ALPH + VP8
        Image.new("RGBA", (30, 20), (0, 0, 255, 100)).save(path, quality=80)
    elif kind == "extended":  # already VP8X with an EXIF chunk
        Image.new("RGB", (30, 20), "blue").save(path, exif=Image.Exif().tobytes())
    elif kind == "icc-xmp":
        Image.new("RGB", (30, 20), "blue").save(path, exif=exif.tobytes(), icc_profile=b"\x00" * 128,
                                                 xmp=b"<x:xmpmeta xmlns:x='adobe:ns:meta/'/>")
    else:  # piexif.insert would break it (canvas size, flags, chunk order): the module's own code writes it
        frames = [Image.new("RGBA", (64, 48), (255, 0, 0, 100)) for _ in range(3)]
        frames[1].paste((0, 0, 255, 50), (10, 10, 20, 20))  # later frames cover part of the canvas only
        frames[2].paste((0, 255, 0, 255), (30, 5, 40, 15))
        frames[0].save(path, save_all=True, append_images=frames[1:], exif=exif.tobytes(), duration=100)
    old = path.read_bytes()
    before = _frames(path)
    md.set_file_param(path, KEY, "a blue square")
    assert _frames(path) == before and _no_temp_files(tmp_path)
    data = path.read_bytes()
    assert data.count(b"EXIF") == 1 and data[12:16] == b"VP8X"
    assert int.from_bytes(data[4:8], "little") == len(data) - 8
    assert data[24:30] == old[24:30] if old[12:16] == b"VP8X" else True  # the canvas size
    assert md.infotext_param(_user_comment_pillow(path), KEY) == "a blue square"
    assert md.infotext_param(_user_comment_piexif(path), KEY) == "a blue square"
    assert md.infotext_param(md.read_parameters(path), KEY) == "a blue square"
    with Image.open(path) as im:
        if kind == "icc-xmp":
            assert im.info["icc_profile"] == b"\x00" * 128 and b"xmpmeta" in im.info["xmp"]
            assert data.index(b"EXIF") < data.index(b"XMP ")
        if kind == "animated":
            assert data[20] & 0x1A == 0x1A  # VP8X flags kept (animation, alpha) plus EXIF
            assert data.index(b"ANMF") < data.index(b"EXIF")


def _webp_with_exif_chunk(body: bytes) -> bytes:
    """A VP8X WebP whose EXIF chunk holds ``body``."""
    out = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(out, "WEBP", exif=Image.Exif().tobytes())
    data, chunks, pos = out.getvalue(), [], 12
    while pos < len(data):
        size = int.from_bytes(data[pos + 4:pos + 8], "little")
        fourcc, pos_next = data[pos:pos + 4], pos + 8 + size + (size & 1)
        chunk = data[pos:pos_next] if fourcc != b"EXIF" else \
            b"EXIF" + struct.pack("<I", len(body)) + body + b"\x00" * (len(body) & 1)
        chunks.append(chunk)
        pos = pos_next
    body = b"WEBP" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_webp_exif_chunk_with_exif_header_is_read(tmp_path):
    piexif = pytest.importorskip("piexif")

    block = piexif.dump({"Exif": {piexif.ExifIFD.UserComment: b"UNICODE\x00" + INFOTEXT.encode("utf-16-be")}})
    assert block.startswith(b"Exif\x00\x00")  # as some writers put it into the WebP chunk
    path = tmp_path / "a.webp"
    path.write_bytes(_webp_with_exif_chunk(block))
    assert md.read_parameters(path) == INFOTEXT
    md.set_file_param(path, KEY, "x")
    assert md.infotext_param(_user_comment_pillow(path), KEY) == "x"


def test_corrupt_or_forged_exif_is_read_quickly_and_replaced(tmp_path):
    """A forged tag count or a bad offset (an image posted to /generated-caption) must neither hang nor eat memory:
    Pillow, which reads here, checks sizes; writing replaces the block, as the hosts' own saving does."""
    jpeg = io.BytesIO()
    Image.new("RGB", (8, 8)).save(jpeg, "JPEG")
    jpeg = jpeg.getvalue()
    # ImageDescription claiming 2**32 - 1 BYTE values (piexif.load would build a 4-G-character struct format)
    forged = b"MM\x00*\x00\x00\x00\x08" + struct.pack(">H", 1) + struct.pack(">HHII", 0x010E, 1, 0xFFFFFFFF, 26) \
        + b"\x00" * 12
    garbage = b"MM\x00*\x00\x00\xff\xf0"  # IFD0 offset past the end
    cases = {"forged.jpg": jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(forged) + 8) + b"Exif\x00\x00" + forged
             + jpeg[2:],
             "garbage.jpg": jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(garbage) + 8) + b"Exif\x00\x00"
             + garbage + jpeg[2:],
             "forged.webp": _webp_with_exif_chunk(forged),
             "path.webp": _webp_with_exif_chunk(str(tmp_path / "forged.jpg").encode())}  # not read as a file name
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        before = _frames(path)
        started = time.monotonic()
        try:
            assert md.read_parameters(path) is None, name
        except md.MetadataError as e:
            assert str(path) in str(e) and "EXIF" in str(e), name
        try:  # merging needs the old parameters: an unreadable block is reported and the file left alone
            md.set_file_param(path, KEY, "x")
        except md.MetadataError as e:
            assert str(path) in str(e) and path.read_bytes() == data, name
        else:
            assert md.infotext_param(md.read_parameters(path), KEY) == "x", name
        md.write_parameters(path, "x")  # writing alone replaces the block
        assert md.read_parameters(path) == "x", name
        assert time.monotonic() - started < 5, name
        assert _frames(path) == before and _no_temp_files(tmp_path), name


def test_corrupt_or_unsupported_files_are_left_alone(tmp_path):
    path = tmp_path / "a.png"
    _png(path)
    truncated = path.read_bytes()[:60]
    path.write_bytes(truncated)
    with pytest.raises(md.MetadataError):
        md.set_file_param(path, KEY, "x")
    assert path.read_bytes() == truncated and _no_temp_files(tmp_path)
    gif = tmp_path / "a.gif"
    Image.new("P", (4, 4)).save(gif)
    with pytest.raises(md.MetadataError, match="not a PNG, JPEG or WebP"):
        md.set_file_param(gif, KEY, "x")
    with pytest.raises(FileNotFoundError):
        md.read_parameters(tmp_path / "missing.png")


def test_jpeg_text_too_long_for_one_segment(tmp_path):
    path = tmp_path / "a.jpg"
    Image.new("RGB", (8, 8)).save(path)
    before = path.read_bytes()
    with pytest.raises(md.MetadataError, match="too long") as error:
        md.write_parameters(path, "x" * 40000)
    assert str(path) in str(error.value) and "use PNG" in str(error.value)
    assert path.read_bytes() == before and _no_temp_files(tmp_path)
    md.write_parameters(path, "x" * 32000)  # 64,000 bytes of UTF-16: still one segment
    assert md.read_parameters(path) == "x" * 32000


# ------------------------------------------------------------------------------------- caption as the prompt
@pytest.mark.parametrize("typed, mode, expected", [
    ("masterpiece", "off", "masterpiece"),
    ("masterpiece", "replace", "a dog"),
    ("masterpiece", "append", "masterpiece, a dog"),
    ("masterpiece,", "append", "masterpiece, a dog"),
    ("by an old master", "prepend", "a dog, by an old master"),
    ("", "append", "a dog"),
    (None, "prepend", "a dog"),
    ("photo of {caption}, 35mm", "append", "photo of a dog, 35mm"),
    ("photo of {caption}, 35mm", "replace", "photo of a dog, 35mm"),
    ("{caption} {caption}", "prepend", "a dog a dog"),
])
def test_caption_prompt(typed, mode, expected):
    assert caption_prompt(typed, " a dog ", mode) == expected


@pytest.mark.parametrize("typed, mode, expected", [
    ("oil painting", "append", "oil painting, a large blue circle on a white background."),
    ("oil painting", "prepend", "a large blue circle on a white background, oil painting"),
    ("oil painting of {caption}, dramatic", "replace", "oil painting of a large blue circle on a white background, "
                                                       "dramatic"),
    ("oil painting of {caption}", "replace", "oil painting of a large blue circle on a white background."),
    ("masterpiece.", "append", "masterpiece, a large blue circle on a white background."),
])
def test_joined_captions_keep_no_inner_period(typed, mode, expected):
    """A caption followed by other text loses its closing period (was "... background., oil painting")."""
    assert caption_prompt(typed, "a large blue circle on a white background.", mode) == expected


def test_caption_prompt_rejects_unknown_modes():
    with pytest.raises(ValueError, match="valid: off, replace, append, prepend"):
        caption_prompt("x", "y", "merge")


def test_presets_override_only_decoding():
    from lib_clipcap.options_table import caption_kwargs, defaults

    base = {**defaults(), "model": "flickr8k", "max_new_tokens": 12, "banned_words": ["ugly"]}
    assert apply_preset(base, "settings") == base
    for name in DECODING_PRESETS:
        values = apply_preset(base, name)
        kw = caption_kwargs(values)  # every preset is valid for the captioner
        assert kw["max_new_tokens"] == 12 and kw["banned_words"] == ["ugly"] and values["model"] == "flickr8k"
    assert caption_kwargs(apply_preset(base, "fast"))["decoding"] == "greedy"
    assert caption_kwargs(apply_preset(base, "varied"))["top_p"] == 0.9
    with pytest.raises(ValueError, match="valid: settings, fast, best, varied"):
        apply_preset(base, "turbo")


# ------------------------------------------------------------------------------------------- the model control
@pytest.mark.parametrize("value, expected", [
    ("", ""), (None, ""), ("Settings default", ""), ("  settings DEFAULT ", ""), (" shapes-demo ", "shapes-demo"),
    (["Settings default", ""], ""), (("shapes-sbg", "shapes-sbg"), "shapes-sbg"),
    # what gradio 3.41's Dropdown made of (label, value) choices (kept by ui-config.json or an API caller's script
    # arguments from an older version)
    ("('shapes-demo', 'shapes-demo')", "shapes-demo"), ("('Settings default', '')", ""), ('["coco", "coco"]', "coco"),
    ("(not a literal, x)", "(not a literal, x)"),  # no pair: left as it is, for the registry's message
])
def test_model_control_values(value, expected):
    from clipcap_webui.generation_ui import model_from_control

    assert model_from_control(value) == expected


def test_model_control_value_that_is_not_text():
    from clipcap_webui.generation_ui import GenerationSettings, model_from_control

    with pytest.raises(TypeError):
        model_from_control(3)
    s = GenerationSettings.from_args([True, 3])
    assert s.model == "" and s.problems and "model=3" in s.problems[0]  # the default, and said so
    assert GenerationSettings.from_args([True, "('shapes-demo', 'shapes-demo')"]).model == "shapes-demo"
    assert GenerationSettings.from_args([True, "Settings default"]).model == ""


@pytest.mark.parametrize("version, pairs", [((3, 41), False), ((3, 43), False), ((3, 44), True), ((4, 40), True),
                                            ((6, 0), True)])
def test_model_choices_per_gradio(monkeypatch, version, pairs):
    """Pairs only where gradio's Dropdown takes them (3.44+); before, plain strings with "Settings default" as its
    own value. Either way every value means a model to :func:`model_from_control`."""
    from clipcap_webui import generation_ui as gu

    monkeypatch.setattr(gu, "_gradio_version", lambda: version)
    choices, value = gu.model_choices(["shapes-demo", "coco"])
    if pairs:
        assert choices == [("Settings default", ""), ("shapes-demo", "shapes-demo"), ("coco", "coco")]
        assert value == ""
    else:
        assert choices == ["Settings default", "shapes-demo", "coco"] and value == "Settings default"
    values = [c[1] if isinstance(c, tuple) else c for c in choices]
    assert [gu.model_from_control(v) for v in values] == ["", "shapes-demo", "coco"]


def test_gradio_version_is_read():
    import gradio as gr

    from clipcap_webui import generation_ui as gu

    major, minor = gu._gradio_version()
    assert gr.__version__.startswith(f"{major}.{minor}")
    assert gu.dropdown_takes_pairs() == ((major, minor) >= (3, 44))
