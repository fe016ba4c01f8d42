"""modules/cmd_args.py: the host's flags that matter to extensions (names and defaults as in the host).

Forge Classic's modules/cmd_args.py (on ``ldm_patched.modules.args_parser``) has no ``--models-dir``, ``--lowvram``,
``--medvram``, ``--medvram-sdxl``, ``--lowram``, ``--no-half-vae``, ``--precision``, ``--clip-models-path`` or
``--skip-load-model-at-start``, and adds ``--uv`` / ``--uv-symlink``; Neo's builds on backend/args.py, whose
``--lowvram`` is the memory manager's (ComfyUI's) and the A1111 ones are gone likewise. Passing a removed flag is an
error there, as here.
"""

import argparse

from modules._mode import CLASSIC, NEO

parser = argparse.ArgumentParser()
_a1111_only = not (NEO or CLASSIC)


def _flag(*names, **kwargs):
    parser.add_argument(*names, **kwargs)


parser.add_argument("--data-dir", type=str, default="")
if _a1111_only:
    _flag("--models-dir", type=str, default=None)
    _flag("--medvram", action="store_true")
    _flag("--medvram-sdxl", action="store_true")
    _flag("--lowram", action="store_true")
    _flag("--no-half-vae", action="store_true")
    _flag("--precision", type=str, choices=["full", "half", "autocast"], default="autocast")
if not CLASSIC:
    _flag("--lowvram", action="store_true")
if NEO or CLASSIC:
    pkm = parser.add_mutually_exclusive_group()
    pkm.add_argument("--uv", action="store_true", help="Use the uv package manager")
    pkm.add_argument("--uv-symlink", action="store_true", help="Use the uv package manager with symlink")
parser.add_argument("--use-cpu", nargs="+", default=[], type=str.lower)
parser.add_argument("--no-half", action="store_true")
parser.add_argument("--device-id", type=str, default=None)
parser.add_argument("--api", action="store_true")
parser.add_argument("--api-auth", type=str, default=None)
parser.add_argument("--api-log", action="store_true")
parser.add_argument("--nowebui", action="store_true")
parser.add_argument("--api-server-stop", action="store_true")
parser.add_argument("--timeout-keep-alive", type=int, default=30)
parser.add_argument("--hide-ui-dir-config", action="store_true")
parser.add_argument("--freeze-settings", action="store_true")
if _a1111_only:
    _flag("--clip-models-path", type=str, default=None)
parser.add_argument("--skip-install", action="store_true")
if _a1111_only:
    _flag("--skip-load-model-at-start", action="store_true")
parser.add_argument("--disable-all-extensions", action="store_true")
parser.add_argument("--disable-extra-extensions", action="store_true")
parser.add_argument("--listen", action="store_true")
parser.add_argument("--port", type=int, default=None)
parser.add_argument("--server-name", type=str, default=None)
parser.add_argument("--share", action="store_true")
parser.add_argument("--ngrok", type=str, default=None)
parser.add_argument("--cors-allow-origins", type=str, default=None)
parser.add_argument("--cors-allow-origins-regex", type=str, default=None)
parser.add_argument("--gradio-auth", type=str, default=None)
parser.add_argument("--enable-insecure-extension-access", action="store_true")
