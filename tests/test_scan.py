"""The dataset scan: every kind of problem reported by path, and the cache."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from facerec.data.scan import scan_dataset

ROOT = Path(__file__).resolve().parents[1]


def seeded_dataset(root: Path) -> Path:
    rng = np.random.default_rng(0)

    def rgb() -> Image.Image:
        return Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8))

    (root / "alice").mkdir(parents=True)
    for i in range(3):
        rgb().save(root / "alice" / f"{i}.jpg")
    (root / "bob").mkdir()
    rgb().convert("L").save(root / "bob" / "grey.jpg")
    rgb().convert("CMYK").save(root / "bob" / "cmyk.jpg")
    rgb().save(root / "bob" / "photo.png")
    good = (root / "alice" / "0.jpg").read_bytes()
    (root / "bob" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "bob" / "notes.txt").write_text("not an image")
    (root / "carol").mkdir()
    rgb().save(root / "carol" / "only.jpg")
    (root / "empty").mkdir()
    return root


def test_scan_lists_every_problem_by_path(tmp_path):
    root = seeded_dataset(tmp_path / "data")
    report = scan_dataset(root, min_images=2, workers=1, show_progress=False)
    assert report.identities == 3 and report.images == 8
    assert list(report.unreadable) == [str(root / "bob" / "truncated.jpg")]
    assert report.converted == {
        str(root / "bob" / "cmyk.jpg"): "CMYK",
        str(root / "bob" / "grey.jpg"): "greyscale",
        str(root / "bob" / "photo.png"): "PNG",
    }
    assert report.not_images == [str(root / "bob" / "notes.txt")]
    assert report.empty_identities == [str(root / "empty")]
    assert report.below_min == {"carol": 1}


def test_scan_cache_skips_unchanged_files(tmp_path, monkeypatch):
    root = seeded_dataset(tmp_path / "data")
    cache = tmp_path / "scan.json"
    scan_dataset(root, workers=1, cache_file=cache, show_progress=False)
    import facerec.data.scan as scan

    decoded = []
    monkeypatch.setattr(scan, "ProcessPoolExecutor", _Recording(decoded))
    again = scan.scan_dataset(root, workers=1, cache_file=cache, show_progress=False)
    assert decoded == [[]]  # nothing to decode the second time
    assert list(again.unreadable) == [str(root / "bob" / "truncated.jpg")]


class _Recording:
    """Stands in for ProcessPoolExecutor and records what would be decoded."""

    def __init__(self, log: list) -> None:
        self.log = log

    def __call__(self, max_workers: int) -> _Recording:
        return self

    def __enter__(self) -> _Recording:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def map(self, fn, items, chunksize: int = 1):
        self.log.append(list(items))
        return map(fn, self.log[-1])


def test_scan_tool_exit_status_and_output(tmp_path):
    root = seeded_dataset(tmp_path / "data")
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "scan_dataset.py"), str(root), "--min-images", "2",
         "--workers", "1", "--cache", str(tmp_path / "c.json")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1  # an unreadable image was found
    assert "truncated.jpg" in result.stdout and "1 empty identity folders" in result.stdout
    missing = subprocess.run([sys.executable, str(ROOT / "scripts" / "scan_dataset.py"),
                              str(tmp_path / "nope")], capture_output=True, text=True)  # fmt: skip
    assert (
        missing.returncode == 2 and "nope" in missing.stderr and "Traceback" not in missing.stderr
    )
