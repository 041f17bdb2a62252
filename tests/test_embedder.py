"""``facerec.FaceEmbedder`` and the one :class:`Preprocessing` every model file carries: the
README's Python example run on a real LFW pair, the ``preprocessing`` entry of checkpoints,
ONNX metadata and pack headers (and files of the release before it, which have none)."""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import save_flatten_onnx
from safetensors.torch import save_file

from facerec.files import checkpoint
from facerec.inference import FaceEmbedder, save_threshold
from facerec.inference.preprocessing import Preprocessing, from_pack, preprocessing_entry

ROOT = Path(__file__).resolve().parents[1]
OLD_CONFIG = Path(__file__).parent / "fixtures" / "pretrained_v1_config.json"
PAIR = [f"lfw-deepfunneled/Aaron_Peirsol/Aaron_Peirsol_000{i}.jpg" for i in (1, 2)]


def tiny_config(center_crop: int | None = 150) -> dict:
    """The previous release's config.json (a tiny MobileFaceNet), centre-cropped, not aligned:
    no face detector needed."""
    config = json.loads(OLD_CONFIG.read_text())
    config["preprocessing"].update(alignment=None, center_crop=center_crop)
    return config


def tiny_weights(config: dict) -> dict[str, torch.Tensor]:
    from facerec.model import build_face_model

    torch.manual_seed(0)
    return build_face_model(config).eval().state_dict()


@pytest.fixture
def folder(tmp_path) -> Path:
    """A model folder of random weights with a stored threshold."""
    folder = tmp_path / "demo"
    folder.mkdir()
    config = tiny_config()
    (folder / "config.json").write_text(json.dumps(config))
    save_file(tiny_weights(config), str(folder / "model.safetensors"))
    save_threshold(folder, "lfw", {"threshold": 1.3, "accuracy": 0.9}, 3)
    return folder


def test_the_readme_python_example_runs_on_an_lfw_pair(folder, lfw_root):
    """The README's block, with its folder and LFW paths pointed at a tiny model and the LFW
    copy: embeds a real pair and compares it at the folder's stored threshold."""
    readme = (ROOT / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "FaceEmbedder" in b)
    assert len([line for line in block.splitlines() if line.strip()]) == 5
    code = block.replace('"exported/demo"', repr(str(folder))).replace("data/lfw", str(lfw_root))
    namespace: dict = {}
    with contextlib.redirect_stdout(io.StringIO()) as out:
        exec(compile(code, "README.md", "exec"), namespace)
    emb = namespace["emb"]
    assert emb.dtype == np.float32 and emb.shape == (2, 8)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    assert "similarity=" in out.getvalue() and "threshold=1.3" in out.getvalue()


def test_compare_decides_at_the_stored_threshold_and_names_its_file(folder, lfw_root):
    model = FaceEmbedder.load(folder, "cpu")
    a, b = (lfw_root / p for p in PAIR)
    result = model.compare(a, b)
    x, y = model.embed([a, b]).astype(np.float64)
    assert result.similarity == pytest.approx(float(x @ y))
    assert result.distance == pytest.approx(2 - 2 * result.similarity, abs=1e-6)
    assert result.same == (result.distance < 1.3) and "threshold.json" in result.source
    assert model.compare(a, b, threshold=0.0).same is False
    # arrays in, the same numbers: read and prepared exactly as the files are
    from facerec.data.decode import read_image

    assert np.array_equal(model.embed([read_image(a), read_image(b)]), model.embed([a, b]))
    assert model.card is None and model.preprocessing.center_crop == 150


def checkpoint_dict(config: dict) -> dict:
    """What today's trainer writes (``training_checkpoint``) for a tiny model."""
    from facerec.model import FaceModel

    weights = tiny_weights(config)

    class Weights(FaceModel):  # a module whose state_dict is these weights
        def __init__(self) -> None:
            torch.nn.Module.__init__(self)

        def state_dict(self, *args, **kwargs):
            return weights

    state = checkpoint.TrainState(step=3)
    return checkpoint.training_checkpoint(
        {"model": Weights()}, state, 1, ["a", "b"], config, {}, {}, preprocessing_entry(config)
    )


def training_config(center_crop: int | None) -> dict:
    config = tiny_config()
    return {"backbone": config["backbone"], "embedding": config["embedding"],
            "data": {"image_size": 112, "center_crop": center_crop}}  # fmt: skip


