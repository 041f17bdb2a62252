#!/usr/bin/env python
"""Kept for checkouts and old commands: the tool is facerec.tools.scan_dataset (see its --help)."""

import sys

from facerec.tools.scan_dataset import main

if __name__ == "__main__":
    sys.exit(main())
