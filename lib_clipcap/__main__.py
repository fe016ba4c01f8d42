"""``python -m lib_clipcap ...``: see :mod:`lib_clipcap.app.cli`."""

import sys

from .app.cli import main

sys.exit(main())
