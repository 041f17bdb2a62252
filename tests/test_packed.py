"""Packed shards and insightface RecordIO: round trips on real LFW images, errors, training."""

from __future__ import annotations

import importlib.util
import json
import logging
import pickle
import shutil
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from torch.utils.data import DataLoader

from facerec.data import (
    FaceFolder,
    PackedDataset,
    RecordIODataset,
    device_decode,
    pack_folder,
    scan_folder,
)
from facerec.data.device_decode import EncodedBatch, EncodedView, collate_encoded, decode_batch
from facerec.data.pack_writer import jpeg_sampling, pack_images
from facerec.data.packed import read_pack_header
from facerec.data.packed_module import PackedDataModule
from facerec.data.transforms import augmentation, geometry, read_image
from facerec.training.run import run

ROOT = Path(__file__).resolve().parents[1]
PEOPLE = {"Adrien_Brody", "Al_Gore", "Ali_Naimi", "Ana_Palacio"}  # 12 + 8 + 8 + 8 images


@pytest.fixture(scope="module")
def lfw_images(lfw_root):
    return lfw_root / "lfw-deepfunneled"


@pytest.fixture(scope="module")
def pack(lfw_images, tmp_path_factory) -> Path:
    """Four LFW identities, centre crop 150 -> 112, small shards so there are several."""
    out = tmp_path_factory.mktemp("pack")
    pack_folder(lfw_images, out, PEOPLE, center_crop=150, shard_bytes=64 * 1024)
    return out


@pytest.fixture(scope="module")
def scan(lfw_images):
    return scan_folder(lfw_images, PEOPLE)


def folder_route(scan, hflip: bool = False) -> FaceFolder:
    """The same images through the folder route (decode, crop 150, resize 112 every time)."""
    return FaceFolder(scan.paths, scan.labels, geometry(112, 150), augmentation(hflip))


def is_flipped(image: torch.Tensor, plain: torch.Tensor) -> bool:
    """Whether ``image`` is ``plain`` mirrored (closer to the mirror than to itself)."""
    a, b = image.float(), plain.float()
    return bool((a - b.flip(-1)).abs().mean() < (a - b).abs().mean())


# ------------------------------------------------------------------------------------ packs


def test_pack_round_trip_matches_the_folder_route(pack, scan):
    folder = folder_route(scan)
    data = PackedDataset(pack)
    header = read_pack_header(pack)
    assert data.classes == sorted(PEOPLE) == header["classes"]
    assert len(data) == len(folder) == 36 == header["num_images"]
    assert len(header["shards"]) > 1 and header["quality"] == 95
    assert data.info.paths == range(36) and "4 identities, 36 images" in data.info.summary()
    for i in range(len(data)):
        image, label = data[i]
        expected, expected_label = folder[i]
        assert image.dtype == torch.uint8 and image.shape == (3, 112, 112)
        assert label == expected_label
        # Only the JPEG re-encoding (quality 95) separates the two routes.
        assert (image.float() - expected.float()).abs().mean() < 2.5


def test_seeded_flip_is_deterministic_and_the_same_as_the_folder_route(pack, scan):
    packed = PackedDataset(pack, augmentation(True))
    folder = folder_route(scan, hflip=True)
    plain, _ = PackedDataset(pack)[5]
    plain_folder, _ = folder_route(scan)[5]
    flips = []
    for seed in range(12):
        image, _ = packed[(5, seed)]
        assert torch.equal(image, packed[(5, seed)][0])  # same seed, same sample
        flips.append(is_flipped(image, plain))
        assert flips[-1] == is_flipped(folder[(5, seed)][0], plain_folder)
    assert any(flips) and not all(flips)


