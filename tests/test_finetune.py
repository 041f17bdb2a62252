"""Fine-tuning from a trained model: ``trainer.init_from`` (weights, new head, errors), per-part
learning rates, the frozen backbone, and an end-to-end triplet fine-tune on real LFW images."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import pytest
import torch
from conftest import compose_train
from omegaconf import OmegaConf
from test_train import smoke_overrides

from facerec.files import checkpoint
from facerec.inference import folder as pretrained
from facerec.model import build_face_model, build_recognizer
from facerec.optim import param_groups
from facerec.training import finetune
from facerec.training.run import run

ROOT = Path(__file__).resolve().parents[1]


def trained_checkpoint(tmp_path: Path, backbone: str = "mobilefacenet", classes: int = 9) -> Path:
    """A checkpoint of a recognizer over ``classes`` identities whose weights are not the
    initialisation (so loading them is visible)."""
    cfg = compose_train(f"backbone={backbone}", "embedding.embedding_size=32")
    torch.manual_seed(123)
    recognizer = build_recognizer(cfg, classes)
    with torch.no_grad():
        for p in recognizer.parameters():
            p.add_(torch.randn_like(p) * 0.01)
        for name, b in recognizer.named_buffers():
            if "running_mean" in name:
                b.add_(0.5)
    path = tmp_path / f"{backbone}.pt"
    torch.save({"model": recognizer.model.state_dict(), "step": 7, "head":
                recognizer.criterion.head.state_dict(), "config": {"backbone": {"_target_":
                backbone}}}, path)  # fmt: skip
    return path


def test_init_from_loads_backbone_and_embedding_and_keeps_the_new_head(tmp_path):
    path = trained_checkpoint(tmp_path)
    saved = torch.load(path)
    cfg = compose_train("embedding.embedding_size=32")
    torch.manual_seed(0)
    recognizer = build_recognizer(cfg, 5)  # other identities: a head of another size
    head_before = copy.deepcopy(recognizer.criterion.head.state_dict())
    line = finetune.init_from(path, recognizer.model)
    assert str(path) in line and "step 7" in line
    state = recognizer.model.state_dict()
    assert state.keys() == saved["model"].keys()
    for key, value in saved["model"].items():
        assert torch.equal(state[key], value), key
    for key, value in recognizer.criterion.head.state_dict().items():
        assert torch.equal(value, head_before[key])  # untouched: the new head starts fresh
    assert recognizer.criterion.head.weight.shape[0] == 5


def test_init_from_an_exported_model_folder(tmp_path):
    """``facerec export``'s folder (safetensors + JSON) starts a run like a checkpoint."""
    cfg = compose_train("embedding.embedding_size=32")
    torch.manual_seed(7)
    source = build_face_model(cfg)
    folder = pretrained.save_pretrained(source, OmegaConf.to_container(cfg, resolve=True),
                                        tmp_path / "exported")  # fmt: skip
    torch.manual_seed(8)
    model = build_face_model(cfg)
    line = finetune.init_from(folder, model)
    assert "exported model" in line
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config\.json"):
        finetune.init_from(folder, model)


def test_init_from_another_architecture_names_the_layer(tmp_path):
    path = trained_checkpoint(tmp_path, backbone="resnet18")
    model = build_face_model(compose_train("embedding.embedding_size=32"))
    with pytest.raises(ValueError, match=r"init_from=.*resnet18\.pt.*layer \S+") as error:
        finetune.init_from(path, model)
    assert "\n" not in str(error.value)
    other = build_face_model(compose_train("embedding.embedding_size=64"))
    with pytest.raises(ValueError, match=r"layer embedding\.\S+ is \(32, .*\) there, \(64, "):
        finetune.init_from(trained_checkpoint(tmp_path), other)


def test_init_from_refuses_missing_and_hostile_files(tmp_path):
    model = build_face_model(compose_train())
    with pytest.raises(FileNotFoundError, match=r"nothing\.pt"):
        finetune.init_from(tmp_path / "nothing.pt", model)

    class Payload:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    hostile = tmp_path / "hostile.pt"
    torch.save({"model": Payload(), "step": 1}, hostile)
    with pytest.raises(ValueError, match="refused"):
        finetune.init_from(hostile, model)
    assert not (tmp_path / "pwned").exists()


