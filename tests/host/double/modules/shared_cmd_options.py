"""modules/shared_cmd_options.py: preload.py of every extension runs here, then the flags are parsed.

The double parses ``WEBUI_DOUBLE_ARGV`` (a JSON list) instead of sys.argv.
"""

import json
import os

from modules import cmd_args, script_loading
from modules.paths_internal import extensions_builtin_dir, extensions_dir

parser = cmd_args.parser
script_loading.preload_extensions(extensions_dir, parser, extension_list=None)
script_loading.preload_extensions(extensions_builtin_dir, parser)

cmd_opts = parser.parse_args(json.loads(os.environ.get("WEBUI_DOUBLE_ARGV", "[]")))
cmd_opts.webui_is_non_local = any([cmd_opts.share, cmd_opts.listen, cmd_opts.ngrok, cmd_opts.server_name])
cmd_opts.disable_extension_access = cmd_opts.webui_is_non_local and not cmd_opts.enable_insecure_extension_access
