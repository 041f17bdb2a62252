"""``facerec evaluate MODEL --ijb ROOT`` end to end on a synthetic IJB-C tree of real LFW photos
(tests/ijb_tree.py): every number of the report against the naive loops of ijb_reference.py,
the resumable feature cache, and malformed meta files as one line naming file and line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import ijb_reference as ref
import ijb_tree
import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from test_embedder import tiny_config, tiny_weights

from facerec.align.transform import warp_face
from facerec.cli.commands import main
from facerec.data.ijb import IJBFiles, read_faces
from facerec.eval.ijb import MODES
from facerec.inference import FaceEmbedder
from facerec.inference.ijb_features import AlignedFaces, FeatureCache, embed_faces


@pytest.fixture(scope="session")
def ijb_root(lfw_root, tmp_path_factory) -> Path:
    return ijb_tree.build(lfw_root, tmp_path_factory.mktemp("ijb"))


@pytest.fixture(scope="session")
def model_folder(tmp_path_factory) -> Path:
    """A tiny aligned-face model (MobileFaceNet, 8-d embeddings) of random weights."""
    folder = tmp_path_factory.mktemp("model") / "tiny"
    folder.mkdir()
    config = tiny_config(center_crop=None)
    config["preprocessing"]["alignment"] = {"select": "largest", "on_missing": "center"}
    (folder / "config.json").write_text(json.dumps(config))
    save_file(tiny_weights(config), str(folder / "model.safetensors"))
    return folder


def run(model: Path, root: Path, tmp: Path, *extra: str) -> int:
    return main(["evaluate", str(model), "--ijb", str(root), "--target", "IJBC", "--device",
                 "cpu", "--feature-cache", str(tmp / "cache"), "--ijb-out", str(tmp / "out"),
                 *extra])  # fmt: skip


@pytest.fixture(scope="session")
def report(ijb_root, model_folder, tmp_path_factory) -> tuple[dict, Path]:
    tmp = tmp_path_factory.mktemp("run")
    assert run(model_folder, ijb_root, tmp, "--mode", "all", "--workers", "1") == 0
    return json.loads((tmp / "out" / "ijbc.json").read_text()), tmp


def cached(report_dir: Path) -> np.ndarray:
    folder = next((report_dir / "cache").iterdir())
    return np.concatenate([np.load(p) for p in sorted(folder.glob("chunk-*.npy"))])


def test_cached_features_are_the_model_on_landmark_aligned_faces_and_mirrors(
    report, ijb_root, model_folder
):
    """Rows of the cache = the model's raw embeddings of each face warped by its 5 given
    landmarks (no detector), and of its mirror."""
    files = IJBFiles.under(ijb_root, "IJBC")
    faces = read_faces(files)
    crops = []
    for name, marks in zip(faces.names, faces.landmarks, strict=True):
        image = cv2.cvtColor(cv2.imread(str(files.images / name)), cv2.COLOR_BGR2RGB)
        crops.append(warp_face(image, marks, 112)[0].transpose(2, 0, 1))
    x = torch.from_numpy(np.stack(crops))
    model = FaceEmbedder.load(model_folder, "cpu").model
    with torch.no_grad():
        expected = np.stack([model(x).numpy(), model(x.flip(3)).numpy()], 1)
    np.testing.assert_allclose(cached(report[1]), expected, rtol=1e-4, atol=1e-5)


def _naive_templates(features, faces, mode):
    per_face = [ref.image_feature(f[0], f[1], s, mode.norm, mode.detector, mode.flip)
                for f, s in zip(features, faces.scores, strict=True)]  # fmt: skip
    return ref.template_features(per_face, faces.templates, faces.medias)


def _check_one_to_one(result, feats, pairs_file):
    rows = np.loadtxt(pairs_file, dtype=np.int64)
    scores = [float(np.dot(feats[a], feats[b])) for a, b, _ in rows]
    labels = [bool(y) for *_, y in rows]
    assert result["pairs"] == len(rows) and result["positives"] == sum(labels)
    assert result["auc"] == pytest.approx(ref.auc(scores, labels), abs=1e-9)
    for far, both in result["tar_at_far"].items():
        assert both["insightface_nearest"]["tar"] == ref.insightface_tar(scores, labels, float(far))
        assert both["conservative"]["tar"] == ref.conservative_tar(scores, labels, float(far))
    return scores


def _check_one_to_n(result, feats):
    probes = [t for t in sorted(ijb_tree.SUBJECT) if t % 100 != 1]
    pf, ps = [feats[t] for t in probes], [ijb_tree.SUBJECT[t] for t in probes]
    for name, people in (("G1", (0, 1)), ("G2", (2, 3))):
        gf, gs = [feats[100 * p + 1] for p in people], list(people)
        found, got = ref.search(pf, ps, gf, gs), result["galleries"][name]
        assert got["mated"] == 4 and got["non_mated"] == 5  # the other gallery's and subject 99
        assert got["cmc"]["rank1"] == pytest.approx(ref.cmc(found, 1))
        for f, point in got["tpir_at_fpir"].items():
            assert point["tpir"] == pytest.approx(ref.tpir_at_fpir(found, float(f)))
    union = ref.search(pf, ps, [feats[100 * p + 1] for p in range(4)], [0, 1, 2, 3])
    got = result["closed_set_union"]
    assert got["probes"] == 8 and got["without_mate"] == 1  # template 9902, subject 99
    assert got["cmc"]["rank5"] == pytest.approx(ref.cmc(union, 5))
    for f, point in got["tpir_at_far"].items():
        assert point["tpir"] == pytest.approx(ref.closed_tpir(union, float(f)))


def test_every_number_of_every_mode_matches_the_loops(report, ijb_root):
    result, tmp = report
    assert set(result["modes"]) == {m.name for m in MODES} and result["faces"] == 29
    faces = read_faces(IJBFiles.under(ijb_root, "IJBC"))
    features = cached(tmp).astype(np.float64)
    for mode in MODES:
        feats = _naive_templates(features, faces, mode)
        # a template of one face repeated in one media: that face's feature, normalised
        single = ref.image_feature(*features[4], faces.scores[4], mode.norm, mode.detector,
                                   mode.flip)  # fmt: skip
        np.testing.assert_allclose(feats[3], single / np.linalg.norm(single), atol=1e-12)
        pairs_file = ijb_root / "IJBC/meta/ijbc_template_pair_label.txt"
        scores = _check_one_to_one(result["modes"][mode.name]["one_to_one"], feats, pairs_file)
        saved = np.load(tmp / "out" / f"ijbc_{mode.name}_scores.npy")
        np.testing.assert_allclose(saved, scores, atol=1e-6)  # float32 image features
        _check_one_to_n(result["modes"][mode.name]["one_to_n"], feats)
    assert (tmp / "out" / "ijbc_N1D1F1_roc.png").stat().st_size > 1000


def test_a_killed_run_continues_from_its_chunks(report, ijb_root, model_folder, tmp_path):
    """The first 14 faces in chunks of 4: killed after two chunks (and a torn temporary file
    left behind), the second run embeds only the last two chunks; the result is the first
    run's."""
    files = IJBFiles.under(ijb_root, "IJBC")
    faces = read_faces(files)
    embedder = FaceEmbedder.load(model_folder, "cpu")
    dataset = AlignedFaces(files.images, faces.names[:14], faces.landmarks[:14], 112)
    cache = FeatureCache(tmp_path, {"target": "IJBC", "test": 1}, 14, chunk=4)
    written = []

    def killed_after_two(k: int) -> None:
        written.append(k)
        if len(written) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embed_faces(
            embedder.model, dataset, cache, embedder.device, 4, 0, on_chunk=killed_after_two
        )
    (cache.folder / ".chunk-000002.npy.123.tmp").write_bytes(b"half a chunk")  # a torn write
    assert cache.missing() == [2, 3]
    done = embed_faces(
        embedder.model, dataset, cache, embedder.device, 4, 0, on_chunk=written.append
    )
    assert done == 14 - 8 and written == [0, 1, 2, 3] and not cache.missing()
    again = np.concatenate(list(cache))
    np.testing.assert_allclose(again, cached(report[1])[:14], rtol=1e-4, atol=1e-5)


