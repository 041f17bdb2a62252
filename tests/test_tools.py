"""Standalone tools (scripts/evaluate|extract|verify|export_onnx.py) on a real 1-step checkpoint,
plus the verification extras they and the trainer use (per-pair distances, hardest pairs)."""

from __future__ import annotations

import json
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_train

from facerec import inference
from facerec.data.binpack_writer import pack_pairs
from facerec.data.transforms import normalize
from facerec.eval import evaluate_pairs, hardest_pairs
from facerec.eval.plots import pair_grid_image
from facerec.inference.preprocessing import preprocessing_entry

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
TOOLS = ("evaluate", "extract", "verify", "export_onnx", "make_bin")
ENV = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "OMP_NUM_THREADS": "2"}
TIMING_KEYS = {"decode_seconds", "embed_seconds", "images_per_sec"}


def run_script(name: str, *args: str) -> subprocess.CompletedProcess:
    """``python scripts/<name>.py args``, as a user runs it."""
    command = [sys.executable, str(SCRIPTS / f"{name}.py"), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=300, cwd=ROOT)


def call_script(name: str, *args: str) -> int:
    """The same script's ``main(argv)`` in this process (no interpreter start-up: faster)."""
    main = runpy.run_path(str(SCRIPTS / f"{name}.py"))["main"]
    return main([str(a) for a in args])


# ----------------------------------------------------------------------------------------------
# verification extras (no checkpoint needed)


def test_hardest_pairs_on_a_constructed_case():
    #                   0     1     2     3     4     5     6     7
    dist = np.array([0.20, 1.90, 0.90, 0.50, 1.40, 0.70, 1.40, 2.50])
    same = np.array([True, True, False, False, True, False, True, False])
    fa, fr = hardest_pairs(dist, same, threshold=1.0, k=8)
    assert fa.tolist() == [3, 5, 2]  # different pairs accepted (< 1.0), smallest distance first
    assert fr.tolist() == [1, 4, 6]  # same pairs rejected (>= 1.0), largest first, ties in order
    fa, fr = hardest_pairs(dist, same, threshold=1.0, k=2)
    assert fa.tolist() == [3, 5] and fr.tolist() == [1, 4]
    fa, fr = hardest_pairs(dist, same, threshold=None, k=2)  # hardest, errors or not
    assert fa.tolist() == [3, 5] and fr.tolist() == [1, 4]
    fa, fr = hardest_pairs(dist, same, threshold=0.1, k=3)  # nothing accepted: no false accepts
    assert fa.tolist() == [] and fr.tolist() == [1, 4, 6]
    assert fa.dtype == np.int64 and fr.dtype == np.int64
    with pytest.raises(ValueError, match="shape"):
        hardest_pairs(dist, same[:3], 1.0)


def test_result_keeps_per_pair_distances_out_of_summary_and_repr():
    rng = np.random.default_rng(0)
    e1, e2 = rng.normal(size=(40, 8)), rng.normal(size=(40, 8))
    issame = np.tile([True, False], 20)
    result = evaluate_pairs(e1, e2, issame)
    unit = lambda e: e / np.linalg.norm(e, axis=1, keepdims=True)  # noqa: E731
    np.testing.assert_allclose(result.distances, ((unit(e1) - unit(e2)) ** 2).sum(1))
    assert np.array_equal(result.issame, issame) and result.issame is not issame
    assert "distances" not in result.summary() and "issame" not in result.summary()
    assert "distances" not in repr(result)


