"""``facerec <command>``: one table from command names to the tools that implement them.

Adding a command is one entry: ``name: ("module:function", "one line of help")``. The module is
imported only when its command runs, so ``facerec --help`` is instant and a command whose module
is not installed (``align`` before :mod:`facerec.align` exists, an optional dependency) says so
in one line instead of breaking the others. Each function takes the remaining ``argv`` and
returns an exit status; ``facerec <command> --help`` is that tool's own ``argparse`` help
(Hydra's for ``train``).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping, Sequence

__all__ = ["BENCHMARKS", "COMMANDS", "dispatch", "main"]

Table = Mapping[str, tuple[str, str]]

COMMANDS: Table = {
    "train": ("facerec.cli.train:main", "train a model: Hydra overrides, as `python train.py`"),
    "evaluate": ("facerec.cli.evaluate:main", "verification accuracy on pair lists / .bin packs"),
    "extract": ("facerec.cli.extract:main", "embeddings of every image under a folder (.npy)"),
    "gallery": ("facerec.cli.gallery:main", "enrol people: build/add/remove/calibrate a gallery"),
    "identify": ("facerec.cli.identify:main", "who is in each photo, or unknown (1:N search)"),
    "verify": ("facerec.cli.verify:main", "same person or not: two images, one decision"),
    "serve": ("facerec.cli.serve:main", "a local page (and JSON API) to try a model on photos"),
    "export": ("facerec.cli.export:main", "a shareable model folder (safetensors, JSON, card)"),
    "export-onnx": ("facerec.cli.export_onnx:main", "ONNX file, checked with onnxruntime"),
    "pack": ("facerec.cli.pack_dataset:main", "pack a folder dataset into JPEG shards"),
    # Needs the `align` extra (facenet-pytorch) only when it runs: it says so in one line.
    "align": ("facerec.cli.align:main", "align faces (MTCNN landmarks, similarity transform)"),
    "scan": ("facerec.cli.scan_dataset:main", "check a folder dataset before training"),
    "make-bin": ("facerec.cli.make_bin:main", "pairs list -> insightface .bin pack"),
    "get-lfw": ("facerec.cli.get_lfw:main", "put LFW and its protocol files in one folder"),
    "compare": ("facerec.cli.compare:main", "runs as arms: mean over seeds, paired CIs"),
    "bench": ("facerec.cli.commands:bench", "speed benchmarks: heads, data, train"),
}

BENCHMARKS: Table = {
    "heads": ("facerec.cli.bench_heads:main", "every head's step against nn.Linear + CE"),
    "data": ("facerec.cli.bench_data:main", "training-data throughput per worker"),
    "train": ("facerec.cli.bench_train:main", "training steps: images/s and MFU over a grid"),
}


def usage(table: Table, prog: str) -> str:
    """The help page of a command table."""
    width = max(map(len, table))
    lines = [f"usage: {prog} <command> [args ...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in table.items()]
    lines += ["", f"`{prog} <command> --help` shows each command's options."]
    return "\n".join(lines)


def dispatch(table: Table, argv: Sequence[str], prog: str) -> int:
    """Run the command named by ``argv[0]`` with the rest of ``argv``.

    Returns:
        The command's exit status; 0 for ``--help``, 2 for an unknown or unavailable command
        (one line on stderr).
    """
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(table, prog))
        return 0 if argv else 2
    name, rest = argv[0], list(argv[1:])
    if name not in table:
        print(f"{prog}: error: unknown command {name!r}; one of: {', '.join(table)}",
              file=sys.stderr)  # fmt: skip
        return 2
    module_name, function = table[name][0].split(":")
    try:
        command = getattr(importlib.import_module(module_name), function)
    except (ModuleNotFoundError, AttributeError) as error:
        missing = error.name if isinstance(error, ModuleNotFoundError) else table[name][0]
        print(f"{prog} {name}: error: not available in this installation ({missing} is not "
              f"installed)", file=sys.stderr)  # fmt: skip
        return 2
    # argparse names itself after argv[0]: "facerec evaluate", not "evaluate.py". Restored
    # after, for callers in the same process (tests, notebooks).
    saved, sys.argv = sys.argv, [f"{prog} {name}", *rest]
    try:
        return int(command(rest) or 0)
    finally:
        sys.argv = saved


def bench(argv: Sequence[str] | None = None) -> int:
    """``facerec bench <benchmark>``: the second-level table."""
    return dispatch(BENCHMARKS, sys.argv[1:] if argv is None else argv, "facerec bench")


def main(argv: Sequence[str] | None = None) -> int:
    """The ``facerec`` console script."""
    return dispatch(COMMANDS, sys.argv[1:] if argv is None else argv, "facerec")
