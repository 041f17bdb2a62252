"""``criterion=distill``: load the teacher, check it sees the student's images, build the loss.

The teacher is any model :func:`facerec.inference.load` reads (a training checkpoint, a model
folder from ``facerec export``, an ONNX export). It must see what the student sees, so its
recorded :class:`~facerec.inference.preprocessing.Preprocessing` is compared with the run's
data config before anything trains:

* ``image_size``, the centre crop and the face alignment must be equal (one line names the
  first field that differs and both values);
* normalisation is each model's own: the training loaders (augmentation included) ship uint8
  pixels and every model normalises its own input inside ``forward``, so both models get the
  same batch;
* the teacher's embedding size must be the student's (``embedding.embedding_size``).

The loss itself is :class:`facerec.criteria.distill.DistillationLoss` (criteria cannot import
the inference side; this builder is where the two meet).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from facerec.criteria.distill import DistillationLoss
from facerec.criteria.margin import MarginLoss
from facerec.inference.loader import LoadedModel, load
from facerec.inference.preprocessing import Preprocessing, from_config
from facerec.messages import first_line

__all__ = [
    "Teacher",
    "build_distillation",
    "check_distillation",
    "check_teacher",
    "load_teacher",
    "prepared_teacher",
]

KEY = "criterion.teacher"


class Teacher:
    """``uint8 images (B, 3, H, W) -> float32 embeddings (B, D)`` on the images' device.

    A plain callable (not an ``nn.Module``): the loss keeps it out of the recognizer's module
    tree. The model is in eval mode with ``requires_grad`` off and follows the images to their
    device at the first call (each DDP rank's own); an ONNX graph runs on the CPU whatever the
    device, its output is moved back. Float images (normalised to [-1, 1]) are fed as float32.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model.eval().requires_grad_(False)
        self.device: torch.device | None = None

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.device != images.device:
            self.model.to(images.device)
            self.device = images.device
        # Float input is already normalised (the Recognizer takes it too): the teacher's dtype.
        x = images if images.dtype == torch.uint8 else images.float()
        return self.model(x).float().to(images.device)


def load_teacher(path: str | Path) -> LoadedModel:
    """The teacher model on the CPU (moved to the training device at its first batch).

    Raises:
        FileNotFoundError, ValueError: one line, ``criterion.teacher: <the loader's message>``.
    """
    try:
        return load(path, "cpu")
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{KEY}: {error}") from None
    except ValueError as error:
        raise ValueError(f"{KEY}: {error}") from None


# The fields compared, and where the run's config keeps each.
COMPARED = (("image_size", "data.image_size"), ("alignment", "data.align"),
            ("center_crop", "data.center_crop"))  # fmt: skip


def _seen(prep: Preprocessing) -> dict[str, Any]:
    """What decides the pixels a model sees: the crop is none for aligned images (the aligned
    copies are read without it), so a crop value beside an alignment does not count."""
    align = prep.alignment
    return {
        "image_size": prep.image_size,
        "center_crop": prep.crop(aligned=align is not None),
        "alignment": None if align is None else _plain(dataclasses.asdict(align)),
    }


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    """Sequences as lists: a default ``search`` is a tuple, one read from a file a list."""
    return {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in values.items()}


def _first_difference(teacher: Any, student: Any, key: str) -> tuple[str, Any, Any] | None:
    """``(key, teacher value, student value)`` of the first difference, going into mappings."""
    if isinstance(teacher, dict) and isinstance(student, dict):
        for name in teacher:
            found = _first_difference(teacher[name], student.get(name), f"{key}.{name}")
            if found:
                return found
        return None
    return None if teacher == student else (key, teacher, student)


def check_teacher(teacher: Preprocessing, student: Preprocessing, source: str) -> None:
    """Refuse a teacher that would see other pixels than the student.

    Raises:
        ValueError: ``criterion.teacher <source> refused: its <field> is <t>, this run's
            <config key> is <s> (...)``, for the first field of :data:`COMPARED` that differs.
    """
    seen_t, seen_s = _seen(teacher), _seen(student)
    for field, key in COMPARED:
        found = _first_difference(seen_t[field], seen_s[field], field)
        if found:
            name, value_t, value_s = found
            where = key + name[len(field) :]
            raise ValueError(
                f"{KEY} {source} refused: its {name} is {_show(value_t)}, this run's {where} is "
                f"{_show(value_s)} (the teacher must see the images the student sees)"
            )


def _show(value: Any) -> str:
    """A compared value in a message: alignment options as a whole are only on or off."""
    if isinstance(value, dict):
        return "on (faces aligned)"
    return "none" if value is None else str(value)


def _embedding_size(teacher: Teacher, image_size: int, source: str) -> int:
    """``D`` of the teacher, from one blank image (also checks it runs at this size).

    Raises:
        ValueError: one line, when the model fails on that image.
    """
    try:
        with torch.no_grad():
            out = teacher(torch.zeros(1, 3, image_size, image_size, dtype=torch.uint8))
    except Exception as error:  # the model's own failure (torch or onnxruntime) on this input
        raise ValueError(
            f"{KEY} {source} refused: it does not run on {image_size}x{image_size} images"
            f" ({first_line(error)})"
        ) from None
    return int(out.shape[-1])


def prepared_teacher(teacher: str, student: Mapping[str, Any], embedding_size: int) -> Teacher:
    """The loaded teacher, once it is known to see the student's images and to give embeddings
    of ``embedding_size``.

    Raises:
        FileNotFoundError, ValueError: one line, naming ``criterion.teacher`` and the file.
    """
    loaded = load_teacher(teacher)
    mine = from_config({"data": dict(student)}, "the training config")
    check_teacher(loaded.spec.preprocessing, mine, str(teacher))
    runner = Teacher(loaded.model)
    size = _embedding_size(runner, mine.image_size, str(teacher))
    if size != embedding_size:
        raise ValueError(
            f"{KEY} {teacher} refused: its embeddings have {size} dimensions, this run's "
            f"embedding.embedding_size is {embedding_size}"
        )
    return runner


def check_distillation(node: Mapping[str, Any], embedding_size: int) -> None:
    """The start-up check of ``criterion=distill`` (``node``: the resolved ``criterion``
    section): the teacher is loaded and checked before the data is read or aligned, so a wrong
    path or a teacher that does not fit costs seconds, not the alignment of a dataset."""
    prepared_teacher(node["teacher"], node["student"], embedding_size)


def build_distillation(
    make_head: Callable[[int], nn.Module],
    num_classes: int,
    embedding_size: int,
    *,
    teacher: str,
    student: Mapping[str, Any],
    weight: float = 1.0,
    distance: str = "cosine",
    label_smoothing: float = 0.0,
    **context: Any,
) -> DistillationLoss:
    """The trainer's factory (``configs/criterion/distill.yaml``).

    Args:
        make_head, num_classes, embedding_size: as every criterion's ``build``.
        teacher: the teacher's file or folder.
        student: the run's ``image_size``, ``center_crop`` and ``align`` (the YAML takes them
            from ``data``: the same values the student's checkpoint records).
        weight, distance: λ and the distance (:data:`facerec.criteria.distill.DISTANCES`).
        label_smoothing: of the margin loss.
        context: ``rank``, ``world_size``, ``seed`` (the margin loss is replicated).

    Raises:
        FileNotFoundError, ValueError: one line, naming ``criterion.teacher`` and the file.
    """
    runner = prepared_teacher(teacher, student, embedding_size)
    base = MarginLoss.build(make_head, num_classes, embedding_size,
                            label_smoothing=label_smoothing, **context)  # fmt: skip
    return DistillationLoss(base, runner, weight, distance)


build_distillation.check = check_distillation  # type: ignore[attr-defined]
