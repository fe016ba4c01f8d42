"""The WebUI side of the ClipCap extension: everything that talks to AUTOMATIC1111 or Forge lives here.

``lib_clipcap`` (the library) never imports ``modules.*``; this package is the only layer that does, and the thin
``scripts/*.py`` files only wire its functions to the host's callbacks. Modules:

- :mod:`.host`: read the host in one place (Forge memory manager or A1111 recipe, ForgeCanvas, paths, command-line
  flags and settings, how exposed the server is, which folders batch tagging may use);
- :mod:`.memory`: the GPU-etiquette :class:`~lib_clipcap.app.service.DevicePolicy` for each host;
- :mod:`.models`: the process-wide :class:`~lib_clipcap.app.service.ModelManager` and batch-job queue, kept across
  "Reload UI" and freed when the extension is unloaded;
- :mod:`.settings`: the Settings section, generated from :mod:`lib_clipcap.options_table`;
- :mod:`.requirements`: what ``install.py`` may install (only what is missing, never a package the host pins);
- :mod:`.prompt_button`: the prompt-from-image buttons in the txt2img/img2img tool rows, and the "send to" buttons.
- :mod:`.routes`: the extension's HTTP routes on the host's app, protected by ``--api-auth`` like the host's;
- :mod:`.generation`, :mod:`.generation_ui`: captioning the images a generation saves (sidecar, metadata, results
  panel) and the img2img caption-as-prompt, behind an always-visible txt2img/img2img section;
- :mod:`.postprocessing`: the Extras ("Postprocessing") caption step;
- WebUI-only helpers, host-free and torch-free: :mod:`.metadata` (the WebUI's infotext in PNG/JPEG/WebP files,
  rewritten without re-encoding pixels), :mod:`.prompting` (a caption combined with the typed prompt) and
  :mod:`.presets` (named decoding presets of the generation section).

Importing it is cheap (no torch, no gradio at import time) and does not need the host: every host module is imported
inside the function that uses it.
"""

from __future__ import annotations

LOG_PREFIX = "[ClipCap]"
