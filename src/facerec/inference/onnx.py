"""An ONNX export (``facerec export-onnx``) behind the :class:`FaceModel` call, for the tools.

``evaluate``, ``extract`` and ``verify`` take ``model.onnx`` where they take a checkpoint: the
graph runs in onnxruntime (CPU), and the image size and centre crop come from the file's
``facerec.*`` metadata, which the export wrote, read as text and checked like every saved
config (:func:`facerec.model_config.read_preprocessing`: ``facerec.image_size`` 16..1024).
An ONNX file is a protobuf graph of standard operators: loading it imports and calls nothing
named in the file. It has no weights facerec can re-export, so ``export`` and ``export-onnx``
refuse it.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from facerec.model import FaceModel
from facerec.model_config import ModelSpec, component_targets, read_preprocessing

__all__ = ["OnnxFaceModel", "load_onnx"]

NUMBER = re.compile(r"[0-9]{1,9}")


class OnnxFaceModel(nn.Module):
    """``images (B, 3, H, W) -> embeddings (B, D)`` through an onnxruntime session (CPU).

    Args:
        session: an ``onnxruntime.InferenceSession`` of a facerec export (input ``images``,
            output ``embeddings``).
    """

    def __init__(self, session: Any) -> None:
        super().__init__()
        self.session = session
        # Empty, on the CPU: the tools find a model's device from its parameters.
        self.placeholder = nn.Parameter(torch.zeros(0), requires_grad=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 pixels (normalised as :meth:`FaceModel.preprocess`) or the float input."""
        x = FaceModel.preprocess(images) if images.dtype == torch.uint8 else images
        x = x.detach().to("cpu", torch.float32).contiguous()  # NCHW, as the graph takes it
        (out,) = self.session.run(["embeddings"], {"images": x.numpy()})
        return torch.from_numpy(out)


def _metadata(props: Mapping[str, str], path: Path) -> dict[str, Any]:
    """The ``facerec.*`` preprocessing metadata as plain values, for the one parser
    (:func:`facerec.model_config.read_spec`): text that is not a number stays text (refused
    there, naming the key)."""
    if "facerec.image_size" not in props:
        raise ValueError(f"{path} is not a facerec ONNX export (no facerec.image_size metadata)")

    def number(text: str) -> Any:
        return int(text) if NUMBER.fullmatch(text) else text

    crop = props.get("facerec.center_crop", "None")
    return {
        "image_size": number(props["facerec.image_size"]),
        "center_crop": None if crop in ("None", "", "0") else number(crop),
        "channels_last": False,  # the graph takes NCHW
    }


def load_onnx(path: Path) -> tuple[OnnxFaceModel, ModelSpec, dict[str, Any], dict[str, Any]]:
    """``(model, spec, cfg, summary)`` of an ONNX export, as :func:`facerec.inference.load`
    needs; the spec has the preprocessing only (the graph is run, not rebuilt).

    Raises:
        FileNotFoundError: no such file.
        ValueError: onnxruntime is not installed, or the file is not an ONNX export of facerec
            (unreadable, without its ``facerec.image_size`` metadata, or a size out of range).
    """
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    if importlib.util.find_spec("onnxruntime") is None:
        raise ValueError(f"{path}: running ONNX needs onnxruntime: pip install 'facerec[onnx]'")
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own types for a bad graph
        raise ValueError(
            f"{path}: not a readable ONNX model ({str(error).splitlines()[0]})"
        ) from None
    props = session.get_modelmeta().custom_metadata_map
    cfg = {"preprocessing": _metadata(props, path)}
    keys = {k: f"facerec.{k}" for k in cfg["preprocessing"]}
    spec = ModelSpec(None, None, read_preprocessing(cfg["preprocessing"], path, keys), str(path))
    names = ([i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()])
    if names != (["images"], ["embeddings"]):
        raise ValueError(f"{path}: expected input 'images' and output 'embeddings', got {names}")
    backbone = props.get("facerec.backbone")
    step = props.get("facerec.step") or ""
    summary = {
        "step": int(step) if NUMBER.fullmatch(step) else None,
        "epoch": None,
        "best": None,
        "best_step": None,
        "results": {},
        "num_classes": None,
        # shown, never used: one of facerec's own names or "unknown"
        "backbone": backbone if backbone in component_targets("backbone") else "unknown",
    }
    return OnnxFaceModel(session), spec, cfg, summary
