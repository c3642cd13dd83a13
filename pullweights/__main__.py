"""``python -m pullweights`` runs the command line."""

import sys

from pullweights.cli import main

sys.exit(main())
