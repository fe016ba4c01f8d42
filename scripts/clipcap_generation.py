"""ClipCap inside generation: the always-visible "Caption generated images" section of txt2img and img2img.

Thin glue: the logic is ``clipcap_webui.generation`` (hooks, writers) and ``clipcap_webui.generation_ui`` (controls,
arguments, infotext). Loaded by path like every script; the extension folder is on ``sys.path`` during the import.
"""

from __future__ import annotations

import os
import sys

from modules import script_callbacks, scripts

EXTENSION_DIR = scripts.basedir()
if not os.path.isdir(os.path.join(EXTENSION_DIR, "clipcap_webui")):
    EXTENSION_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if EXTENSION_DIR not in sys.path:
    sys.path.append(EXTENSION_DIR)

from clipcap_webui import generation, generation_ui, requirements  # noqa: E402

_PLAN = requirements.check()
ENABLED = _PLAN.core_ok and not _PLAN.install  # as the Caption tab: clipcap_tab.py reports what is missing


class ClipCapGeneration(scripts.Script):
    sorting_priority = 90  # Forge: near the end of the section list

    def title(self):
        return generation_ui.TITLE

    def show(self, is_img2img):
        return scripts.AlwaysVisible if ENABLED else False

    def ui(self, is_img2img):
        return generation_ui.build(self, is_img2img)

    def before_process(self, p, *args):
        generation.before_process(p, args, is_img2img=self.is_img2img)

    def before_process_batch(self, p, *args, **kwargs):
        generation.before_process_batch(p)

    def postprocess_image_after_composite(self, p, pp, *args):
        generation.collect(p, pp.image)

    def postprocess(self, p, processed, *args):
        generation.postprocess(p, processed)


if ENABLED:
    script_callbacks.on_image_saved(generation.on_image_saved)
