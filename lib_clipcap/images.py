"""One safe loader for every image input of lib_clipcap.

Everything that reaches the captioner -- a file picked in the WebUI, a path from a batch folder, bytes decoded by the
API layer, a numpy array or a torch tensor from another extension, a PIL image from gradio -- goes through
:func:`load_image`, so every entry point gets the same guarantees:

* the result is a fully decoded, independent ``RGB`` :class:`PIL.Image.Image` (no open file handle behind it);
* EXIF orientation is applied, transparency is flattened onto *white* (what a viewer shows, and what CLIP was trained
  on), 16/32-bit greyscale is rescaled rather than clipped, animations give their first frame;
* the pixel count is checked *before* pixels are decoded (decompression bombs), without touching Pillow's global
  ``Image.MAX_IMAGE_PIXELS`` or ``ImageFile.LOAD_TRUNCATED_IMAGES`` -- the WebUI host and other extensions share them;
* files are only ever opened read-only;
* every failure is an :class:`~lib_clipcap.errors.ImageLoadError` whose message names the source and the reason.

Data URLs and base64 strings are the API layer's business: here a ``str`` is always a path.
"""

from __future__ import annotations

import io
import logging
import os
import stat
import sys
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lib_clipcap.errors import ImageLoadError

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_IMAGE_PIXELS_DEFAULT",
    "ImageSource",
    "describe_source",
    "is_image_path",
    "load_image",
    "release_freed_memory",
    "try_load_image",
]

#: Everything :func:`load_image` accepts. A ``torch.Tensor`` (CHW or HWC) is accepted too when torch is installed; it
#: is not part of the alias so that importing this module never imports torch.
ImageSource = Image.Image | str | os.PathLike | bytes | bytearray | memoryview | np.ndarray

#: Default decompression-bomb guard: 67 megapixels, far above any photo a captioner needs, far below what exhausts RAM
#: (an RGBA image of this size already takes 256 MiB once decoded).
MAX_IMAGE_PIXELS_DEFAULT: int = 8192 * 8192

# Formats Pillow can open but that we refuse: EPS is rendered by spawning Ghostscript on the (untrusted) file, a
# long-standing source of remote-code-execution bugs. Nobody captions PostScript.
_DENIED_FORMATS = frozenset({"EPS"})

# Suffixes treated as images when scanning folders. Only those Pillow has a reader registered for are kept, so that
# e.g. ".avif" appears only where an AVIF plugin (Pillow >= 11.2 or pillow-avif-plugin) is installed.
_CANDIDATE_EXTENSIONS = (
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".webp", ".bmp", ".gif", ".tif", ".tiff",
    ".avif", ".heic", ".heif", ".jxl",
)  # fmt: skip


def _registered_extensions() -> frozenset[str]:
    try:
        registered = Image.registered_extensions()  # imports Pillow's plugins once
    except Exception:  # pragma: no cover - a broken third-party plugin must not make this module unimportable
        logger.warning("Could not list Pillow's registered image formats; using the built-in list", exc_info=True)
        return frozenset(_CANDIDATE_EXTENSIONS[:11])
    return frozenset(ext.lower() for ext in registered)


#: Lower-case file suffixes (with the dot) that :func:`is_image_path` accepts. Computed once at import time from the
#: readers Pillow has registered then; a plugin registered later is not picked up.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(ext for ext in _CANDIDATE_EXTENSIONS if ext in _registered_extensions())

# Modes that carry an alpha channel (or may, for "P") and therefore must be flattened onto white.
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA", "P"})

# Tolerance when validating float arrays: values produced by normalisation maths often land at 1.0000001 or -1e-8.
_FLOAT_TOLERANCE = 1e-3


def is_image_path(path: str | os.PathLike[str]) -> bool:
    """Tell whether a path looks like an image file, by its suffix only (case-insensitive).

    The file is not opened, so this is cheap enough to filter large directory listings; :func:`load_image` still
    detects the real format from the content.

    Args:
        path: A file name or path.

    Returns:
        ``True`` when the suffix is in :data:`IMAGE_EXTENSIONS`.
    """
    try:
        name = os.fsdecode(os.fspath(path))
    except TypeError:
        return False
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _torch_tensor_type() -> type | None:
    # A tensor can only exist if torch has already been imported by someone, so looking in sys.modules is enough and
    # keeps this module (and e.g. a CPU-only test run) from paying torch's multi-second import.
    torch = sys.modules.get("torch")
    tensor_type = getattr(torch, "Tensor", None) if torch is not None else None
    return tensor_type if isinstance(tensor_type, type) else None


