#!/usr/bin/env python
"""Kept for checkouts and old commands: the tool is facerec.cli.extract (see its --help)."""

import sys

from facerec.cli.extract import main

if __name__ == "__main__":
    sys.exit(main())