def test_corrupt_record_is_skipped_with_label_minus_one(pack, tmp_path, caplog):
    copy = Path(shutil.copytree(pack, tmp_path / "pack"))
    index = np.load(copy / "index.npy")
    shard, offset, length = (int(v) for v in index[3, :3])
    shard_file = copy / f"shard-{shard:05d}.dat"
    raw = bytearray(shard_file.read_bytes())
    raw[offset + length // 2 : offset + length // 2 + 16] = bytes(16)  # still "decodes"
    shard_file.write_bytes(bytes(raw))
    data = PackedDataset(copy)
    with caplog.at_level(logging.WARNING):
        image, label = data[(3, 0)]
    assert label == -1 and image.shape == (3, 112, 112) and not image.any()
    assert "record 3" in caplog.text and str(shard_file) in caplog.text
    assert data[4][1] >= 0  # its neighbours are intact

    # Without the CRC check, bytes that do not decode are caught by the decoder.
    raw[offset : offset + 4] = b"\0\0\0\0"  # no JPEG start-of-image marker
    shard_file.write_bytes(bytes(raw))
    assert PackedDataset(copy, verify=False)[3][1] == -1


def test_missing_or_broken_pack_files_are_named(pack, tmp_path):
    copy = Path(shutil.copytree(pack, tmp_path / "pack"))
    (copy / "index.npy").rename(copy / "index.bak")
    with pytest.raises(FileNotFoundError, match=r"index\.npy"):
        PackedDataset(copy)
    (copy / "index.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match=r"index\.npy"):
        PackedDataset(copy)
    (copy / "index.bak").rename(copy / "index.npy")

    shard = copy / "shard-00001.dat"
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(ValueError, match=r"shard-00001\.dat: truncated"):
        PackedDataset(copy)
    shard.unlink()
    with pytest.raises(FileNotFoundError, match=r"shard-00001\.dat"):
        PackedDataset(copy)
    (copy / "pack.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"pack\.json"):
        PackedDataset(copy)


def test_workers_map_the_shards_themselves(pack):
    data = PackedDataset(pack)
    assert data._maps is None  # nothing mapped before a sample is read
    data[0]
    assert data._maps is not None
    assert pickle.loads(pickle.dumps(data))._maps is None  # spawned workers map their own
    items = [(i, i) for i in range(8)]
    loader = DataLoader(data, batch_size=4, sampler=items, num_workers=2)
    images = torch.cat([x for x, _ in loader])
    assert torch.equal(images, torch.stack([data[i][0] for i in items]))


def test_packing_options_and_unreadable_sources(lfw_images, tmp_path, caplog):
    root = tmp_path / "faces"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    sources = sorted((lfw_images / "Al_Gore").iterdir())[:3]
    for p in sources:
        shutil.copy(p, root / "a" / p.name)
    aligned = cv2.resize(cv2.imread(str(sources[0])), (112, 112), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(root / "b" / "aligned.jpg"), aligned)
    (root / "b" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")

    with caplog.at_level(logging.WARNING):
        info = pack_folder(root, tmp_path / "p", quality=90)
    header = read_pack_header(tmp_path / "p")
    assert info.num_images == 4 and header["unreadable"] == [str(root / "b" / "broken.jpg")]
    assert "broken.jpg" in caplog.text
    data = PackedDataset(tmp_path / "p")
    rows = np.load(tmp_path / "p" / "index.npy")
    stored = (tmp_path / "p" / "shard-00000.dat").read_bytes()
    # An already-aligned 112x112 JPEG is stored as is: no second JPEG generation.
    assert stored[rows[3, 1] : rows[3, 1] + rows[3, 2]] == (root / "b" / "aligned.jpg").read_bytes()
    # 250x250 sources without a crop decode at 1/2 scale (DCT domain) then resize 125 -> 112:
    # close to the full decode + resize.
    full = geometry(112)(image=read_image(sources[1]))["image"]
    assert np.abs(data.load(1)[0].astype(float) - full).mean() < 3.0
    with pytest.raises(FileExistsError):
        pack_folder(root, tmp_path / "p")


def test_decode_batch_on_cpu_matches_opencv(pack):
    data = PackedDataset(pack)
    encoded = [data.encoded(i)[0] for i in range(4)]
    batch = decode_batch(encoded, "cpu")
    assert batch.shape == (4, 3, 112, 112) and batch.dtype == torch.uint8
    expected = torch.stack([data[i][0] for i in range(4)]).float()
    assert (batch.float() - expected).abs().mean() < 1.0  # two libjpeg builds, same bytes


def device_decoding_epoch(pack: Path, hflip: bool, workers: int = 0):
    """One epoch of ``data.decode=device`` batches (12 of the 36 images each), and the
    ``(index, seed)`` items the sampler drew, in order."""
    module = PackedDataModule(str(pack), hflip=hflip, batch_size=12, num_workers=workers,
                              decode="device")  # fmt: skip
    module.setup()
    loader = module.train_loader(seed=7, show_progress=False)
    loader.sampler.set_epoch(0)
    return list(loader), list(loader.sampler)


def test_device_decoding_gives_the_worker_decoded_images(pack):
    """``data.decode=device`` on the CPU: the pixels and labels of decoding in the workers."""
    plain = PackedDataset(pack)
    batches, items = device_decoding_epoch(pack, hflip=False)
    assert len(batches) == 3
    for b, (batch, labels) in enumerate(batches):
        assert isinstance(batch, EncodedBatch) and len(batch) == 12
        images = batch.to("cpu")
        assert images.dtype == torch.uint8 and images.shape == (12, 3, 112, 112)
        chosen = [index for index, _ in items[12 * b : 12 * b + 12]]
        expected = torch.stack([plain[i][0] for i in chosen])
        assert labels.tolist() == [plain[i][1] for i in chosen]
        assert (images.float() - expected.float()).abs().mean() < 1.0  # two libjpeg builds


def test_device_decoding_flips_follow_the_sample_seed(pack):
    plain = PackedDataset(pack)
    batches, items = device_decoding_epoch(pack, hflip=True)
    again, _ = device_decoding_epoch(pack, hflip=True, workers=2)  # the seed, not the process
    flips = torch.cat([batch.flips for batch, _ in batches])
    assert torch.equal(flips, torch.cat([batch.flips for batch, _ in again]))
    assert 0.2 < flips.float().mean() < 0.8
    images = torch.cat([batch.to("cpu") for batch, _ in batches])
    for image, flip, (index, _) in zip(images, flips, items, strict=True):
        assert is_flipped(image, plain[index][0]) == bool(flip)


def test_device_decoding_drops_a_corrupt_record_before_decoding(pack, tmp_path, caplog):
    copy = Path(shutil.copytree(pack, tmp_path / "pack"))
    index = np.load(copy / "index.npy")
    shard, offset = (int(v) for v in index[3, :2])
    shard_file = copy / f"shard-{shard:05d}.dat"
    raw = bytearray(shard_file.read_bytes())
    raw[offset : offset + 16] = bytes(16)  # no JPEG marker any more: nvjpeg would fail on it
    shard_file.write_bytes(bytes(raw))
    view = EncodedView(PackedDataset(copy), hflip=True)
    with caplog.at_level(logging.WARNING):
        (data, _), label = view[(3, 11)]
    assert label == -1 and "record 3" in caplog.text
    assert not decode_batch([data]).any()  # a black stand-in that decodes
    batch = EncodedBatch.of([view[(i, i)][0][0] for i in (2, 3, 4)], [True, False, True])
    keep = torch.tensor([True, False, True])
    kept = batch[keep]  # what the trainer does with label -1 samples
    assert len(kept) == 2 and kept.flips.tolist() == [True, True]
    assert torch.equal(kept.parts()[1], view[(4, 4)][0][0])
    with pytest.raises(ValueError, match=r"data\.decode='gpu'"):
        PackedDataModule(str(pack), decode="gpu")
    with pytest.raises(ValueError, match=r"needs data\.verify=true"):
        PackedDataModule(str(pack), decode="device", verify=False)


def test_chroma_444_packs_are_written_as_such(lfw_images, pack, tmp_path):
    full = pack_folder(lfw_images, tmp_path / "444", PEOPLE, center_crop=150, chroma="444")
    dense, default = PackedDataset(tmp_path / "444"), PackedDataset(pack)
    assert read_pack_header(tmp_path / "444")["chroma"] == "444" and full.num_images == 36
    assert jpeg_sampling(dense.encoded(0)[0].numpy().tobytes()) == [0x11, 0x11, 0x11]
    assert jpeg_sampling(default.encoded(0)[0].numpy().tobytes()) == [0x22, 0x11, 0x11]
    with pytest.raises(ValueError, match="chroma"):
        pack_folder(lfw_images, tmp_path / "bad", PEOPLE, chroma="422")


def test_chroma_444_re_encodes_aligned_subsampled_sources(tmp_path):
    """112x112 JPEG sources are stored as they are, unless 4:4:4 is asked and they are 4:2:0."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(4):
        small = rng.integers(0, 256, (14, 14, 3), dtype=np.uint8)
        path = tmp_path / "src" / f"id{i % 2}" / f"{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), cv2.resize(small, (112, 112), interpolation=cv2.INTER_CUBIC))
        paths.append(path)
    assert jpeg_sampling(paths[0].read_bytes()) == [0x22, 0x11, 0x11]
    for chroma in ("420", "444"):
        pack_images(paths, [0, 1, 0, 1], ["id0", "id1"], tmp_path / chroma, chroma=chroma)
    stored = PackedDataset(tmp_path / "420").encoded(0)[0].numpy().tobytes()
    assert stored == paths[0].read_bytes()  # no second JPEG generation
    dense = PackedDataset(tmp_path / "444").encoded(0)[0].numpy().tobytes()
    assert jpeg_sampling(dense) == [0x11, 0x11, 0x11]


def test_a_batch_the_device_decoder_rejects_is_decoded_on_the_cpu(pack, monkeypatch, caplog):
    view = EncodedView(PackedDataset(pack), hflip=True)
    batch, _ = collate_encoded([view[(i, 100 + i)] for i in range(6)])
    expected = batch.to("cpu")

    def reject(data, device):
        raise RuntimeError("nvjpeg: unsupported JPEG\nmore detail")

    monkeypatch.setattr(device_decode, "decode_batch", reject)
    with caplog.at_level(logging.WARNING):
        fallback = batch.to("cpu")
    assert "decoded on the CPU" in caplog.text and "unsupported JPEG" in caplog.text
    assert (fallback.float() - expected.float()).abs().mean() < 1.0  # OpenCV vs torchvision


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scripts_help_and_pack_cli(lfw_root, tmp_path, capsys):
    for name in ("pack_dataset", "bench_data"):
        with pytest.raises(SystemExit) as exit_:
            load_script(name).main(["--help"])
        assert exit_.value.code == 0 and "usage:" in capsys.readouterr().out
    people = tmp_path / "people.txt"
    people.write_text("2\nAl_Gore\t8\nAli_Naimi\t8\n")
    out = tmp_path / "pack"
    load_script("pack_dataset").main([
        str(lfw_root / "lfw-deepfunneled"), str(out), "--people-file", str(people),
        "--center-crop", "150", "--quality", "90",
    ])  # fmt: skip
    assert "2 identities, 16 images" in capsys.readouterr().out
    assert json.loads((out / "pack.json").read_text())["quality"] == 90


# --------------------------------------------------------------------------------- RecordIO
# An independent minimal writer, following dmlc-core's RecordIOWriter::WriteRecord and mxnet's
# recordio.pack, to check the reader against the format rather than against itself.

MAGIC = 0xCED7230A


def ir_pack(label: float | list[float], image: bytes, id1: int = 0, id2: int = 0) -> bytes:
    if isinstance(label, list):  # flag = number of labels, which follow the header
        return struct.pack("<IfQQ", len(label), 0.0, id1, id2) + struct.pack(
            f"<{len(label)}f", *label
        ) + image  # fmt: skip
    return struct.pack("<IfQQ", 0, label, id1, id2) + image


def write_record(f, payload: bytes) -> int:
    """Append one record; returns its offset. Splits at aligned magic words, as dmlc does."""
    start = f.tell()
    magic = struct.pack("<I", MAGIC)
    done = 0
    for i in range(0, len(payload) // 4 * 4, 4):
        if payload[i : i + 4] == magic:
            flag = 1 if done == 0 else 2
            f.write(struct.pack("<II", MAGIC, (flag << 29) | (i - done)) + payload[done:i])
            done = i + 4
    flag = 3 if done else 0
    f.write(struct.pack("<II", MAGIC, (flag << 29) | (len(payload) - done)) + payload[done:])
    f.write(bytes(-len(payload) % 4))
    return start


def write_rec(root: Path, records: list[bytes]) -> None:
    """``train.rec``/``train.idx`` with record ``k`` = ``records[k]``."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / "train.rec").open("wb") as f:
        offsets = [write_record(f, payload) for payload in records]
    (root / "train.idx").write_text("".join(f"{k}\t{o}\n" for k, o in enumerate(offsets)))


@pytest.fixture(scope="module")
def faces(lfw_images) -> list[tuple[bytes, int]]:
    """Aligned-style 112x112 JPEGs of real LFW faces with their labels (3 identities)."""
    crop = geometry(112, 150)
    out = []
    for label, name in enumerate(["Al_Gore", "Ali_Naimi", "Ana_Palacio"]):
        for path in sorted((lfw_images / name).iterdir())[:4]:
            bgr = crop(image=cv2.imread(str(path)))["image"]
            out.append((cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes(),
                        label))  # fmt: skip
    return out


def insightface_records(faces: list[tuple[bytes, int]]) -> list[bytes]:
    """Header record, images 1..n, then one record per identity, as insightface's sets are."""
    n, num_classes = len(faces), 1 + max(label for _, label in faces)
    records = [ir_pack([n + 1.0, n + 1.0 + num_classes], b"")]
    for k, (image, label) in enumerate(faces, start=1):
        if k == 2:  # magic words at aligned positions: the writer must split this record
            records.append(ir_pack(float(label), image, id1=MAGIC, id2=MAGIC))
        elif k == 3:  # several labels: label[0] is the identity
            records.append(ir_pack([float(label), 0.5, 7.0], image))
        else:
            records.append(ir_pack(float(label), image))
    for c in range(num_classes):
        first = 1 + [label for _, label in faces].index(c)
        count = sum(label == c for _, label in faces)
        records.append(ir_pack([float(first), float(first + count)], b""))
    return records


def test_recordio_round_trip(faces, tmp_path):
    records = insightface_records(faces)
    magic = struct.pack("<I", MAGIC)
    assert records[2][8:12] == records[2][16:20] == magic  # the writer splits it in 3 parts
    write_rec(tmp_path / "rec", records)
    rec_bytes = (tmp_path / "rec" / "train.rec").read_bytes()
    offset = int((tmp_path / "rec" / "train.idx").read_text().splitlines()[2].split()[1])
    assert struct.unpack_from("<II", rec_bytes, offset)[1] >> 29 == 1  # a first part

    data = RecordIODataset(tmp_path / "rec")
    assert len(data) == len(faces) and data.classes == ["0", "1", "2"]
    for i, (jpeg, label) in enumerate(faces):
        image, got = data[i]
        expected = cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), 1), cv2.COLOR_BGR2RGB)
        assert got == label
        assert torch.equal(image, torch.from_numpy(expected).permute(2, 0, 1))
    flipped = RecordIODataset(tmp_path / "rec", augmentation(True))
    assert torch.equal(flipped[(1, 3)][0], flipped[(1, 3)][0])

    # Without the insightface header record every key is an image; classes from the labels.
    write_rec(tmp_path / "plain", [ir_pack(float(label), jpeg) for jpeg, label in faces])
    plain = RecordIODataset(tmp_path / "plain")
    assert len(plain) == len(faces) and len(plain.classes) == 3
    assert [plain[i][1] for i in range(len(faces))] == [label for _, label in faces]


def test_recordio_errors(faces, tmp_path, caplog):
    write_rec(tmp_path / "rec", insightface_records(faces))
    idx = tmp_path / "rec" / "train.idx"
    rows = idx.read_text().splitlines()
    idx.unlink()
    with pytest.raises(FileNotFoundError, match=r"train\.idx"):
        RecordIODataset(tmp_path / "rec")
    idx.write_text("\n".join(rows[:5]) + "\n")  # images 5.. missing from the index
    with pytest.raises(ValueError, match=r"train\.idx.*not in the index"):
        RecordIODataset(tmp_path / "rec")
    idx.write_text("\n".join(rows) + "\n")
    rec = tmp_path / "rec" / "train.rec"
    raw = bytearray(rec.read_bytes())
    offset = int(rows[4].split()[1])
    raw[offset : offset + 4] = b"XXXX"  # record 4's magic word
    rec.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING):
        assert RecordIODataset(tmp_path / "rec")[3][1] == -1  # sample 3 is record 4
    assert "record 4" in caplog.text and "train.rec" in caplog.text


