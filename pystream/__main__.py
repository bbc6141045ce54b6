"""`python -m pystream ...`: the same as the `pystream` command (pystream.cli)."""

import sys

from pystream.cli import main

sys.exit(main())
