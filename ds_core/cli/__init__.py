"""The `python -m ds_core` command line (main: the parser; commands: what each runs)."""

from ds_core.cli.main import main

__all__ = ["main"]
