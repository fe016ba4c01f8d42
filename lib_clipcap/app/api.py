"""HTTP API under ``/clipcap/v1``: caption an image, list/unload models, run batch-tagging jobs.

The same router serves the standalone server (``python -m lib_clipcap serve``) and the WebUI (the host adapter calls
:func:`mount_api` from ``on_app_started``). It works with fastapi 0.94 + pydantic 1 (A1111) and current fastapi +
pydantic 2 (Forge, standalone): request bodies are checked against :mod:`lib_clipcap.options_table` (one set of rules
and messages whatever the pydantic version), and pydantic models only describe the schema and the responses. The
batch-tagging and caption-review routes belong to their packages (:mod:`lib_clipcap.batch.routes`,
:mod:`lib_clipcap.review.routes`); :func:`create_router` adds them, handing them this module's helpers.

Every error is a JSON body ``{"error": {"type": ..., "message": ...}}`` with a 4xx status for bad input (5xx only
for server-side trouble), so clients can tell what to fix; a bad request never disturbs the next one. Bodies are
strict JSON: ``NaN`` and ``Infinity`` are refused (422, naming the field), since no JSON answer could quote them.
Model calls go through the :class:`~lib_clipcap.app.service.ModelManager` (one at a time, under its lock) in a worker
thread, so the event loop keeps answering other requests meanwhile. Work before the lock is bounded too: at most
``max_decodes`` uploads are decoded at once (:class:`DecodeSlots`), huge ones are reduced while decoding, and their
memory is handed back afterwards.

Example::

    curl -s http://127.0.0.1:7861/clipcap/v1/caption -H 'Content-Type: application/json' \\
         -d '{"image": "'"$(base64 -w0 photo.jpg)"'", "decoding": "beam", "num_candidates": 3}'
"""

# No ``from __future__ import annotations``: pydantic 1 and FastAPI 0.94 resolve annotations at class/route creation.

import base64
import binascii
import asyncio
import io
import json
import logging
import math
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any, Optional

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field, create_model
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import compat
from ..errors import (
    CheckpointError,
    ClipCapError,
    DecodingError,
    ImageLoadError,
    MissingFileError,
    UnknownModelError,
)
from ..options_table import OPTIONS, OptionError, caption_kwargs, pick_default_model, prompt_settings
from .security import RequestPolicy, is_json_media_type

log = logging.getLogger(__name__)

__all__ = [
    "API_PREFIX",
    "ApiError",
    "CaptionRequest",
    "CaptionResponse",
    "DecodeSlots",
    "create_router",
    "credentials_ok",
    "mount_api",
    "parse_credentials",
    "read_json",
    "request_guard",
]

API_PREFIX = "/clipcap/v1"
DEFAULT_MAX_IMAGE_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_PIXELS = 8192 * 8192
#: Images decoded at once per server (see :class:`DecodeSlots`): two keep both of a small machine's cores busy.
DEFAULT_MAX_DECODES = 2
#: Uploaded images whose shorter side is longer are reduced to it while decoding: CLIP looks at 224-336 pixels, so
#: 1024 leaves every model a clean downscale while a huge image never lives at full size past its decoding.
DEFAULT_DECODE_SIZE = 1024
_JSON_OVERHEAD = 64 * 1024  # room for the options around the base64 image


