#!/usr/bin/env python
"""Check a folder dataset (root/<identity>/<image>) before training on it.

    python scripts/scan_dataset.py /data/CASIA-WebFace --min-images 2 --workers 8

Decodes every image once and lists, by path: unreadable or truncated images, files that are not
images, greyscale/CMYK/palette/PNG images (converted to RGB when loaded, not rejected), empty
identity folders and identities below --min-images. Results are cached (--cache, by default
beside the dataset if writable, else in ~/.cache/facerec), so a re-scan only decodes new or
changed files. Exit status 1 when unreadable images were found.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("root", type=Path, help="dataset folder: root/<identity>/<image>")
    parser.add_argument("--min-images", type=int, default=1, help="report identities below this")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="decoding processes"
    )
    parser.add_argument("--cache", type=Path, help="scan cache file (JSON)")
    parser.add_argument("--limit", type=int, default=20, help="paths listed per problem kind")
    args = parser.parse_args(argv)

    from facerec.data.scan import default_cache, scan_dataset  # after argparse: fast --help

    try:
        report = scan_dataset(args.root, args.min_images, args.workers,
                              args.cache or default_cache(args.root))  # fmt: skip
    except FileNotFoundError as error:
        print(f"scan_dataset.py: error: {error}", file=sys.stderr)
        return 2
    print("\n".join(report.lines(args.limit)))
    return 1 if report.unreadable else 0


if __name__ == "__main__":
    sys.exit(main())
