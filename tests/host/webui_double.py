"""Driver of the WebUI host double (tests/host/double): boot a fake A1111 or Forge around this extension.

``WebUI(mode, root, argv)`` lays out a webui folder under ``root`` with this repository linked as
``extensions/sd-webui-clipcap``, imports a fresh copy of the fake host modules, and then, like the host:

- :meth:`boot`: ``preload.py`` + flags (``modules.shared``), the gradio component hooks, the extension list, and
  ``scripts.load_scripts()`` (by path; A1111 restores ``sys.path``, Forge keeps the script folders on it);
- :meth:`create_ui`: ``on_before_ui``, then ``modules.ui.create_ui()`` (settings, txt2img, img2img, Settings tab,
  ``on_ui_tabs``, root Blocks, ``connect_paste_params_buttons``) with real gradio;
- :meth:`start`: a FastAPI app, the host's ``Api`` when ``--api``/``--nowebui``, and ``on_app_started(demo, app)``
  (``demo=None`` mirrors ``--nowebui``);
- :meth:`launch`: what ``webui.py`` really does after ``create_ui``: ``demo.queue(64)``, ``demo.launch()`` (a real
  uvicorn server on 127.0.0.1, gradio's own app), the host's middleware swap (gradio's ``CORSMiddleware`` out, gzip
  and the ``--cors-allow-origins`` CORS in), the ``Api``, then ``on_app_started(demo, app)`` on gradio's app;
- :meth:`reload_ui`: "Reload UI": ``on_before_reload``, ``on_script_unloaded``, ``load_scripts()``, ``create_ui()``
  (the host then launches the new UI: a new app; call :meth:`launch` again).

:meth:`shutdown` closes a launched server, removes the fake modules, restores ``sys.path`` and the environment, and
undoes the gradio patch.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DOUBLE = HERE / "double"
DOUBLE_FORGE = HERE / "double_forge"
DOUBLE_NEO = HERE / "double_neo"  # Forge Neo: its rewritten backend/, over double_forge (modules_forge)
DOUBLE_CLASSIC = HERE / "double_classic"  # Forge Classic: ldm_patched/ (the old Forge backend), no backend/
MODES = ("a1111", "forge", "neo", "classic")
REPO = HERE.parents[1]
EXTENSION_NAME = "sd-webui-clipcap"
HOST_PACKAGES = ("modules", "launch", "backend", "modules_forge", "ldm_patched")
ENV_KEYS = ("WEBUI_DOUBLE_MODE", "WEBUI_DOUBLE_ROOT", "WEBUI_DOUBLE_ARGV")


def purge_host_modules() -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in HOST_PACKAGES:
            del sys.modules[name]


class WebUI:
    def __init__(self, mode: str, root: Path, argv: list[str] | tuple[str, ...] = ()) -> None:
        assert mode in MODES, mode
        self.mode = mode
        self.root = Path(root)
        self.argv = list(argv)
        self.extension_dir = self.root / "extensions" / EXTENSION_NAME
        self.demo: Any = None
        self.app: Any = None
        self.url: str | None = None  # of the server :meth:`launch` started
        self._launched: list[Any] = []
        self._saved_env: dict[str, str | None] = {}
        self._saved_path: list[str] | None = None

    @property
    def forge(self) -> bool:
        return self.mode != "a1111"  # Forge, Neo and Classic: the Forge UI (ForgeCanvas, main thread, sys.path)

    # --------------------------------------------------------------------------------------------------- lifecycle
    def boot(self) -> WebUI:
        (self.root / "extensions").mkdir(parents=True, exist_ok=True)
        (self.root / "models").mkdir(exist_ok=True)
        if not self.extension_dir.exists():
            self.extension_dir.symlink_to(REPO, target_is_directory=True)
        self._saved_env = {k: os.environ.get(k) for k in ENV_KEYS}
        os.environ.update(WEBUI_DOUBLE_MODE=self.mode, WEBUI_DOUBLE_ROOT=str(self.root),
                          WEBUI_DOUBLE_ARGV=json.dumps(self.argv))
        purge_host_modules()
        self._saved_path = list(sys.path)
        sys.path.insert(0, str(DOUBLE))
        if self.forge:
            sys.path.insert(0, str(DOUBLE_FORGE))
        if self.mode in ("neo", "classic"):
            sys.path.insert(0, str(DOUBLE_NEO if self.mode == "neo" else DOUBLE_CLASSIC))

        from modules import shared  # runs preload.py of each extension and parses the flags

        if self.forge:
            from modules import gradio_extensions  # noqa: F401
        else:
            from modules import gradio_extensons  # noqa: F401
        from modules import extensions, infotext_utils, scripts

        if self.mode in ("a1111", "forge"):  # Neo and Classic removed modules.interrogate and shared.interrogator
            from modules import interrogate

            shared.interrogator = interrogate.InterrogateModels("interrogate")
        infotext_utils.reset()
        extensions.list_extensions()
        scripts.load_scripts()
        return self

    def create_ui(self) -> Any:
        from modules import script_callbacks, ui

        script_callbacks.before_ui_callback()
        self.demo = ui.create_ui()
        return self.demo

    def start(self, demo: Any = "current") -> Any:
        from fastapi import FastAPI
        from modules import call_queue, script_callbacks, shared
        from modules.api.api import Api

        demo = self.demo if demo == "current" else demo
        self.app = FastAPI()
        if shared.cmd_opts.api or shared.cmd_opts.nowebui:
            Api(self.app, call_queue.queue_lock)
        script_callbacks.app_started_callback(demo, self.app)
        return self.app

    def launch(self, port: int | None = None) -> Any:
        """Serve the current UI as the host's ``webui.py`` does (A1111 v1.10.1 = Forge here); returns gradio's app,
        with :attr:`url` its address. A second launch (after :meth:`reload_ui`) stops the first server, as the host
        closes the old demo before it builds the new one."""
        import socket

        from modules import call_queue, script_callbacks, shared
        from modules.api.api import Api
        from starlette.middleware.cors import CORSMiddleware
        from starlette.middleware.gzip import GZipMiddleware

        self.close()
        if port is None:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
        demo = self.demo
        demo.queue(64)  # gradio 3: concurrency_count=64; gradio 4+: status_update_rate=64 (the host's own call)
        kwargs = dict(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                      app_kwargs={"docs_url": "/docs", "redoc_url": "/redoc"})
        try:
            app, local_url, _ = demo.launch(**kwargs)
        except ValueError as e:  # gradio 6 gives its own server ~2 s to answer; a loaded CI machine can miss that
            if "localhost is not accessible" not in str(e):
                raise
            demo.close()
            app, local_url, _ = demo.launch(**kwargs)
        self._launched.append(demo)
        self.url = local_url
        # webui.py: "gradio uses a very open CORS policy via app.user_middleware ... We disable this here"; by class
        # name, so gradio 4's CustomCORSMiddleware stays (as in Forge)
        app.user_middleware = [x for x in app.user_middleware if x.cls.__name__ != "CORSMiddleware"]
        # modules/initialize_util.py setup_middleware()
        app.middleware_stack = None  # launch served /startup-events: the stack was built
        app.add_middleware(GZipMiddleware, minimum_size=1000)
        cors: dict[str, Any] = {"allow_methods": ["*"], "allow_headers": ["*"], "allow_credentials": True}
        if shared.cmd_opts.cors_allow_origins:
            cors["allow_origins"] = shared.cmd_opts.cors_allow_origins.split(",")
        if shared.cmd_opts.cors_allow_origins_regex:
            cors["allow_origin_regex"] = shared.cmd_opts.cors_allow_origins_regex
        app.add_middleware(CORSMiddleware, **cors)
        app.build_middleware_stack()  # the host discards the result: the stack stays None until the next request
        if shared.cmd_opts.api:
            Api(app, call_queue.queue_lock)
        self.app = app
        script_callbacks.app_started_callback(demo, app)
        return app

    def close(self) -> None:
        """Stop the servers :meth:`launch` started."""
        while self._launched:
            self._launched.pop().close(verbose=False)
        self.url = None

    def reload_ui(self) -> Any:
        from modules import script_callbacks, scripts

        script_callbacks.app_reload_callback()
        script_callbacks.script_unloaded_callback()
        scripts.load_scripts()
        return self.create_ui()

    def shutdown(self) -> None:
        self.close()
        for name in ("modules.gradio_extensons", "modules.ui_gradio_extensions"):
            patch = sys.modules.get(name)
            if patch is not None:
                patch.unpatch()
        purge_host_modules()
        if self._saved_path is not None:
            sys.path[:] = self._saved_path
        for k, v in self._saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    # ----------------------------------------------------------------------------------------------------- lookups
    def callbacks(self, category: str) -> list[Any]:
        """Callbacks of ``category`` registered by this extension."""
        from modules import script_callbacks

        return [c for c in script_callbacks.callback_map[f"callbacks_{category}"]
                if c.name.startswith(EXTENSION_NAME + "/")]

    def errors(self) -> list[str]:
        from modules import errors

        return list(errors.reports)


# ------------------------------------------------------------------------------------------------- gradio helpers
def walk(block: Any):
    """Every block under ``block`` (depth first, in layout order)."""
    yield block
    for child in getattr(block, "children", None) or []:
        yield from walk(child)


def find(block: Any, elem_id: str) -> Any:
    for b in walk(block):
        if getattr(b, "elem_id", None) == elem_id:
            return b
    raise LookupError(f"no component with elem_id {elem_id!r}")


def click_events(blocks: Any, component: Any) -> list[dict[str, Any]]:
    """The click listeners of ``component`` in ``blocks`` as ``{fn, js, inputs, outputs}`` (gradio 3 and 4)."""
    out = []
    if isinstance(blocks.fns, dict):  # gradio 4
        for f in blocks.fns.values():
            if any(t[0] == component._id and t[1] == "click" for t in f.targets):
                out.append({"fn": f.fn, "js": f.js, "inputs": list(f.inputs), "outputs": list(f.outputs)})
        return out
    for dep, f in zip(blocks.dependencies, blocks.fns):
        if component._id in dep["targets"] and dep["trigger"] == "click":
            out.append({"fn": f.fn, "js": dep["js"], "inputs": list(f.inputs), "outputs": list(f.outputs)})
    return out


def prompt_click(event: dict[str, Any], image: Any, prompt: Any, negative: Any, style: Any = "Settings") -> tuple:
    """Call a prompt button's handler as the page does (the style dropdown's value is the last input and comes back
    unchanged as the last output); returns ``(prompt, negative prompt)``."""
    *out, style_back = event["fn"](image, prompt, negative, style)
    assert style_back == style  # the page script's gallery filter needs the outputs to be the inputs but the image
    return tuple(out)


def gallery_value(gallery: Any, images: list[Any], index: int | None) -> Any:
    """What the Python handler receives from ``gallery`` showing ``images`` after ``clipcapGalleryArgs`` kept item
    ``index`` (``None``: the JS did not run, the whole gallery arrives)."""
    data = gallery.postprocess(images)
    if isinstance(data, list):  # gradio 3: file dicts, no preprocess
        return data if index is None else [data[index]]
    if index is not None:
        data = type(data)(root=[data.root[index]])
    return gallery.preprocess(data)


# --------------------------------------------------------------------------------------------- script arguments
def script_args(runner: Any, title: str, values: list[Any] | None = None) -> list[Any]:
    """What the UI sends as ``p.script_args``: 0 (no selectable script), every control's current value, and
    ``values`` in place of the controls of the script titled ``title`` (``None``: its defaults)."""
    args: list[Any] = [0] + [getattr(c, "value", None) for c in runner.inputs[1:]]
    if values is not None:
        script = runner.script(title)
        assert script is not None, f"no script {title!r}"
        assert len(values) == script.args_to - script.args_from, "one value per control"
        args[script.args_from:script.args_to] = values
    return args


def paste(tabname: str, infotext: str) -> dict[Any, Any]:
    """``{component: new value}`` after the tab's paste button received ``infotext`` (components left alone are
    missing), through the host's own ``paste_func``."""
    from modules import infotext_utils

    fields = infotext_utils.paste_fields[tabname]["fields"]
    updates = infotext_utils.paste_func_for(tabname)(infotext)
    return {field[0]: u["value"] for field, u in zip(fields, updates) if "value" in u}
