"""Knowledge distillation (``criterion=distill``): the loss against a float64 reference, the
teacher kept out of training, the refusals of a teacher that does not fit, and short runs with a
checkpoint and an ONNX teacher on real LFW images."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import distill_worker as worker
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import compose_train, save_flatten_onnx
from omegaconf import OmegaConf
from test_partial_fc import run_ranks
from test_train import smoke_overrides
from torch import nn

from facerec.cli.train import train_status
from facerec.criteria import MarginLoss, TripletLoss, WeightedSum
from facerec.criteria.distill import DistillationLoss
from facerec.files import checkpoint
from facerec.heads.cosface import CosFace
from facerec.inference.onnx import preprocessing_metadata
from facerec.inference.preprocessing import Preprocessing, preprocessing_entry
from facerec.model import Recognizer, build_face_model, build_recognizer
from facerec.training.run import run
from facerec.training.teacher import Teacher

S, M, LAMBDA = 30.0, 0.35, 0.7


class Linear(nn.Module):
    """uint8 ``(B, 3, 4, 4)`` -> ``(B, D)`` float64: a stand-in model with known weights."""

    def __init__(self, out: int, seed: int) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(48, out, generator=gen, dtype=torch.float64))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images.flatten(1).double() / 255.0) @ self.weight


def reference(emb, teacher, centres, labels, distance: str) -> float:
    """CosFace cross-entropy by its formula, one sample at a time, + λ × the mean distance."""
    total = 0.0
    for e, t, y in zip(emb, teacher, labels, strict=True):
        cos = [float(e @ w / (np.linalg.norm(e) * np.linalg.norm(w))) for w in centres]
        logits = [S * (c - M) if j == y else S * c for j, c in enumerate(cos)]
        top = max(logits)
        ce = top + math.log(sum(math.exp(v - top) for v in logits)) - logits[y]
        u, v = e / np.linalg.norm(e), t / np.linalg.norm(t)
        d = 1.0 - float(u @ v) if distance == "cosine" else float(((u - v) ** 2).sum())
        total += ce + LAMBDA * d
    return total / len(labels)


def distillation(distance: str, teacher) -> DistillationLoss:
    torch.manual_seed(0)
    head = CosFace(8, 5, s=S, m=M).double()
    return DistillationLoss(MarginLoss(head), teacher, LAMBDA, distance)


@pytest.mark.parametrize("distance", ["cosine", "l2"])
def test_the_loss_is_the_margin_loss_plus_lambda_times_the_distance(distance):
    images = torch.randint(0, 256, (6, 3, 4, 4), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 3, 4, 1])
    student, teacher = Linear(8, seed=1), Linear(8, seed=2)
    criterion = distillation(distance, teacher)
    loss = criterion.loss(student, images, labels)
    expected = reference(
        student(images).detach().numpy(),
        teacher(images).detach().numpy(),
        criterion.head.weight.detach().numpy(),
        labels.tolist(),
        distance,
    )
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    assert set(criterion.scalars()) >= {"head_s", "distill/margin_loss", "distill/distance"}


def test_the_teacher_gets_no_gradient_and_is_no_part_of_the_module():
    """Even an ``nn.Module`` teacher: not a submodule (so not in the state dict, the optimizer,
    DDP or a checkpoint), no gradient, and left in eval mode by ``recognizer.train()``."""
    student, model = Linear(8, seed=1), Linear(8, seed=2)
    teacher = Teacher(model)
    criterion = distillation("cosine", teacher)
    recognizer = Recognizer(student, criterion).train()
    assert not model.training
    assert all(p is not model.weight for p in recognizer.parameters())
    assert list(criterion.state_dict()) == ["base.head.weight"]
    assert list(
        criterion.checkpoint_entries(
            torch.optim.SGD(recognizer.parameters()), Path("unused"), "last", 0, 1
        )["head"]
    ) == ["weight"]
    images = torch.randint(0, 256, (4, 3, 4, 4), dtype=torch.uint8)
    recognizer(images, torch.tensor([0, 1, 2, 3])).backward()
    assert model.weight.grad is None and not model.weight.requires_grad
    assert student.weight.grad is not None and criterion.head.weight.grad is not None


def test_the_teacher_runs_without_gradient_and_without_the_students_cpu_autocast():
    seen = {}

    def teacher(images: torch.Tensor) -> torch.Tensor:
        seen.update(grad=torch.is_grad_enabled(), autocast=torch.is_autocast_enabled("cpu"))
        return torch.ones(len(images), 8)

    criterion = distillation("cosine", teacher)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        criterion.loss(Linear(8, seed=1), torch.zeros(2, 3, 4, 4, dtype=torch.uint8),
                       torch.tensor([0, 1]))  # fmt: skip
    assert seen == {"grad": False, "autocast": False}


def test_a_distillation_term_in_a_weighted_sum_is_refused():
    criterion = distillation("cosine", Linear(8, seed=2))
    with pytest.raises(ValueError, match=r"criterion\.terms\.distill: needs the images"):
        WeightedSum({"distill": criterion, "triplet": TripletLoss()}, {"distill": 1, "triplet": 1})


@pytest.mark.parametrize(
    ("weight", "distance", "message"),
    [(-1.0, "cosine", r"criterion\.weight=-1\.0 must be a finite number >= 0"),
     (math.inf, "cosine", r"criterion\.weight=inf must be a finite number >= 0"),
     (1.0, "l1", r"criterion\.distance='l1' is not one of cosine, l2")],
)  # fmt: skip
def test_a_bad_weight_or_distance_is_refused_naming_the_key(weight, distance, message):
    with pytest.raises(ValueError, match=message):
        DistillationLoss(MarginLoss(CosFace(8, 5)), Linear(8, seed=2), weight, distance)


def test_under_ddp_each_rank_gets_the_gradient_of_the_mean_of_the_ranks_losses(tmp_path):
    """2 gloo ranks through ``Recognizer.data_parallel`` (DDP around model + criterion): the
    averaged gradient equals that of the mean of the two ranks' losses written out here; the
    teacher gets none."""
    ranks = run_ranks("distill_worker.py", tmp_path, worker.WORLD)
    student, teacher, head = worker.Pixels(seed=1), worker.Pixels(seed=2), worker.head()
    images, labels = worker.batch()
    emb, target = student(images), teacher(images).detach()
    cos = F.normalize(emb, dim=1) @ F.normalize(head.weight, dim=1).T
    logits = S * (cos - M * F.one_hot(labels, worker.CLASSES).double())
    per_sample = F.cross_entropy(logits, labels, reduction="none") + worker.WEIGHT * (
        1 - F.cosine_similarity(emb, target, dim=1))  # fmt: skip
    losses = [part.mean() for part in per_sample.split(worker.SIZES)]
    torch.stack(losses).mean().backward()
    params = [*student.parameters(), head.weight]
    for r, got in enumerate(ranks):
        torch.testing.assert_close(got["loss"], losses[r].detach(), rtol=1e-10, atol=0)
        assert got["teacher_grads"] == [None, None]
        for g, p in zip(got["grads"], params, strict=True):
            torch.testing.assert_close(g, p.grad, rtol=1e-9, atol=1e-12)


def save_teacher(path: Path, *overrides: str, size: int = 32) -> Path:
    """A teacher checkpoint (random MobileFaceNet weights, D = ``size``) recording the
    preprocessing of the data config ``overrides`` give, as the trainer writes it."""
    cfg = compose_train(f"embedding.embedding_size={size}", "data.root=/lfw", *overrides)
    config = OmegaConf.to_container(cfg, resolve=True)
    torch.manual_seed(3)
    state = build_face_model(cfg).state_dict()
    torch.save({"model": state, "step": 2, "config": config,
                "preprocessing": preprocessing_entry(config)}, path)  # fmt: skip
    return path


@pytest.fixture(scope="module")
def teachers(tmp_path_factory) -> dict[str, Path]:
    """Teachers of ``data=lfw`` (112 px, centre crop 150) and of ``data=lfw_aligned``."""
    folder = tmp_path_factory.mktemp("teachers")
    return {"lfw": save_teacher(folder / "lfw.pt"),
            "aligned": save_teacher(folder / "aligned.pt", "data=lfw_aligned")}  # fmt: skip


def build_with(teacher: Path | str, *overrides: str) -> Recognizer:
    cfg = compose_train("embedding.embedding_size=32", "data.root=/lfw", "criterion=distill",
                        f"criterion.teacher={teacher}", *overrides)  # fmt: skip
    return build_recognizer(cfg, 5)


@pytest.mark.parametrize(
    ("teacher", "overrides", "message"),
    [
        ("lfw", ["data.image_size=96"],
         r"its image_size is 112, this run's data\.image_size is 96 \(the teacher must see"),
        ("lfw", ["data=lfw_aligned"],
         r"its alignment is none, this run's data\.align is on \(faces aligned\)"),
        ("aligned", ["data=lfw"],
         r"its alignment is on \(faces aligned\), this run's data\.align is none"),
        ("aligned", ["data=lfw_aligned", "data.align.select=center"],
         r"its alignment\.select is largest, this run's data\.align\.select is center"),
        ("lfw", ["data.center_crop=120"],
         r"its center_crop is 150, this run's data\.center_crop is 120"),
        ("lfw", ["embedding.embedding_size=64"],
         r"its embeddings have 32 dimensions, this run's embedding\.embedding_size is 64"),
    ],
)  # fmt: skip
def test_a_teacher_that_does_not_fit_is_refused_in_one_line(teachers, teacher, overrides, message):
    with pytest.raises(ValueError, match=message) as error:
        build_with(teachers[teacher], *overrides)
    text = str(error.value)
    assert "\n" not in text and text.startswith(f"criterion.teacher {teachers[teacher]} refused")


def test_an_aligned_teacher_fits_whatever_the_unused_centre_crop(teachers):
    """Aligned copies are read without the centre crop: its value does not count."""
    recognizer = build_with(teachers["aligned"], "data=lfw_aligned", "data.center_crop=0")
    assert isinstance(recognizer.criterion, DistillationLoss)


def test_a_missing_or_non_model_teacher_is_refused_in_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"^criterion\.teacher: checkpoint not found: "):
        build_with(tmp_path / "none.pt")
    text = tmp_path / "notes.txt"
    text.write_text("not a model\n")
    with pytest.raises(ValueError, match=rf"^criterion\.teacher: {text} is not a facerec ch"):
        build_with(text)


@pytest.mark.parametrize("teacher", [None, "missing.pt", "bad-crop"])
def test_facerec_train_reports_a_teacher_refusal_in_one_line(
    lfw_root, tmp_path, capsys, teachers, teacher, monkeypatch
):
    """Through ``facerec train``: exit status 2, one line, no run folder, and before the data
    is read (aligning a dataset first could take minutes)."""

    def no_data(*_: object) -> None:
        raise AssertionError("the data was read before the teacher was checked")

    monkeypatch.setattr("facerec.training.run.build_data", no_data)
    extra = [] if teacher is None else [f"criterion.teacher={tmp_path / teacher}"]
    if teacher == "bad-crop":
        extra = [f"criterion.teacher={teachers['lfw']}", "data.center_crop=120"]
    cfg = compose_train(*smoke_overrides(lfw_root, tmp_path, "criterion=distill", *extra))
    assert train_status(run, cfg) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("facerec: error: ") and "\n" not in err and "Traceback" not in err
    assert "criterion.teacher" in err
    assert not (tmp_path / "runs").exists()


def trained(lfw_root: Path, tmp_path: Path, teacher: Path, *extra: str) -> tuple[dict, Path]:
    overrides = smoke_overrides(
        lfw_root,
        tmp_path,
        "criterion=distill",
        "trainer.max_steps=2",
        "trainer.log_every=1",
        f"criterion.teacher={teacher}",
        *extra,
    )
    metrics = run(compose_train(*overrides))
    return metrics, Path(metrics["run_dir"]) / "checkpoints" / "last.pt"


def test_a_short_run_distils_from_a_checkpoint_teacher(lfw_root, tmp_path, caplog, teachers):
    """2 steps with ``criterion=distill`` and a checkpoint teacher: the distance is logged, the
    checkpoint holds the student and its head only, the optimizer only their parameters."""
    with caplog.at_level(logging.INFO, logger="facerec"):
        metrics, last = trained(lfw_root, tmp_path, teachers["lfw"], "embedding.embedding_size=32",
                                "criterion.distance=l2")  # fmt: skip
    assert metrics["step"] == 2 and "distill/distance" in caplog.text
    saved = checkpoint.load(last)
    student = build_face_model(compose_train("embedding.embedding_size=32"))
    assert list(saved["model"]) == list(student.state_dict())
    assert list(saved["head"]) == ["weight"]
    in_optimizer = sum(len(group["params"]) for group in saved["optimizer"]["param_groups"])
    assert in_optimizer == len(list(student.parameters())) + 1
    assert saved["config"]["criterion"]["teacher"] == str(teachers["lfw"])


def test_a_teacher_that_does_not_run_at_the_recorded_size_is_refused_in_one_line(tmp_path):
    """An ONNX graph built for 4 x 4 inputs whose metadata says 112: onnxruntime's error on the
    blank probe image becomes one line."""
    pytest.importorskip("onnxruntime")
    meta = preprocessing_metadata(Preprocessing(image_size=112, center_crop=150))
    onnx = save_flatten_onnx(tmp_path / "teacher.onnx", meta)
    with pytest.raises(ValueError, match=r"refused: it does not run on 112x112 images \(") as error:
        build_with(onnx, "embedding.embedding_size=48")
    assert "\n" not in str(error.value)


def test_an_onnx_teacher_is_run_in_onnxruntime_for_a_training_step(tmp_path):
    """An ONNX export as the teacher (a whole run costs as much as the checkpoint one; the
    teacher is what differs): 48 pooled pixels of the 112 px images, the distance to them
    computed independently."""
    pytest.importorskip("onnxruntime")
    meta = preprocessing_metadata(Preprocessing(image_size=112, center_crop=150))
    onnx = save_flatten_onnx(tmp_path / "teacher.onnx", meta, image_size=112)
    recognizer = build_with(onnx, "embedding.embedding_size=48", "head=cosface").train()
    images = torch.randint(0, 256, (2, 3, 112, 112), dtype=torch.uint8)
    labels = torch.tensor([0, 1])
    loss = recognizer(images, labels)
    loss.backward()
    pooled = (images.double() - 127.5) / 127.5
    pooled = pooled.reshape(2, 3, 4, 28, 4, 28).mean(dim=(3, 5)).flatten(1).numpy()
    student = recognizer.model(images).detach().double().numpy()
    u = student / np.linalg.norm(student, axis=1, keepdims=True)
    v = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    distance = float(np.mean(1.0 - (u * v).sum(axis=1)))
    scalars = recognizer.criterion.scalars()
    assert scalars["distill/distance"] == pytest.approx(distance, abs=1e-5)
    assert loss.item() == pytest.approx(scalars["distill/margin_loss"] + distance, abs=1e-4)
    assert all(p.grad is not None for p in recognizer.model.embedding.parameters())
