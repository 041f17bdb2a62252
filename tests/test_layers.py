"""The package's rooms and the one direction of imports between them (docs/architecture.md).

Every import in ``src/facerec`` (module level and inside functions alike) is read from the
source, and each package is imported alone in a fresh interpreter, so a cycle or an import
against the direction fails here rather than in a user's ``import``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "facerec"

# Layer of each top-level room: a module may import its own layer or a later (lower) one.
LAYERS = [
    {"cli", "serve", "__main__"},
    {"training"},
    {"inference"},
    {"model", "backbones", "embedding", "heads", "criteria", "optim", "align"},
    {"data", "eval", "distributed", "configs", "files", "messages"},
]
LAYER_OF = {room: depth for depth, rooms in enumerate(LAYERS) for room in rooms}


def room_of(module: str) -> str | None:
    """``facerec.training.run`` -> ``training``; ``facerec`` itself (its lazy face) -> None."""
    parts = module.split(".")
    return parts[1] if parts[0] == "facerec" and len(parts) > 1 else None


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every ``import``/``from ... import`` in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "facerec":  # from facerec import training, inference, ...
                found += [(node.lineno, f"facerec.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
    return [(line, name) for line, name in found if name.split(".")[0] == "facerec"]


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_room_has_a_layer() -> None:
    rooms = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in MODULES}
    assert rooms - {"__init__"} <= set(LAYER_OF), rooms - set(LAYER_OF)


def test_imports_run_one_way() -> None:
    against = []
    for path in MODULES:
        here = room_of(module_name(path))
        for line, target in imports_of(path):
            there = room_of(target)
            if here and there and LAYER_OF[there] < LAYER_OF[here]:
                against.append(f"{path.relative_to(SRC)}:{line} imports {target}")
    assert not against, "imports against the layers:\n" + "\n".join(against)


def test_data_does_not_import_align() -> None:
    data = [p for p in MODULES if room_of(module_name(p)) == "data"]
    offenders = [
        f"{p.relative_to(SRC)}:{line}"
        for p in data
        for line, target in imports_of(p)
        if room_of(target) == "align"
    ]
    assert not offenders, offenders


@pytest.mark.parametrize(
    "package",
    sorted({module_name(p) for p in MODULES if p.name == "__init__.py"} - {"facerec"}),
)
def test_each_package_imports_alone(package: str) -> None:
    """A cycle shows as an ImportError only when a package is the first thing imported."""
    modules = [module_name(p) for p in MODULES if module_name(p).startswith(package + ".")]
    modules = [m for m in modules if not m.endswith("__main__")] or [package]
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    done = subprocess.run(
        [sys.executable, "-c", code, package, *modules], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
