#!/usr/bin/env python
"""Kept for checkouts and old commands: the tool is facerec.cli.export_onnx (see its --help)."""

import sys

from facerec.cli.export_onnx import main

if __name__ == "__main__":
    sys.exit(main())
