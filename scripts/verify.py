#!/usr/bin/env python
"""Kept for checkouts and old commands: the tool is facerec.tools.verify (see its --help)."""

import sys

from facerec.tools.verify import main

if __name__ == "__main__":
    sys.exit(main())
