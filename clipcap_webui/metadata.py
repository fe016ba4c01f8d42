"""Generation parameters ("infotext") inside image files: read them, add a ``key: value`` entry, write them back.

The Stable Diffusion WebUIs store the parameters of a generated image as one text (the *infotext*)::

    a castle on a hill
    Negative prompt: blurry
    Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512

in the PNG text chunk ``parameters``, and in JPEG/WebP files as the EXIF ``UserComment`` (``UNICODE`` encoding, i.e.
UTF-16BE after an 8-byte prefix). Their "PNG Info" tab and every "send to" button parse the *last line* as
comma-separated ``key: value`` pairs, values JSON-quoted when they contain ``,``, ``:`` or a newline. This module
speaks that format without importing any WebUI code:

- :func:`quote`, :func:`unquote`, :func:`infotext_param`, :func:`set_infotext_param`: the text itself;
- :func:`read_parameters` (:func:`parameters_from_bytes`), :func:`write_parameters`, :func:`set_file_param`: the
  text inside a PNG, JPEG or WebP file.

Files are rewritten **atomically** (:func:`lib_clipcap.fileio.atomic_write_bytes`: temporary file, fsync, rename) and
**without re-encoding pixels**: only the PNG text chunk, the JPEG APP1/EXIF segment or the WebP ``EXIF`` chunk
changes, so a JPEG loses no quality. The EXIF block written holds exactly the ``UserComment``, as the WebUI writes it.
"""

from __future__ import annotations

import io
import json
import re
import struct
import zlib
from pathlib import Path

from lib_clipcap.errors import ClipCapError
from lib_clipcap.fileio import atomic_write_bytes

__all__ = [
    "MetadataError",
    "PARAMETERS_KEY",
    "infotext_param",
    "parameters_from_bytes",
    "quote",
    "read_parameters",
    "set_file_param",
    "set_infotext_param",
    "unquote",
    "write_parameters",
]

#: PNG text key of the WebUI's generation parameters.
PARAMETERS_KEY = "parameters"

# The hosts' own pattern for one "key: value" entry of the last infotext line (infotext_utils.re_param_code).
_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_EXIF_HEADER = b"Exif\x00\x00"
_UNICODE_PREFIX = b"UNICODE\x00"
_ASCII_PREFIX = b"ASCII\x00\x00\x00"
_USER_COMMENT = 0x9286
_EXIF_IFD_POINTER = 0x8769


class MetadataError(ClipCapError, ValueError):
    """A file's metadata cannot be read or written (not a PNG/JPEG/WebP, corrupt structure, text too long)."""


