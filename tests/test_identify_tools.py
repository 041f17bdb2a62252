"""``facerec gallery`` / ``facerec identify`` / ``facerec evaluate --identification`` end to end
on real LFW photos with a tiny centre-cropped model: what a user sees, and one line (never a
traceback) for every kind of bad input."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from safetensors.torch import save_file
from test_embedder import tiny_config, tiny_weights

from facerec.cli.commands import main
from facerec.inference.calibration import threshold_for
from facerec.inference.gallery import TENSORS, read_gallery

ENROLLED = {"Abdullah_Gul": 3, "Adrien_Brody": 3, "Albert_Costa": 2}
STRANGERS = {"Alan_Greenspan": 5, "Aleksander_Kwasniewski": 4, "Al_Pacino": 3}


def model_folder(root: Path, seed: int) -> Path:
    import torch

    root.mkdir(parents=True)
    config = tiny_config()
    (root / "config.json").write_text(json.dumps(config))
    torch.manual_seed(seed)
    weights = tiny_weights(config) if seed == 0 else {
        k: torch.randn_like(v) if v.is_floating_point() else v
        for k, v in tiny_weights(config).items()}  # fmt: skip
    save_file(weights, str(root / "model.safetensors"))
    return root


def lfw_photo(lfw_root: Path, name: str, i: int) -> Path:
    return lfw_root / "lfw-deepfunneled" / name / f"{name}_{i:04d}.jpg"


@pytest.fixture(scope="module")
def world(lfw_root, tmp_path_factory):
    """A model, people to enrol (with a broken file, a huge one and an empty folder),
    strangers, and a gallery built and calibrated by the commands."""
    tmp = tmp_path_factory.mktemp("identify")
    people, strangers = tmp / "people", tmp / "strangers"
    for root, wanted in ((people, ENROLLED), (strangers, STRANGERS)):
        for name, n in wanted.items():
            (root / name).mkdir(parents=True)
            for i in range(1, n + 1):
                shutil.copy(lfw_photo(lfw_root, name, i), root / name)
    (people / "Abdullah_Gul" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    huge = np.zeros((7100, 7100), np.uint8)  # 50.4 Mpx: over the decoder's 50 Mpx budget
    cv2.imwrite(str(people / "Adrien_Brody" / "huge.png"), huge)
    (people / "Nobody_Yet").mkdir()
    model = model_folder(tmp / "model", 0)
    return tmp, model, people, strangers


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def built(world):
    """The gallery built and calibrated by the commands, and what they printed."""
    tmp, model, people, strangers = world
    folder = tmp / "gallery"
    with contextlib.redirect_stdout(io.StringIO()) as out:
        codes = [main(["gallery", "build", str(model), str(people), "--out", str(folder)]),
                 main(["gallery", "calibrate", str(model), str(folder), "--folders",
                       str(strangers), "--far", "0.1"])]  # fmt: skip
    assert codes == [0, 0], out.getvalue()
    return folder, out.getvalue()


@pytest.fixture(scope="module")
def gallery(built) -> Path:
    return built[0]


def test_build_reports_every_skipped_file_and_calibrates(built):
    folder, out = built
    assert out.startswith("3 identities, 8 images; 8 photo(s) embedded")
    assert "2 unreadable skipped" in out and "1 empty identity folder(s)" in out
    assert "broken.jpg" in out and "huge.png" in out and "Nobody_Yet" in out
    assert "calibration set: 12 photo(s) embedded" in out
    threshold, count = threshold_for(read_gallery(folder))
    assert count == 12 and f"threshold {threshold:.4f} (cosine) at false-accept rate 0.1" in out


def test_identify_answers_every_face_with_top_k_and_unknown(world, gallery, lfw_root, capsys):
    tmp, model, people, _ = world
    photos = [lfw_photo(lfw_root, "Adrien_Brody", 7), lfw_photo(lfw_root, "Al_Pacino", 3),
              people / "Abdullah_Gul" / "broken.jpg"]  # fmt: skip
    code, out, err = run(capsys, "identify", model, gallery, *photos, "--top-k", "2",
                         "--json", tmp / "answers.json")  # fmt: skip
    assert code == 0, err
    threshold, _ = threshold_for(read_gallery(gallery))
    assert f"threshold {threshold:.4f} (cosine; false-accept rate 0.1 on 12 photos" in out
    assert "broken.jpg: unreadable, skipped" in out
    assert "3 photo(s), 2 face(s)" in out and "1 unreadable" in out
    record = json.loads((tmp / "answers.json").read_text())
    assert record["threshold"] == pytest.approx(threshold)
    for photo in record["photos"]:
        (face,) = photo["faces"]
        top = face["top"]
        assert len(top) == 2 and top[0]["similarity"] >= top[1]["similarity"]
        assert face["box"] == [0, 0, 250, 250]
        known = top[0]["similarity"] >= threshold
        assert face["identity"] == (top[0]["name"] if known else "unknown")
    code, out, _ = run(capsys, "identify", model, gallery, photos[0], "--threshold", "-1")
    assert code == 0 and "face 1 [0,0,250,250]: " in out and ": unknown  <-" not in out


def test_remove_and_show(world, gallery, capsys):
    tmp, _, people, _ = world
    copy = tmp / "g3"
    shutil.copytree(gallery, copy)
    photo = people / "Abdullah_Gul" / "Abdullah_Gul_0001.jpg"
    code, out, err = run(capsys, "gallery", "remove", copy, "--identity", "Albert_Costa",
                         "--photo", photo)  # fmt: skip
    assert code == 0, err
    assert read_gallery(copy).names == ["Abdullah_Gul", "Adrien_Brody"]
    code, out, _ = run(capsys, "gallery", "show", copy)
    assert code == 0 and "2 identities, 5 images" in out and "Abdullah_Gul: 2 image(s)" in out
    assert "threshold" in out and "12 stranger photos" in out


def one_line_error(capsys, *argv) -> str:
    code, _, err = run(capsys, *argv)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_bad_input_is_one_line(world, gallery, lfw_root, capsys):
    tmp, model, people, _ = world
    photo = lfw_photo(lfw_root, "Adrien_Brody", 7)
    line = one_line_error(capsys, "identify", model, gallery, photo, "--threshold", "3")
    assert "--threshold 3.0: a cosine lies in [-1, 1]" in line
    line = one_line_error(capsys, "identify", model, gallery, photo, "--far", "1e-4")
    assert "needs at least 10000 stranger photos" in line
    other = model_folder(tmp / "other_model", 1)
    line = one_line_error(capsys, "identify", other, gallery, photo)
    assert "built by another model" in line and str(gallery) in line
    broken = tmp / "broken_gallery"
    shutil.copytree(gallery, broken)
    data = (broken / TENSORS).read_bytes()
    (broken / TENSORS).write_bytes(data[: len(data) // 2])
    line = one_line_error(capsys, "identify", model, broken, photo)
    assert str(broken / TENSORS) in line and "refused" in line
    line = one_line_error(capsys, "gallery", "calibrate", model, gallery, "--folders", people,
                          "--far", "1.5")  # fmt: skip
    assert "--far 1.5" in line
    line = one_line_error(capsys, "gallery", "build", model, people / "Albert_Costa", "--out",
                          tmp / "g4")  # fmt: skip
    assert "no identity folders" in line
    line = one_line_error(capsys, "gallery", "remove", gallery, "--identity", "Nobody")
    assert "not in the gallery: Nobody" in line


def test_evaluate_identification_on_an_lfw_people_file(world, lfw_root, capsys):
    tmp, model, _, _ = world
    people = {**ENROLLED, **STRANGERS, "AJ_Lamas": 1, "Aaron_Guiel": 1}
    people_file = tmp / "people.txt"
    people_file.write_text(f"{len(people)}\n" + "".join(f"{n}\t{c}\n" for n, c in people.items()))
    source = f"{people_file}:{lfw_root / 'lfw-deepfunneled'}"
    code, out, err = run(capsys, "evaluate", model, "--identification", source, "--trials", "3",
                         "--fpir", "0.1", "--json", tmp / "id.json")  # fmt: skip
    assert code == 0, err
    assert "8 people, 22 images, 3 trials of 3 enrolled images" in out
    report = json.loads((tmp / "id.json").read_text())
    summary = report["summary"]
    assert summary["trials"] == 3 and len(report["trials"]) == 3
    assert 0 <= summary["rank1"] <= summary["rank5"] <= 1
    assert 0 <= summary["dir@fpir=0.1"] <= summary["rank1"]
    assert summary["mated_probes"] + summary["non_mated_probes"] == 22 - 3
    for name in ("cmc", "det"):
        image = cv2.imread(str(tmp / f"id.{name}.png"))
        assert image is not None and image.shape[2] == 3
