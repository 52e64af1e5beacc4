"""`python -m load.bench`: see load/bench/cli.py."""

import sys

from load.bench.cli import main

sys.exit(main())
