"""modules/paths.py re-exports paths_internal (the real one also edits sys.path and checks the SD repos)."""

from modules.paths_internal import *  # noqa: F401,F403
from modules.paths_internal import data_path, models_path, script_path  # noqa: F401
