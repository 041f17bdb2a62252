#!/usr/bin/env python
"""Kept for checkouts and old commands: the tool is facerec.cli.scan_dataset (see its --help)."""

import sys

from facerec.cli.scan_dataset import main

if __name__ == "__main__":
    sys.exit(main())