def test_a_checkpoint_records_its_preprocessing_and_tools_read_it_from_there(tmp_path):
    ckpt = checkpoint_dict(training_config(150))
    assert ckpt["preprocessing"] == Preprocessing(112, 150).to_dict()
    # the entry, not the config, is what a tool reads
    ckpt["preprocessing"]["center_crop"] = 120
    torch.save(ckpt, tmp_path / "entry.pt")
    assert FaceEmbedder.load(tmp_path / "entry.pt", "cpu").preprocessing.center_crop == 120
    # range-checked like every saved value: one line naming the file and the key
    ckpt["preprocessing"]["image_size"] = 20000
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"bad\.pt refused: preprocessing\.image_size"):
        FaceEmbedder.load(tmp_path / "bad.pt", "cpu")


def test_a_checkpoint_of_the_release_before_the_entry_still_loads(tmp_path, lfw_root):
    """Today's checkpoint less its ``preprocessing`` entry: derived from its config, and the
    embeddings equal those of the same model saved with the entry."""
    ckpt = checkpoint_dict(training_config(150))
    torch.save(ckpt, tmp_path / "new.pt")
    del ckpt["preprocessing"]
    torch.save(ckpt, tmp_path / "old.pt")
    old, new = (FaceEmbedder.load(tmp_path / n, "cpu") for n in ("old.pt", "new.pt"))
    assert old.preprocessing == new.preprocessing == Preprocessing(112, 150)
    pair = [lfw_root / p for p in PAIR]
    assert np.array_equal(old.embed(pair), new.embed(pair))


def test_a_pack_header_records_how_its_images_were_made(tmp_path):
    """``facerec pack`` writes the Preprocessing record; a pack without one reads as before."""
    from facerec.cli import pack_dataset
    from facerec.data.packed import read_pack_header

    for i, name in enumerate(["a", "b"]):
        (tmp_path / "src" / name).mkdir(parents=True)
        cv2.imwrite(
            str(tmp_path / "src" / name / "0.png"), np.full((160, 160, 3), 40 * i, np.uint8)
        )
    out = tmp_path / "pack"
    args = [str(tmp_path / "src"), str(out), "--size", "112", "--center-crop", "140"]
    assert pack_dataset.main(args) == 0
    header = read_pack_header(out)
    assert header["preprocessing"]["center_crop"] == 140  # written, not derived
    assert from_pack(header, "pack.json") == Preprocessing(112, 140)
    del header["preprocessing"]  # a pack of the release before the entry
    assert from_pack(header, "pack.json") == Preprocessing(112, 140)


def test_an_onnx_file_carries_its_preprocessing(tmp_path):
    """The export's ``facerec.preprocessing_json`` is read back whole (alignment included)."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from facerec.align import AlignOptions
    from facerec.inference.onnx import preprocessing_metadata

    prep = Preprocessing(112, 150, AlignOptions(size=112, select="center"))
    props = {"facerec.image_size": "112", **preprocessing_metadata(prep)}
    save_flatten_onnx(tmp_path / "m.onnx", props)
    loaded = FaceEmbedder.load(tmp_path / "m.onnx", "cpu").preprocessing
    assert loaded.alignment == prep.alignment and loaded.center_crop == 150
    assert not loaded.channels_last  # the graph takes NCHW


def test_faces_without_the_align_extra_says_which_extra(folder, monkeypatch):
    import facerec.align.detect as detect

    def missing():
        raise detect.MissingExtra(f"face alignment needs the 'align' extra: {detect.INSTALL_HINT}")

    monkeypatch.setattr(detect, "_load_mtcnn", missing)
    with pytest.raises(ImportError) as error:
        FaceEmbedder.load(folder, "cpu").faces(np.zeros((64, 64, 3), np.uint8))
    assert "\n" not in str(error.value) and "facerec[align]" in str(error.value)


def test_importing_facerec_does_not_import_torch():
    code = "import sys, facerec; assert 'torch' not in sys.modules; facerec.FaceEmbedder"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_no_submodule_hides_a_public_name():
    """``facerec.inference.<name>`` stays the function or class once every submodule is
    imported (a submodule named like a public name would replace it on the package)."""
    import importlib
    import inspect
    import pkgutil

    import facerec.inference as package

    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"facerec.inference.{info.name}")
    hidden = [name for name in package.__all__ if inspect.ismodule(getattr(package, name))]
    assert hidden == []