def _is_tensor(source: object) -> bool:
    tensor_type = _torch_tensor_type()
    return tensor_type is not None and isinstance(source, tensor_type)


def describe_source(source: object) -> str:
    """Return a short human-readable label for an image source, for error messages, logs and manifests.

    Never raises and never reads the source's pixels.

    Args:
        source: Anything that might be passed to :func:`load_image`.

    Returns:
        The path itself for paths, ``"<bytes: N bytes>"`` for raw bytes, ``"<array shape (H, W, C) dtype uint8>"``
        for arrays, ``"<tensor shape ...>"`` for tensors, ``"<PIL image MODE WxH ...>"`` for PIL images, and
        ``"<TypeName object>"`` otherwise.
    """
    try:
        if isinstance(source, Image.Image):
            label = f"<PIL image {source.mode} {source.width}x{source.height}"
            filename = getattr(source, "filename", None)
            return f"{label} from {filename!r}>" if filename else f"{label}>"
        if isinstance(source, (str, os.PathLike)):
            return os.fsdecode(os.fspath(source))
        if isinstance(source, (bytes, bytearray, memoryview)):
            return f"<bytes: {memoryview(source).nbytes} bytes>"
        if isinstance(source, np.ndarray):
            return f"<array shape {tuple(source.shape)} dtype {source.dtype}>"
        if _is_tensor(source):
            return f"<tensor shape {tuple(source.shape)} dtype {source.dtype}>"  # type: ignore[attr-defined]
    except Exception:  # a label must never mask the real error (e.g. a released memoryview)
        pass
    return f"<{type(source).__name__} object>"


def _fail(label: str, reason: str) -> ImageLoadError:
    return ImageLoadError(f"Cannot load image {label}: {reason}")


def _validate_max_pixels(max_pixels: int | None) -> None:
    # bool is an int subclass; max_pixels=True is certainly a mistake.
    if max_pixels is not None and (isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1):
        raise ValueError(f"max_pixels must be a positive int or None (no limit), got {max_pixels!r}")


def _check_size(label: str, width: int, height: int, max_pixels: int | None) -> None:
    if width <= 0 or height <= 0:
        raise _fail(label, f"image has no pixels ({width}x{height})")
    if max_pixels is not None and width * height > max_pixels:
        raise _fail(
            label,
            f"image is too large: {width}x{height} = {width * height:,} pixels exceeds the limit of "
            f"{max_pixels:,} pixels (possible decompression bomb); downscale it, or pass a larger max_pixels if you "
            "trust the source",
        )


# --------------------------------------------------------------------------------------------------------------------
# Pixel-mode normalisation
# --------------------------------------------------------------------------------------------------------------------


