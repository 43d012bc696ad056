"""``python -m runyard``: the ``runyard`` command, for environments without its script."""

import sys

from runyard.cli import main

sys.exit(main())
