"""``python -m lib_clipcap ...``: see :mod:`lib_clipcap.cli`."""

import sys

from .cli import main

sys.exit(main())