def test_pair_grid_image_places_thumbnails_and_captions():
    a = np.zeros((5, 3, 112, 112), np.uint8)
    b = np.full((5, 3, 112, 112), 200, np.uint8)
    a[:, 0] = 255  # red first images
    img = pair_grid_image(torch.from_numpy(a), b, np.array([0.1, 0.2, 0.3, 0.4, 0.5]), columns=2)
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert img.shape[0] > 3 * 112 and img.shape[1] > 4 * 112  # 3 rows of 2 pairs
    assert tuple(img[14 + 50, 14 + 50]) == (255, 0, 0)  # first thumbnail, RGB kept
    assert tuple(img[14 + 50, 14 + 112 + 2 + 50]) == (200, 200, 200)
    empty = pair_grid_image(a[:0], b[:0], [], title="false accepts")
    assert empty.dtype == np.uint8 and empty.shape[2] == 3
    with pytest.raises(ValueError, match="one per pair"):
        pair_grid_image(a, b, ["x"])
    with pytest.raises(ValueError, match=r"uint8 \(K, 3, H, W\)"):
        pair_grid_image(a.transpose(0, 2, 3, 1), b, [0.1] * 5)


# ----------------------------------------------------------------------------------------------
# a real checkpoint: the real configs, 1 training step on real LFW


def tiny_pairs(out: Path) -> Path:
    """20 LFW pairs over only 7 images (every forward pass costs on a shared CPU): 10 same
    pairs among George_W_Bush 1-5, 10 different ones against Colin_Powell 1-2."""
    same = [f"George_W_Bush {i} {j}" for i in range(1, 6) for j in range(i + 1, 6)]
    diff = [f"George_W_Bush {i} Colin_Powell {j}" for i in range(1, 6) for j in (1, 2)]
    out.write_text("\n".join(["10", *same, *diff]) + "\n")
    return out


@pytest.fixture(scope="session")
def tiny_run(lfw_root, tmp_path_factory):
    """``(checkpoint, pairs file)``: mobilefacenet + arcface after one step on LFW."""
    from facerec.training.run import run

    tmp = tmp_path_factory.mktemp("tools")
    pairs = tiny_pairs(tmp / "pairs_tiny.txt")
    overrides = [
        f"data.root={lfw_root}",
        f"paths.output_dir={tmp / 'runs'}",
        "trainer.device=cpu",
        "trainer.progress=false",
        "trainer.max_steps=1",
        "data.min_images=20",  # a few dozen identities with many images: a quick scan
        "data.batch_size=8",
        "data.num_workers=0",
        f"data.val.lfw_devtest.pairs_file={pairs}",
        "trainer.eval_batch_size=16",
        "name=tools",
    ]
    cfg = compose_train(*overrides)
    metrics = run(cfg)
    return Path(metrics["run_dir"]) / "checkpoints" / "last.pt", pairs


def test_loaded_meta_reports_the_trainers_best_accuracy_and_step(tiny_run):
    """The tools' loader reads the checkpoint with the trainer's own format: the best accuracy
    and its step are those metrics.json reports, not empty."""
    ckpt = tiny_run[0]
    metrics = json.loads((ckpt.parents[1] / "metrics.json").read_text())
    for name in ("last.pt", "best.pt"):
        _, _, meta = inference.load_model(ckpt.with_name(name), "cpu")
        assert meta["step"] == 1 and meta["best_step"] == metrics["best"]["step"] == 1
        assert meta["best"] == metrics["best"]["accuracy"] == metrics["accuracy"]
        assert 0.0 <= meta["best"] <= 1.0
        assert meta["results"]["lfw_devtest"]["accuracy"] == metrics["accuracy"]
        assert meta["num_classes"] > 1


@pytest.fixture
def checkpoint_copy(tiny_run, tmp_path):
    """A private copy: tests that write ``<checkpoint>.threshold.json`` do not meet."""
    path = tmp_path / "model.pt"
    shutil.copy(tiny_run[0], path)
    return path


def lfw_images(lfw_root: Path, names: list[str]) -> list[Path]:
    return sorted(p for n in names for p in (lfw_root / "lfw-deepfunneled" / n).glob("*.jpg"))


