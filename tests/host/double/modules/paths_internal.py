"""modules/paths_internal.py: the webui's folders (the double's root comes from ``WEBUI_DOUBLE_ROOT``)."""

import os

script_path = os.environ.get("WEBUI_DOUBLE_ROOT") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
modules_path = os.path.dirname(os.path.abspath(__file__))
data_path = script_path
models_path = os.path.join(data_path, "models")
extensions_dir = os.path.join(data_path, "extensions")
extensions_builtin_dir = os.path.join(script_path, "extensions-builtin")
config_states_dir = os.path.join(script_path, "config_states")
default_output_dir = os.path.join(data_path, "outputs")
cwd = os.getcwd()
