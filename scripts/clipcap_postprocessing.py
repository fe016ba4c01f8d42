"""ClipCap in Extras ("Postprocessing"): a caption step that sets ``pp.caption`` for the host to write.

Thin glue: the logic is ``clipcap_webui.postprocessing``.
"""

from __future__ import annotations

import os
import sys

from modules import scripts, scripts_postprocessing

EXTENSION_DIR = scripts.basedir()
if not os.path.isdir(os.path.join(EXTENSION_DIR, "clipcap_webui")):
    EXTENSION_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if EXTENSION_DIR not in sys.path:
    sys.path.append(EXTENSION_DIR)

from clipcap_webui import postprocessing, requirements  # noqa: E402

_PLAN = requirements.check()
if _PLAN.core_ok and not _PLAN.install:  # as the Caption tab: clipcap_tab.py reports what is missing
    class ClipCapCaptionStep(scripts_postprocessing.ScriptPostprocessing):
        name = postprocessing.NAME
        order = postprocessing.ORDER

        def ui(self):
            return postprocessing.build()

        def process(self, pp, **args):
            postprocessing.process(pp, **args)