def _break(root: Path, name: str, old: str | None, new: str) -> None:
    path = root / "IJBC" / "meta" / name
    text = path.read_text()
    path.write_text(text.replace(old, new, 1) if old is not None else text + new)


BROKEN = {
    "face row with 2 columns": ("ijbc_face_tid_mid.txt", "3.jpg 2 2", "3.jpg 2",
                                "ijbc_face_tid_mid.txt:3: 2 columns, expected 3"),
    "landmark row with 11 columns": ("ijbc_name_5pts_score.txt", None, "30.jpg 1 2 3\n",
                                     "ijbc_name_5pts_score.txt:30: 4 columns, expected 12"),
    "rows naming other images": ("ijbc_face_tid_mid.txt", "2.jpg", "7.jpg",
                                 "ijbc_face_tid_mid.txt:2: image '7.jpg', but row 2"),
    "template id not a number": ("ijbc_face_tid_mid.txt", "4.jpg 2 3", "4.jpg x2 3",
                                 "ijbc_face_tid_mid.txt:4: template id 'x2' is not int"),
    "pair row with 2 columns": ("ijbc_template_pair_label.txt", "1 2 1", "1 2",
                                "ijbc_template_pair_label.txt:1: 2 columns, expected 3"),
    "pair label 2": ("ijbc_template_pair_label.txt", None, "1 2 2\n",
                     "ijbc_template_pair_label.txt:67: label 2 is not 0 or 1"),
    "pair of an unknown template": ("ijbc_template_pair_label.txt", None, "1 77 0\n",
                                    "ijbc_template_pair_label.txt:67: template 77 has no face"),
    "gallery template unknown": ("ijbc_1N_gallery_G2.csv", None, "55,2,x.jpg\n",
                                 "ijbc_1N_gallery_G2.csv:6: template 55 has no face"),
    "probe with two subjects": ("ijbc_1N_probe_mixed.csv", None, "9902,3,x.jpg\n",
                                "ijbc_1N_probe_mixed.csv:23: template 9902 has subject 3"),
    "csv header": ("ijbc_1N_gallery_G1.csv", "TEMPLATE_ID,SUBJECT_ID", "TID,SID",
                   "ijbc_1N_gallery_G1.csv:1: header"),
}  # fmt: skip


