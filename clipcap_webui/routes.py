"""The HTTP API in the WebUI: mount ``/clipcap/v1`` on the host's FastAPI app, protected like the host's own API.

The host adds HTTP Basic auth (``--api-auth user:pass,...``) only to its own ``/sdapi`` routes; routes an extension
adds are open unless the extension checks the credentials itself (HOST_API.md §5). So the flag is parsed here and
handed to :func:`lib_clipcap.api.mount_api`. A malformed ``--api-auth`` fails closed: the routes are not mounted.

The routes exist when the host serves an API (``--api``, or ``--nowebui`` where the API is all there is), like
``/sdapi/v1/*``: without ``--api`` a ``--gradio-auth``-protected UI must not gain an unprotected side door.
"""

from __future__ import annotations

import logging
from typing import Any

from . import LOG_PREFIX, host

log = logging.getLogger(__name__)


def api_enabled() -> bool:
    """True when the host serves its API (``--api`` or ``--nowebui``)."""
    return bool(host.cmd_opt("api", False) or host.cmd_opt("nowebui", False))


def api_credentials() -> dict[str, str] | None:
    """``{user: password}`` from ``--api-auth`` (``None``: no auth asked for).

    Raises:
        ValueError: The flag is malformed (an entry without ``:``); the message does not echo passwords.
    """
    from lib_clipcap.api import parse_credentials
    from lib_clipcap.errors import ClipCapError

    try:
        return parse_credentials(host.cmd_opt("api_auth"))
    except ClipCapError as e:
        raise ValueError(f"--api-auth: {e}") from None


def mount(app: Any) -> bool:
    """``on_app_started``: add the routes to ``app`` (idempotent across UI reloads). Returns whether it did."""
    if app is None or not api_enabled():
        return False
    try:
        credentials = api_credentials()
    except ValueError as e:
        print(f"{LOG_PREFIX} API not mounted: {e}")
        return False
    from lib_clipcap.api import mount_api

    mount_api(app, host.get_manager(), credentials=credentials, job_manager=host.get_job_manager())
    return True
