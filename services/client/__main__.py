"""python -m services.client: the `tensorgate` console script under its earlier name."""

import sys

from tensorgate.cli import main

if __name__ == "__main__":
    sys.exit(main())