@pytest.mark.parametrize("case", [*BROKEN, "missing image", "unreadable image"])
def test_malformed_inputs_are_one_line_naming_file_and_line(
    case, ijb_root, model_folder, tmp_path, capsys
):
    root = tmp_path / "ijb"
    shutil.copytree(ijb_root, root)
    if case == "missing image":
        (root / "IJBC/loose_crop/5.jpg").unlink()
        expected = "ijbc_name_5pts_score.txt:5: image "
    elif case == "unreadable image":
        (root / "IJBC/loose_crop/6.jpg").write_bytes(b"not a jpeg")
        expected = "6.jpg"
    else:
        name, old, new, expected = BROKEN[case]
        _break(root, name, old, new)
    assert run(model_folder, root, tmp_path, "--workers", "0") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err


def test_without_the_1n_files_the_default_runs_1to1_and_one_to_n_asks_for_them(
    report, ijb_root, model_folder, tmp_path, capsys
):
    """insightface's first package had the 1:1 files only. The images are linked, so the
    session's feature cache serves (nothing is embedded again)."""
    root = tmp_path / "ijb"
    shutil.copytree(ijb_root / "IJBC" / "meta", root / "IJBC" / "meta")
    (root / "IJBC" / "loose_crop").symlink_to(ijb_root / "IJBC" / "loose_crop")
    (root / "IJBC/meta/ijbc_1N_probe_mixed.csv").unlink()
    cache = ["--feature-cache", str(report[1] / "cache")]
    assert main(["evaluate", str(model_folder), "--ijb", str(root), "--device", "cpu",
                 "--ijb-out", str(tmp_path / "out"), *cache]) == 0  # fmt: skip
    captured = capsys.readouterr()
    assert "1:N skipped: " in captured.err and "(0 faces embedded now" in captured.out
    result = json.loads((tmp_path / "out" / "ijbc.json").read_text())["modes"]["N1D1F1"]
    assert result["one_to_one"] == report[0]["modes"]["N1D1F1"]["one_to_one"]
    assert "one_to_n" not in result
    assert main(["evaluate", str(model_folder), "--ijb", str(root), "--one-to-n", *cache]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ijbc_1N_probe_mixed.csv: not found" in err