@pytest.mark.parametrize("tool", TOOLS)
def test_help(tool):
    result = run_script(tool, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {tool}.py") and "Traceback" not in result.stderr


def _numbers(report: dict) -> dict:
    """A set's results without timings and without where the set came from."""
    skip = TIMING_KEYS | {"source", "center_crop"}
    return {k: v for k, v in report["sets"]["lfw_devtest"].items() if k not in skip}


def test_evaluate_is_deterministic_and_stores_the_threshold(
    checkpoint_copy, tiny_run, lfw_root, tmp_path
):
    first = run_script("evaluate", checkpoint_copy, "--json", tmp_path / "a.json")
    assert first.returncode == 0, first.stderr
    assert "lfw_devtest" in first.stdout and "TAR@FAR=1e-3" in first.stdout
    a = json.loads((tmp_path / "a.json").read_text())
    ra = a["sets"]["lfw_devtest"]
    assert ra["pairs"] == 20 and a["step"] == 1 and 0 <= ra["accuracy"] <= 1
    assert {"threshold", "tar_at_far", "auc", "eer", "accuracy_noflip"} <= ra.keys()
    stored = json.loads(inference.threshold_path(checkpoint_copy).read_text())
    assert stored["threshold"] == ra["threshold"] and stored["set"] == "lfw_devtest"
    assert stored["step"] == 1

    # Again, the same set named on the command line this time: the same numbers.
    root = lfw_root / "lfw-deepfunneled"
    spec = f"lfw_devtest={tiny_run[1]}:{root}"
    code = call_script(
        "evaluate", checkpoint_copy, "--sets", spec, "--center-crop", "150",
        "--json", tmp_path / "b.json", "--workers", "0",
    )  # fmt: skip
    assert code == 0
    assert _numbers(json.loads((tmp_path / "b.json").read_text())) == _numbers(a)

    # And as an insightface pack of the same crops (lossless): the same numbers again.
    pack_pairs(tiny_run[1], root, tmp_path / "lfw_devtest.bin", center_crop=150, ext=".png")
    code = call_script(
        "evaluate", checkpoint_copy, "--bin", tmp_path / "lfw_devtest.bin",
        "--json", tmp_path / "c.json", "--workers", "0", "--no-save-threshold",
    )  # fmt: skip
    assert code == 0
    assert _numbers(json.loads((tmp_path / "c.json").read_text())) == _numbers(a)


def test_extract_writes_rows_and_index(tiny_run, lfw_root, tmp_path):
    folder = tmp_path / "faces"
    sources = lfw_images(lfw_root, ["Aaron_Peirsol", "Abel_Pacheco"])
    for i, src in enumerate(sources):  # nested folders: the search is recursive
        dst = folder / ("a" if i % 2 else "b/c") / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "emb.npy"
    result = run_script("extract", tiny_run[0], folder, "--out", out, "--workers", "0")
    assert result.returncode == 0, result.stderr
    emb = np.load(out)
    index = (tmp_path / "emb.txt").read_text().splitlines()
    assert emb.dtype == np.float32 and emb.shape == (len(sources), 512)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert index == sorted(index) and len(index) == len(sources)
    assert all((folder / rel).is_file() for rel in index)

    # Row i is image index[i]: the library gives the same vector for that file.
    model, cfg, _ = inference.load_model(tiny_run[0], "cpu")
    images = inference.load_images([folder / index[3]], 112, inference.center_crop(cfg))
    np.testing.assert_allclose(
        inference.embed_images(model, images, torch.device("cpu"))[0], emb[3], atol=1e-5
    )

    code = call_script(
        "extract", tiny_run[0], folder, "--out", tmp_path / "noflip", "--no-flip", "--workers", "0"
    )
    noflip = np.load(tmp_path / "noflip.npy")
    assert code == 0 and noflip.shape == emb.shape and not np.allclose(noflip, emb)


def test_extract_skips_names_and_counts_unreadable_images(tiny_run, lfw_root, tmp_path):
    folder = tmp_path / "faces"
    folder.mkdir()
    for src in lfw_images(lfw_root, ["Aaron_Peirsol"]):
        shutil.copy(src, folder / src.name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a whole jpeg")
    out = tmp_path / "emb.npy"
    result = run_script("extract", tiny_run[0], folder, "--out", out, "--workers", "0")
    assert result.returncode == 0, result.stderr
    assert "skipped 1 unreadable image" in result.stdout and "broken.jpg" in result.stdout
    index = (tmp_path / "emb.txt").read_text().splitlines()
    assert "broken.jpg" not in index and len(index) == len(np.load(out)) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.npy", "emb.txt", "faces"]


def test_verify_prints_a_decision_with_its_threshold_source(checkpoint_copy, lfw_root, capsys):
    a, b = lfw_images(lfw_root, ["Aaron_Peirsol"])[:2]
    assert call_script("verify", checkpoint_copy, a, b) == 2
    err = capsys.readouterr().err
    assert "no threshold" in err and "--threshold" in err and "evaluate.py" in err

    # A file at 3.99 would call nearly every pair "same": refused in one line naming it.
    inference.save_threshold(checkpoint_copy, "lfw_devtest", {"threshold": 3.99, "accuracy": 1}, 1)
    result = run_script("verify", checkpoint_copy, a, b)
    assert result.returncode == 2 and not result.stdout
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and "refused" in err[0] and "threshold 3.99" in err[0]
    assert str(inference.threshold_path(checkpoint_copy)) in err[0]

    # The same number as the user's own --threshold: used, with a warning.
    result = run_script("verify", checkpoint_copy, a, b, "--threshold", "3.99")
    assert result.returncode == 0 and "warning" in result.stderr and "3.99" in result.stderr
    lines = dict(line.split(":", 1) for line in result.stdout.splitlines())
    cosine, distance = float(lines["cosine similarity"]), float(lines["squared distance"])
    assert distance == pytest.approx(2 - 2 * cosine, abs=2e-4)
    assert lines["decision"].strip().startswith("same person")  # every distance is < 4
    assert "--threshold, yours" in lines["threshold"]

    # A plausible file: used, its accuracy quoted as the file's claim.
    inference.save_threshold(checkpoint_copy, "lfw_devtest", {"threshold": 1.5, "accuracy": 1}, 1)
    result = run_script("verify", checkpoint_copy, a, b)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(":", 1) for line in result.stdout.splitlines())
    assert str(inference.threshold_path(checkpoint_copy)) in lines["threshold"]
    assert "the file's claim" in lines["threshold"] and "1.5000" in lines["threshold"]

    code = call_script("verify", checkpoint_copy, a, b, "--threshold", "0")
    assert code == 0  # nothing is below 0: "different people", exit status 0 all the same


def test_export_onnx_matches_pytorch_on_real_lfw(tiny_run, lfw_root, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    out = tmp_path / "model.onnx"
    result = run_script(
        "export_onnx", tiny_run[0], "--out", out, "--check-lfw", lfw_root, "--check-images", "24"
    )
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout

    # An independent check on other images, batch 24 and 1 (the batch axis is dynamic).
    model, cfg, _ = inference.load_model(tiny_run[0], "cpu")
    paths = lfw_images(lfw_root, ["Abel_Pacheco", "Akhmed_Zakayev", "Alastair_Campbell"])
    paths += lfw_images(lfw_root, ["Colin_Powell"])[: 24 - len(paths)]
    x = normalize(inference.load_images(paths, 112, inference.center_crop(cfg)))
    with torch.no_grad():
        ref = model(x).double().numpy()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = np.concatenate(
        [
            session.run(None, {"images": x.numpy()})[0],
            session.run(None, {"images": x[:1].numpy()})[0],
        ]
    ).astype(np.float64)
    ref = np.concatenate([ref, ref[:1]])
    unit = lambda e: e / np.linalg.norm(e, axis=1, keepdims=True)  # noqa: E731
    assert len(got) == 25
    assert np.abs(unit(got) - unit(ref)).max() <= 1e-4
    assert (unit(got) * unit(ref)).sum(1).min() >= 0.9999
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["facerec.image_size"] == "112" and meta["facerec.center_crop"] == "150"
    assert "127.5" in meta["facerec.preprocessing"]
    assert session.get_inputs()[0].shape[0] not in (1, 2, 24)  # symbolic batch dimension


def test_export_onnx_says_what_to_install(tiny_run, tmp_path, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a)
    )
    assert call_script("export_onnx", tiny_run[0], "--out", tmp_path / "m.onnx") == 2
    err = capsys.readouterr().err
    assert "onnx not installed" in err and "pip install" in err
    assert not (tmp_path / "m.onnx").exists()


# ----------------------------------------------------------------------------------------------
# bad input: one line naming the file (and line), exit status 2, no traceback


def test_non_checkpoint_file_as_a_user_sees_it(tmp_path):
    bogus = tmp_path / "notes.pt"
    bogus.write_text("hello\n")
    result = run_script("evaluate", bogus)
    assert result.returncode == 2
    assert result.stderr.startswith("evaluate.py: error: ") and str(bogus) in result.stderr
    assert "not a facerec checkpoint" in result.stderr and "Traceback" not in result.stderr


def _bad_cases(tiny_run, lfw_root: Path, tmp: Path):
    ckpt, _ = tiny_run
    root = lfw_root / "lfw-deepfunneled"
    missing = tmp / "missing.txt"
    missing.write_text("Aaron_Peirsol\t1\t2\nAaron_Peirsol\t1\t9\n")
    malformed = tmp / "malformed.txt"
    malformed.write_text("Aaron_Peirsol 1 2\nAaron_Peirsol one two\n")
    (tmp / "empty").mkdir()
    notes = tmp / "notes.pt"
    notes.write_text("hello\n")
    torch.save({"weights": torch.zeros(1)}, tmp / "state.pt")
    torch.save({"model": {}, "step": 0}, tmp / "noconfig.pt")
    image = lfw_images(lfw_root, ["Aaron_Peirsol"])[0]
    empty, nope, state, noconfig = (
        tmp / "empty",
        tmp / "nope",
        tmp / "state.pt",
        tmp / "noconfig.pt",
    )
    return {
        "missing-image": (
            ("evaluate", ckpt, "--sets", f"x={missing}:{root}", "--workers", "0"),
            [str(missing), "line 2", "Aaron_Peirsol_0009.jpg"],
        ),
        "malformed-line": (
            ("evaluate", ckpt, "--sets", f"x={malformed}:{root}", "--workers", "0"),
            [f"{malformed}:2", "malformed pair line"],
        ),
        "bad-sets-spec": (("evaluate", ckpt, "--sets", "p.txt"), ["NAME=PAIRS_FILE:IMAGE_ROOT"]),
        "missing-bin": (("evaluate", ckpt, "--bin", tmp / "lfw.bin"), [str(tmp / "lfw.bin")]),
        "empty-folder": (
            ("extract", ckpt, empty, "--out", tmp / "e.npy"),
            [str(empty), "no images"],
        ),
        "missing-folder": (("extract", ckpt, nope, "--out", tmp / "e.npy"), [str(nope)]),
        "text-checkpoint": (
            ("verify", notes, image, image, "--threshold", "1"),
            [str(notes), "not a facerec checkpoint"],
        ),
        "state-dict": (("evaluate", state), [str(state), "not a facerec checkpoint"]),
        "no-config": (
            ("export_onnx", noconfig, "--out", tmp / "m.onnx"),
            [str(noconfig), "no config"],
        ),
        "missing-checkpoint": (("evaluate", tmp / "none.pt"), [str(tmp / "none.pt"), "not found"]),
        "missing-image-file": (
            ("verify", ckpt, image, tmp / "x.jpg", "--threshold", "1"),
            [str(tmp / "x.jpg")],
        ),
        "make-bin-missing-root": (
            ("make_bin", missing, nope, "--out", tmp / "m.bin"),
            [str(nope)],
        ),
    }


BAD_CASES = [
    "missing-image", "malformed-line", "bad-sets-spec", "missing-bin", "empty-folder",
    "missing-folder", "text-checkpoint", "state-dict", "no-config",
    "missing-checkpoint", "missing-image-file", "make-bin-missing-root",
]  # fmt: skip


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_gives_one_clear_line(case, tiny_run, lfw_root, tmp_path, capsys):
    (tool, *args), expected = _bad_cases(tiny_run, lfw_root, tmp_path)[case]
    assert call_script(tool, *args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{tool}.py: error: "), err
    assert "Traceback" not in err
    for text in expected:
        assert text in err, (text, err)


# ----------------------------------------------------------------------------------------------
# --align: detect + align raw photos (the align extra)


def _raw_photo(path: Path, out: Path, angle: float) -> Path:
    """An LFW image rotated, enlarged and placed off-centre in a bigger grey canvas."""
    import cv2

    face = cv2.imread(str(path))
    m = cv2.getRotationMatrix2D((125, 125), angle, 1.5)
    m[:, 2] += (300, 120)
    cv2.imwrite(str(out), cv2.warpAffine(face, m, (800, 560), borderValue=(128, 128, 128)))
    return out


def test_tools_align_raw_photos_end_to_end(checkpoint_copy, lfw_root, tmp_path, capsys,
                                           monkeypatch):  # fmt: skip
    """verify.py and extract.py with --align on two raw photos; the checkpoint's preparation
    (here centre crop) is the default, and the other choice is warned about."""
    pytest.importorskip("facenet_pytorch", reason="the align extra: pip install 'facerec[align]'")
    from facerec.files import checkpoint

    monkeypatch.setenv("FACEREC_ALIGN_CACHE", str(tmp_path / "cache"))
    a, b = lfw_images(lfw_root, ["Aaron_Peirsol"])[:2]
    photos = tmp_path / "photos"
    photos.mkdir()
    raw_a, raw_b = _raw_photo(a, photos / "a.jpg", 20), _raw_photo(b, photos / "b.jpg", -15)
    assert call_script("verify", checkpoint_copy, raw_a, raw_b, "--threshold", "1", "--align",
                       "on") == 0  # fmt: skip
    out = capsys.readouterr()
    assert "trained on centre crops" in out.err and "--align on" in out.err
    assert "decision:" in out.out

    # A checkpoint whose config says its images were aligned: aligned by default, no warning.
    state = checkpoint.load(checkpoint_copy)
    state["config"]["data"]["align"] = {"select": "largest", "on_missing": "center"}
    # as the trainer writes it: the checkpoint's preprocessing entry is what every tool reads
    state["preprocessing"] = preprocessing_entry(state["config"])
    aligned_ckpt = checkpoint.save(state, tmp_path / "aligned.pt")
    _, cfg, _ = inference.load_model(aligned_ckpt, "cpu")
    assert inference.preparation(cfg)["method"] == "aligned"
    options = inference.resolve_alignment(cfg, "auto")
    crops = inference.align_paths([a, raw_a], options, cache=tmp_path / "cache")
    aligned = inference.load_images(crops, 112, None).float()
    centred = inference.load_images([a, raw_a], 112, 150).float()
    # The raw photo aligned is nearly the original aligned; centre-cropped, it is not.
    assert (aligned[0] - aligned[1]).abs().mean() < 12 < (centred[0] - centred[1]).abs().mean()
    out_npy = tmp_path / "emb.npy"
    assert call_script("extract", aligned_ckpt, photos, "--out", out_npy, "--workers", "0") == 0
    err = capsys.readouterr().err
    assert "warning" not in err
    assert np.load(out_npy).shape[0] == 2
    args = ("--out", out_npy, "--workers", "0", "--align", "off")
    assert call_script("extract", aligned_ckpt, photos, *args) == 0
    assert "trained on aligned faces" in capsys.readouterr().err
