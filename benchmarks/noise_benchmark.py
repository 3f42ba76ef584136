"""The noise benchmark of issue 7: now ``ferkit experiment CONFIG ...`` (ferkit.experiments.noise).

Kept so the old command keeps working: it passes its arguments to ``ferkit experiment``, whose
options are the same (``ferkit experiment --help``).
"""

import sys

from ferkit.cli import main

if __name__ == "__main__":
    sys.exit(main(["experiment", *sys.argv[1:]]))