def test_lr_scale_groups_multiply_each_parts_learning_rate():
    recognizer = build_recognizer(compose_train("embedding.embedding_size=16"), 4)
    parts = recognizer.parts
    plain = finetune.lr_scaled_groups(parts, {}, 0.1, 5e-4, param_groups)
    reference = param_groups([recognizer], 5e-4)  # every multiplier 1: the usual two groups
    assert [[id(p) for p in g["params"]] for g in plain] == [
        [id(p) for p in g["params"]] for g in reference
    ]
    groups = finetune.lr_scaled_groups(parts, {"backbone": 0.1}, 0.1, 5e-4, param_groups)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert all(lr_of[id(p)] == pytest.approx(0.01) for p in parts["backbone"].parameters())
    assert all(lr_of[id(p)] == 0.1 for p in parts["criterion"].parameters())
    assert groups[0]["lr"] == 0.1  # the logged learning rate is the head's
    optimizer = torch.optim.SGD(groups, lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5)
    del scheduler
    assert sorted({g["lr"] for g in optimizer.param_groups}) == pytest.approx([0.005, 0.05])
    with pytest.raises(ValueError, match=r"trainer\.lr_scale\.head"):
        finetune.lr_scaled_groups(parts, {"head": 0.1}, 0.1, 5e-4, param_groups)
    with pytest.raises(ValueError, match=r"trainer\.lr_scale\.backbone"):
        finetune.lr_scaled_groups(parts, {"backbone": -1}, 0.1, 5e-4, param_groups)


def test_frozen_backbone_keeps_weights_and_batchnorm_statistics_then_thaws():
    recognizer = build_recognizer(compose_train("embedding.embedding_size=16"), 4).train()
    backbone = recognizer.model.backbone
    built = []

    def build():
        built.append(1)
        return recognizer

    freeze = finetune.BackboneFreeze(backbone, 2, build)
    optimizer = torch.optim.SGD(recognizer.parameters(), lr=0.5, momentum=0.9)
    images = torch.randint(0, 256, (4, 3, 112, 112), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 3])
    start = copy.deepcopy(recognizer.state_dict())
    for step in range(3):
        module = freeze.module(step)
        if step == 1:
            recognizer.train()  # what verification does between steps: must not unfreeze BN
            module = freeze.module(step)
        optimizer.zero_grad()
        module(images, labels).backward()
        optimizer.step()
        if step < 2:
            assert all(p.grad is None for p in backbone.parameters())
            assert not any(m.training for m in backbone.modules())
            now = recognizer.state_dict()
            moved = {k for k in start if not torch.equal(now[k], start[k])}
            assert not any(k.startswith("model.backbone.") for k in moved)  # BN stats too
            assert any(k.startswith("model.embedding.") for k in moved)
    assert len(built) == 2  # built frozen, rebuilt once when it thawed
    assert all(p.grad is not None for p in backbone.parameters())
    assert any(not torch.equal(v, start[k]) for k, v in recognizer.state_dict().items()
               if k.startswith("model.backbone.") and v.is_floating_point())  # fmt: skip


def test_experiment_finetune_runs_a_triplet_fine_tune_from_a_trained_run(
    lfw_root, tmp_path, caplog
):
    """Train 2 steps with ArcFace, then ``experiment=finetune trainer.init_from=`` its
    checkpoint for 3 steps with the triplet loss on P x K batches: the weights start equal,
    the triplet scalars are logged, and the run's config records where it started."""
    base = run(compose_train(*smoke_overrides(lfw_root, tmp_path / "base", "trainer.max_steps=2")))
    base_ckpt = Path(base["run_dir"]) / "checkpoints" / "last.pt"
    overrides = smoke_overrides(lfw_root, tmp_path / "ft", "experiment=finetune",
                                f"trainer.init_from={base_ckpt}", "trainer.max_steps=3",
                                "trainer.log_every=1", "data.batch_size=8",
                                "sampler.images_per_identity=4", "data.preload=false",
                                "trainer.freeze_backbone_steps=1", "name=ft")  # fmt: skip
    cfg = compose_train(*overrides)
    assert cfg.criterion._target_.endswith("TripletLoss.build")
    with caplog.at_level(logging.INFO, logger="facerec"):
        metrics = run(cfg)
    run_dir = Path(metrics["run_dir"])
    saved = checkpoint.load(run_dir / "checkpoints" / "last.pt")
    assert saved["config"]["trainer"]["init_from"] == str(base_ckpt)
    assert saved["step"] == 3 and saved["head"] == {}  # a triplet loss has no class centres
    assert f"initialised backbone + embedding from {base_ckpt} (step 2" in caplog.text
    assert "backbone frozen" in caplog.text and "step 1: backbone unfrozen" in caplog.text
    assert "triplets_active" in caplog.text and "distance_negative" in caplog.text
    assert json.loads((run_dir / "metrics.json").read_text())["step"] == 3