def _composite_on_white(image: Image.Image) -> Image.Image:
    # Image.convert("RGB") just drops alpha, which turns transparent areas into whatever colour the invisible pixels
    # happen to hold -- usually black. Viewers (and the web images CLIP learnt from) show them on white.
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _grey_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Map a high-bit-depth greyscale array onto 0..255, scaling (never clipping) the full range."""
    if mode.startswith("I;16"):
        # Genuine 16-bit data: 65535 is white. 257 == 65535 / 255 maps 0 -> 0 and 65535 -> 255 exactly.
        scaled = values.astype(np.float64) / 257.0
    else:
        data = values.astype(np.float64)
        finite = np.isfinite(data)
        if not finite.all():  # NaN/inf in a float TIFF: treat as black rather than poisoning the min/max
            data = np.where(finite, data, 0.0)
        lo, hi = (float(data.min()), float(data.max())) if data.size else (0.0, 0.0)
        if mode == "F" and lo >= 0.0 and hi <= 1.0:
            scaled = data * 255.0  # normalised float data (the usual float TIFF)
        elif mode == "F" and lo >= 0.0 and hi <= 255.0:
            scaled = data  # 8-bit values stored as float (e.g. Image.convert("F"))
        elif lo >= 0.0 and hi <= 65535.0:
            # Most "I" images are 16-bit files (older Pillow opens 16-bit PNG/PGM as "I"), so use the 16-bit range.
            scaled = data / 257.0
        elif hi > lo:
            scaled = (data - lo) * (255.0 / (hi - lo))  # arbitrary range (depth maps, signed data): stretch it
        else:
            scaled = np.zeros_like(data)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _to_rgb(image: Image.Image, label: str, *, copy: bool = True) -> Image.Image:
    """Convert a decoded image of any Pillow mode to RGB; a new object unless ``copy`` is false and it is RGB."""
    mode = image.mode
    if mode == "RGB":
        # Never hand back (and let the caller mutate) an object we were given.
        return image.copy() if copy else image
    if mode in _ALPHA_MODES:
        # "P" is included because palette images may carry transparency (info["transparency"] or an RGBA palette);
        # for opaque ones compositing is a no-op, so one path covers both.
        return _composite_on_white(image)
    if mode.startswith("I") or mode == "F":
        try:
            values = np.asarray(image)
        except Exception:  # older Pillow cannot export some I;16 variants to numpy directly
            values = np.asarray(image.convert("I"))
        if values.ndim != 2:
            raise _fail(label, f"unsupported pixel mode {mode!r} (array shape {values.shape})")
        return Image.fromarray(_grey_to_uint8(values, mode)).convert("RGB")
    # "1", "L", "CMYK", "YCbCr", "LAB", "HSV", ...: Pillow's own converters. CMYK uses Pillow's naive formula (no
    # ICC colour management), which keeps hues right -- good enough for captioning.
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as exc:
        raise _fail(label, f"unsupported pixel mode {mode!r} ({exc}); convert the image to RGB first") from exc


def _apply_exif_orientation(image: Image.Image, label: str) -> Image.Image:
    # Phones store portrait photos as landscape pixels plus an EXIF "rotate me" tag; ignore it and the caption
    # describes a sideways picture.
    try:
        return ImageOps.exif_transpose(image)
    except Exception:
        # A malformed EXIF block must not make an otherwise fine picture unusable: keep the stored orientation.
        logger.warning("Ignoring unreadable EXIF orientation of %s", label, exc_info=True)
        return image


def _finish(image: Image.Image, label: str) -> Image.Image:
    """Orientation + mode normalisation of an image whose pixels are already loaded."""
    oriented = _apply_exif_orientation(image, label)
    # exif_transpose normally returns a new image already; copy only if it handed back the input itself.
    result = _to_rgb(oriented, label, copy=oriented is image)
    result.load()
    return result


# --------------------------------------------------------------------------------------------------------------------
# Encoded data (files and bytes)
# --------------------------------------------------------------------------------------------------------------------


def _allowed_formats() -> list[str]:
    # Computed per call so that plugins registered after import (pillow-heif, pillow-avif-plugin) are honoured.
    Image.init()
    return [fmt for fmt in Image.OPEN if fmt not in _DENIED_FORMATS]


# EXIF orientation -> the transposition that undoes it (as ImageOps.exif_transpose does).
_ORIENTATION = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
                5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                8: Image.Transpose.ROTATE_90}
#: Decoded images of at least this many pixels give their memory back to the system afterwards (see
#: :func:`release_freed_memory`): below it, the allocator's reuse is cheaper than trimming.
_TRIM_PIXELS = 16 * 1024 * 1024


def _shrink_target(width: int, height: int, reduce_to: int | None) -> tuple[int, int] | None:
    """The size with the shorter side at ``reduce_to`` (aspect ratio kept), or ``None`` when it is not larger."""
    short = min(width, height)
    if reduce_to is None or short <= reduce_to:
        return None
    scale = reduce_to / short
    return max(1, round(width * scale)), max(1, round(height * scale))


def _shrunk(image: Image.Image, size: tuple[int, int], label: str) -> Image.Image:
    """``image`` (pixels loaded) reduced to ``size``, oriented and in RGB; the full-size pixels are never copied."""
    try:
        orientation = int(image.getexif().get(0x0112, 1))  # read now: a resized copy may not carry the EXIF block
    except Exception:  # malformed EXIF: keep the stored orientation, as _apply_exif_orientation does
        orientation = 1
    if image.mode.startswith("I") or image.mode == "F":
        return _finish(image, label)  # high-bit-depth data: normalised at full size (rare for huge images)
    if image.mode in ("1", "P", "PA"):  # palettes resize by nearest neighbour only: expand them first
        image = image.convert("RGBA")
    # reducing_gap: box-average by an integer factor first, then a bicubic pass (as Image.thumbnail does); RGBA is
    # resized with premultiplied alpha, so compositing onto white afterwards gives what it gives before resizing.
    small = image.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)
    if orientation in _ORIENTATION:
        small = small.transpose(_ORIENTATION[orientation])
    return _to_rgb(small, label, copy=False)


def release_freed_memory() -> None:
    """Hand memory that was freed back to the operating system, where the C library allows it (glibc).

    Freed image buffers stay in the allocator's free lists (one set per thread), so after a burst of large images a
    long-running server would keep their peak for good; ``malloc_trim`` returns it. A no-op elsewhere.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        trim = getattr(libc, "malloc_trim", None)  # glibc only (musl has none)
        if trim is not None:
            trim(0)
    except (OSError, AttributeError):  # pragma: no cover - an unusual C library: nothing to trim
        pass


