#!/usr/bin/env python
"""Kept for checkouts and old commands: the tool is facerec.cli.verify (see its --help)."""

import sys

from facerec.cli.verify import main

if __name__ == "__main__":
    sys.exit(main())
