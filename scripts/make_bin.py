#!/usr/bin/env python
"""Kept for checkouts and old commands: the tool is facerec.cli.make_bin (see its --help)."""

import sys

from facerec.cli.make_bin import main

if __name__ == "__main__":
    sys.exit(main())
