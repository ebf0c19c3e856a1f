"""python -m tensorgate: the same as the `tensorgate` console script."""

import sys

from tensorgate.cli import main

sys.exit(main())
