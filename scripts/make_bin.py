#!/usr/bin/env python
"""Kept for checkouts and old commands: the tool is facerec.tools.make_bin (see its --help)."""

import sys

from facerec.tools.make_bin import main

if __name__ == "__main__":
    sys.exit(main())
