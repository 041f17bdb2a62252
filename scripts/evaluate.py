#!/usr/bin/env python
"""Kept for checkouts and old commands: the tool is facerec.tools.evaluate (see its --help)."""

import sys

from facerec.tools.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
