"""``python -m refsim``: the same command line as the ``refsim`` script."""

import sys

from refsim.cli import main

sys.exit(main())
