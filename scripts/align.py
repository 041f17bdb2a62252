#!/usr/bin/env python
"""Align a folder of face photos: see :mod:`facerec.cli.align` (``--help``)."""

import sys

from facerec.cli.align import main

if __name__ == "__main__":
    sys.exit(main())
