"""``python -m inference.worker [--jobs-dir DIR]``: run the worker process (see ``process``)."""

import sys

from .process import main

sys.exit(main())
