"""`python -m alignctl ...` (what `accelerate launch -m alignctl train ...` runs on every rank)."""

import sys

from alignctl.cli.main import main

sys.exit(main())