def _decode(fp: io.BufferedIOBase | io.BytesIO, label: str, max_pixels: int | None,
            reduce_to: int | None = None) -> Image.Image:
    """Identify, size-check, decode and normalise the image in ``fp`` (which the caller closes); with ``reduce_to``,
    reduce it as early as the format allows (see :func:`load_image`)."""
    try:
        opened = Image.open(fp, formats=_allowed_formats())  # lazy: reads the header only
    except UnidentifiedImageError as exc:
        raise _fail(
            label,
            "unrecognised image format: the data is not an image Pillow can read, or its header is truncated or "
            "corrupt",
        ) from exc
    except Image.DecompressionBombError as exc:
        # Pillow's own (global) guard fires inside open() for absurd sizes even when max_pixels allows them.
        raise _fail(
            label, f"image is too large (possible decompression bomb), refused by Pillow's global guard: {exc}"
        ) from exc
    except MemoryError as exc:
        raise _fail(label, "not enough memory to read the image header") from exc
    except Exception as exc:
        # Pillow's format plugins raise a zoo of exception types on malformed headers (SyntaxError, struct.error,
        # IndexError, ...); all of them mean the same thing to the caller.
        raise _fail(label, f"truncated or corrupt image header ({type(exc).__name__}: {exc})") from exc

    with opened:
        width, height = opened.size
        _check_size(label, width, height, max_pixels)  # before any pixel is decoded
        target = _shrink_target(width, height, reduce_to)
        if target is not None:
            try:
                opened.draft(opened.mode, target)  # JPEG decodes at 1/2..1/8 scale (at least target); others: no-op
            except Exception:  # noqa: BLE001 - a draft is an optimisation only
                pass
        try:
            # Animations (GIF, WebP, APNG): Image.open sits on frame 0 and load() decodes just that frame. Asking for
            # n_frames here would make Pillow walk the whole file, so we deliberately do not.
            opened.load()
        except MemoryError as exc:
            raise _fail(label, f"not enough memory to decode a {width}x{height} image; use a smaller image") from exc
        except Exception as exc:
            # Truncation shows up as OSError("image file is truncated"), broken streams as SyntaxError/ValueError...
            # We deliberately do not set ImageFile.LOAD_TRUNCATED_IMAGES: it is global, and a half-grey picture
            # would silently produce a wrong caption.
            raise _fail(
                label,
                f"image data is truncated or corrupt ({type(exc).__name__}: {exc}); re-export or re-download the "
                "file",
            ) from exc
        fmt, mode = opened.format, opened.mode
        try:
            result = _finish(opened, label) if target is None else _shrunk(opened, target, label)
        finally:
            # Free the decoded pixels now (``result`` is always a new image): the with-statement only closes files
            # in current Pillow, and the full-size buffer would otherwise live until this frame is gone.
            opened.close()
    if width * height >= _TRIM_PIXELS:  # ... and give a large image's memory back to the system (see there)
        release_freed_memory()
    logger.debug("Loaded %s (%s %s %dx%d)", label, fmt, mode, width, height)
    return result


def _load_path(path: str | os.PathLike[str], label: str, max_pixels: int | None,
               reduce_to: int | None = None) -> Image.Image:
    if label == "":
        raise _fail("''", "the path is empty; pass the path of an image file")
    # Stat first: opening a FIFO or device would block or stream forever, and a clear "is a directory" beats
    # IsADirectoryError/PermissionError (Windows) from open().
    try:
        info = os.stat(path)
    except FileNotFoundError as exc:
        raise _fail(label, f"file not found (looked for {os.path.abspath(label)}); check the path") from exc
    except PermissionError as exc:
        raise _fail(label, "permission denied while looking up the file; check the folder's permissions") from exc
    except (OSError, ValueError) as exc:  # ValueError: embedded NUL byte; OSError: name too long, not a directory...
        raise _fail(label, f"invalid or inaccessible path ({exc})") from exc
    if stat.S_ISDIR(info.st_mode):
        raise _fail(label, "this is a directory, not an image file; pass a file inside it")
    if not stat.S_ISREG(info.st_mode):
        raise _fail(label, "not a regular file (device, pipe or socket); pass an image file")
    if info.st_size == 0:
        raise _fail(label, "the file is empty (0 bytes); it was probably not fully written or downloaded")
    try:
        # "rb" only: the loader must never be able to modify (or create) the user's file.
        fp = open(path, "rb")  # noqa: SIM115 - closed by the with-statement just below
    except FileNotFoundError as exc:  # deleted between stat() and open()
        raise _fail(label, "file not found; check the path") from exc
    except PermissionError as exc:
        raise _fail(label, "permission denied; check that the file is readable by this user") from exc
    except OSError as exc:
        raise _fail(label, f"cannot open the file ({exc})") from exc
    with fp:
        return _decode(fp, label, max_pixels, reduce_to)


