"""The shareable model folder (``facerec export``, :mod:`facerec.inference.folder`): a 2-step run
exported gives the checkpoint's embeddings in every tool, and crafted folders are refused in one
line without building or executing anything."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_train
from safetensors.torch import load_file, save_file

from facerec import inference
from facerec.cli.commands import main as facerec
from facerec.inference import folder as pretrained


@pytest.fixture(scope="module")
def exported(lfw_root, tiny_pairs, tmp_path_factory):
    """``(checkpoint, folder, pairs)``: 2 training steps on LFW, then ``facerec export``."""
    from facerec.training.run import run

    tmp = tmp_path_factory.mktemp("pretrained")
    pairs = tiny_pairs
    overrides = [
        f"data.root={lfw_root}", f"paths.output_dir={tmp / 'runs'}", "trainer.device=cpu",
        "trainer.progress=false", "trainer.max_steps=2", "data.min_images=20",
        "data.batch_size=8", "data.num_workers=0", f"data.val.lfw_devtest.pairs_file={pairs}",
        "trainer.eval_batch_size=16", "name=pretrained",
    ]  # fmt: skip
    metrics = run(compose_train(*overrides))
    ckpt = Path(metrics["run_dir"]) / "checkpoints" / "last.pt"
    assert facerec(["evaluate", str(ckpt), "--workers", "0"]) == 0  # a threshold to ship
    folder = tmp / "exported"
    assert facerec(["export", str(ckpt), "--out", str(folder)]) == 0
    return ckpt, folder, pairs


def faces(lfw_root: Path) -> list[Path]:
    return sorted((lfw_root / "lfw-deepfunneled" / "Colin_Powell").glob("*.jpg"))[:3]


def test_the_folder_holds_weights_config_card_and_threshold(exported):
    ckpt, folder, _ = exported
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md", "config.json", "model.safetensors", "threshold.json"
    ]  # fmt: skip
    config = json.loads((folder / "config.json").read_text())
    assert config["format"] == pretrained.FORMAT and config["format_version"] == 1
    assert config["backbone"]["_target_"] == "facerec.backbones.mobilefacenet.MobileFaceNet"
    prep = config["preprocessing"]
    assert prep["image_size"] == 112 and prep["center_crop"] == 150
    assert prep["normalisation"]["mean"] == prep["normalisation"]["std"] == 127.5
    assert config["training"]["step"] == 2 and "lfw_devtest" in config["training"]["results"]
    weights = load_file(str(folder / "model.safetensors"))
    model, _, _ = inference.load_model(ckpt, "cpu")
    assert weights.keys() == model.state_dict().keys()  # backbone + embedding, no head
    card = (folder / "README.md").read_text()
    assert "## Verification" in card and "| lfw_devtest |" in card and "10 folds" in card
    assert "## Training data" in card and "## Recipe" in card and "ArcFace" in card
    assert "after 2 training steps" in card and "| criterion | MarginLoss |" in card
    assert f"lfw_devtest (`{exported[2]}`)" in card  # the set and the pairs file it read
    stored = json.loads(inference.threshold_path(ckpt).read_text())
    assert json.loads((folder / "threshold.json").read_text())["threshold"] == stored["threshold"]


def test_read_pretrained_gives_the_face_model_state_dict(exported):
    """The contract fine-tuning (trainer.init_from) relies on."""
    ckpt, folder, _ = exported
    config, weights = pretrained.read_pretrained(folder)
    model, _, _ = inference.load_model(ckpt, "cpu")
    reference = model.state_dict()
    assert weights.keys() == reference.keys()
    assert all(torch.equal(weights[k], reference[k]) for k in reference)
    assert {"backbone", "embedding", "preprocessing", "training"} <= config.keys()
    loaded = pretrained.load_pretrained(folder)
    assert not loaded.training and all(
        torch.equal(v, reference[k]) for k, v in loaded.state_dict().items()
    )


def test_round_trip_the_tools_give_the_checkpoints_embeddings(exported, lfw_root, tmp_path):
    ckpt, folder, pairs = exported
    cpu = torch.device("cpu")
    from_ckpt, cfg_ckpt, _ = inference.load_model(ckpt, "cpu")
    from_folder, cfg_folder, meta = inference.load_model(folder, "cpu")
    assert meta["step"] == 2 and meta["backbone"].endswith("MobileFaceNet")
    paths = faces(lfw_root)
    images = inference.load_images(paths, 112, inference.center_crop(cfg_ckpt))
    assert inference.center_crop(cfg_folder) == inference.center_crop(cfg_ckpt) == 150
    np.testing.assert_array_equal(
        inference.embed_images(from_folder, images, cpu),
        inference.embed_images(from_ckpt, images, cpu),
    )

    # extract: the same rows from either source
    (tmp_path / "faces").mkdir()
    for p in paths:
        shutil.copy(p, tmp_path / "faces" / p.name)
    for name, source in (("ckpt", ckpt), ("folder", folder)):
        args = ["extract", str(source), str(tmp_path / "faces"), "--out", str(tmp_path / name)]
        assert facerec([*args, "--workers", "0"]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "folder.npy"), np.load(tmp_path / "ckpt.npy"))

    # evaluate: the same numbers; the folder's threshold is written inside the folder
    root = lfw_root / "lfw-deepfunneled"
    names = ("ckpt", "folder")
    for name, source in zip(names, (ckpt, folder), strict=True):
        args = ["evaluate", str(source), "--sets", f"tiny={pairs}:{root}", "--workers", "0"]
        assert facerec([*args, "--json", str(tmp_path / f"{name}.json")]) == 0
    a, b = (json.loads((tmp_path / f"{n}.json").read_text())["sets"]["tiny"] for n in names)
    for key in ("accuracy", "threshold", "auc", "eer", "accuracy_noflip"):
        assert a[key] == b[key], key
    assert json.loads((folder / "threshold.json").read_text())["set"] == "tiny"


def test_verify_takes_the_folder_and_its_threshold(exported, lfw_root, capsys):
    _, folder, _ = exported
    a, b, _ = faces(lfw_root)
    assert facerec(["verify", str(folder), str(a), str(b), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "decision:" in out and str(folder / "threshold.json") in out


def test_the_tools_run_the_onnx_export_of_the_folder(exported, lfw_root, tmp_path, capsys):
    """export-onnx takes the folder; evaluate/extract/verify take the .onnx it writes (CPU,
    onnxruntime) and give the PyTorch embeddings to float tolerance; export refuses ONNX."""
    for module in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(module)
    ckpt, folder, _ = exported
    onnx_file = tmp_path / "model.onnx"
    args = ["export-onnx", str(folder), "--out", str(onnx_file), "--check-images", "4"]
    assert facerec(args) == 0
    model, cfg, meta = inference.load_model(onnx_file, "auto")
    assert meta["device"] == "cpu" and meta["step"] == 2 and inference.center_crop(cfg) == 150
    torch_model, _, _ = inference.load_model(ckpt, "cpu")
    images = inference.load_images(faces(lfw_root), 112, 150)
    cpu = torch.device("cpu")
    np.testing.assert_allclose(
        inference.embed_images(model, images, cpu),
        inference.embed_images(torch_model, images, cpu),
        atol=1e-4,
    )
    a, b, _ = faces(lfw_root)
    capsys.readouterr()
    assert facerec(["verify", str(onnx_file), str(a), str(b), "--threshold", "1.0"]) == 0
    assert "decision:" in capsys.readouterr().out
    assert facerec(["export", str(onnx_file), "--out", str(tmp_path / "again")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not ONNX" in err[0]


# ----------------------------------------------------------------------------------------------
# crafted folders: one line, nothing built


def _craft(folder: Path, exported_folder: Path, kind: str, marker: Path) -> None:
    shutil.copytree(exported_folder, folder)
    config_path, weights_path = folder / "config.json", folder / "model.safetensors"
    config = json.loads(config_path.read_text())
    if kind == "bad_json":
        config_path.write_text('{"format": "facerec-pretrained", "backbone": ')
    elif kind == "unknown_architecture":
        config["backbone"] = {"_target_": "builtins.open", "file": str(marker), "mode": "w"}
        config_path.write_text(json.dumps(config))
    elif kind == "nested_target":
        config["embedding"]["act"] = {"_target_": "os.system", "command": f"touch {marker}"}
        config_path.write_text(json.dumps(config))
    elif kind == "not_facerec":
        config_path.write_text(json.dumps({"architectures": ["BertModel"]}))
    elif kind == "newer_format":
        config["format_version"] = 99
        config_path.write_text(json.dumps(config))
    elif kind == "pickle_weights":
        torch.save({"x": torch.zeros(1)}, weights_path)  # a pickle where safetensors belongs
    elif kind == "stray_tensors":
        weights = load_file(str(weights_path))
        save_file({**weights, "head.weight": torch.zeros(3, 512)}, str(weights_path))
    elif kind == "wrong_shapes":
        weights = load_file(str(weights_path))
        key = next(k for k, v in weights.items() if v.ndim == 4)
        save_file({**weights, key: torch.zeros(1, 1, 1, 1)}, str(weights_path))
    elif kind == "no_weights":
        weights_path.unlink()


CRAFTED = {
    "bad_json": "config.json: not valid JSON",
    "unknown_architecture": "refused: its backbone config names _target_ 'builtins.open'",
    "nested_target": "refused: its embedding config names _target_ 'os.system'",
    "not_facerec": "is not a facerec model config",
    "newer_format": "format_version 99",
    "pickle_weights": "model.safetensors: not a readable safetensors file",
    "stray_tensors": "holds tensors outside backbone.* and embedding.*",
    "wrong_shapes": "model.safetensors: the weights do not fit",
    "no_weights": "has no model.safetensors",
}


@pytest.mark.parametrize("kind", sorted(CRAFTED))
def test_a_crafted_folder_is_refused_in_one_line(kind, exported, lfw_root, tmp_path, capsys):
    marker = tmp_path / "pwned"
    folder = tmp_path / "crafted"
    _craft(folder, exported[1], kind, marker)
    a, b, _ = faces(lfw_root)
    code = facerec(["verify", str(folder), str(a), str(b), "--threshold", "1", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and CRAFTED[kind] in lines[0] and "Traceback" not in err
    assert str(folder) in lines[0]  # names the file or the folder
    assert not marker.exists()
    with pytest.raises(ValueError, match=r"facerec|refused|JSON|safetensors|fit|tensors"):
        pretrained.load_pretrained(folder)


# ----------------------------------------------------------------------------------------------
# files of the previous release

OLD_CONFIG = Path(__file__).parent / "fixtures" / "pretrained_v1_config.json"


def test_a_folder_written_by_the_previous_release_loads_and_exports_again(tmp_path):
    """``tests/fixtures/pretrained_v1_config.json`` is the config.json the release before the
    typed spec wrote (its describe(), aligned LFW preprocessing); the weights are Hydra's build
    of its sections, the reference the typed rebuild must reproduce."""
    from facerec.model import build_face_model

    config = json.loads(OLD_CONFIG.read_text())
    torch.manual_seed(0)
    reference = build_face_model(config).eval()
    folder = tmp_path / "old"
    folder.mkdir()
    shutil.copy(OLD_CONFIG, folder / "config.json")
    save_file(reference.state_dict(), str(folder / "model.safetensors"))
    loaded = inference.load(folder, "cpu")
    prep = loaded.spec.preprocessing
    assert (prep.image_size, prep.center_crop, prep.channels_last) == (112, 150, True)
    assert (prep.alignment.select, prep.alignment.on_missing, prep.alignment.size) == (
        "largest", "center", 112
    )  # fmt: skip
    assert inference.preparation(loaded.config)["method"] == "aligned"
    assert loaded.meta["step"] == 3 and loaded.spec.embedding_size == 8
    x = torch.randint(0, 256, (2, 3, 112, 112), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), reference(x))

    # exported again: the preprocessing and the training record are kept as they were
    assert facerec(["export", str(folder), "--out", str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / "config.json").read_text())
    assert again["preprocessing"]["center_crop"] == 150
    assert again["preprocessing"]["alignment"]["select"] == "largest"
    assert again["training"] == config["training"] and again["backbone"] == config["backbone"]
