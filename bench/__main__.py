"""python -m bench: the serving benchmark (bench.serving)."""

import sys

from bench.serving import main

sys.exit(main())