def _load_bytes(data: bytes | bytearray | memoryview, label: str, max_pixels: int | None,
                reduce_to: int | None = None) -> Image.Image:
    view = memoryview(data)
    if view.nbytes == 0:
        raise _fail(label, "no data (0 bytes)")
    # Decode from an immutable snapshot, so a caller mutating its bytearray meanwhile cannot affect decoding
    # (BytesIO shares a bytes object's buffer instead of copying it).
    with io.BytesIO(data if isinstance(data, bytes) else view.tobytes()) as fp:
        return _decode(fp, label, max_pixels, reduce_to)


# --------------------------------------------------------------------------------------------------------------------
# Arrays and tensors
# --------------------------------------------------------------------------------------------------------------------

_ARRAY_SHAPES_HELP = "expected HxW, HxWx1, HxWx3 or HxWx4 (channels last)"


def _array_to_image(array: np.ndarray, label: str, max_pixels: int | None) -> Image.Image:
    if array.dtype.kind not in "buif":
        raise _fail(label, f"unsupported dtype {array.dtype}; use uint8 (0..255) or float (0..1)")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        hint = ""
        if array.ndim == 3 and array.shape[0] in (1, 3, 4):
            hint = "; for channels-first (CxHxW) data use array.transpose(1, 2, 0)"
        elif array.ndim == 4 and array.shape[0] == 1:
            hint = "; pass a single image, e.g. array[0]"
        raise _fail(label, f"unsupported array shape {tuple(array.shape)}; {_ARRAY_SHAPES_HELP}{hint}")
    height, width = int(array.shape[0]), int(array.shape[1])
    _check_size(label, width, height, max_pixels)

    kind = array.dtype.kind
    if kind == "b":
        pixels = array.astype(np.uint8) * 255
    elif kind == "f":
        values = np.asarray(array, dtype=np.float32)
        if not np.isfinite(values).all():
            raise _fail(label, "the array contains NaN or infinite values")
        lo, hi = float(values.min()), float(values.max())
        if lo < -_FLOAT_TOLERANCE or hi > 1.0 + _FLOAT_TOLERANCE:
            raise _fail(
                label,
                f"float values must lie in [0, 1], got {lo:g}..{hi:g}; for 0..255 data pass array.astype(np.uint8), "
                "for normalised (mean/std) data undo the normalisation first",
            )
        pixels = np.rint(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)
    elif array.dtype == np.uint8:
        pixels = array
    else:
        # Other integer dtypes are accepted when they hold 8-bit values (np.array([...]) defaults to int64).
        lo, hi = int(array.min()), int(array.max())
        if lo < 0 or hi > 255:
            raise _fail(
                label,
                f"integer values must lie in 0..255, got {lo}..{hi}; scale them to uint8 first (16-bit data: "
                "array // 257) or pass floats in [0, 1]",
            )
        pixels = array.astype(np.uint8)
    # fromarray needs a C-contiguous buffer; slices and transposes are not. uint8 2-D/3-D -> "L"/"RGB"/"RGBA".
    image = Image.fromarray(np.ascontiguousarray(pixels))
    return _to_rgb(image, label)


def _tensor_to_array(tensor: Any, label: str) -> np.ndarray:
    try:
        tensor = tensor.detach().cpu()
        if tensor.is_floating_point():
            tensor = tensor.float()  # numpy has no bfloat16
        array = tensor.numpy()
    except Exception as exc:
        raise _fail(label, f"cannot convert the tensor to an array ({type(exc).__name__}: {exc})") from exc
    # torch/torchvision convention is CHW; accept HWC too. Read as CHW whenever the first axis looks like channels.
    if array.ndim == 3 and array.shape[0] in (1, 3, 4):
        array = array.transpose(1, 2, 0)
    return array


