#!/usr/bin/env python
"""Align a folder of face photos: see :mod:`facerec.align.tool` (``--help``)."""

import sys

from facerec.align.tool import main

if __name__ == "__main__":
    sys.exit(main())
