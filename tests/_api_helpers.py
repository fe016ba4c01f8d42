"""What the /clipcap/v1 HTTP tests share, on the standalone app and on the WebUI host double alike: a small PNG as
base64 for request bodies, and waiting for a batch job to finish. The client may be FastAPI's TestClient or
_live_server's raw-socket Client: both answer ``.get(path).json()``."""

from __future__ import annotations

import base64
import io
import time
from typing import Any


def png_b64(size: tuple[int, int] = (20, 10), color: str = "blue") -> str:
    """A plain ``color`` PNG of ``size`` pixels, base64-encoded as the API's ``image`` field takes it."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def wait_for_batch_job(client: Any, job_id: str, *, timeout: float = 180.0, poll: float = 0.2) -> dict:
    """Poll ``GET /clipcap/v1/batch/<job_id>`` until the job is neither queued nor running; returns that status.
    Fails (showing the last status) when it takes longer than ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while (status := client.get(f"/clipcap/v1/batch/{job_id}").json())["state"] in ("queued", "running"):
        assert time.monotonic() < deadline, status
        time.sleep(poll)
    return status
