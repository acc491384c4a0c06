"""`python -m adapters.cli ...`: the `campaign-fsm` command, run from a source tree."""

import sys

from . import main

sys.exit(main())
