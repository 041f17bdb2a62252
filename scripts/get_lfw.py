#!/usr/bin/env python
"""Kept for checkouts and old commands: the tool is facerec.cli.get_lfw (see its --help)."""

import sys

from facerec.cli.get_lfw import main

if __name__ == "__main__":
    sys.exit(main())
