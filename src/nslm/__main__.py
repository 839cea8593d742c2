"""`python -m nslm` (and `torchrun -m nslm train ...`) run the CLI."""

import sys

from nslm.cli import main

sys.exit(main())
