"""``python -m rtc_server.models``: see ``cli.py``."""

import sys

from .cli import main

sys.exit(main())
