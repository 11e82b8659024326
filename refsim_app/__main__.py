"""``python -m refsim_app``: the same command line as the ``refsim`` script."""

import sys

from refsim_app.cli import main

sys.exit(main())
