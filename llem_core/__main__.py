"""`python -m llem_core` is the `llem` command."""

from llem_core.cli import entry

entry()
