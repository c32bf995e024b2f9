"""``python -m replay``: see ``replay.cli``."""

import sys

from replay.cli import main

sys.exit(main())
