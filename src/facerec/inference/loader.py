"""Any saved model -> the model, its :class:`ModelSpec`, its config (plain data) and ``meta``.

Three formats, one call (:func:`load`): a training checkpoint (``best.pt``, read with
``weights_only=True`` by :mod:`facerec.files.checkpoint`), a model folder written by ``facerec
export`` (safetensors + JSON, :mod:`facerec.inference.folder`), or an ONNX export (run in
onnxruntime, :mod:`facerec.inference.onnx`). Each is read as plain data into a spec (never
resolved or instantiated: :mod:`facerec.inference.spec`) and rebuilt from facerec's own
components.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from facerec.distributed import resolve_device
from facerec.files import checkpoint
from facerec.inference import folder
from facerec.inference.preprocessing import Preprocessing
from facerec.inference.spec import ModelSpec, read_spec, rebuild
from facerec.messages import first_line

__all__ = ["LoadedModel", "is_onnx", "load", "load_model"]


@dataclass(frozen=True)
class LoadedModel:
    """What :func:`load` gives: the model, its :class:`ModelSpec` (architecture and
    preprocessing: the one place the tools read them from), the file's config as plain data
    (never resolved) and what the file says of its training (``meta``)."""

    model: torch.nn.Module
    spec: ModelSpec
    config: dict[str, Any]
    meta: dict[str, Any]


def load(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild backbone + embedding from a training checkpoint, an exported folder or ONNX.

    Args:
        path: a ``.pt`` file written by the trainer (``best.pt``, ``last.pt``), a folder written
            by ``facerec export`` (:mod:`facerec.inference.folder`), or a ``.onnx`` file written by
            ``facerec export-onnx`` (:mod:`facerec.inference.onnx`, CPU only).
        device: ``"auto"``, ``"cpu"``, an accelerator name, or a ``torch.device``.

    Returns:
        The model in eval mode on ``device``, its spec, the file's config and ``meta``:
        ``path``, ``step``, ``epoch``, ``best``, ``best_step``, ``results`` (last verification
        summaries), ``num_classes``, ``backbone`` (its ``_target_``) and ``device``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: one line naming the file (and the key): not a facerec model, a value of the
            wrong type or out of range, or weights that do not fit the saved architecture.
    """
    path = Path(path)
    if not isinstance(device, torch.device):
        device = resolve_device(device)
    loader = next((loader for test, loader in _LOADERS if test(path)), _from_checkpoint)
    model, spec, cfg, summary = loader(path)
    # A loader may pin the device: ONNX runs in onnxruntime on the CPU.
    device = torch.device(summary.pop("device", device))
    model.to(device).eval()
    backbone = summary.pop("backbone", None) or (spec.backbone.target if spec.backbone else "-")
    meta = {"path": str(path), **summary, "backbone": backbone, "device": str(device)}
    return LoadedModel(model, spec, cfg, meta)


def load_model(
    checkpoint_path: str | Path, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, dict[str, Any], dict[str, Any]]:
    """``(model, config, meta)`` of :func:`load` (the config is plain data: pass it to
    :func:`facerec.inference.images.image_size`, ... or use :func:`load`'s ``spec``)."""
    loaded = load(checkpoint_path, device)
    return loaded.model, loaded.config, loaded.meta


Loaded = tuple[torch.nn.Module, ModelSpec, dict[str, Any], dict[str, Any]]


def _from_checkpoint(path: Path) -> Loaded:
    try:
        state = checkpoint.load(path)
    except ValueError as error:
        if isinstance(error.__cause__, Exception):  # torch.load itself failed
            raise ValueError(
                f"{path} is not a facerec checkpoint, or is truncated (torch.load: "
                f"{first_line(error.__cause__)})"
            ) from None
        raise
    cfg = state.get("config")
    # The checkpoint's own entry; a checkpoint of the release before it derives it from cfg.
    prep = state.get("preprocessing")
    prep = None if prep is None else Preprocessing.from_dict(prep, path)
    spec = read_spec(cfg, path, "a facerec training checkpoint", preprocessing=prep)
    # checkpoint.summary: the same reader the trainer's resume uses
    return rebuild(spec, state.get("model"), path), spec, cfg, checkpoint.summary(state)


def _from_folder(path: Path) -> Loaded:
    spec, cfg, weights = folder.read_folder(path)
    return rebuild(spec, weights, path / folder.WEIGHTS), spec, cfg, folder.summary(cfg)


def _from_onnx(path: Path) -> Loaded:
    from facerec.inference.onnx import load_onnx  # onnxruntime only when an ONNX file is given

    model, spec, cfg, summary = load_onnx(path)
    return model, spec, cfg, {**summary, "device": "cpu"}


def is_onnx(path: str | Path) -> bool:
    """Whether ``path`` names an ONNX file (by its suffix): a model to run, not to re-export."""
    return Path(path).suffix.lower() == ".onnx"


# What else a model path may be besides a training checkpoint, tried in order.
_LOADERS = ((folder.is_pretrained, _from_folder), (is_onnx, _from_onnx))
