"""An ONNX export (``facerec export-onnx``) behind the :class:`FaceModel` call, for the tools.

``evaluate``, ``extract`` and ``verify`` take ``model.onnx`` where they take a checkpoint: the
graph runs in onnxruntime (CPU), and the image size and centre crop come from the file's
``facerec.*`` metadata, which the export wrote. An ONNX file is a protobuf graph of standard
operators: loading it imports and calls nothing named in the file. It has no weights facerec
can re-export, so ``export`` and ``export-onnx`` refuse it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch
from torch import nn

from facerec.model import FaceModel

__all__ = ["OnnxFaceModel", "load_onnx"]


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


def load_onnx(path: Path) -> tuple[OnnxFaceModel, dict[str, Any], dict[str, Any]]:
    """``(model, cfg, summary)`` of an ONNX export, as :func:`facerec.inference.load_model` needs.

    Raises:
        FileNotFoundError: no such file.
        ValueError: onnxruntime is not installed, or the file is not an ONNX export of facerec
            (unreadable, or without its ``facerec.image_size`` metadata).
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
    try:
        size = int(props["facerec.image_size"])
        crop_text = props.get("facerec.center_crop", "None")
        crop = None if crop_text in ("None", "", "0") else int(crop_text)
    except (KeyError, ValueError):
        raise ValueError(
            f"{path} is not a facerec ONNX export (no facerec.image_size / center_crop metadata)"
        ) from None
    names = ([i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()])
    if names != (["images"], ["embeddings"]):
        raise ValueError(f"{path}: expected input 'images' and output 'embeddings', got {names}")
    cfg = {
        "backbone": {"_target_": props.get("facerec.backbone", "unknown")},
        "preprocessing": {"image_size": size, "center_crop": crop},
        "trainer": {"channels_last": False},
    }
    step = props.get("facerec.step")
    summary = {
        "step": int(step) if step and step.isdigit() else None,
        "epoch": None,
        "best": None,
        "best_step": None,
        "results": {},
        "num_classes": None,
    }
    return OnnxFaceModel(session), cfg, summary
