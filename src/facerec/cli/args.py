"""Command-line options shared by the scripts/ tools (no heavy imports: `--help` stays instant)."""

from __future__ import annotations

import argparse

from facerec.messages import first_line


def add_runtime_arguments(parser: argparse.ArgumentParser, batches: bool = True) -> None:
    """``--device``, and with ``batches`` also ``--batch-size`` and ``--workers``."""
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1 | mps ...")
    if batches:
        parser.add_argument(
            "--batch-size",
            type=int,
            default=None,
            help="images per forward pass (default: 32 on a CPU, 256 on an accelerator)",
        )
        parser.add_argument("--workers", type=int, default=2, help="image decoding processes")


def add_align_argument(parser: argparse.ArgumentParser) -> None:
    """``--align auto|on|off``: detect and align raw photos (MTCNN, the ``align`` extra)."""
    parser.add_argument(
        "--align",
        choices=("auto", "on", "off"),
        default="auto",
        help="detect + align each face to the ArcFace template before embedding: auto = as the"
        " checkpoint's training images were prepared (data.align), with a warning when on/off"
        " differs from that",
    )


def add_preparation_arguments(parser: argparse.ArgumentParser) -> None:
    """How raw images become model input: ``--center-crop N`` and ``--align`` (extract, verify)."""
    parser.add_argument(
        "--center-crop",
        type=int,
        default=None,
        metavar="N",
        help="centre crop before resizing, 0 = none (default: the training crop)",
    )
    add_align_argument(parser)


def extras_as_errors(body):
    """``body`` with a missing optional extra's ``ImportError`` re-raised as a one-line
    ``ValueError`` (what :func:`facerec.cli.run_tool` prints as ``<prog>: error: ...``)."""

    def guarded():
        try:
            return body()
        except ImportError as error:
            raise ValueError(first_line(error)) from None

    return guarded
