"""The gallery format (facerec.inference.gallery), enrolment and calibration: written and read
back, refused when truncated or edited by hand, add/remove equal to a rebuild on real LFW
photos with a tiny model, and the "unknown" threshold against a naive loop."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from safetensors.torch import save_file
from test_embedder import tiny_config, tiny_weights

from facerec.eval.identification import threshold_at_rate
from facerec.inference import FaceEmbedder
from facerec.inference.calibration import stranger_scores, threshold_for
from facerec.inference.enrol import (
    add_folders,
    build_gallery,
    check_model,
    model_record,
    remove_from,
)
from facerec.inference.gallery import (
    INDEX,
    TENSORS,
    Gallery,
    ImageRecord,
    read_gallery,
    write_gallery,
)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def synthetic(n_people: int = 4, dim: int = 8, calibrated: bool = True) -> Gallery:
    rng = np.random.default_rng(0)
    counts = rng.integers(1, 4, n_people)
    names = [f"person_{i}" for i in range(n_people)]
    images = [[ImageRecord(f"/p/{n}/{j}.jpg", 100 + j, 7) for j in range(c)]
              for n, c in zip(names, counts, strict=True)]  # fmt: skip
    model = {"fingerprint": "0123456789abcdef", "source": "m", "embedding_size": dim}
    gallery = Gallery(names, images, unit(rng.normal(size=(counts.sum(), dim))), model)
    if not calibrated:
        return gallery
    strangers = unit(rng.normal(size=(30, dim)))
    record = {"kind": "folders", "source": "s", "far": 0.1,
              "names": [f"stranger_{i % 10}" for i in range(29)] + ["person_0"]}  # fmt: skip
    return Gallery(names, images, gallery.embeddings, model, record, strangers)


def test_written_and_read_back_with_templates_as_a_loop(tmp_path):
    gallery = synthetic()
    read = read_gallery(write_gallery(gallery, tmp_path / "g"))
    assert read.names == gallery.names and read.images == gallery.images
    np.testing.assert_array_equal(read.embeddings, gallery.embeddings)
    np.testing.assert_array_equal(read.calibration_embeddings, gallery.calibration_embeddings)
    assert read.calibration == gallery.calibration and read.model == gallery.model
    templates, row = read.templates(), 0
    for k, records in enumerate(read.images):
        total = gallery.embeddings[row : row + len(records)].astype(np.float64).sum(0)
        np.testing.assert_allclose(templates[k], total / np.linalg.norm(total), rtol=1e-6)
        row += len(records)
    half = write_gallery(Gallery(**{**vars(gallery), "embeddings": gallery.embeddings.astype(
        np.float16)}), tmp_path / "h")  # fmt: skip
    assert read_gallery(half).embeddings.dtype == np.float16
    assert (half / TENSORS).stat().st_size < (tmp_path / "g" / TENSORS).stat().st_size


def edit_index(folder: Path, change) -> None:
    index = json.loads((folder / INDEX).read_text())
    change(index)
    (folder / INDEX).write_text(json.dumps(index))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: (f / TENSORS).write_bytes((f / TENSORS).read_bytes()[:200]), "safetensors"),
        (lambda f: (f / INDEX).write_text("{not json"), "not valid JSON"),
        (lambda f: edit_index(f, lambda i: i["identities"][0]["images"].pop()), "disagree"),
        (lambda f: edit_index(f, lambda i: i["identities"].reverse()), "distinct and sorted"),
        (lambda f: edit_index(f, lambda i: i.update(generation="x")), "not the file"),
        (lambda f: edit_index(f, lambda i: i["calibration"].update(far=3)), "outside"),
        (lambda f: edit_index(f, lambda i: i.update(format_version=9)), "format_version"),
        (
            lambda f: edit_index(f, lambda i: i["identities"][1].update(images=[{"file": 1}])),
            "image record",
        ),
        (lambda f: (f / TENSORS).unlink(), "has no gallery.safetensors"),
    ],
)
def test_damaged_galleries_are_refused_in_one_line_naming_the_file(tmp_path, damage, message):
    folder = write_gallery(synthetic(), tmp_path / "g")
    damage(folder)
    with pytest.raises(ValueError, match=message) as error:
        read_gallery(folder)
    assert str(folder) in str(error.value) and "\n" not in str(error.value)


def test_rows_that_are_not_unit_vectors_are_refused(tmp_path):
    gallery = synthetic(calibrated=False)
    bad = gallery.embeddings.copy()
    bad[2] *= 3
    folder = write_gallery(Gallery(**{**vars(gallery), "embeddings": bad}), tmp_path / "g")
    with pytest.raises(ValueError, match="row 2 is not a unit vector"):
        read_gallery(folder)
    with pytest.raises(FileNotFoundError, match="gallery not found"):
        read_gallery(tmp_path / "nothing")


def test_the_threshold_is_measured_on_strangers_as_a_naive_loop():
    gallery = synthetic()
    templates = gallery.templates()
    best = [max(float(s @ t) for t in templates)
            for s, n in zip(gallery.calibration_embeddings, gallery.calibration["names"],
                            strict=True) if n not in gallery.names]  # fmt: skip
    np.testing.assert_allclose(stranger_scores(gallery), best, rtol=1e-6)
    assert len(best) == 29  # person_0's photo in the calibration set is enrolled: left out
    threshold, strangers = threshold_for(gallery)
    assert strangers == 29 and threshold == pytest.approx(threshold_at_rate(best, 0.1), abs=1e-6)
    assert sum(b >= threshold for b in best) <= 0.1 * 29
    with pytest.raises(ValueError, match="needs at least 100 stranger photos"):
        threshold_for(gallery, 0.01)
    with pytest.raises(ValueError, match="no calibration set"):
        threshold_for(synthetic(calibrated=False))


# ----------------------------------------------------------------------------------------------
# real photos, a tiny centre-cropped model (no detector needed)


@pytest.fixture(scope="module")
def embedder(tmp_path_factory) -> FaceEmbedder:
    folder = tmp_path_factory.mktemp("model") / "tiny"
    folder.mkdir()
    config = tiny_config()
    (folder / "config.json").write_text(json.dumps(config))
    save_file(tiny_weights(config), str(folder / "model.safetensors"))
    return FaceEmbedder.load(folder, "cpu")


def people(lfw_root: Path, root: Path, wanted: dict[str, range]) -> Path:
    """Copy LFW photos into ``root/<name>/``: ``{name: image numbers}``."""
    for name, numbers in wanted.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in numbers:
            src = lfw_root / "lfw-deepfunneled" / name / f"{name}_{i:04d}.jpg"
            shutil.copy(src, root / name / src.name)
    return root


def same(a: Gallery, b: Gallery) -> None:
    assert a.names == b.names
    assert [[r.file for r in x] for x in a.images] == [[r.file for r in x] for x in b.images]
    np.testing.assert_allclose(a.embeddings, b.embeddings, atol=1e-6)
    np.testing.assert_allclose(a.templates(), b.templates(), atol=1e-6)


def test_add_and_remove_equal_a_rebuild(embedder, lfw_root, tmp_path):
    root = people(lfw_root, tmp_path / "people", {"Colin_Powell": range(1, 3),
                                                  "Tony_Blair": range(1, 3)})  # fmt: skip
    first, report = build_gallery(embedder, root, progress=False)
    assert report.embedded == 4 and first.names == ["Colin_Powell", "Tony_Blair"]
    people(lfw_root, root, {"Colin_Powell": range(3, 4), "Hugo_Chavez": range(1, 3)})
    added, report = add_folders(first, embedder, root, progress=False)
    assert report.embedded == 3 and report.reused == 4  # only the new photos embedded
    full, _ = build_gallery(embedder, root, progress=False)
    same(added, full)
    removed = remove_from(added, ["Hugo_Chavez"], [root / "Colin_Powell/Colin_Powell_0003.jpg"])
    shutil.rmtree(root / "Hugo_Chavez")
    (root / "Colin_Powell/Colin_Powell_0003.jpg").unlink()
    same(removed, build_gallery(embedder, root, progress=False)[0])
    same(removed, first)
    with pytest.raises(ValueError, match="not in the gallery: Nobody; nothing removed"):
        remove_from(removed, ["Nobody"])


def test_a_changed_photo_is_embedded_again_and_replaces_the_old(embedder, lfw_root, tmp_path):
    root = people(lfw_root, tmp_path / "people", {"Colin_Powell": range(1, 3)})
    gallery, _ = build_gallery(embedder, root, progress=False)
    target = root / "Colin_Powell" / "Colin_Powell_0001.jpg"
    shutil.copy(lfw_root / "lfw-deepfunneled/Colin_Powell/Colin_Powell_0005.jpg", target)
    changed, report = add_folders(gallery, embedder, root, progress=False)
    assert report.embedded == 1 and report.reused == 1 and len(changed.embeddings) == 2
    assert not np.allclose(changed.embeddings[0], gallery.embeddings[0])
    np.testing.assert_allclose(changed.embeddings[0], embedder.embed([target])[0], atol=1e-5)


def test_another_models_gallery_is_refused(embedder, tmp_path):
    mine = model_record(embedder)
    assert mine == model_record(embedder) and mine["embedding_size"] == 8
    other = synthetic(dim=8)
    with pytest.raises(ValueError, match="built by another model"):
        check_model(other, mine, tmp_path / "g")


class FakeAligned:
    """An aligned model's enrolment as :func:`embed_photos` sees it, without a detector: the
    photo's mean brightness says how many faces it shows (0: none, 3: several)."""

    batch_size, crop = 2, None
    preprocessing = type("P", (), {"image_size": 16})()
    spec = type("S", (), {"embedding_size": 4})()

    def face_crop(self, image):
        faces = round(float(image.mean()) / 50)
        return (None, 0) if faces == 0 else (image, faces)

    def embed(self, images):
        means = images.float().mean(dim=(1, 2, 3)).numpy()
        return unit(np.stack([means, np.ones_like(means), means, means], 1))


