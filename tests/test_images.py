"""Behaviour of lib_clipcap.images: every image input becomes a clean RGB picture, or a clear ImageLoadError.

All test images are generated in tmp_path; nothing binary is committed. The module must stay fast (well under 5 s).
"""

from __future__ import annotations

import builtins
import io
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image, ImageFile

from lib_clipcap.errors import ImageLoadError
from lib_clipcap.images import (
    IMAGE_EXTENSIONS,
    MAX_IMAGE_PIXELS_DEFAULT,
    describe_source,
    is_image_path,
    load_image,
    try_load_image,
)

RED = (255, 0, 0)
WHITE = (255, 255, 255)


def _close(actual: tuple[int, ...], expected: tuple[int, ...], tol: int = 2) -> bool:
    return all(abs(a - e) <= tol for a, e in zip(actual, expected))


def _save(image: Image.Image, path: Path, **kwargs: object) -> Path:
    image.save(path, **kwargs)
    return path


def _noise(width: int, height: int, seed: int = 0) -> Image.Image:
    # Random pixels do not compress, so a file cut in half really loses pixel data (not just trailing metadata).
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))


def _loaded(path: Path, **kwargs: object) -> Image.Image:
    image = load_image(path, **kwargs)
    assert image.mode == "RGB"
    return image


# ---------------------------------------------------------------------------------------------------------------------
# Pixel modes
# ---------------------------------------------------------------------------------------------------------------------


def test_rgb_png_loads_as_independent_rgb_copy(tmp_path: Path) -> None:
    path = _save(Image.new("RGB", (7, 5), RED), tmp_path / "red.png")
    image = _loaded(path)
    assert image.size == (7, 5)
    assert image.getpixel((3, 2)) == RED
    assert getattr(image, "fp", None) is None  # fully loaded, no file handle behind it


def test_pil_input_is_not_modified_or_returned_as_is() -> None:
    source = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    image = load_image(source)
    assert image is not source
    assert source.mode == "RGBA" and source.getpixel((0, 0)) == (0, 0, 0, 0)
    assert image.getpixel((0, 0)) == WHITE


def test_rgba_transparency_is_composited_on_white(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (4, 2), (0, 0, 0, 0))  # fully transparent black: must NOT come out black
    rgba.putpixel((1, 0), (255, 0, 0, 255))
    rgba.putpixel((2, 0), (255, 0, 0, 128))  # half-transparent red over white -> pink
    image = _loaded(_save(rgba, tmp_path / "alpha.png"))
    assert image.getpixel((0, 0)) == WHITE
    assert image.getpixel((1, 0)) == RED
    assert _close(image.getpixel((2, 0)), (255, 127, 127))


def test_la_transparency_is_composited_on_white(tmp_path: Path) -> None:
    la = Image.new("LA", (3, 3), (0, 0))
    la.putpixel((1, 1), (50, 255))
    image = _loaded(_save(la, tmp_path / "grey_alpha.png"))
    assert image.getpixel((0, 0)) == WHITE
    assert image.getpixel((1, 1)) == (50, 50, 50)


def test_pa_image_is_composited_on_white() -> None:
    pa = Image.new("PA", (2, 1))
    pa.putpalette([255, 0, 0] * 256)
    pa.putpixel((0, 0), (0, 0))  # palette red, alpha 0
    pa.putpixel((1, 0), (0, 255))  # palette red, opaque
    image = load_image(pa)
    assert image.getpixel((0, 0)) == WHITE
    assert image.getpixel((1, 0)) == RED


def test_palette_without_transparency(tmp_path: Path) -> None:
    palette_image = Image.new("RGB", (6, 6), (0, 0, 255)).convert("P")
    assert palette_image.mode == "P"
    image = _loaded(_save(palette_image, tmp_path / "palette.png"))
    assert image.size == (6, 6)
    assert image.getpixel((2, 2)) == (0, 0, 255)


