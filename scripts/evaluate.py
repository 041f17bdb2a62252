#!/usr/bin/env python
"""Kept for checkouts and old commands: the tool is facerec.cli.evaluate (see its --help)."""

import sys

from facerec.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
