"""`python -m llem_core` is the `llem` command."""

import sys

from llem_core.cli import main

sys.exit(main())