# ------------------------------------------------------------------------------------------------------ the text
def quote(value: object) -> str:
    """An infotext value as the WebUI writes it: JSON-quoted when it holds ``,``, ``:`` or a newline."""
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def unquote(text: str) -> str:
    """The inverse of :func:`quote` (a value that is not valid JSON is returned as it is, like the WebUI does)."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def _split_last_line(infotext: str) -> tuple[str, str]:
    """``(everything before the parameters line, the parameters line)``; the second is empty when the last line is
    not a parameters line (the WebUI's rule: it has at least three ``key: value`` entries)."""
    text = infotext.strip("\n")
    head, _, last = text.rpartition("\n")
    if len(_PARAM.findall(last)) >= 3:
        return head, last
    return text, ""


def infotext_param(infotext: str | None, key: str) -> str | None:
    """The value of ``key`` on the last line of ``infotext`` (unquoted), or ``None``.

    The last line is read whatever its length, so a one-line text holding only our own entries (written where the
    host wrote no parameters) is read too.
    """
    if not infotext:
        return None
    last = infotext.strip("\n").rpartition("\n")[2]
    for k, v in _PARAM.findall(last):
        if k == key:
            return unquote(v.strip())
    return None


def set_infotext_param(infotext: str | None, key: str, value: str | None) -> str:
    """``infotext`` with ``key: value`` set on its parameters line (replacing an earlier value of ``key``).

    Args:
        infotext: The WebUI's text, or ``None``/empty when there is none (the result is then the single line
            ``key: value``, which :func:`infotext_param` reads back).
        key: Entry name, e.g. ``"ClipCap caption"`` (letters, digits, spaces, ``-``, ``/``).
        value: The value (quoted as needed); ``None`` removes the entry.

    Returns:
        The new text; every other line and entry is kept byte for byte.

    Raises:
        ValueError: ``key`` is not a valid entry name.
    """
    if not re.fullmatch(r"\w[\w \-/]+", key):
        raise ValueError(f"infotext key {key!r} must start with a letter or digit and hold only letters, digits, "
                         "spaces, '-' and '/'")
    text = (infotext or "").strip("\n")
    head, last = _split_last_line(text)
    if not last and "\n" not in text and _only_entries(text):
        head, last = "", text  # a line of our own entries, written where the host wrote no parameters
    for m in _PARAM.finditer(last):
        if m.group(1) == key:
            last = (last[:m.start()] + last[m.end():]).strip(" ,")
            break
    if value is not None:
        entry = f"{key}: {quote(value)}"
        last = f"{last}, {entry}" if last else entry
    return "\n".join(part for part in (head, last) if part)


def _only_entries(line: str) -> bool:
    """True when ``line`` is nothing but ``key: value`` entries."""
    rebuilt = "".join(m.group(0) for m in _PARAM.finditer(line))
    return bool(rebuilt.strip()) and rebuilt.strip() == line.strip()


# ----------------------------------------------------------------------------------------------------- the files
def _format(data: bytes) -> str:
    if data.startswith(_PNG_SIGNATURE):
        return "png"
    if data.startswith(b"\xff\xd8"):
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    raise MetadataError("not a PNG, JPEG or WebP file")


def read_parameters(path: str | Path, *, key: str = PARAMETERS_KEY) -> str | None:
    """The generation parameters stored in an image file, or ``None`` when it has none.

    PNG: the text chunk ``key`` (tEXt, zTXt or iTXt, wherever it sits); JPEG/WebP: the EXIF ``UserComment``.

    Raises:
        OSError: the file cannot be read.
        MetadataError: it is not a PNG, JPEG or WebP file, or its structure is corrupt.
    """
    try:
        return parameters_from_bytes(Path(path).read_bytes(), key=key)
    except MetadataError as e:
        raise MetadataError(f"{path}: {e}") from None  # a batch of files: say which one


def parameters_from_bytes(data: bytes, *, key: str = PARAMETERS_KEY) -> str | None:
    """:func:`read_parameters` for the bytes of an image file (e.g. an image an API returned)."""
    kind = _format(data)
    if kind == "png":
        for ctype, body in _png_chunks(data):
            text = _png_text(ctype, body, key)
            if text is not None:
                return text
        return None
    exif = _jpeg_exif(data) if kind == "jpeg" else _webp_exif(data)
    return _user_comment(exif) if exif else None


def write_parameters(path: str | Path, text: str, *, key: str = PARAMETERS_KEY) -> None:
    """Store ``text`` as the file's generation parameters, atomically and without re-encoding the image.

    PNG: the text chunk ``key`` is replaced in place (or added before the image data), as tEXt when the text is
    Latin-1 and iTXt (UTF-8) otherwise, like Pillow writes it. JPEG/WebP: the EXIF block is replaced by one holding
    ``text`` as the ``UserComment`` (``key`` is not used: EXIF has one comment), as the hosts' own image saving
    writes it (piexif with a UserComment alone), so a corrupt or forged EXIF block is replaced, not parsed.

    Why not piexif here (both hosts pin 1.1.3): tried, it needed more code than it saved. ``piexif.insert`` drops the
    JFIF segment (the DPI) and doubles an EXIF segment that follows another one, writes animated WebP files Pillow
    cannot open, ``piexif.load`` fails on simple WebP files, and it allocates a format string per value a tag claims
    (a forged count of 2**32 - 1 in an uploaded image: about 100 GB) where Pillow, which reads here, checks sizes.

    Raises:
        OSError: the file cannot be read or replaced (it is then unchanged).
        MetadataError: not a PNG/JPEG/WebP file, a corrupt structure, or (JPEG) a text too long for one EXIF segment.
    """
    path = Path(path)
    data = path.read_bytes()
    try:
        kind = _format(data)
        if kind == "png":
            new = _png_with_text(data, key, text)
        elif kind == "jpeg":
            new = _jpeg_with_exif(data, _exif_user_comment(text))
        else:
            new = _webp_with_exif(data, _exif_user_comment(text))
    except MetadataError as e:
        raise MetadataError(f"{path}: {e}") from None  # a batch of files: say which one
    atomic_write_bytes(path, new)


def set_file_param(path: str | Path, key: str, value: str | None) -> str:
    """Set ``key: value`` in the generation parameters of an image file (see :func:`set_infotext_param`).

    Returns:
        The new parameters text.

    Raises:
        OSError, MetadataError: as :func:`read_parameters` / :func:`write_parameters`.
    """
    text = set_infotext_param(read_parameters(path), key, value)
    write_parameters(path, text)
    return text


# ---------------------------------------------------------------------------------------------------------- PNG
def _png_chunks(data: bytes):
    """``(type, body)`` of every chunk. Raises MetadataError on a truncated file."""
    pos = len(_PNG_SIGNATURE)
    while pos < len(data):
        if pos + 8 > len(data):
            raise MetadataError("truncated PNG chunk header")
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 12 + length
        if end > len(data):
            raise MetadataError(f"truncated PNG chunk {ctype!r}")
        yield ctype, data[pos + 8:pos + 8 + length]
        pos = end
        if ctype == b"IEND":
            return


def _png_text(ctype: bytes, body: bytes, key: str) -> str | None:
    """The text of a tEXt/zTXt/iTXt chunk whose keyword is ``key``."""
    if ctype not in (b"tEXt", b"zTXt", b"iTXt"):
        return None
    keyword, _, rest = body.partition(b"\x00")
    if keyword.decode("latin-1") != key:
        return None
    try:
        if ctype == b"tEXt":
            return rest.decode("latin-1")
        if ctype == b"zTXt":
            return zlib.decompress(rest[1:]).decode("latin-1")
        if len(rest) < 2:  # the compression flag and method bytes
            raise IndexError("iTXt chunk too short")
        compressed = rest[0]
        _lang, _, rest = rest[2:].partition(b"\x00")
        _translated, _, text = rest.partition(b"\x00")
        return (zlib.decompress(text) if compressed else text).decode("utf-8")
    except (IndexError, zlib.error, UnicodeDecodeError) as e:
        raise MetadataError(f"corrupt PNG text chunk {key!r}: {e}") from None


def _png_chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body) & 0xFFFFFFFF)


