"""``python -m cadence`` runs the command line."""

import sys

from cadence.cli import main

sys.exit(main())
