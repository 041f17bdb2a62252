#!/usr/bin/env python
"""Kept for checkouts and old commands: the tool is facerec.cli.bench_heads (see its --help)."""

import sys

from facerec.cli.bench_heads import main

if __name__ == "__main__":
    sys.exit(main())