def test_photos_without_a_face_are_skipped_and_several_faces_counted(tmp_path):
    from facerec.inference.enrol import Report, embed_photos

    paths = []
    for i, level in enumerate([50, 0, 150, 50, 100]):  # faces: 1, 0, 3, 1, 2
        paths.append(tmp_path / f"{i}.png")
        cv2.imwrite(str(paths[-1]), np.full((20, 20, 3), level, np.uint8))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    report = Report()
    records, emb = embed_photos(FakeAligned(), [*paths, tmp_path / "bad.png"], report, False)
    assert [Path(r.file).name for r in records] == ["0.png", "2.png", "3.png", "4.png"]
    assert emb.shape == (4, 4) and report.embedded == 4
    assert report.no_face == [str(paths[1])]
    assert report.several_faces == [str(paths[2]), str(paths[4])]
    assert len(report.unreadable) == 1 and "bad.png" in report.unreadable[0]
    lines = report.lines()
    assert "1 without a face skipped, 1 unreadable skipped, 2 with several faces" in lines[0]
    named = [f"unreadable: {report.unreadable[0]}", f"no_face: {paths[1]}",
             f"several_faces: {paths[2]}", f"several_faces: {paths[4]}"]  # fmt: skip
    assert lines[1:] == [f"  {line}" for line in named]