# ------------------------------------------------------------------------------------------------------------ errors
class ApiError(Exception):
    """An error answered as ``{"error": {"type": type, "message": message, **extra}}`` with ``status``."""

    def __init__(self, status: int, type: str, message: str, *, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message
        self.headers = headers
        self.extra = extra

    def response(self) -> JSONResponse:
        # Every extra goes through _jsonable: a value JSON cannot hold (NaN, bytes...) must never turn this error
        # into a plain-text 500 while it is being encoded.
        extra = {k: _jsonable(v) for k, v in self.extra.items()}
        return JSONResponse({"error": {"type": self.type, "message": str(self.message), **extra}},
                            status_code=self.status, headers=self.headers)


def _from_library_error(e: Exception) -> ApiError:
    """Map a library exception to the HTTP error a client should see."""
    if isinstance(e, ApiError):
        return e
    if isinstance(e, UnknownModelError):
        from ..registry import list_models

        return ApiError(404, "unknown_model", str(e), valid=list_models())
    if isinstance(e, OptionError):
        return ApiError(422, "invalid_option", str(e), field=e.field, value=_jsonable(e.value))
    from ..tags.selection import TagOptionError  # torch-free

    if isinstance(e, TagOptionError):
        return ApiError(422, "invalid_option", str(e), field=e.setting, value=_jsonable(e.value))
    if isinstance(e, DecodingError):
        return ApiError(422, "invalid_option", str(e))
    if isinstance(e, ImageLoadError):
        return ApiError(400, "not_an_image", str(e))
    if isinstance(e, MissingFileError):
        return ApiError(503, "model_files_missing", str(e))
    if isinstance(e, CheckpointError):
        return ApiError(503, "model_error", str(e))
    if isinstance(e, ClipCapError):
        return ApiError(400, "bad_request", str(e))
    log.exception("clipcap API: unexpected error")
    return ApiError(500, "internal_error", f"{type(e).__name__}: {e}")


def _jsonable(value: Any) -> Any:
    """``value`` if strict JSON can hold it (no NaN or Infinity: responses are encoded with ``allow_nan=False``),
    else its ``repr``."""
    try:
        json.dumps(value, allow_nan=False)
        return value
    except (TypeError, ValueError):
        return repr(value)


class _ClipCapRoute(APIRoute):
    """Route class that turns every exception into the API's JSON error body (a router cannot add app handlers)."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def wrapped(request: Request):
            try:
                return await handler(request)
            except RequestValidationError as e:
                first = (e.errors() or [{}])[0]
                where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
                return ApiError(422, "invalid_request", f"{where or 'request'}: {first.get('msg', 'invalid')}",
                                field=where).response()
            except StarletteHTTPException as e:
                return ApiError(e.status_code, "http_error", str(e.detail),
                                headers=getattr(e, "headers", None)).response()
            except Exception as e:  # every failure answers JSON; the server keeps going
                return _from_library_error(e).response()

        return wrapped


# ------------------------------------------------------------------------------------------------------------- auth
def parse_credentials(spec: str | None) -> dict[str, str] | None:
    """Parse the WebUI's ``--api-auth`` format, ``"user:pass,user2:pass2"``, into ``{user: password}``.

    Passwords may contain ``:`` (the first one separates). ``None``/empty gives ``None`` (no auth).

    Raises:
        ClipCapError: An entry has no ``:``; the message names the entry's user part only.
    """
    if not spec or not spec.strip():
        return None
    creds: dict[str, str] = {}
    for entry in spec.split(","):
        entry = entry.strip()
        if not entry:
            continue
        user, sep, password = entry.partition(":")
        if not sep or not user:
            raise ClipCapError(f"credentials entry {user or entry!r} must look like user:password")
        creds[user] = password
    return creds or None


def credentials_ok(authorization: str | None, credentials: Mapping[str, str]) -> bool:
    """Check an ``Authorization: Basic ...`` header against every ``{user: password}`` entry in constant time.

    Every entry is compared (no early exit) with :func:`secrets.compare_digest`, so timing reveals neither which user
    exists nor how much of a password matched.
    """
    if not authorization or not authorization[:6].lower() == "basic ":
        return False
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return False
    user, sep, password = decoded.partition(":")
    if not sep:
        return False
    ok = False
    u_b, p_b = user.encode("utf-8"), password.encode("utf-8")
    for cu, cp in credentials.items():
        match_u = secrets.compare_digest(cu.encode("utf-8"), u_b)
        match_p = secrets.compare_digest(cp.encode("utf-8"), p_b)
        ok |= match_u & match_p
    return ok


UNAUTHORIZED_HEADERS = {"WWW-Authenticate": 'Basic realm="clipcap", charset="UTF-8"'}


def _auth_dependency(credentials: Mapping[str, str]) -> Callable:
    async def require_basic_auth(request: Request) -> None:
        if not credentials_ok(request.headers.get("authorization"), credentials):
            raise ApiError(401, "unauthorized", "HTTP Basic authentication required (the server's --api-auth / "
                                                "--auth credentials)", headers=dict(UNAUTHORIZED_HEADERS))

    return require_basic_auth


def request_guard(policy: RequestPolicy) -> Callable:
    """A FastAPI dependency that refuses what :meth:`RequestPolicy.check <lib_clipcap.app.security.RequestPolicy.check>`
    refuses (403 for a foreign host or origin, 415 for a body that is not JSON), before auth and before the route
    reads anything."""
    async def check_request(request: Request) -> None:
        refusal = policy.check(request.method, request.headers)
        if refusal is not None:
            raise ApiError(refusal.status, refusal.type, refusal.message)

    return check_request


# ------------------------------------------------------------------------------------------------------------ models
def _python_type(opt) -> Any:
    t = {int: int, float: float, str: str, bool: bool, list: list[str]}[opt.type]
    # typing.Optional, not ``t | None``: a runtime type handed to create_model, which pydantic 1 (A1111) and 2 read
    # alike (the one place the code base keeps it; tests/test_repo_hygiene.py allows it here only).
    return Optional[t] if opt.nullable else t


def _request_fields() -> dict[str, tuple[Any, Any]]:
    fields: dict[str, tuple[Any, Any]] = {
        "image": (str, Field(..., description="The image: base64 (standard or URL-safe alphabet) or a data URL "
                                              "(data:image/png;base64,...). JPEG, PNG, WebP, BMP, GIF, TIFF...")),
    }
    for o in OPTIONS:
        desc = o.help
        if o.choices:
            desc += f" One of: {', '.join(o.choices)}."
        if o.minimum is not None or o.maximum is not None:
            desc += f" Range: {o.minimum if o.minimum is not None else '-inf'}..{o.maximum if o.maximum is not None else 'inf'}"
            desc += " (exclusive minimum)." if o.exclusive_minimum else "."
        default = list(o.default) if o.type is list else o.default
        if o.key == "model":
            default, desc = None, desc + " Default: the server's default model."
            fields[o.api_field] = (Optional[str], Field(default, description=desc))
        else:
            fields[o.api_field] = (_python_type(o), Field(default, description=desc))
    return fields


#: Schema of ``POST /caption`` bodies, generated from the options table (documentation and clients; the route checks
#: bodies with the table's own rules so that messages are the same under pydantic 1 and 2).
CaptionRequest = create_model("CaptionRequest", **_request_fields())  # type: ignore[call-overload]


class CandidateOut(BaseModel):
    text: str
    score: float | None = Field(None, description="decoder score: mean token log-probability")
    clip_score: float | None = Field(None, description="CLIP-S of the candidate (when re-ranked)")
    grammar: float | None = Field(None, description="grammar-head probability (clip+grammar re-ranking)")


class Timing(BaseModel):
    decode_ms: float = Field(..., description="base64 and image decoding")
    caption_ms: float = Field(..., description="waiting for the model and captioning (includes loading it)")
    total_ms: float


class ModifierOut(BaseModel):
    tag: str
    category: str
    score: float | None = Field(None, description="the tag's probability within its category")


class NegativeOut(BaseModel):
    tag: str
    score: float | None = Field(None, description="CLIP cosine with the image (lowest first)")


class PromptOut(BaseModel):
    text: str = Field(..., description="the prompt: the caption, then the modifiers")
    caption: str
    style: str = Field(..., description="fast or best")
    clip_s: float | None = Field(None, description="CLIP-S of the prompt with the image")
    tokens: int = Field(..., description="the prompt's length in CLIP tokens")
    negative: str = Field(..., description="negative-prompt suggestion: the negative modifiers the image matches "
                                           "least, comma-separated")
    modifiers: list[ModifierOut] = []
    negative_modifiers: list[NegativeOut] = []


class CaptionResponse(BaseModel):
    caption: str
    score: float | None = None
    candidates: list[CandidateOut] = []
    keywords: list[str] | None = Field(None, description="SBG's keywords (SBG models only)")
    prompt: PromptOut | None = Field(None, description="with prompt_style fast or best: the prompt, its modifiers "
                                                       "with their scores and the negative-prompt suggestion")
    model: str
    timing: Timing


class ModelInfo(BaseModel):
    name: str
    kind: str
    description: str
    source: str = Field(..., description="hub, manual or bundled")
    installed: bool = Field(..., description="the checkpoint file is present locally")
    loaded: bool = Field(..., description="the model is in memory")
    default: bool = False


class ModelsResponse(BaseModel):
    models: list[ModelInfo]
    default: str
    loaded: list[str]


class UnloadResponse(BaseModel):
    unloaded: list[str]


class ErrorBody(BaseModel):
    type: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


_ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 413, 415, 422, 503)}


# ------------------------------------------------------------------------------------------------------ input checks
async def read_json(request: Request, limit: int) -> dict[str, Any]:
    """The request's JSON object, refusing bodies over ``limit`` bytes before reading them whole.

    A body is parsed only when the request says ``Content-Type: application/json``: forms and text bodies are what
    any web page can send cross-site without a preflight, so they are refused (415) whatever they hold (the route's
    :func:`request_guard` says the same earlier; this keeps the rule for routers built without one).

    Raises:
        ApiError: 415 (not JSON), 413 (too large), 400 (malformed JSON), 422 (not an object, or a number that is not
            finite: ``NaN``, ``Infinity``, ``1e999``; the error names the field and the number as typed).
    """
    content_type = request.headers.get("content-type")
    length = request.headers.get("content-length")
    if content_type and not is_json_media_type(content_type):
        raise ApiError(415, "unsupported_media_type", f"the request body must be JSON sent with 'Content-Type: "
                                                      f"application/json' (got {content_type.split(';')[0]!r})")
    if length and length.isdigit() and int(length) > limit:
        raise ApiError(413, "request_too_large", f"request body of {int(length):,} bytes exceeds the limit of "
                                                 f"{limit:,} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "request_too_large", f"request body exceeds the limit of {limit:,} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return {}
    if not content_type:
        raise ApiError(415, "unsupported_media_type", "the request has a body but no 'Content-Type: "
                                                      "application/json' header; send JSON with that header")
    try:
        # NaN, Infinity and numbers too large for a float (1e999) are not JSON numbers, but Python's parser takes
        # them; they are marked here and refused below with the field they are in.
        data = json.loads(raw, parse_constant=_NonFinite, parse_float=_parse_float)
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, "invalid_json", f"the request body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ApiError(422, "invalid_request", f"the request body must be a JSON object, not {type(data).__name__}")
    bad = _find_non_finite(data, "")
    if bad is not None:
        where, token = bad
        raise ApiError(422, "invalid_number", f"field {where!r}: {token} is not a finite number (NaN and Infinity "
                                              f"are not JSON numbers); give a finite number", field=where,
                       value=token)
    return data


class _NonFinite(str):
    """A number token of the body that is not finite (``NaN``, ``-Infinity``, ``1e999``), as it was typed."""


def _parse_float(token: str) -> Any:
    value = float(token)
    return value if math.isfinite(value) else _NonFinite(token)


def _find_non_finite(value: Any, where: str) -> tuple[str, str] | None:
    """``(field path, token)`` of the first non-finite number in a parsed body (``temperature``, ``replace[0][1]``)."""
    if isinstance(value, _NonFinite):
        return where or "body", str(value)
    if isinstance(value, dict):
        for k, v in value.items():
            found = _find_non_finite(v, f"{where}.{k}" if where else str(k))
            if found:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = _find_non_finite(v, f"{where}[{i}]")
            if found:
                return found
    return None


def _check_fields(data: Mapping[str, Any], allowed: list[str]) -> None:
    unknown = [k for k in data if k not in allowed]
    if unknown:
        raise ApiError(422, "invalid_option", f"unknown field {unknown[0]!r}; valid fields: {', '.join(allowed)}",
                       field=unknown[0], value=_jsonable(data[unknown[0]]))


def decode_image_data(value: Any, *, max_bytes: int) -> bytes:
    """Bytes of a base64 string or ``data:`` URL, refusing more than ``max_bytes`` decoded bytes.

    Raises:
        ApiError: 422 when missing/not a string, 400 for bad base64, 413 when too large.
    """
    if value is None or value == "":
        raise ApiError(422, "invalid_option", "field 'image' is required: a base64 string or a data URL",
                       field="image")
    if not isinstance(value, str):
        raise ApiError(422, "invalid_option", f"field 'image' must be a base64 string or a data URL, not "
                                              f"{type(value).__name__}", field="image")
    text = value.strip()
    if text[:5].lower() == "data:":
        header, sep, text = text.partition(",")
        if not sep or ";base64" not in header.lower():
            raise ApiError(400, "invalid_base64", "a data URL must look like data:image/png;base64,<data>")
    text = "".join(text.split())  # line breaks from `base64` without -w0
    if len(text) * 3 // 4 > max_bytes + 3:
        raise ApiError(413, "image_too_large", f"the image is about {len(text) * 3 // 4:,} bytes; the limit is "
                                               f"{max_bytes:,} bytes")
    urlsafe = "-" in text or "_" in text
    text += "=" * (-len(text) % 4)
    try:
        raw = (base64.urlsafe_b64decode(text) if urlsafe else base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError) as e:
        raise ApiError(400, "invalid_base64", f"field 'image' is not valid base64 ({e})") from None
    if not raw:
        raise ApiError(400, "invalid_base64", "field 'image' decodes to no bytes")
    if len(raw) > max_bytes:
        raise ApiError(413, "image_too_large", f"the image is {len(raw):,} bytes; the limit is {max_bytes:,} bytes")
    return raw


def open_image(raw: bytes, *, max_pixels: int, reduce_to: int | None = None):
    """Decode image bytes safely (:func:`lib_clipcap.images.load_image`), with 413 for too many pixels.

    Args:
        raw: The encoded image.
        max_pixels: Refused above this many pixels (from the header, before decoding).
        reduce_to: Reduce images whose shorter side is longer, as early as the format allows (see
            :func:`~lib_clipcap.images.load_image`); ``None``: full size.
    """
    from PIL import Image, UnidentifiedImageError

    from ..images import load_image

    try:  # header only: lets a pixel-count refusal be a 413 rather than a generic "not an image"
        with Image.open(io.BytesIO(raw)) as probe:
            width, height = probe.size
    except Image.DecompressionBombError as e:
        raise ApiError(413, "image_too_large", f"the image has too many pixels: {e}") from None
    except UnidentifiedImageError:
        raise ApiError(400, "not_an_image", "the data is not an image in a format this server reads (JPEG, PNG, "
                                            "WebP, BMP, GIF, TIFF...), or its header is corrupt") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise ApiError(400, "not_an_image", f"the image header cannot be read ({e})") from None
    if width * height > max_pixels:
        raise ApiError(413, "image_too_large", f"the image is {width}x{height} = {width * height:,} pixels; the "
                                               f"limit is {max_pixels:,} pixels")
    try:
        return load_image(raw, max_pixels=max_pixels, reduce_to=reduce_to)
    except ImageLoadError as e:
        raise ApiError(400, "not_an_image", str(e)) from None


class DecodeSlots:
    """At most ``limit`` images decoded at once by one router, whatever the number of requests; the rest wait.

    Decoding is where a request's memory goes (an 8192x8192 PNG of 200 KB is 200 MB of pixels), and it happens
    before the model's lock, so without a bound a burst of requests multiplies it. Waiting happens on the event loop
    (an ``asyncio.Semaphore``), not in worker threads, so waiting requests hold no thread. The semaphore is made on
    first use in the running loop (asyncio primitives belong to one loop; a test client may run several in turn).
    """

    def __init__(self, limit: int) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"max_decodes must be a positive integer, got {limit!r}")
        self.limit = limit
        self._sem: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` in the thread pool, once a slot is free."""
        loop = asyncio.get_running_loop()
        if self._sem is None or self._loop is not loop:
            self._sem, self._loop = asyncio.Semaphore(self.limit), loop
        async with self._sem:
            return await run_in_threadpool(fn, *args, **kwargs)


def _resolve_model(name: Any, default: str) -> str:
    from ..registry import get_model

    if name is None or name == "":
        name = default
    if not isinstance(name, str):
        raise ApiError(422, "invalid_option", f"field 'model' must be a string, not {type(name).__name__}",
                       field="model")
    return get_model(name).name  # UnknownModelError -> 404 listing the valid names


def _candidate_dict(c: Any) -> dict[str, Any]:
    return {"text": c.text, "score": _finite(c.score), "clip_score": _finite(getattr(c, "clip_score", None)),
            "grammar": _finite(getattr(c, "grammar", None))}


def _prompt_dict(p: Any) -> dict[str, Any]:
    d = p.to_dict()
    d["clip_s"] = _finite(d["clip_s"])
    for m in d["modifiers"] + d["negative_modifiers"]:
        m["score"] = _finite(m["score"])
    return d


def _finite(x: Any) -> float | None:
    import math

    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


# ------------------------------------------------------------------------------------------------------------ router
#: The 503 of the batch routes when no job manager was given (the standalone server's wording; hosts pass their own).
BATCH_UNAVAILABLE = ("batch tagging is not enabled on this server: no folders are allowed for it; start the server "
                     "with --batch-root FOLDER to allow one")


def create_router(manager: Any, *, credentials: Mapping[str, str] | None = None, job_manager: Any = None,
                  max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS,
                  default_model: str | None = None, request_policy: RequestPolicy | None = None,
                  batch_unavailable: str = BATCH_UNAVAILABLE, max_decodes: int = DEFAULT_MAX_DECODES,
                  decode_size: int | None = DEFAULT_DECODE_SIZE) -> APIRouter:
    """Build the ``/clipcap/v1`` router.

    Args:
        manager: The :class:`~lib_clipcap.app.service.ModelManager` every model call goes through.
        credentials: ``{user: password}`` for HTTP Basic auth on every route (e.g. :func:`parse_credentials` of the
            WebUI's ``--api-auth``); ``None`` or empty: no auth.
        job_manager: A :class:`lib_clipcap.batch.jobs.JobManager` for the ``/batch`` routes; ``None``: those routes
            answer 503 saying batch tagging is not enabled.
        max_image_bytes: Largest accepted image file, in bytes (413 above).
        max_pixels: Largest accepted image, in pixels (413 above; checked before decoding pixels).
        default_model: Model used when a request names none; default: :func:`options_table.pick_default_model` for
            the manager's models folder (the demo model when the table's default is not installed), computed once.
        request_policy: Host, origin and content-type rules checked before every route (see
            :mod:`lib_clipcap.app.security`); default: only the server's own origin, any ``Host`` (the bound address is
            unknown here: servers pass :meth:`RequestPolicy.for_bind`).
        batch_unavailable: The 503 message of the batch routes when ``job_manager`` is ``None``: it should name the
            setting that allows folders.
        max_decodes: Images decoded at once by this router's requests; the others wait (see :class:`DecodeSlots`).
        decode_size: Uploaded images whose shorter side is longer are reduced to it while decoding (see
            :data:`DEFAULT_DECODE_SIZE`); ``None``: decode at full size.

    Returns:
        An ``APIRouter`` with prefix ``/clipcap/v1``; add it with ``app.include_router`` or :func:`mount_api`.
    """
    deps = [Depends(request_guard(request_policy or RequestPolicy()))]
    if credentials:
        deps.append(Depends(_auth_dependency(dict(credentials))))
    router = APIRouter(prefix=API_PREFIX, tags=["clipcap"], route_class=_ClipCapRoute, dependencies=deps)
    body_limit = max_image_bytes * 4 // 3 + _JSON_OVERHEAD
    decode_slots = DecodeSlots(max_decodes)
    caption_fields = ["image"] + [o.api_field for o in OPTIONS]
    state: dict[str, Any] = {"default": default_model}

    def current_default() -> str:
        if state["default"] is None:
            state["default"] = pick_default_model(models_dir=getattr(manager, "models_dir", None))[0]
        return state["default"]

    caption_schema = compat.model_json_schema(CaptionRequest)
    caption_schema.pop("title", None)

    @router.post("/caption", response_model=CaptionResponse, responses=_ERRORS, summary="Caption one image",
                 openapi_extra={"requestBody": {"required": True,
                                                "content": {"application/json": {"schema": caption_schema}}}})
    async def caption(request: Request) -> Any:
        t0 = time.perf_counter()
        data = await read_json(request, body_limit)
        _check_fields(data, caption_fields)
        model = _resolve_model(data.get("model"), current_default())
        style, prompt_kw = prompt_settings(data)
        kwargs = caption_kwargs({k: v for k, v in data.items()
                                 if k not in ("image", "model", "prompt_style", "prompt_max_tokens")})
        raw = decode_image_data(data.pop("image", None), max_bytes=max_image_bytes)
        image = await decode_slots.run(open_image, raw, max_pixels=max_pixels, reduce_to=decode_size)
        del raw  # the encoded bytes are not needed while the request waits for the model
        t1 = time.perf_counter()
        prompt = None
        if style == "sentence":
            results = await run_in_threadpool(manager.caption, image, model=model, **kwargs)
            res = results[0]
        else:
            res, prompt = (await run_in_threadpool(manager.prompt, image, model=model, style=style, prompt=prompt_kw,
                                                   **kwargs))[0]
        del image
        t2 = time.perf_counter()
        if getattr(res, "error", None):
            raise ApiError(400, "not_an_image", str(res.error))
        return {
            "caption": res.text,
            "score": _finite(res.score),
            "candidates": [_candidate_dict(c) for c in res.candidates],
            "keywords": list(res.keywords) if getattr(res, "keywords", None) else None,
            "prompt": _prompt_dict(prompt) if prompt is not None else None,
            "model": model,
            "timing": {"decode_ms": (t1 - t0) * 1e3, "caption_ms": (t2 - t1) * 1e3, "total_ms": (t2 - t0) * 1e3},
        }

    @router.get("/models", response_model=ModelsResponse, responses=_ERRORS, summary="List known models")
    def models() -> Any:  # sync: runs in the threadpool (it may hash a large checkpoint once)
        from ..options_table import model_installed
        from ..registry import get_model, list_models

        loaded = list(manager.loaded())
        default = current_default()
        out = []
        for name in list_models():
            e = get_model(name)
            out.append({"name": e.name, "kind": e.kind, "description": e.description, "source": e.source.type,
                        "installed": model_installed(e.name, models_dir=getattr(manager, "models_dir", None)),
                        "loaded": e.name in loaded, "default": e.name == default})
        return {"models": out, "default": default, "loaded": loaded}

    @router.post("/unload", response_model=UnloadResponse, responses=_ERRORS,
                 summary="Unload one model (body {\"model\": name}) or all (empty body)")
    async def unload(request: Request) -> Any:
        data = await read_json(request, _JSON_OVERHEAD)
        _check_fields(data, ["model"])
        name = data.get("model")
        if name is not None:
            name = _resolve_model(name, "")
        return {"unloaded": await run_in_threadpool(manager.unload, name)}

    # The feature packages own their routes; this router composes them.
    from ..batch.routes import add_batch_routes
    from ..review.routes import add_review_routes  # caption review: the same folders and rules as batch tagging

    add_batch_routes(router, manager, job_manager, current_default, batch_unavailable, read_json=read_json,
                     api_error=ApiError, check_fields=_check_fields, resolve_model=_resolve_model, responses=_ERRORS)
    add_review_routes(router, manager, job_manager, current_default, batch_unavailable, read_json=read_json,
                      api_error=ApiError)
    return router


def _is_ours(route: Any) -> bool:
    """A route (or, in newer FastAPI, an included-router entry) that an earlier :func:`mount_api` added."""
    if str(getattr(route, "path", "") or "").startswith(API_PREFIX + "/"):
        return True
    included = getattr(route, "original_router", None)  # FastAPI >= 0.16x keeps included routers as one entry
    return getattr(included, "prefix", None) == API_PREFIX


def mount_api(app: FastAPI, manager: Any, **kwargs: Any) -> APIRouter:
    """Add the ``/clipcap/v1`` routes to ``app`` (replacing any added before, so a UI reload never duplicates them).

    Args:
        app: The FastAPI app (the WebUI's, from ``on_app_started(demo, app)``, or the standalone server's).
        manager: The model manager.
        **kwargs: As for :func:`create_router` (``credentials``, ``job_manager``, ``max_image_bytes``,
            ``max_pixels``, ``default_model``, ``request_policy``, ``batch_unavailable``, ``max_decodes``,
            ``decode_size``).

    Returns:
        The router that was added.
    """
    router = create_router(manager, **kwargs)
    app.router.routes[:] = [r for r in app.router.routes if not _is_ours(r)]
    app.include_router(router)
    app.openapi_schema = None  # regenerate /openapi.json with the new routes
    return router