def _png_with_text(data: bytes, key: str, text: str) -> bytes:
    try:
        chunk = _png_chunk(b"tEXt", key.encode("latin-1") + b"\x00" + text.encode("latin-1"))
    except UnicodeEncodeError:
        chunk = _png_chunk(b"iTXt", key.encode("latin-1") + b"\x00\x00\x00\x00\x00" + text.encode("utf-8"))
    out = [_PNG_SIGNATURE]
    placed = False
    for ctype, body in _png_chunks(data):
        if _png_text(ctype, body, key) is not None:
            if not placed:  # replace the first copy in place, drop any other
                out.append(chunk)
                placed = True
            continue
        if ctype == b"IDAT" and not placed:  # readers that stop at the image data still see it
            out.append(chunk)
            placed = True
        out.append(_png_chunk(ctype, body))
    return b"".join(out)


# --------------------------------------------------------------------------------------------------------- EXIF
def _exif_user_comment(text: str) -> bytes:
    """A TIFF/EXIF block holding only ``UserComment`` = ``text`` (UNICODE: UTF-16BE), big-endian like piexif writes.

    Layout: header (8) | IFD0: 1 entry, Exif-IFD pointer (18) | Exif IFD: 1 entry, UserComment (18) | comment.
    """
    comment = _UNICODE_PREFIX + text.encode("utf-16-be")
    exif_ifd_at = 8 + 18
    comment_at = exif_ifd_at + 18
    ifd0 = struct.pack(">H", 1) + struct.pack(">HHII", _EXIF_IFD_POINTER, 4, 1, exif_ifd_at) + struct.pack(">I", 0)
    exif_ifd = struct.pack(">H", 1) + struct.pack(">HHII", _USER_COMMENT, 7, len(comment), comment_at) \
        + struct.pack(">I", 0)
    return b"MM\x00\x2a" + struct.pack(">I", 8) + ifd0 + exif_ifd + comment


