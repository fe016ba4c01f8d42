"""The host-independent pieces behind captioning inside generation: infotext entries, the caption written into an
existing PNG/JPEG/WebP file (atomically, pixels untouched), the caption-as-prompt template and decoding presets.

No WebUI needed: files are read back with Pillow (and piexif, the hosts' EXIF library, where installed).
"""

from __future__ import annotations

import os
import re

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


def test_jpeg_exif_user_comment_without_reencoding(tmp_path):
    path = tmp_path / "a.jpg"
    im = Image.new("RGB", (32, 24), "green")
    icc = b"\x00" * 128  # an APP2 segment that must survive
    old_exif = Image.Exif()
    old_exif[0x010E] = "old description"
    im.save(path, quality=90, icc_profile=icc, exif=old_exif.tobytes())
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
    assert _user_comment_piexif(path) == text  # what the hosts' PNG Info uses


@pytest.mark.parametrize("kind", ["lossy", "lossless-alpha", "extended"])
def test_webp_exif_chunk(tmp_path, kind):
    path = tmp_path / "a.webp"
    if kind == "lossy":
        Image.new("RGB", (30, 20), "blue").save(path, quality=80)
    elif kind == "lossless-alpha":
        Image.new("RGBA", (30, 20), (0, 0, 255, 100)).save(path, lossless=True)
    else:  # already VP8X with an EXIF chunk
        Image.new("RGB", (30, 20), "blue").save(path, exif=Image.Exif().tobytes())
    before = _pixels(path)
    md.set_file_param(path, KEY, "a blue square")
    assert _pixels(path) == before and _no_temp_files(tmp_path)
    data = path.read_bytes()
    assert data.count(b"EXIF") == 1 and data[12:16] == b"VP8X"
    assert int.from_bytes(data[4:8], "little") == len(data) - 8
    assert md.infotext_param(_user_comment_pillow(path), KEY) == "a blue square"
    assert md.infotext_param(_user_comment_piexif(path), KEY) == "a blue square"


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
    with pytest.raises(md.MetadataError, match="too long"):
        md.write_parameters(path, "x" * 40000)
    assert path.read_bytes() == before


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