@pytest.mark.parametrize("suffix", [".png", ".gif"])
def test_palette_with_transparent_index(tmp_path: Path, suffix: str) -> None:
    palette_image = Image.new("P", (4, 4), 0)
    palette_image.putpalette([0, 0, 0, 255, 0, 0] + [0, 0, 0] * 254)  # index 0 black, index 1 red
    palette_image.putpixel((3, 3), 1)
    path = _save(palette_image, tmp_path / f"transparent{suffix}", transparency=0)
    image = _loaded(path)
    assert image.getpixel((0, 0)) == WHITE  # transparent black -> white
    assert image.getpixel((3, 3)) == RED


@pytest.mark.parametrize("suffix", [".jpg", ".tif"])
def test_cmyk_red_stays_reddish(tmp_path: Path, suffix: str) -> None:
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))
    image = _loaded(_save(cmyk, tmp_path / f"cmyk{suffix}"))
    r, g, b = image.getpixel((4, 4))
    assert r > 200 and g < 60 and b < 60, (r, g, b)


def test_16bit_greyscale_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 32768, 65535]], dtype=np.uint16)
    path = _save(Image.fromarray(values), tmp_path / "grey16.png")
    with Image.open(path) as raw:
        assert raw.mode in {"I;16", "I"}  # which one depends on the Pillow version; both must scale
    image = _loaded(path)
    assert image.size == (3, 1)
    assert image.getpixel((0, 0)) == (0, 0, 0)
    assert _close(image.getpixel((1, 0)), (128, 128, 128), tol=1)
    assert image.getpixel((2, 0)) == WHITE


def test_16bit_big_endian_tiff(tmp_path: Path) -> None:
    # Built from raw bytes: Image.convert("I;16B") itself clips to 8-bit values in some Pillow versions.
    image16 = Image.frombytes("I;16B", (2, 1), np.array([65535, 0], dtype=">u2").tobytes())
    image = _loaded(_save(image16, tmp_path / "grey16be.tif"))
    assert image.getpixel((0, 0)) == WHITE and image.getpixel((1, 0)) == (0, 0, 0)


def test_32bit_int_greyscale(tmp_path: Path) -> None:
    image32 = Image.fromarray(np.array([[0, 65535]], dtype=np.int32))
    assert image32.mode == "I"
    image = _loaded(_save(image32, tmp_path / "grey32.tif"))
    assert image.getpixel((0, 0)) == (0, 0, 0) and image.getpixel((1, 0)) == WHITE


def test_32bit_float_greyscale(tmp_path: Path) -> None:
    float_image = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert float_image.mode == "F"
    image = _loaded(_save(float_image, tmp_path / "float.tif"))
    assert image.getpixel((0, 0)) == (0, 0, 0)
    assert _close(image.getpixel((1, 0)), (128, 128, 128), tol=1)
    assert image.getpixel((2, 0)) == WHITE


@pytest.mark.parametrize(
    ("mode", "colour", "expected"),
    [
        ("1", 1, WHITE),
        ("L", 100, (100, 100, 100)),
        ("YCbCr", (76, 85, 255), RED),  # red in (JPEG) YCbCr
    ],
)
def test_simple_modes(mode: str, colour: object, expected: tuple[int, int, int]) -> None:
    image = load_image(Image.new(mode, (5, 3), colour))  # type: ignore[arg-type]
    assert image.mode == "RGB" and image.size == (5, 3)
    assert _close(image.getpixel((0, 0)), expected, tol=3)


@pytest.mark.parametrize("suffix", [".bmp", ".png"])
def test_one_bit_and_grey_files(tmp_path: Path, suffix: str) -> None:
    bilevel = Image.new("1", (9, 4), 0)
    bilevel.putpixel((8, 3), 1)
    image = _loaded(_save(bilevel, tmp_path / f"bilevel{suffix}"))
    assert image.size == (9, 4)
    assert image.getpixel((0, 0)) == (0, 0, 0) and image.getpixel((8, 3)) == WHITE


