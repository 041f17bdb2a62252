"""Start-up checks: whatever would fail late (at step 1, at the first evaluation, after the run
folder exists) or train to nothing without a word stops before training, in one line naming the
key or the file. Most are checked on a composed config, without training."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from conftest import compose_train
from test_reliability import args, faces

from facerec import distributed
from facerec.configs import CONFIG_DIR
from facerec.data import IdentitySampler
from facerec.files import checkpoint
from facerec.files.jsonfile import read_json
from facerec.model import build_face_model
from facerec.training.finetune import init_from
from facerec.training.run_dir import read_resume
from facerec.training.validate import check_config, check_input_size, startup_warnings


def composed(*overrides: str):
    return compose_train("data.root=/nowhere", *overrides)


def refused(overrides: str, key: str) -> str:
    """The one-line error ``check_config`` gives ``overrides``; it names ``key``."""
    with pytest.raises(ValueError) as error:
        check_config(composed(*overrides.split()), torch.device("cpu"))
    message = str(error.value)
    assert key in message and "\n" not in message, message
    return message


# --- numbers that train to NaN, or fail late -----------------------------------------------


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("sched.gamma=nan", "sched.gamma=nan must be a finite number"),
        ("optim.momentum=nan", "optim.momentum=nan"),
        ("optim.weight_decay=nan", "optim.weight_decay=nan"),
        ("sched.milestones=[10,nan]", "sched.milestones[1]=nan"),
        ("optim=adamw +optim.betas=[0.9,nan]", "optim.betas[1]=nan"),
        ("trainer.lr_scale.backbone=inf", "trainer.lr_scale.backbone=inf"),
        ("embedding.dropout=nan", "embedding.dropout=nan"),
        ("criterion.label_smoothing=nan", "criterion.label_smoothing=nan"),
        ("trainer.grad_clip=inf", "trainer.grad_clip=inf"),
        ("optim.momentum=1", "optim.momentum=1 must be in [0, 1)"),
        ("optim.momentum=-0.1", "optim.momentum=-0.1"),
        ("optim.weight_decay=-1e-4", "optim.weight_decay=-0.0001 must be >= 0"),
        ("sched.gamma=0", "sched.gamma=0 must be > 0"),
        ("sched.warmup=-1", "sched.warmup=-1"),
        ("sched.milestones=[-1,5]", "sched.milestones=[-1, 5]"),
        ("sched=poly sched.power=-2", "sched.power=-2"),
        ("optim=adamw +optim.eps=0", "optim.eps=0 must be > 0"),
        ("optim=adamw +optim.betas=[0.9,1.0]", "optim.betas=[0.9, 1.0]"),
        ("embedding.dropout=1", "embedding.dropout=1"),
        ("optim.momentum=abc", "optim.momentum='abc' must be a number"),
    ],
)
def test_a_non_finite_or_impossible_optimizer_or_schedule_number_is_refused(override, key):
    refused(override, key)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("trainer.eval_batch_size=0", "trainer.eval_batch_size=0 must be >= 1"),
        ("data.image_size=0", "data.image_size=0 must be in [16, 1024]"),
        ("data.image_size=1e5", "data.image_size=100000.0 must be int"),
        ("data.image_size=100000", "data.image_size=100000 must be in [16, 1024]"),
        ("data.center_crop=1e5", "data.center_crop=100000.0 must be int or null"),
        ("data.center_crop=100000", "data.center_crop=100000 must be in [1, 4096]"),
        ("data.center_crop=0", "data.center_crop=0"),
        ("data.val.lfw_devtest.center_crop=9000", "data.val.lfw_devtest.center_crop=9000"),
        ("trainer.preempt_exit_code=abc", "trainer.preempt_exit_code='abc' must be int"),
        ("trainer.preempt_exit_code=300", "trainer.preempt_exit_code=300 must be in [0, 255]"),
    ],
)
def test_what_failed_at_the_first_evaluation_or_step_is_refused_at_start_up(override, key):
    refused(override, key)


# The mandatory value a shipped choice needs besides data.root.
NEEDS = {"criterion=distill": " criterion.teacher=/models/teacher.pt"}


@pytest.mark.parametrize(
    "overrides",
    [
        *[f"{group}={p.stem}" + NEEDS.get(f"{group}={p.stem}", "")
          for group in ("optim", "sched", "head", "criterion", "sampler", "augment", "data",
                        "trainer")
          for p in sorted((CONFIG_DIR / group).glob("*.yaml"))],
        "experiment=demo",
        "experiment=finetune trainer.init_from=/models/demo.pt",
    ],
)  # fmt: skip
def test_every_shipped_choice_passes_the_checks(overrides):
    cfg = composed(*overrides.split())
    if "data=packed" in overrides:
        cfg.data.val = None  # its LFW pairs are at ${paths.lfw_root}
    check_config(cfg, torch.device("cpu"))


@pytest.mark.parametrize(
    ("backbone", "size", "fits"),
    [("mobilefacenet", 96, False), ("resnet18", 128, False), ("mobilefacenet", 112, True),
     ("resnet100", 112, True), ("timm", 128, True)],
)  # fmt: skip
def test_an_image_size_the_backbone_cannot_take_is_refused_before_anything_is_built(
    backbone, size, fits
):
    cfg = composed(f"backbone={backbone}", f"data.image_size={size}")
    if fits:
        check_input_size(cfg)  # a shape-only pass on the meta device: nothing allocated
        return
    with pytest.raises(ValueError, match=rf"data\.image_size={size}: backbone \w+ does not"):
        check_input_size(cfg)


# --- legitimate but useless set-ups ------------------------------------------------------


def test_one_identity_stops_before_the_run_folder(tmp_path):
    """One identity trains with a loss of 0 and would exit 0: a message and exit 2 instead."""
    from facerec.training.run import run

    data = faces(tmp_path / "d", people=1)
    cfg = compose_train(*args(data, tmp_path / "o"))
    with pytest.raises(ValueError, match=r"1 identity \(p0\).*needs 2 or more"):
        run(cfg)
    assert not (tmp_path / "o").exists()


def test_an_identity_sampler_with_no_identity_of_two_images_is_refused(caplog):
    with pytest.raises(ValueError, match="no identity has 2 or more images"):
        IdentitySampler(list(range(12)), batch_size=4, images_per_identity=2)
    with caplog.at_level(logging.WARNING):  # some single-image identities: a warning
        IdentitySampler([0, 0, 1, 2, 3, 4], batch_size=4, images_per_identity=2)
    assert "4 of 5 identities have a single image" in caplog.text


@pytest.mark.parametrize(
    ("overrides", "warned"),
    [
        ("criterion=triplet sampler=identity", ["without trainer.init_from"]),
        ("criterion=triplet", ["without trainer.init_from", "without sampler=identity"]),
        ("criterion=triplet sampler=identity trainer.init_from=/m.pt", []),
        ("criterion=margin_triplet sampler=identity", []),
        ("criterion=margin", []),
    ],
)
def test_a_triplet_loss_from_scratch_is_warned_about(overrides, warned):
    """Warned, not refused (docs/reliability.md): FaceNet trained triplets from scratch."""
    warnings = startup_warnings(composed(*overrides.split()))
    assert len(warnings) == len(warned)
    for warning, text in zip(warnings, warned, strict=True):
        assert warning.startswith("warning: criterion=triplet") and text in warning
    resumed = startup_warnings(composed("criterion=triplet", "sampler=identity"), resuming=True)
    assert resumed == []  # the run was started (from a model or not) and warned then


# --- files that are not what the key says --------------------------------------------------


def nested(folder: Path, depth: int = 100_000) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text("[" * depth + "]" * depth)
    return folder


@pytest.mark.parametrize(
    ("make", "named"),
    [
        (lambda p: nested(p / "m"), "config.json: nested too deeply"),
        (lambda p: (p / "m").mkdir() or p / "m", "has no config.json"),
        (lambda p: p / "missing.pt", "not found"),
        (lambda p: (p / "x.pt").write_bytes(b"not a checkpoint") and p / "x.pt", "x.pt"),
        (lambda p: torch.save({"model": [1, 2]}, p / "l.pt") or p / "l.pt", "not a state dict"),
        (lambda p: torch.save({"model": {"w": 1}}, p / "i.pt") or p / "i.pt", "not a state dict"),
    ],
)
def test_a_malformed_init_from_is_one_line_naming_the_key(make, named, tmp_path):
    path = make(tmp_path)
    model = build_face_model(composed("embedding.embedding_size=8"))
    with pytest.raises((ValueError, FileNotFoundError)) as error:
        init_from(path, model)
    message = str(error.value)
    assert message.startswith(f"trainer.init_from={path}") and named in message, message
    assert "\n" not in message


def test_a_resume_file_that_is_not_a_training_checkpoint_is_one_line(tmp_path):
    from facerec.training.run import run

    folder = nested(tmp_path / "model")
    with pytest.raises(ValueError, match=r"is a folder.*trainer\.init_from="):
        read_resume(folder)
    (tmp_path / "x.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"^trainer\.resume=.*x\.pt: .*x\.pt"):
        read_resume(tmp_path / "x.pt")
    # model + step + classes, but none of the optimizer, schedule, RNG states
    data = faces(tmp_path / "d")
    resume = f"trainer.resume={tmp_path / 'w.pt'}"
    cfg = compose_train(*args(data, tmp_path / "o", resume))
    weights = build_face_model(cfg).state_dict()
    classes = sorted(p.name for p in data.iterdir())
    checkpoint.save({"model": weights, "step": 3, "classes": classes}, tmp_path / "w.pt")
    with pytest.raises(ValueError, match=r"w\.pt is not a complete facerec training checkpoint"):
        run(cfg)
    assert not (tmp_path / "o").exists()
    distributed.cleanup()


# --- JSON a user supplies ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "named"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"a": ' + b"[" * 5_000 + b"]" * 5_000 + b"}", "nested too deeply"),
        (b'{"threshold": 1.2', "not valid JSON"),
        (b'{"threshold": "\xff\xfe"}', "not UTF-8"),
        (b'{"n": ' + b"9" * 5_000 + b"}", "not valid JSON"),  # Python's integer digit limit
        (b"[1, 2]", "not a JSON object"),
        (b" " * (2 * 2**20), "larger than the 1 MiB"),
    ],
)
def test_read_json_turns_every_malformed_file_into_one_line(content, named, tmp_path):
    path = tmp_path / "threshold.json"
    path.write_bytes(content)
    with pytest.raises(ValueError) as error:
        read_json(path, "threshold file", max_bytes=2**20)
    message = str(error.value)
    assert message.startswith(f"threshold file {path}: ") and named in message, message
    assert "\n" not in message


def test_read_json_reads_json(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"threshold": 1.25, "set": "lfw"}))
    assert read_json(tmp_path / "a.json", "threshold file") == {"threshold": 1.25, "set": "lfw"}
    assert read_json(tmp_path / "a.json", "x", expect=None)["set"] == "lfw"
    with pytest.raises(FileNotFoundError, match="threshold file not found"):
        read_json(tmp_path / "b.json", "threshold file")
    with pytest.raises(ValueError, match="not a file"):
        read_json(tmp_path, "threshold file")