# --------------------------------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------------------------------


def load_image(source: ImageSource, *, max_pixels: int | None = MAX_IMAGE_PIXELS_DEFAULT,
               reduce_to: int | None = None) -> Image.Image:
    """Load any supported image source as a new, fully decoded RGB image.

    Files are opened read-only and closed before returning; the format is detected from the content, not the suffix.
    EXIF orientation is applied; alpha (RGBA, LA, PA, palette transparency) is composited onto white; CMYK, YCbCr,
    1-bit and L are converted; 16-bit greyscale is scaled (65535 -> 255), 32-bit int/float greyscale is mapped by
    its range; animations (GIF, WebP, APNG) give their first frame (a PIL image passed in gives its current frame).

    Args:
        source: A path (``str`` or ``os.PathLike``; never a URL or base64 string), encoded image bytes
            (``bytes``/``bytearray``/``memoryview``), a ``PIL.Image.Image`` (left unmodified), a numpy array
            (HxW, HxWx1, HxWx3 or HxWx4; uint8, bool, other integers within 0..255, or float in [0, 1]) or a torch
            tensor (CHW or HWC, same dtypes).
        max_pixels: Refuse images with more than this many pixels (width x height), checked from the header before
            any pixel is decoded. ``None`` disables this check (Pillow's own global guard may still refuse absurd
            sizes).
        reduce_to: For files and bytes: an image whose shorter side is longer than this is reduced (aspect ratio
            kept) so that side is ``reduce_to`` pixels, as early as possible -- JPEGs are decoded at reduced scale,
            other formats reduced right after decoding, before orientation and mode conversion -- so a huge image
            costs one full-size buffer, briefly, instead of several. For callers that only need a small picture
            (CLIP looks at 224-336 pixels). ``None``: full size. Images at or below it are returned as without it.

    Returns:
        A new ``RGB`` image, independent of ``source`` and of any file.

    Raises:
        ImageLoadError: The source cannot be turned into an image: missing, unreadable, empty, a directory, not an
            image, truncated or corrupt, too large, or an array of unsupported shape/dtype/values. The message names
            the source (see :func:`describe_source`) and the reason.
        ValueError: ``max_pixels`` is not a positive int or ``None`` (a programming error, not bad input).
    """
    _validate_max_pixels(max_pixels)
    label = describe_source(source)
    if isinstance(source, Image.Image):
        _check_size(label, source.width, source.height, max_pixels)
        try:
            source.load()  # a lazily opened image may still hit truncated data here
        except Exception as exc:
            raise _fail(
                label, f"image data is truncated, corrupt or unavailable ({type(exc).__name__}: {exc})"
            ) from exc
        return _finish(source, label)
    if reduce_to is not None and (isinstance(reduce_to, bool) or not isinstance(reduce_to, int) or reduce_to < 1):
        raise ValueError(f"reduce_to must be a positive int or None (full size), got {reduce_to!r}")
    if isinstance(source, (str, os.PathLike)):
        return _load_path(source, label, max_pixels, reduce_to)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _load_bytes(source, label, max_pixels, reduce_to)
    if isinstance(source, np.ndarray):
        return _array_to_image(source, label, max_pixels)
    if _is_tensor(source):
        return _array_to_image(_tensor_to_array(source, label), label, max_pixels)
    raise _fail(
        label,
        "unsupported source type; pass a file path, encoded image bytes, a PIL image, a numpy array or a torch tensor "
        "(data URLs and base64 strings must be decoded to bytes first)",
    )


def try_load_image(
    source: ImageSource, *, max_pixels: int | None = MAX_IMAGE_PIXELS_DEFAULT
) -> tuple[Image.Image | None, str | None]:
    """Like :func:`load_image`, but report bad input instead of raising -- for batch jobs that skip bad files.

    Args:
        source: See :func:`load_image`.
        max_pixels: See :func:`load_image`.

    Returns:
        ``(image, None)`` on success, ``(None, message)`` when the source cannot be loaded; the message is the
        :class:`ImageLoadError` text (it names the source and the reason).

    Raises:
        ValueError: Only for an invalid ``max_pixels`` (a programming error); bad *input* never raises.
    """
    _validate_max_pixels(max_pixels)
    try:
        return load_image(source, max_pixels=max_pixels), None
    except ImageLoadError as exc:
        logger.debug("Skipping image: %s", exc)
        return None, str(exc)
