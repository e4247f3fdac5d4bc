"""``python -m metarec`` (what ``torchrun ... -m metarec train ...`` and ``metarec train --nproc N`` start)."""

import sys

from metarec.cli import main

sys.exit(main())