def _user_comment(exif: bytes) -> str | None:
    """The UserComment of an EXIF block (``Exif\\0\\0`` prefix optional), decoded as the WebUI does."""
    from PIL import Image

    if exif.startswith(_EXIF_HEADER):
        exif = exif[len(_EXIF_HEADER):]
    info = Image.Exif()
    try:
        info.load(exif)
        raw = info.get_ifd(_EXIF_IFD_POINTER).get(_USER_COMMENT)
    except Exception as e:  # Pillow raises a zoo of errors on bad EXIF; this function's contract is one error
        raise MetadataError(f"corrupt EXIF block: {e}") from None
    if raw is None:
        return None
    if isinstance(raw, str):
        return raw
    if isinstance(raw, tuple):
        raw = bytes(raw)
    if raw.startswith(_UNICODE_PREFIX):
        body = raw[len(_UNICODE_PREFIX):]
        return body.decode("utf-16-be", errors="replace")
    if raw.startswith(_ASCII_PREFIX):
        return raw[len(_ASCII_PREFIX):].decode("ascii", errors="replace")
    return raw.decode("utf-8", errors="ignore").strip("\x00")


# --------------------------------------------------------------------------------------------------------- JPEG
def _jpeg_segments(data: bytes):
    """``(marker, start, end)`` of each segment before the scan data, then ``(None, start, len)`` for the rest."""
    pos = 2
    while pos < len(data):
        if data[pos] != 0xFF:
            raise MetadataError("corrupt JPEG: expected a marker")
        marker = data[pos + 1] if pos + 1 < len(data) else None
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker is None or marker == 0xDA or marker == 0xD9:  # start of scan / end: the rest is image data
            yield None, pos, len(data)
            return
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            yield marker, pos, pos + 2
            pos += 2
            continue
        if pos + 4 > len(data):
            raise MetadataError("truncated JPEG segment")
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        end = pos + 2 + length
        if end > len(data) or length < 2:
            raise MetadataError("truncated JPEG segment")
        yield marker, pos, end
        pos = end


def _jpeg_exif(data: bytes) -> bytes | None:
    for marker, start, end in _jpeg_segments(data):
        if marker == 0xE1 and data[start + 4:start + 10] == _EXIF_HEADER:
            return data[start + 4:end]
    return None


def _jpeg_with_exif(data: bytes, tiff: bytes) -> bytes:
    payload = _EXIF_HEADER + tiff
    if len(payload) + 2 > 0xFFFF:
        raise MetadataError(f"the parameters are too long for a JPEG EXIF segment ({len(payload):,} bytes, limit "
                            "65,533); use PNG")
    segment = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    out = [data[:2]]
    placed = False
    for marker, start, end in _jpeg_segments(data):
        if marker == 0xE1 and data[start + 4:start + 10] == _EXIF_HEADER:
            continue  # the old EXIF block
        if not placed and marker != 0xE0:  # after SOI and the JFIF APP0 segment, where piexif puts it
            out.append(segment)
            placed = True
        out.append(data[start:end])
    if not placed:
        out.append(segment)
    return b"".join(out)


# --------------------------------------------------------------------------------------------------------- WebP
def _webp_chunks(data: bytes):
    pos = 12
    while pos + 8 <= len(data):
        fourcc, size = struct.unpack("<4sI", data[pos:pos + 8])
        end = pos + 8 + size + (size & 1)
        if pos + 8 + size > len(data):
            raise MetadataError(f"truncated WebP chunk {fourcc!r}")
        yield fourcc, data[pos + 8:pos + 8 + size]
        pos = end


def _webp_exif(data: bytes) -> bytes | None:
    for fourcc, body in _webp_chunks(data):
        if fourcc == b"EXIF":
            return body
    return None


def _webp_chunk(fourcc: bytes, body: bytes) -> bytes:
    return fourcc + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) & 1 else b"")


def _webp_with_exif(data: bytes, tiff: bytes) -> bytes:
    chunks = [(f, b) for f, b in _webp_chunks(data) if f != b"EXIF"]
    if not chunks:
        raise MetadataError("corrupt WebP: no chunks")
    if chunks[0][0] != b"VP8X":  # simple format: an extended header is needed to carry EXIF
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            (width, height), alpha = im.size, im.mode in ("RGBA", "LA")
        vp8x = struct.pack("<B3x", 0x10 if alpha else 0) + (width - 1).to_bytes(3, "little") \
            + (height - 1).to_bytes(3, "little")
        chunks.insert(0, (b"VP8X", vp8x))
    flags = chunks[0][1][0] | 0x08  # EXIF present
    chunks[0] = (b"VP8X", bytes([flags]) + chunks[0][1][1:])
    at = next((i for i, (f, _) in enumerate(chunks) if f == b"XMP "), len(chunks))  # EXIF goes before XMP
    chunks.insert(at, (b"EXIF", tiff))
    body = b"WEBP" + b"".join(_webp_chunk(f, b) for f, b in chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body
