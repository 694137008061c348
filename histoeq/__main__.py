"""`python -m histoeq` is the same as the `histoeq` console script."""

import sys

from histoeq.cli import main

sys.exit(main())
