"""`python -m vibecraft_renderer` is the same as the vibecraft-render console script."""

import sys

from .cli import main

sys.exit(main())
