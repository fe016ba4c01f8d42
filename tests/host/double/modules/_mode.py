"""Which host the double imitates: ``WEBUI_DOUBLE_MODE`` = ``a1111`` (default) or ``forge``."""

import os

MODE = os.environ.get("WEBUI_DOUBLE_MODE", "a1111")
FORGE = MODE == "forge"
