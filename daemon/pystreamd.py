#!/usr/bin/env python3
"""pystreamd: the pystream indexing daemon, for systemd (see daemon/README.md).

    pystreamd -c config.yaml          # default: $PYSTREAM_CONFIG, else /etc/pystream/config.yaml

Loads and validates the config (PYSTREAM_CONFIG or -c, default /etc/pystream/config.yaml), runs
the indexer and the HTTP API, logs JSON lines to stderr (journald), tells systemd READY=1 once
indexing runs. SIGTERM/SIGINT: drain in-flight chunks, commit, checkpoint, exit 0. SIGHUP: reload
the config (a bad one is logged and ignored). The logic lives in pystream.cli.run_service, so the
installed console script (`pystreamd = pystream.cli:daemon_main`) and this file are the same.
"""

import os
import sys

if __package__ in (None, ""):  # run as a script from a checkout: make `pystream` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pystream.cli import daemon_main  # noqa: E402


def main(argv=None) -> int:
    return daemon_main(argv)


if __name__ == "__main__":
    sys.exit(main())
