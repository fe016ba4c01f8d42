"""``python -m lib_clipcap serve``: the captioning web UI and HTTP API without the Stable Diffusion WebUI.

One FastAPI app: the API under ``/clipcap/v1`` (:mod:`lib_clipcap.app.api`) and the gradio UI
(:func:`lib_clipcap.app.ui.build_ui`, the same Blocks as the WebUI tab) at ``/``; the API docs (``/docs``,
``/openapi.json``) only with ``--api-docs``. Bound to 127.0.0.1 unless told otherwise; ``--auth user:pass`` puts
HTTP Basic auth in front of everything (UI and API alike). Every request, UI and API alike, passes
:class:`~lib_clipcap.app.security.RequestGuard` first: on a loopback bind only loopback host names are answered (DNS
rebinding), and no page of another site can make the server act or read its answers, gradio's routes included
(``--cors-allow-origin`` names the sites that may); the API additionally takes JSON bodies only, and no request body
of the UI may exceed what an image of ``--max-image-mb`` needs (see :mod:`lib_clipcap.app.security` and
docs/security.md).

Importing this module is cheap (the CLI imports it for ``--help``); gradio, fastapi and uvicorn load in :func:`run`.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .security import RequestGuard  # stdlib only: keeps this module cheap to import

HELP = "serve the captioning web UI and HTTP API (standalone, http://127.0.0.1:7861)"
PREFIX = "clipcap:"

__all__ = ["HELP", "BasicAuthMiddleware", "BodyLimitMiddleware", "RequestGuardMiddleware", "add_arguments",
           "create_app", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``serve`` command's options to ``p``."""
    from ..cli_common import add_placement_arguments

    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this computer only; 0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=7861, help="port (default 7861)")
    p.add_argument("--auth", action="append", metavar="USER:PASS",
                   help="require HTTP Basic auth for the UI and the API; repeat, or separate entries with commas")
    p.add_argument("--model", help="model preselected in the UI and used by API requests that name none "
                                   "(default: flickr8k, or the bundled demo model when flickr8k is not installed)")
    p.add_argument("--demo", action="store_true", help="preselect the bundled demo model shapes-demo")
    add_placement_arguments(p)
    p.add_argument("--batch-root", action="append", type=Path, metavar="FOLDER",
                   help="allow batch tagging of folders under FOLDER (repeatable); without it batch tagging is off")
    p.add_argument("--caption-ext", action="append", default=[], metavar="EXT",
                   help="allow batch tagging to write caption files with this suffix too (repeatable; always "
                        "allowed: .txt .caption .tags .json)")
    p.add_argument("--cors-allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="let pages of ORIGIN (e.g. https://tool.example) call the API from the browser "
                        "(repeatable); by default only this server's own pages may")
    p.add_argument("--cors-allow-origin-regex", metavar="REGEX",
                   help="let pages of every origin that matches REGEX in full call the API")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="on a 127.0.0.1 bind, also answer requests for host NAME (e.g. a name in /etc/hosts); "
                        "by default only localhost names are answered, against DNS rebinding")
    p.add_argument("--max-image-mb", type=float, default=32.0,
                   help="largest image file the API accepts (MB); also caps every request body of the UI")
    p.add_argument("--max-decodes", type=_positive_int, default=2, metavar="N",
                   help="images the API decodes at once (default 2); further uploads wait, so a burst of huge images "
                        "cannot exhaust memory")
    p.add_argument("--api-docs", action="store_true",
                   help="serve the API's interactive docs at /docs and its schema at /openapi.json (off by default)")
    p.add_argument("--no-ui", action="store_true", help="serve the HTTP API only")
    p.add_argument("--no-preload", action="store_true",
                   help="load the default model on the first request instead of right away in the background")


