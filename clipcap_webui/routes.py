"""The HTTP API in the WebUI: mount ``/clipcap/v1`` on the host's FastAPI app, protected like the host's own API.

The host adds HTTP Basic auth (``--api-auth user:pass,...``) only to its own ``/sdapi`` routes; routes an extension
adds with ``app.add_api_route`` are open unless the extension checks the credentials itself. So the flag is parsed
here and handed to :func:`lib_clipcap.app.api.mount_api`. A malformed ``--api-auth`` fails closed: the routes are not
mounted.

Every route also passes :func:`request_policy` (see :mod:`lib_clipcap.app.security` and docs/security.md): JSON bodies
only, no request from a page of another site unless the host's ``--cors-allow-origins`` /
``--cors-allow-origins-regex`` allow it, and, while the WebUI is bound to this computer only, no host name but a
local one (DNS rebinding). The same policy guards the host's whole app, its gradio included
(:mod:`clipcap_webui.host_guard`, installed by the tab script next to these routes). Batch tagging over HTTP may use
only the folders :func:`clipcap_webui.host.batch_roots` allows for the API.

The routes exist when the host serves an API (``--api``, or ``--nowebui`` where the API is all there is), like
``/sdapi/v1/*``: without ``--api`` a ``--gradio-auth``-protected UI must not gain an unprotected side door.

WebUI-only route: ``POST /clipcap/v1/generated-caption`` ``{"image": base64}`` returns the ``caption`` that the
"Caption generated images" section wrote into a generated image's metadata (PNG text / EXIF UserComment), with the
section's recorded settings, without running a model; for API users who post-process the images
``/sdapi/v1/txt2img`` returned (or files it saved).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from . import LOG_PREFIX, host, models

log = logging.getLogger(__name__)


def api_enabled() -> bool:
    """True when the host serves its API (``--api`` or ``--nowebui``)."""
    return bool(host.cmd_opt("api", False) or host.cmd_opt("nowebui", False))


def api_credentials() -> dict[str, str] | None:
    """``{user: password}`` from ``--api-auth`` (``None``: no auth asked for).

    Raises:
        ValueError: The flag is malformed (an entry without ``:``); the message does not echo passwords.
    """
    from lib_clipcap.app.api import parse_credentials
    from lib_clipcap.errors import ClipCapError

    try:
        return parse_credentials(host.cmd_opt("api_auth"))
    except ClipCapError as e:
        raise ValueError(f"--api-auth: {e}") from None


def request_policy(*, origin_regex: bool = True) -> Any:
    """The :class:`~lib_clipcap.app.security.RequestPolicy` of the host's flags: its CORS origins are the origins whose
    pages may call the routes; the Host check applies while the WebUI is bound to a loopback address only.

    The same policy guards the host's whole app (:mod:`clipcap_webui.host_guard`). ``origin_regex=False`` leaves
    ``--cors-allow-origins-regex`` out (for a malformed pattern: fail closed).

    Raises:
        re.error: ``--cors-allow-origins-regex`` is not a valid regular expression.
    """
    from lib_clipcap.app.security import RequestPolicy

    exp = host.exposure()
    origins = [o for o in str(host.cmd_opt("cors_allow_origins", "") or "").split(",") if o.strip()]
    return RequestPolicy.for_bind(
        exp.bind if exp.local else None, allowed_origins=origins,
        allowed_origin_regex=(host.cmd_opt("cors_allow_origins_regex", None) or None) if origin_regex else None,
        extra_hosts=[h for h in (host.cmd_opt("server_name", None),) if h],
        origin_hint="the WebUI's --cors-allow-origins ORIGIN (or --cors-allow-origins-regex)",
        host_hint="--server-name NAME")


def mount(app: Any) -> bool:
    """``on_app_started``: add the routes to ``app`` (idempotent across UI reloads). Returns whether it did."""
    if app is None or not api_enabled():
        return False
    try:
        credentials = api_credentials()
        policy = request_policy()
    except (ValueError, re.error) as e:
        print(f"{LOG_PREFIX} API not mounted: {e}")
        return False
    from lib_clipcap.app.api import mount_api

    mount_api(app, models.get_manager(), credentials=credentials, job_manager=models.get_job_manager(for_api=True),
              request_policy=policy, batch_unavailable=host.batch_unavailable_message())
    app.include_router(generated_caption_router(credentials, policy))  # mount_api drops it on the next mount
    app.openapi_schema = None
    return True


GENERATED_CAPTION_PATH = "/generated-caption"


def read_generated_caption(raw: bytes) -> dict[str, Any]:
    """``{"caption", "settings", "parameters"}`` from the bytes of a generated image (``None`` where absent).

    Raises:
        clipcap_webui.metadata.MetadataError: not a PNG/JPEG/WebP file, or corrupt metadata.
    """
    from .metadata import infotext_param, parameters_from_bytes

    from .generation_ui import KEY_CAPTION, SETTING_KEYS

    text = parameters_from_bytes(raw)
    settings = {key[len("ClipCap "):]: infotext_param(text, key) for key in SETTING_KEYS}
    settings = {k: v for k, v in settings.items() if v is not None}
    return {"caption": infotext_param(text, KEY_CAPTION), "settings": settings or None, "parameters": text}


def generated_caption_router(credentials: dict[str, str] | None, policy: Any = None) -> Any:
    """The router of ``POST /clipcap/v1/generated-caption`` (HTTP Basic auth with ``credentials`` when given; the
    request rules of ``policy``, a :class:`~lib_clipcap.app.security.RequestPolicy`, default: same origin only)."""
    from fastapi import APIRouter, Request
    from fastapi.responses import JSONResponse

    from lib_clipcap.app.security import RequestPolicy

    from lib_clipcap.app.api import (
        API_PREFIX,
        DEFAULT_MAX_IMAGE_BYTES,
        UNAUTHORIZED_HEADERS,
        ApiError,
        credentials_ok,
        decode_image_data,
        read_json,
    )
    from .metadata import MetadataError

    router = APIRouter(prefix=API_PREFIX, tags=["clipcap"])
    policy = policy or RequestPolicy()

    async def generated_caption(request: Request) -> Any:
        try:
            refusal = policy.check(request.method, request.headers)
            if refusal is not None:
                raise ApiError(refusal.status, refusal.type, refusal.message)
            if credentials and not credentials_ok(request.headers.get("authorization"), credentials):
                raise ApiError(401, "unauthorized", "HTTP Basic authentication required (--api-auth credentials)",
                               headers=dict(UNAUTHORIZED_HEADERS))
            body = await read_json(request, DEFAULT_MAX_IMAGE_BYTES * 4 // 3 + 64 * 1024)
            if not isinstance(body, dict) or set(body) - {"image"}:
                raise ApiError(422, "invalid_request", 'the body must be {"image": base64 or data URL}')
            raw = decode_image_data(body.get("image"), max_bytes=DEFAULT_MAX_IMAGE_BYTES)
            try:
                return JSONResponse(read_generated_caption(raw))
            except MetadataError as e:
                raise ApiError(400, "not_an_image", str(e)) from None
        except ApiError as e:
            return e.response()

    # This module uses postponed annotations; FastAPI needs the real class to inject the request.
    generated_caption.__annotations__ = {"request": Request}
    router.add_api_route(GENERATED_CAPTION_PATH, generated_caption, methods=["POST"],
                         summary="The ClipCap caption stored in a generated image's metadata")
    return router