def test_exif_orientation_6_rotates_portrait(tmp_path: Path) -> None:
    # A phone-style file: 40x20 landscape pixels, left half red, right half blue, tagged "rotate 90° clockwise".
    stored = Image.new("RGB", (40, 20), RED)
    stored.paste((0, 0, 255), (20, 0, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = _save(stored, tmp_path / "portrait.jpg", exif=exif, quality=95)
    image = _loaded(path)
    assert image.size == (20, 40)
    # Rotating clockwise brings the left (red) half to the top.
    assert _close(image.getpixel((10, 5)), RED, tol=20)
    assert _close(image.getpixel((10, 35)), (0, 0, 255), tol=20)


def _animated_frames() -> list[Image.Image]:
    return [Image.new("RGB", (6, 6), colour) for colour in (RED, (0, 255, 0), (0, 0, 255))]


@pytest.mark.parametrize("suffix", [".gif", ".webp", ".png"])
def test_animation_gives_first_frame(tmp_path: Path, suffix: str) -> None:
    first, *rest = _animated_frames()
    extra: dict[str, object] = {"lossless": True} if suffix == ".webp" else {}
    path = _save(first, tmp_path / f"anim{suffix}", save_all=True, append_images=rest, duration=100, loop=0, **extra)
    with Image.open(path) as raw:
        assert getattr(raw, "n_frames", 1) == 3
    image = _loaded(path)
    assert image.size == (6, 6)
    assert _close(image.getpixel((3, 3)), RED, tol=4)


def test_bytes_bytearray_and_memoryview(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (3, 2), RED).save(buffer, format="PNG")
    data = buffer.getvalue()
    for source in (data, bytearray(data), memoryview(data)):
        image = load_image(source)
        assert image.size == (3, 2) and image.getpixel((0, 0)) == RED


# ---------------------------------------------------------------------------------------------------------------------
# Files: errors, read-only access, global state
# ---------------------------------------------------------------------------------------------------------------------


def _raises_for(path: Path, reason: str, **kwargs: object) -> ImageLoadError:
    with pytest.raises(ImageLoadError, match=reason) as info:
        load_image(path, **kwargs)
    assert path.name in str(info.value)  # the message names the file
    return info.value


@pytest.mark.parametrize(("suffix", "fmt"), [(".png", "PNG"), (".jpg", "JPEG")])
def test_truncated_file(tmp_path: Path, suffix: str, fmt: str) -> None:
    whole = tmp_path / f"whole{suffix}"
    _noise(64, 64).save(whole, format=fmt)
    data = whole.read_bytes()
    truncated = tmp_path / f"cut{suffix}"
    truncated.write_bytes(data[: len(data) // 2])
    _raises_for(truncated, "truncated or corrupt")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # we must not have flipped Pillow's global switch


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.touch()
    _raises_for(path, r"empty \(0 bytes\)")


def test_text_file_named_jpg(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("these are my shopping notes, not a picture\n" * 5)
    _raises_for(path, "unrecognised image format")


def test_missing_file(tmp_path: Path) -> None:
    error = _raises_for(tmp_path / "nope.png", "file not found")
    assert isinstance(error, ValueError)  # ImageLoadError is catchable as ValueError


def test_directory(tmp_path: Path) -> None:
    folder = tmp_path / "album.png"
    folder.mkdir()
    _raises_for(folder, "directory")


def test_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _save(Image.new("RGB", (2, 2)), tmp_path / "secret.png")
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):  # running as root: simulate what an ordinary user would get
            real_open = builtins.open

            def deny(file: object, *args: object, **kwargs: object) -> object:
                if os.fspath(file) == os.fspath(path):  # type: ignore[arg-type]
                    raise PermissionError(13, "Permission denied", os.fspath(path))  # type: ignore[arg-type]
                return real_open(file, *args, **kwargs)  # type: ignore[call-overload]

            monkeypatch.setattr(builtins, "open", deny)
        _raises_for(path, "permission denied")
    finally:
        monkeypatch.undo()
        path.chmod(0o644)


def test_image_over_pixel_limit_is_refused_before_decoding(tmp_path: Path) -> None:
    path = _save(Image.new("RGB", (100, 50)), tmp_path / "big.png")
    error = _raises_for(path, "too large", max_pixels=4999)
    assert "100x50" in str(error) and "4,999" in str(error)
    assert load_image(path, max_pixels=5000).size == (100, 50)
    assert load_image(path, max_pixels=None).size == (100, 50)


def test_pixel_limit_applies_to_every_source_kind() -> None:
    with pytest.raises(ImageLoadError, match=r"<array shape \(10, 10\) dtype uint8>.*too large"):
        load_image(np.zeros((10, 10), dtype=np.uint8), max_pixels=99)
    with pytest.raises(ImageLoadError, match="too large"):
        load_image(Image.new("RGB", (10, 10)), max_pixels=99)


def test_pixel_limit_does_not_touch_pillow_globals(tmp_path: Path) -> None:
    before = Image.MAX_IMAGE_PIXELS
    path = _save(Image.new("RGB", (10, 10)), tmp_path / "small.png")
    try_load_image(path, max_pixels=5)
    load_image(path, max_pixels=None)
    assert Image.MAX_IMAGE_PIXELS == before
    assert MAX_IMAGE_PIXELS_DEFAULT == 8192 * 8192


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "100"])
def test_invalid_max_pixels_is_a_programming_error(bad: object) -> None:
    with pytest.raises(ValueError, match="max_pixels"):
        load_image(Image.new("RGB", (1, 1)), max_pixels=bad)  # type: ignore[arg-type]


def test_loading_never_modifies_the_file(tmp_path: Path) -> None:
    stored = Image.new("RGB", (40, 20), RED)
    exif = Image.Exif()
    exif[0x0112] = 6  # the kind of file a careless loader might "fix" on disk
    path = _save(stored, tmp_path / "keep.jpg", exif=exif)
    os.utime(path, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    before_bytes, before_mtime = path.read_bytes(), path.stat().st_mtime_ns
    load_image(path)
    load_image(str(path))
    assert path.read_bytes() == before_bytes
    assert path.stat().st_mtime_ns == before_mtime


def test_postscript_is_refused_without_running_ghostscript(tmp_path: Path) -> None:
    path = tmp_path / "drawing.eps"
    path.write_text("%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    _raises_for(path, "unrecognised image format")


def test_unsupported_source_type() -> None:
    with pytest.raises(ImageLoadError, match="<int object>.*unsupported source type"):
        load_image(42)  # type: ignore[arg-type]


def test_empty_bytes() -> None:
    with pytest.raises(ImageLoadError, match=re.escape("<bytes: 0 bytes>") + ".*0 bytes"):
        load_image(b"")


def test_garbage_bytes() -> None:
    with pytest.raises(ImageLoadError, match=re.escape("<bytes: 11 bytes>") + ".*unrecognised image format"):
        load_image(b"hello world")


# ---------------------------------------------------------------------------------------------------------------------
# try_load_image
# ---------------------------------------------------------------------------------------------------------------------


def test_try_load_image_reports_instead_of_raising(tmp_path: Path) -> None:
    good = _save(Image.new("RGB", (2, 2), RED), tmp_path / "good.png")
    image, message = try_load_image(good)
    assert message is None and image is not None and image.getpixel((0, 0)) == RED

    for bad in (tmp_path / "missing.png", b"not an image", np.zeros((2, 2, 5), dtype=np.uint8), object()):
        image, message = try_load_image(bad)  # type: ignore[arg-type]
        assert image is None
        assert message and message.startswith("Cannot load image ")
    _, message = try_load_image(tmp_path / "missing.png")
    assert message is not None and "missing.png" in message and "file not found" in message


# ---------------------------------------------------------------------------------------------------------------------
# Arrays and tensors
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (np.full((3, 5), 7, dtype=np.uint8), (7, 7, 7)),
        (np.full((3, 5, 1), 7, dtype=np.uint8), (7, 7, 7)),
        (np.tile(np.array(RED, dtype=np.uint8), (3, 5, 1)), RED),
        (np.zeros((3, 5, 4), dtype=np.uint8), WHITE),  # transparent -> white
        (np.full((3, 5, 3), 0.5, dtype=np.float32), (128, 128, 128)),
        (np.ones((3, 5), dtype=np.float64), WHITE),
        (np.ones((3, 5), dtype=bool), WHITE),
        (np.full((3, 5, 3), 200, dtype=np.int64), (200, 200, 200)),
    ],
    ids=["HxW", "HxWx1", "HxWx3", "HxWx4", "float32", "float64", "bool", "int64"],
)
def test_arrays(array: np.ndarray, expected: tuple[int, int, int]) -> None:
    image = load_image(array)
    assert image.mode == "RGB" and image.size == (5, 3)
    assert image.getpixel((4, 2)) == expected


def test_non_contiguous_array() -> None:
    chw = np.zeros((3, 4, 6), dtype=np.uint8)
    chw[0] = 255
    image = load_image(chw.transpose(1, 2, 0))
    assert image.size == (6, 4) and image.getpixel((0, 0)) == RED


@pytest.mark.parametrize(
    ("array", "reason"),
    [
        (np.zeros((4, 4, 5), dtype=np.uint8), r"shape \(4, 4, 5\)"),
        (np.zeros((1, 4, 4, 3), dtype=np.uint8), r"shape \(1, 4, 4, 3\)"),
        (np.zeros(16, dtype=np.uint8), r"shape \(16,\)"),
        (np.zeros((3, 8, 8), dtype=np.uint8), r"transpose\(1, 2, 0\)"),
        (np.zeros((0, 4), dtype=np.uint8), "no pixels"),
        (np.array([[0.1, np.nan]], dtype=np.float32), "NaN"),
        (np.array([[0.0, 255.0]], dtype=np.float32), r"\[0, 1\]"),
        (np.array([[0, 1000]], dtype=np.uint16), r"0\.\.255"),
        (np.array([["a"]]), "dtype <U1"),
    ],
)
def test_bad_arrays(array: np.ndarray, reason: str) -> None:
    with pytest.raises(ImageLoadError, match=re.escape(describe_source(array)) + ".*" + reason):
        load_image(array)


def test_torch_tensors_chw_and_hwc() -> None:
    # Importing torch costs seconds; exercise tensors only when something else in the run has already paid for it.
    torch = sys.modules.get("torch")
    if torch is None:
        pytest.skip("torch not imported in this run")
    chw = torch.zeros((3, 4, 6))
    chw[0] = 1.0
    image = load_image(chw)
    assert image.size == (6, 4) and image.getpixel((0, 0)) == RED
    hwc = torch.full((4, 6, 3), 255, dtype=torch.uint8)
    assert load_image(hwc).getpixel((0, 0)) == WHITE


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    height=st.integers(1, 12),
    width=st.integers(1, 12),
    channels=st.sampled_from([None, 1, 3, 4]),
)
def test_any_accepted_uint8_array_loads_to_rgb_of_same_size(
    data: st.DataObject, height: int, width: int, channels: int | None
) -> None:
    shape = (height, width) if channels is None else (height, width, channels)
    array = data.draw(hnp.arrays(np.uint8, shape))
    image = load_image(array)
    assert image.mode == "RGB" and image.size == (width, height)
    rgb = np.asarray(image)
    if channels in (None, 1):
        grey = array.reshape(height, width)
        assert (rgb == grey[:, :, None]).all()
    elif channels == 3:
        assert (rgb == array).all()
    else:  # opaque pixels keep their colour; any pixel ends up no darker than its colour (white background)
        opaque = array[:, :, 3] == 255
        assert (rgb[opaque] == array[:, :, :3][opaque]).all()
        assert (rgb.astype(int) >= array[:, :, :3].astype(int) - 1).all()


# ---------------------------------------------------------------------------------------------------------------------
# Suffixes and labels
# ---------------------------------------------------------------------------------------------------------------------


def test_image_extensions() -> None:
    assert {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"} <= IMAGE_EXTENSIONS
    assert all(ext == ext.lower() and ext.startswith(".") for ext in IMAGE_EXTENSIONS)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("a.JPG", True), ("dir/b.Png", True), (Path("c.webp"), True), ("d.txt", False), ("png", False), ("e", False)],
)
def test_is_image_path(name: str | Path, expected: bool) -> None:
    assert is_image_path(name) is expected


def test_describe_source(tmp_path: Path) -> None:
    assert describe_source(tmp_path / "x.png") == str(tmp_path / "x.png")
    assert describe_source(b"abc") == "<bytes: 3 bytes>"
    assert describe_source(np.zeros((2, 3, 3), dtype=np.uint8)) == "<array shape (2, 3, 3) dtype uint8>"
    assert describe_source(Image.new("L", (4, 5))) == "<PIL image L 4x5>"
    assert describe_source(None) == "<NoneType object>"
