"""modules_forge/forge_version.py. Forge f2.0.1: ``version = '2.0.1v1.10.1'``; Forge Neo: ``version = "neo"`` and
``release = "2.22"``. Forge Classic's value is not relied on (the extension tells Classic by its ldm_patched backend).
Reads the mode from the environment itself: install.py imports this module alone (no ``modules``)."""

import os

_MODE = os.environ.get("WEBUI_DOUBLE_MODE", "forge")
if _MODE == "neo":
    version = "neo"
    release = "2.22"
elif _MODE == "classic":
    version = "classic"
else:
    version = '2.0.1v1.10.1'