# ------------------------------------------------------------------------- configs, training


def small_pairs(lfw_root: Path, out: Path, per_kind: int = 10) -> Path:
    lines = (lfw_root / "pairsDevTest.txt").read_text().splitlines()[1:]
    out.write_text("\n".join([str(per_kind), *lines[:per_kind], *lines[500 : 500 + per_kind]]))
    return out


def overrides(lfw_root: Path, tmp_path: Path, data: str, root: Path, *extra: str) -> list[str]:
    return [
        f"data={data}",
        f"data.root={root}",
        f"paths.lfw_root={lfw_root}",
        f"paths.output_dir={tmp_path / 'runs'}",
        f"data.val.lfw.pairs_file={small_pairs(lfw_root, tmp_path / 'pairs.txt')}",
        "data.batch_size=8",
        "data.num_workers=0",
        "trainer.device=cpu",
        "trainer.progress=false",
        "trainer.eval_batch_size=16",
        "name=smoke",
        *extra,
    ]


def test_recordio_config_gives_a_training_loader(faces, lfw_root, tmp_path, compose_train):
    write_rec(tmp_path / "rec", insightface_records(faces))
    cfg = compose_train(*overrides(lfw_root, tmp_path, "recordio", tmp_path / "rec"))
    data = instantiate(cfg.data)
    scan = data.setup()
    assert len(scan.paths) == len(faces) and data.classes == ["0", "1", "2"]
    loader = data.train_loader(seed=0, show_progress=False)
    loader.sampler.set_epoch(0)
    images, labels = next(iter(loader))
    assert images.shape == (8, 3, 112, 112) and images.dtype == torch.uint8
    assert labels.min() >= 0 and "lfw" in data.val


@pytest.mark.parametrize("decode", ["workers", "device"])
def test_two_training_steps_on_a_pack(pack, lfw_root, tmp_path, decode, compose_train):
    extra = ("trainer.max_steps=2", f"data.decode={decode}")
    cfg = compose_train(*overrides(lfw_root, tmp_path, "packed", pack, *extra))
    metrics = run(cfg)
    saved = json.loads((Path(metrics["run_dir"]) / "metrics.json").read_text())
    assert saved["step"] == 2 and 0.0 <= saved["accuracy"] <= 1.0
