"""``python -m ferkit ...``: the ``ferkit`` command, for environments whose scripts folder is not on PATH."""

import sys

from ferkit.cli import main

sys.exit(main())
