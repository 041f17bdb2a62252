"""A file a user downloaded is data: hostile checkpoints and threshold files given to every tool
and to resume execute nothing, build nothing outside facerec, and get a one-line refusal."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from facerec import inference

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"


class Payload:
    """Pickles into a call of ``os.system``: what a crafted ``.pt`` runs under a plain load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def malicious_pickle(folder: Path) -> tuple[Path, Path]:
    marker = folder / "pwned-by-pickle"
    path = folder / "evil_pickle.pt"
    torch.save({"model": Payload(marker), "step": 1, "config": {}}, path)
    return path, marker


def malicious_target(folder: Path) -> tuple[Path, Path]:
    """Plain dicts and strings only, but the saved config names ``builtins.open`` as the
    backbone: a tool rebuilding the model through Hydra would create the file."""
    marker = folder / "pwned-by-target"
    hostile = {"_target_": "builtins.open", "file": str(marker), "mode": "w"}
    config = {"backbone": hostile, "embedding": {"_target_": "facerec.embedding.Embedding"}}
    path = folder / "evil_target.pt"
    torch.save({"model": {}, "step": 1, "config": config, "classes": ["a"]}, path)
    return path, marker


HOSTILE = {"pickle": malicious_pickle, "target": malicious_target}


def images(folder: Path, count: int = 2) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i}.jpg" for i in range(count)]
    rng = np.random.default_rng(0)
    for p in paths:
        cv2.imwrite(str(p), rng.integers(0, 255, (112, 112, 3), dtype=np.uint8))
    return paths


def tool_commands(ckpt: Path, tmp: Path) -> dict[str, list[str]]:
    a, b = images(tmp / "faces")
    return {
        "verify": [str(ckpt), str(a), str(b)],
        "evaluate": [str(ckpt), "--device", "cpu"],
        "extract": [str(ckpt), str(tmp / "faces"), "--out", str(tmp / "out" / "emb.npy")],
        "export_onnx": [str(ckpt), "--out", str(tmp / "out" / "model.onnx")],
    }


@pytest.mark.parametrize("kind", sorted(HOSTILE))
@pytest.mark.parametrize("tool", ["verify", "evaluate", "extract", "export_onnx"])
def test_every_tool_refuses_a_hostile_checkpoint_in_one_line(tool, kind, tmp_path, capsys):
    ckpt, marker = HOSTILE[kind](tmp_path)
    args = tool_commands(ckpt, tmp_path)[tool]
    main = runpy.run_path(str(SCRIPTS / f"{tool}.py"))["main"]
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert not marker.exists(), "the file's code or _target_ ran"
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert str(ckpt) in err and "refused" in err, err


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_the_loader_refuses_and_names_why(kind, tmp_path):
    ckpt, marker = HOSTILE[kind](tmp_path)
    with pytest.raises(ValueError, match="refused") as error:
        inference.load_model(ckpt, "cpu")
    assert not marker.exists()
    why = "GLOBAL" if kind == "pickle" else "builtins.open"
    assert why in str(error.value)


def test_resume_from_a_malicious_pickle_runs_nothing(tmp_path):
    ckpt, marker = malicious_pickle(tmp_path)
    data = tmp_path / "data"
    for person in range(2):
        images(data / f"id{person}", 3)
    command = [
        sys.executable, str(ROOT / "train.py"), "data=folder", f"data.root={data}", "~data.val",
        "data.num_workers=0", f"paths.output_dir={tmp_path / 'runs'}", "trainer.device=cpu",
        f"trainer.resume={ckpt}",
    ]  # fmt: skip
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert not marker.exists()
    last = result.stderr.strip().splitlines()[-1]
    assert "refused" in last and str(ckpt) in last and "Traceback" not in result.stderr


@pytest.mark.parametrize("threshold", [4.0, 0.0, -1.0, 12.5, float("nan"), float("inf")])
def test_a_threshold_file_outside_the_distance_range_is_refused(threshold, tmp_path):
    ckpt = tmp_path / "model.pt"
    record = {"threshold": threshold, "set": "x", "accuracy": 0.9, "step": 1}
    inference.threshold_path(ckpt).write_text(json.dumps(record))
    with pytest.raises(ValueError, match="outside"):
        inference.load_threshold(ckpt)


def test_a_plausible_threshold_file_is_read(tmp_path):
    ckpt = tmp_path / "model.pt"
    inference.threshold_path(ckpt).write_text(json.dumps({"threshold": 1.21, "step": 3}))
    assert inference.load_threshold(ckpt)["threshold"] == 1.21


def test_a_timm_backbone_config_cannot_make_timm_load_a_file(tmp_path):
    """The backbone _target_ is allowed, but its options must not point timm at a (hostile)
    weights file: refused before timm opens it."""
    evil, marker = malicious_pickle(tmp_path)
    backbone = {"_target_": "facerec.backbones.timm.TimmBackbone", "model_name": "resnet10t",
                "checkpoint_path": str(evil)}  # fmt: skip
    embedding = {"_target_": "facerec.embedding.Embedding"}
    ckpt = tmp_path / "timm.pt"
    torch.save({"model": {}, "step": 1, "config": {"backbone": backbone, "embedding": embedding}},
               ckpt)  # fmt: skip
    with pytest.raises(ValueError, match="checkpoint_path"):
        inference.load_model(ckpt, "cpu")
    assert not marker.exists()
