"""Folder scanning, the resumable sampler and the data module on small synthetic folders."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from facerec.data import FaceDataModule, ResumableSampler, scan_folder
from facerec.data.transforms import read_image


def make_folder(root: Path, counts: dict[str, int], size: int = 120) -> Path:
    rng = np.random.default_rng(0)
    for name, count in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            image = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            cv2.imwrite(str(root / name / f"{i:03d}.jpg"), image)
    return root


def test_scan_sorts_identities_and_counts_what_it_skips(tmp_path):
    root = make_folder(tmp_path / "d", {"bob": 2, "alice": 3, "carol": 1})
    (root / "empty").mkdir()
    (root / "alice" / "notes.txt").write_text("not an image")
    scan = scan_folder(root, min_images=2)
    assert scan.classes == ["alice", "bob"]
    assert scan.labels.tolist() == [0, 0, 0, 1, 1]
    assert scan.empty == ["empty"] and scan.below_min == ["carol"]
    assert "2 identities, 5 images" in scan.summary()


def test_scan_errors_name_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        scan_folder(tmp_path / "nowhere")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="no identity folder"):
        scan_folder(tmp_path / "empty")


def test_read_image_converts_grey_and_names_corrupt_files(tmp_path):
    grey = tmp_path / "grey.png"
    cv2.imwrite(str(grey), np.full((10, 12), 128, np.uint8))
    assert read_image(grey).shape == (10, 12, 3)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(OSError, match=r"bad\.jpg"):
        read_image(bad)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_sampler_shards_cover_the_epoch_and_resume_mid_epoch(world):
    samplers = [ResumableSampler(10, world, rank, seed=5) for rank in range(world)]
    for s in samplers:
        s.set_epoch(3)
    shards = [list(s) for s in samplers]
    seen = [index for shard in shards for index, _ in shard]
    assert sorted(set(seen)) == list(range(10)) and len(seen) == world * -(-10 // world)
    # Skipping the first k of a shard yields exactly the rest of it (same seeds too).
    samplers[0].set_epoch(3, start=2)
    assert list(samplers[0]) == shards[0][2:]
    samplers[0].set_epoch(4)
    assert list(samplers[0]) != shards[0]  # a new permutation each epoch


def test_preloaded_and_streamed_batches_are_identical(tmp_path):
    """The RAM cache changes speed, not data: same images, same per-sample flips."""
    root = make_folder(tmp_path / "d", {"a": 4, "b": 4})
    batches = []
    for preload in (False, True):
        data = FaceDataModule(str(root), batch_size=4, num_workers=0, preload=preload,
                              center_crop=100)  # fmt: skip
        loader = data.train_loader(seed=1, show_progress=False)
        loader.sampler.set_epoch(0)
        batches.append([(x.clone(), y.clone()) for x, y in loader])
    for (x0, y0), (x1, y1) in zip(*batches, strict=True):
        assert x0.dtype == torch.uint8 and x0.shape == (4, 3, 112, 112)
        assert torch.equal(x0, x1) and torch.equal(y0, y1)


def test_too_few_images_for_a_batch_is_explained(tmp_path):
    root = make_folder(tmp_path / "d", {"a": 2})
    data = FaceDataModule(str(root), batch_size=8, num_workers=0)
    with pytest.raises(ValueError, match="batch_size"):
        data.train_loader(show_progress=False)


# Imports facerec.data, then each of its modules, and names the first that pulled in alignment.
NO_ALIGN = """
import importlib, pkgutil, sys
import facerec.data
names = ["facerec.data"] + sorted(
    "facerec.data." + m.name for m in pkgutil.iter_modules(facerec.data.__path__))
for name in names:
    importlib.import_module(name)
    pulled = sorted(m for m in sys.modules if m.split(".")[:2] == ["facerec", "align"])
    if pulled:
        sys.exit(f"{name} imported {pulled}")
print(len(names))
"""


def test_data_never_imports_align():
    """Alignment plugs into data (``facerec.align.prepare``), never the reverse: importing
    ``facerec.data`` and every module in it, in a fresh interpreter, loads no ``facerec.align``."""
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", NO_ALIGN], capture_output=True, text=True,
                            env=env, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout.split()[-1]) > 10  # the package and its modules were all imported


def test_no_data_module_imports_align_even_inside_a_function():
    """The import test above misses an import run only when a function is called: read them."""
    import ast

    import facerec.data

    found = []
    for path in sorted(Path(facerec.data.__path__[0]).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            found += [f"{path.name}:{node.lineno}" for n in names if n.startswith("facerec.align")]
    assert not found