def _positive_int(text: str) -> int:
    """argparse type for counts: a whole number >= 1 (argparse names the flag in its message)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


class BasicAuthMiddleware:
    """ASGI middleware: HTTP Basic auth in front of every HTTP request and websocket of the app.

    Browsers ask for the credentials once and then send them with every request the page makes, so this protects the
    gradio UI (pages, assets, its queue) and the API alike.
    """

    def __init__(self, app: Any, credentials: Mapping[str, str]) -> None:
        self.app = app
        self.credentials = dict(credentials)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope.get("type") in ("http", "websocket"):
            from .api import UNAUTHORIZED_HEADERS, credentials_ok

            header = dict(scope.get("headers") or ()).get(b"authorization")
            if not credentials_ok(header.decode("latin-1") if header else None, self.credentials):
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                body = (b'{"error": {"type": "unauthorized", "message": "HTTP Basic authentication required"}}')
                headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                headers += [(k.lower().encode(), v.encode()) for k, v in UNAUTHORIZED_HEADERS.items()]
                await send({"type": "http.response.start", "status": 401, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


#: The standalone server's guard under its earlier name (:class:`lib_clipcap.app.security.RequestGuard`: host and
#: origin rules on every HTTP request, read or write, and every websocket).
RequestGuardMiddleware = RequestGuard


class BodyLimitMiddleware:
    """ASGI middleware: refuse a request body larger than ``max_bytes`` (413) on every path outside ``exempt_prefix``.

    gradio 3 has no upload limit at all (its ``/upload``, and its JSON ``/run/predict``, which carries images as
    base64, read whatever comes); gradio 4+ limits only ``/upload``, and only when told to. So the standalone app caps
    every body of the UI here, by its declared ``Content-Length``, before any of it is read. A body without one
    (``Transfer-Encoding: chunked``) is refused with 411: browsers and gradio's clients always declare the length,
    and a cap that had to count a stream could only cut it off half-read. The API's routes (``exempt_prefix``)
    enforce their own, per-route limits while the body streams.
    """

    def __init__(self, app: Any, max_bytes: int, exempt_prefix: str = "") -> None:
        self.app = app
        self.max_bytes = int(max_bytes)
        self.exempt_prefix = exempt_prefix

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or (self.exempt_prefix and
                                           str(scope.get("path", "")).startswith(self.exempt_prefix)):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())
        length = headers.get(b"content-length")
        if length is None and b"transfer-encoding" in headers:
            await _send_error(send, 411, "length_required", "the request body must be sent with a Content-Length")
            return
        if length is not None and (not length.strip().isdigit() or int(length) > self.max_bytes):
            await _send_error(send, 413, "payload_too_large",
                              f"the request body is larger than {self.max_bytes:,} bytes, the most an image of the "
                              f"server's --max-image-mb needs")
            return
        await self.app(scope, receive, send)


async def _send_error(send: Any, status: int, kind: str, message: str) -> None:
    import json

    body = json.dumps({"error": {"type": kind, "message": message}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def create_app(manager: Any, *, credentials: Mapping[str, str] | None = None, job_manager: Any = None,
               ui: bool = True, default_model: str | None = None, notice: str | None = None,
               max_image_bytes: int | None = None, request_policy: Any = None, api_docs: bool = False,
               max_decodes: int | None = None) -> Any:
    """The standalone FastAPI app: API at ``/clipcap/v1``, UI at ``/``, docs at ``/docs`` only when ``api_docs``.

    Args:
        manager: The model manager shared by the UI and the API.
        credentials: ``{user: password}``: HTTP Basic auth on everything; ``None``: open.
        job_manager: For batch tagging (API and UI); ``None``: batch tagging is off.
        ui: Mount the gradio UI.
        default_model, notice: The preselected model and a notice shown above the UI (see
            :func:`lib_clipcap.options_table.pick_default_model`); default: picked for ``manager.models_dir``.
        max_image_bytes: Largest image the API accepts (default
            :data:`lib_clipcap.app.api.DEFAULT_MAX_IMAGE_BYTES`); also the UI's upload limit (gradio's
            ``max_file_size`` where it has one, and :class:`BodyLimitMiddleware` on every UI request body, sized
            for the image as base64).
        request_policy: A :class:`lib_clipcap.app.security.RequestPolicy` (default: for a 127.0.0.1 bind, no other
            origin allowed). Its allowed origins also get CORS headers, so their pages can read the answers; any
            other origin is refused on every route and method, gradio's included.
        max_decodes: Images the API decodes at once (default :data:`lib_clipcap.app.api.DEFAULT_MAX_DECODES`).
        api_docs: Serve ``/docs`` and ``/openapi.json`` (the outer app's, and gradio's own schema). Off by default:
            the schema describes every route and field to whoever asks.

    Returns:
        A ``fastapi.FastAPI`` to serve with uvicorn (or to test with ``fastapi.testclient.TestClient``).
    """
    from fastapi import FastAPI

    from .. import __version__
    from .api import API_PREFIX, DEFAULT_MAX_DECODES, DEFAULT_MAX_IMAGE_BYTES, mount_api
    from ..options_table import pick_default_model
    from .security import RequestPolicy

    policy = request_policy or RequestPolicy.for_bind("127.0.0.1", origin_hint="--cors-allow-origin ORIGIN",
                                                      host_hint="--allow-host NAME")
    if default_model is None:
        default_model, picked_notice = pick_default_model(models_dir=getattr(manager, "models_dir", None))
        notice = notice if notice is not None else picked_notice
    docs = {} if api_docs else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    max_image_bytes = max_image_bytes or DEFAULT_MAX_IMAGE_BYTES
    app = FastAPI(title="ClipCap captioning", version=__version__,
                  description="CLIP-prefix image captioning: HTTP API under /clipcap/v1, web UI at /.", **docs)
    mount_api(app, manager, job_manager=job_manager, default_model=default_model,
              max_image_bytes=max_image_bytes, request_policy=policy,
              max_decodes=max_decodes or DEFAULT_MAX_DECODES)
    if ui:
        import gradio as gr

        from .ui import build_ui

        demo = build_ui(manager, job_manager=job_manager, values={"model": default_model}, notice=notice or "")
        _enable_queue(demo)
        app = _mount_ui(gr, app, demo, docs=docs, max_file_bytes=max_image_bytes)
        # gradio 3 posts images as base64 JSON (4/3 of the file) and has no limit of its own; 1 MiB for the rest
        app.add_middleware(BodyLimitMiddleware, max_bytes=max_image_bytes * 4 // 3 + (1 << 20),
                           exempt_prefix=API_PREFIX)
    if credentials:
        app.add_middleware(BasicAuthMiddleware, credentials=credentials)
    if policy.allowed_origins or policy.allowed_origin_regex:  # let the allowed sites' pages read the answers
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(policy.allowed_origins),
                           allow_origin_regex=policy.allowed_origin_regex, allow_methods=["*"], allow_headers=["*"],
                           allow_credentials=bool(credentials))
    # added last: runs first, outside gradio's CORS layer, which would otherwise reflect any origin on reads
    app.add_middleware(RequestGuard, policy=policy, origin_on_reads=True)
    return app


def _mount_ui(gr: Any, app: Any, demo: Any, *, docs: Mapping[str, Any], max_file_bytes: int) -> Any:
    """Mount ``demo`` at ``/`` with gradio's own schema route off unless ``docs`` is empty, and gradio's upload
    limit where this gradio has one (``max_file_size``: gradio 4.x and later; 3.x has none)."""
    import inspect

    params = inspect.signature(gr.mount_gradio_app).parameters
    kwargs: dict = {}
    if "app_kwargs" in params and docs:
        kwargs["app_kwargs"] = {"openapi_url": None}  # gradio's inner FastAPI serves /openapi.json otherwise
    if "max_file_size" in params:
        kwargs["max_file_size"] = int(max_file_bytes)
    return gr.mount_gradio_app(app, demo, path="/", **kwargs)


def _enable_queue(demo: Any) -> None:
    """Turn on the gradio queue (needed for progress updates under gradio 3; the default in gradio 4+)."""
    import inspect

    params = inspect.signature(demo.queue).parameters
    if "default_concurrency_limit" in params:  # gradio 4+
        demo.queue(default_concurrency_limit=4)
    elif "concurrency_count" in params:  # gradio 3
        demo.queue(concurrency_count=4)
    else:  # pragma: no cover
        demo.queue()


def _make_job_manager(manager: Any, roots: Sequence[Path] | None,
                      extra_exts: Sequence[str] = ()) -> tuple[Any, str | None]:
    if not roots:
        return None, None
    try:
        from ..batch.jobs import DEFAULT_CAPTION_EXTS, JobManager, parse_caption_exts
    except ImportError as e:
        return None, f"batch tagging is not available in this build ({e})"
    exts = list(DEFAULT_CAPTION_EXTS) + [e for e in parse_caption_exts(list(extra_exts))
                                         if e.lower() not in DEFAULT_CAPTION_EXTS]
    return JobManager(manager, [Path(r).expanduser().resolve() for r in roots], caption_exts=exts,
                      caption_exts_hint="--caption-ext EXT"), None


def _preload(manager: Any, model: str) -> None:
    """Load and warm up ``model`` in a background thread, so the first request does not pay for it (requests that
    arrive meanwhile wait for the manager's lock)."""
    import threading

    def load() -> None:
        try:
            from PIL import Image

            manager.get(model)
            # one tiny caption: the first call of a fresh process pays for lazy initialisation (seconds on a CPU)
            manager.caption(Image.new("RGB", (64, 64)), model=model, decoding="greedy", max_new_tokens=2)
        except Exception as e:  # noqa: BLE001 - the first request reports it properly
            print(PREFIX, f"could not preload {model!r}: {e}", file=sys.stderr)

    threading.Thread(target=load, name="clipcap-preload", daemon=True).start()


def run(args: argparse.Namespace) -> int:
    """Start the server (blocks until Ctrl-C). Returns the exit code."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no phoning home from a local tool
    if args.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
    import uvicorn

    from .api import parse_credentials
    from ..options_table import DEMO_MODEL, pick_default_model
    from .security import is_loopback_host as _is_loopback
    from .service import LocalDevicePolicy, ModelManager

    credentials = parse_credentials(",".join(args.auth)) if args.auth else None
    manager = ModelManager(models_dir=args.models_dir, policy=LocalDevicePolicy(device=args.device, dtype=args.dtype))
    if args.demo:
        model, notice = DEMO_MODEL, (f"Demo mode: the bundled model {DEMO_MODEL!r} is preselected (a tiny model "
                                     f"trained on synthetic shapes; it only describes coloured shapes).")
    else:
        model, notice = pick_default_model(models_dir=args.models_dir, preferred=args.model)
    if notice:
        print(PREFIX, notice, file=sys.stderr)
    from ..options_table import OptionError
    from .security import RequestPolicy

    try:
        job_manager, why = _make_job_manager(manager, args.batch_root, args.caption_ext)
        policy = RequestPolicy.for_bind(args.host, allowed_origins=args.cors_allow_origin,
                                        allowed_origin_regex=args.cors_allow_origin_regex, extra_hosts=args.allow_host,
                                        origin_hint="--cors-allow-origin ORIGIN", host_hint="--allow-host NAME")
    except (OptionError, re.error) as e:
        print(PREFIX, f"error: {e}", file=sys.stderr)
        return 2
    if why:
        print(PREFIX, why, file=sys.stderr)
    if not _is_loopback(args.host) and not credentials:
        print(PREFIX, f"warning: listening on {args.host} without --auth: anyone who can reach this port can use it"
                      + (" and write captions under the --batch-root folders" if job_manager else ""),
              file=sys.stderr)
    app = create_app(manager, credentials=credentials, job_manager=job_manager, ui=not args.no_ui,
                     default_model=model, notice=notice or "", max_image_bytes=int(args.max_image_mb * 1024 * 1024),
                     request_policy=policy, api_docs=args.api_docs, max_decodes=args.max_decodes)
    if not args.no_preload:
        _preload(manager, model)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    docs = ", API docs at /docs" if args.api_docs else ""
    print(PREFIX, f"serving on http://{shown}:{args.port}/ (API under /clipcap/v1{docs}); Ctrl-C stops",
          file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
