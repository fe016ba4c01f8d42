"""``python -m lib_clipcap serve``: the captioning web UI and HTTP API without the Stable Diffusion WebUI.

One FastAPI app: the API under ``/clipcap/v1`` (:mod:`lib_clipcap.app.api`), its docs at ``/docs``, and the gradio UI
(:func:`lib_clipcap.app.ui.build_ui`, the same Blocks as the WebUI tab) at ``/``. Bound to 127.0.0.1 unless told
otherwise; ``--auth user:pass`` puts HTTP Basic auth in front of everything (UI and API alike). Every request, UI
and API alike, passes :class:`RequestGuardMiddleware` first: on a loopback bind only loopback host names are
answered (DNS rebinding), and no page of another site can make the server act (``--cors-allow-origin`` names the
sites that may); the API additionally takes JSON bodies only (see :mod:`lib_clipcap.app.security` and docs/security.md).

Importing this module is cheap (the CLI imports it for ``--help``); gradio, fastapi and uvicorn load in :func:`run`.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

HELP = "serve the captioning web UI and HTTP API (standalone, http://127.0.0.1:7861)"
PREFIX = "clipcap:"

__all__ = ["HELP", "BasicAuthMiddleware", "RequestGuardMiddleware", "add_arguments", "create_app", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``serve`` command's options to ``p``."""
    from .cli_common import add_placement_arguments

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
    p.add_argument("--max-image-mb", type=float, default=32.0, help="largest image file the API accepts (MB)")
    p.add_argument("--no-ui", action="store_true", help="serve the HTTP API only")
    p.add_argument("--no-preload", action="store_true",
                   help="load the default model on the first request instead of right away in the background")


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


class RequestGuardMiddleware:
    """ASGI middleware: :meth:`RequestPolicy.check <lib_clipcap.app.security.RequestPolicy.check>` in front of every
    HTTP request and websocket of the app (host and origin rules; the API's routes add the JSON rule themselves,
    since the UI uploads files as forms)."""

    def __init__(self, app: Any, policy: Any) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        kind = scope.get("type")
        if kind in ("http", "websocket"):
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or ()}
            method = "WEBSOCKET" if kind == "websocket" else scope.get("method", "GET")
            refusal = self.policy.check(method, headers, require_json=False)
            if refusal is not None:
                if kind == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                import json

                body = json.dumps({"error": {"type": refusal.type, "message": refusal.message}}).encode()
                await send({"type": "http.response.start", "status": refusal.status,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def create_app(manager: Any, *, credentials: Mapping[str, str] | None = None, job_manager: Any = None,
               ui: bool = True, default_model: str | None = None, notice: str | None = None,
               max_image_bytes: int | None = None, request_policy: Any = None) -> Any:
    """The standalone FastAPI app: API at ``/clipcap/v1``, docs at ``/docs``, UI at ``/``.

    Args:
        manager: The model manager shared by the UI and the API.
        credentials: ``{user: password}``: HTTP Basic auth on everything; ``None``: open.
        job_manager: For batch tagging (API and UI); ``None``: batch tagging is off.
        ui: Mount the gradio UI.
        default_model, notice: The preselected model and a notice shown above the UI (see
            :func:`lib_clipcap.options_table.pick_default_model`); default: picked for ``manager.models_dir``.
        max_image_bytes: API upload limit (default :data:`lib_clipcap.app.api.DEFAULT_MAX_IMAGE_BYTES`).
        request_policy: A :class:`lib_clipcap.app.security.RequestPolicy` (default: for a 127.0.0.1 bind, no other
            origin allowed). Its allowed origins also get CORS headers, so their pages can read the answers.

    Returns:
        A ``fastapi.FastAPI`` to serve with uvicorn (or to test with ``fastapi.testclient.TestClient``).
    """
    from fastapi import FastAPI

    from .. import __version__
    from .api import DEFAULT_MAX_IMAGE_BYTES, mount_api
    from ..options_table import pick_default_model
    from .security import RequestPolicy

    policy = request_policy or RequestPolicy.for_bind("127.0.0.1", origin_hint="--cors-allow-origin ORIGIN",
                                                      host_hint="--allow-host NAME")
    if default_model is None:
        default_model, picked_notice = pick_default_model(models_dir=getattr(manager, "models_dir", None))
        notice = notice if notice is not None else picked_notice
    app = FastAPI(title="ClipCap captioning", version=__version__,
                  description="CLIP-prefix image captioning: HTTP API under /clipcap/v1, web UI at /.")
    mount_api(app, manager, job_manager=job_manager, default_model=default_model,
              max_image_bytes=max_image_bytes or DEFAULT_MAX_IMAGE_BYTES, request_policy=policy)
    if ui:
        import gradio as gr

        from .ui import build_ui

        demo = build_ui(manager, job_manager=job_manager, values={"model": default_model}, notice=notice or "")
        _enable_queue(demo)
        app = gr.mount_gradio_app(app, demo, path="/")
    if credentials:
        app.add_middleware(BasicAuthMiddleware, credentials=credentials)
    if policy.allowed_origins or policy.allowed_origin_regex:  # let the allowed sites' pages read the answers
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(policy.allowed_origins),
                           allow_origin_regex=policy.allowed_origin_regex, allow_methods=["*"], allow_headers=["*"],
                           allow_credentials=bool(credentials))
    app.add_middleware(RequestGuardMiddleware, policy=policy)  # added last: runs first
    return app


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
                     request_policy=policy)
    if not args.no_preload:
        _preload(manager, model)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(PREFIX, f"serving on http://{shown}:{args.port}/ (API under /clipcap/v1, API docs at /docs); "
                  f"Ctrl-C stops", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
