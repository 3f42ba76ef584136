"""The APSM ablation grid and uncertainty analyses (also the RALD and pretrained grids): now
``ferkit experiment CONFIG ...`` (ferkit.experiments.ablation, ferkit.experiments.analyses).

Kept so the old command keeps working: it passes its arguments to ``ferkit experiment``, whose
options are the same (``ferkit experiment --help``).
"""

import sys

from ferkit.cli import main

if __name__ == "__main__":
    sys.exit(main(["experiment", *sys.argv[1:]]))
