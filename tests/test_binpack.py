"""insightface verification packs: round trips, foreign pickles, bad files, BinSet == PairsSet."""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from facerec.data.binpack import BinSet, read_bin
from facerec.data.binpack_writer import encode_image, pack_pairs, write_bin
from facerec.data.module import PairsSet
from facerec.data.pairs import read_pairs
from facerec.data.transforms import decode_image, geometry, read_image
from facerec.model import FaceModel
from facerec.training.verifier import Verifier

ROOT = Path(__file__).resolve().parents[1]


def synthetic_faces(n: int, size: int = 112, seed: int = 0) -> list[np.ndarray]:
    """``n`` distinct RGB uint8 images (smooth blobs + noise: realistic enough for codecs)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        cx, cy, r = rng.uniform(0.3, 0.7, 3)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (0.1 * r))
        image = blob[..., None] * rng.uniform(60, 255, 3) + rng.normal(0, 8, (size, size, 3))
        out.append(np.clip(image, 0, 255).astype(np.uint8))
    return out


def png(image: np.ndarray) -> bytes:
    return encode_image(image, ".png")


def py2_pickle(bins: list[bytes], issame: list[bool]) -> bytes:
    """What Python 2's ``pickle.dump((bins, issame), f, protocol=2)`` writes: ``str`` entries
    as BINSTRING opcodes, which only ``encoding="bytes"`` turns back into bytes."""
    out = bytearray(b"\x80\x02")  # PROTO 2
    out += b"]("  # EMPTY_LIST, MARK
    for data in bins:
        out += b"T" + struct.pack("<I", len(data)) + data  # BINSTRING (py2 str)
    out += b"e]("  # APPENDS, EMPTY_LIST, MARK
    for flag in issame:
        out += b"\x88" if flag else b"\x89"  # NEWTRUE / NEWFALSE
    out += b"e\x86."  # APPENDS, TUPLE2, STOP
    return bytes(out)


@pytest.fixture(scope="module")
def pack_content():
    images = synthetic_faces(8)
    bins = [png(im) for im in images]
    issame = np.array([True, False, True, False])
    return images, bins, issame


# ----------------------------------------------------------------------------------------------
# round trips


def test_write_read_round_trip(tmp_path, pack_content):
    images, bins, issame = pack_content
    path = write_bin(tmp_path / "x.bin", bins, issame)
    pack = read_bin(path)
    assert pack.images == bins
    assert pack.issame.dtype == bool and np.array_equal(pack.issame, issame)
    for original, data in zip(images, pack.images, strict=True):
        assert np.array_equal(decode_image(data), original)  # PNG: lossless
    # insightface's own reader, minus mxnet: the plain pickle it expects.
    with path.open("rb") as f:
        raw_bins, raw_issame = pickle.load(f, encoding="bytes")
    assert raw_bins == bins and raw_issame == issame.tolist()
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize(
    "variant", ["protocol2", "protocol5", "numpy_issame", "py2_str", "str_entries", "list_pair"]
)
def test_reads_packs_written_without_our_writer(tmp_path, pack_content, variant):
    """Independent minimal pickles as other tools (and Python 2) wrote them."""
    _, bins, issame = pack_content
    labels = issame.tolist()
    path = tmp_path / f"{variant}.bin"
    if variant == "py2_str":
        path.write_bytes(py2_pickle(bins, labels))
    else:
        obj = {
            "protocol2": (bins, labels),
            "protocol5": (bins, labels),
            "numpy_issame": (bins, np.array(labels)),
            # a py2 pack once loaded with encoding="latin1" and re-pickled: str entries
            "str_entries": ([b.decode("latin-1") for b in bins], labels),
            "list_pair": [bins, [int(v) for v in labels]],
        }[variant]
        with path.open("wb") as f:
            pickle.dump(obj, f, protocol=2 if variant == "protocol2" else 5)
    pack = read_bin(path)
    assert pack.images == bins
    assert np.array_equal(pack.issame, issame)


# ----------------------------------------------------------------------------------------------
# bad files


def _dump(path: Path, obj) -> Path:
    with path.open("wb") as f:
        pickle.dump(obj, f)
    return path


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p, b: p.write_text("lfw pairs, not a pickle\n"), "not a readable pickle"),
        (lambda p, b: p.write_bytes(b""), "not a readable pickle"),
        (lambda p, b: _dump(p, {"bins": b}), "expected a pickled (bins, issame_list) pair"),
        (lambda p, b: _dump(p, (b, [True] * 4, None)), "of length 3"),
        (lambda p, b: _dump(p, (b"abc", [True])), "bins must be a list"),
        (lambda p, b: _dump(p, (b[:7], [True] * 4)), "7 images, an odd number"),
        (lambda p, b: _dump(p, (b, [True] * 3)), "8 images (4 pairs) but 3 issame labels"),
        (lambda p, b: _dump(p, ([], [])), "holds no pairs"),
        (lambda p, b: _dump(p, (b, [True, 2, False, True])), "issame label 1 is 2"),
        (lambda p, b: _dump(p, ([*b[:5], 3.5, *b[6:]], [True] * 4)), "image 5 (pair 2) is a"),
        (lambda p, b: _dump(p, ([*b[:3], b"\xffjunk", *b[4:]], [True] * 4)), "image 3 (pair 1)"),
        (lambda p, b: _dump(p, (_Evil(), [True])), "refusing to load"),
    ],
    ids=[
        "text", "empty", "dict", "triple", "bins-bytes", "odd", "count", "no-pairs", "label",
        "entry-type", "undecodable", "code",
    ],
)  # fmt: skip
def test_bad_packs_give_clear_errors_naming_the_file(tmp_path, pack_content, make, expected):
    path = tmp_path / "bad.bin"
    make(path, pack_content[1])
    with pytest.raises((ValueError, OSError)) as info:
        read_bin(path)
    message = str(info.value)
    assert str(path) in message
    assert expected in message


def test_missing_pack():
    with pytest.raises(FileNotFoundError, match=r"verification pack not found: .*nope\.bin"):
        read_bin("nope.bin")


def test_writer_rejects_inconsistent_input(tmp_path, pack_content):
    _, bins, issame = pack_content
    with pytest.raises(ValueError, match="need exactly 2 per pair"):
        write_bin(tmp_path / "x.bin", bins[:6], issame)
    with pytest.raises(TypeError, match="image 2 is a str"):
        write_bin(tmp_path / "x.bin", [*bins[:2], "x", *bins[3:]], issame)
    assert not (tmp_path / "x.bin").exists()


# ----------------------------------------------------------------------------------------------
# BinSet


def test_binset_dedups_identical_images_and_decodes_chw(tmp_path, pack_content):
    images, bins, _ = pack_content
    # pairs (0,1) (0,2) (3,3) (1,2): 4 distinct images used 8 times
    order = [0, 1, 0, 2, 3, 3, 1, 2]
    path = write_bin(tmp_path / "x.bin", [bins[i] for i in order], [False, False, True, False])
    s = BinSet(str(path))
    pairs = s.load()
    assert s.name == "x.bin"
    assert pairs.images == [0, 1, 3, 4]  # first position of each distinct image in the pack
    assert pairs.index.tolist() == [[0, 1], [0, 2], [3, 3], [1, 2]]
    ds = s.dataset(pairs.images)
    assert len(ds) == 4
    for item, original in zip(ds, (images[0], images[1], images[2], images[3]), strict=True):
        assert item.dtype == torch.uint8 and item.shape == (3, 112, 112)
        assert torch.equal(item, torch.from_numpy(original.transpose(2, 0, 1)))


def test_binset_decode_error_names_pack_and_position(tmp_path, pack_content):
    _, bins, issame = pack_content
    path = write_bin(tmp_path / "x.bin", bins, issame)
    s = BinSet(str(path))
    s.pack().images[6] = b"\x89PNG broken"  # corrupt after the read-time check
    with pytest.raises(OSError, match=r"x\.bin: image 6 \(pair 3\): cannot decode"):
        s.dataset([6])[0]


def _small_pairs(lfw_root: Path, out: Path, per_kind: int = 10) -> Path:
    lines = (lfw_root / "pairsDevTest.txt").read_text().splitlines()[1:]
    out.write_text("\n".join([str(per_kind), *lines[:per_kind], *lines[500 : 500 + per_kind]]))
    return out


class _TinyModel(nn.Module):
    """A fixed random conv net: enough to tell images apart, fast on a CPU."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 5, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_make_bin_cli_on_real_lfw_matches_pairs_set(lfw_root, tmp_path):
    pairs_file = _small_pairs(lfw_root, tmp_path / "pairs.txt")
    image_root = lfw_root / "lfw-deepfunneled"
    script = ROOT / "scripts" / "make_bin.py"
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    help_run = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, env=env
    )
    assert help_run.returncode == 0 and "--center-crop" in help_run.stdout
    out = tmp_path / "small.bin"
    command = [sys.executable, str(script), str(pairs_file), str(image_root), "--out", str(out),
               "--center-crop", "150", "--size", "112", "--format", "png"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "20 pairs (10 same, 10 different), 40 images" in result.stdout

    pack = read_bin(out)
    paths, issame = read_pairs(pairs_file, image_root)
    assert np.array_equal(pack.issame, issame)
    crop = geometry(112, 150)
    for k in (0, 1, 17, 39):
        expected = crop(image=read_image(paths[k // 2][k % 2]))["image"]
        assert np.array_equal(decode_image(pack.images[k]), expected)  # pre-cropped, lossless

    # Next to the PairsSet it was made from, the pack verifies identically.
    model, cpu = FaceModel(_TinyModel(), nn.Identity()).eval(), torch.device("cpu")
    from_pairs = Verifier(PairsSet(str(pairs_file), str(image_root), 150), 16, 0).evaluate(
        model, cpu
    )
    from_bin = Verifier(BinSet(str(out)), 16, 0).evaluate(model, cpu)
    assert from_bin.summary() == from_pairs.summary()
    assert np.array_equal(from_bin.distances, from_pairs.distances)


def test_pack_pairs_keeps_original_bytes_without_resizing(lfw_root, tmp_path):
    pairs_file = _small_pairs(lfw_root, tmp_path / "pairs.txt", per_kind=2)
    image_root = lfw_root / "lfw-deepfunneled"
    pack = pack_pairs(pairs_file, image_root, tmp_path / "raw.bin", size=None)
    paths, _ = read_pairs(pairs_file, image_root)
    assert pack.images == [p.read_bytes() for pair in paths for p in pair]
    jpeg = pack_pairs(pairs_file, image_root, tmp_path / "j.bin", center_crop=150, size=112)
    image = decode_image(jpeg.images[0])
    assert image.shape == (112, 112, 3)
    expected = geometry(112, 150)(image=read_image(paths[0][0]))["image"]
    assert np.abs(image.astype(int) - expected).mean() < 3  # JPEG q95: close, not equal
    assert cv2.imdecode(np.frombuffer(jpeg.images[0], np.uint8), cv2.IMREAD_UNCHANGED) is not None
