"""ClipCap in the WebUI: the "Caption" tab, its settings, the prompt-from-image buttons, the /clipcap/v1 API and the
request guard on the host's app.

Thin glue only: the library is ``lib_clipcap``, the host adapter ``clipcap_webui``. The host imports this file by path
(module name ``"clipcap_tab.py"``, not in ``sys.modules``) and A1111 takes the extension folder off ``sys.path``
right after the import, so the folder is put on ``sys.path`` before the packages are imported, and again from the
first callbacks. Models are cached in ``lib_clipcap.app.service``, which survives a "Reload UI" (only this file is
re-imported).
"""

from __future__ import annotations

import os
import sys

from modules import script_callbacks, scripts

EXTENSION_DIR = scripts.basedir()  # the extension folder only while this file is being imported
if not os.path.isdir(os.path.join(EXTENSION_DIR, "clipcap_webui")):
    EXTENSION_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ensure_path() -> None:
    """Keep the extension folder on ``sys.path`` (A1111 restores its own list after the import; worker processes
    and lazy imports need it). Appended: our package names are unique and nothing of the host's is shadowed."""
    if EXTENSION_DIR not in sys.path:
        sys.path.append(EXTENSION_DIR)


ensure_path()
import lib_clipcap  # noqa: E402,F401  (cheap; in sys.modules from now on, so lazy submodule imports work)
from clipcap_webui import LOG_PREFIX, host_guard, models, prompt_button, requirements, routes, settings  # noqa: E402

PLAN = requirements.check()
for _line in requirements.messages(PLAN) + [f"missing {spec}: restart without --skip-install" for spec in PLAN.install]:
    print(f"{LOG_PREFIX} {_line}")


def on_ui_settings() -> None:
    ensure_path()
    settings.register()


def on_ui_tabs() -> list:
    from lib_clipcap.app.ui import build_ui

    blocks = build_ui(models.get_manager(), host=prompt_button.HostHooks(), job_manager=models.get_job_manager())
    return [(blocks, "Caption", "clipcap")]


def on_app_started(demo, app) -> None:  # demo is None with --nowebui
    ensure_path()
    host_guard.install(app)  # the tab's gradio functions run on the host's app: guard all of it (docs/security.md)
    routes.mount(app)


def on_script_unloaded() -> None:
    models.script_unloaded()


if PLAN.core_ok and not PLAN.install:
    models.adopt()  # a "Reload UI" re-imported us: keep the loaded models
    script_callbacks.on_ui_settings(on_ui_settings)
    script_callbacks.on_ui_tabs(on_ui_tabs)
    script_callbacks.on_after_component(prompt_button.PromptButtons().after_component)
    script_callbacks.on_app_started(on_app_started)
    script_callbacks.on_script_unloaded(on_script_unloaded)
