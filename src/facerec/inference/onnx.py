"""An ONNX export (``facerec export-onnx``) behind the :class:`FaceModel` call, for the tools.

``evaluate``, ``extract`` and ``verify`` take ``model.onnx`` where they take a checkpoint: the
graph runs in onnxruntime (CPU), and the preprocessing comes from the file's metadata, which the
export wrote: ``facerec.preprocessing_json`` (:meth:`Preprocessing.to_dict` as JSON), or, in a
file of the release before it, ``facerec.image_size`` and ``facerec.center_crop``; either is
checked like every saved config (:meth:`Preprocessing.from_dict`: ``image_size`` 16..1024).
An ONNX file is a protobuf graph of standard operators: loading it imports and calls nothing
named in the file. It has no weights facerec can re-export, so ``export`` and ``export-onnx``
refuse it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from facerec.inference.components import component_targets
from facerec.inference.preprocessing import Preprocessing
from facerec.inference.spec import ModelSpec
from facerec.messages import first_line
from facerec.model import FaceModel

__all__ = ["PREPROCESSING_KEY", "OnnxFaceModel", "load_onnx", "preprocessing_metadata"]

# The metadata key holding Preprocessing.to_dict() as JSON.
PREPROCESSING_KEY = "facerec.preprocessing_json"

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


def preprocessing_metadata(prep: Preprocessing) -> dict[str, str]:
    """The metadata entry an export writes: the preprocessing, as :func:`load_onnx` reads it."""
    return {PREPROCESSING_KEY: json.dumps(prep.to_dict())}


def _preprocessing(props: Mapping[str, str], path: Path) -> Preprocessing:
    """The file's :class:`Preprocessing`: its JSON entry, else (a file of the previous release)
    ``facerec.image_size`` and ``facerec.center_crop`` as plain values for the one parser
    (text that is not a number stays text, refused there naming the key)."""
    if PREPROCESSING_KEY in props:
        try:
            values = json.loads(props[PREPROCESSING_KEY])
        except (json.JSONDecodeError, RecursionError) as error:
            raise ValueError(f"{path} refused: {PREPROCESSING_KEY}: not JSON ({error})") from None
        prep = Preprocessing.from_dict(values, f"{path} ({PREPROCESSING_KEY})")
    elif "facerec.image_size" in props:

        def number(text: str) -> Any:
            return int(text) if NUMBER.fullmatch(text) else text

        crop = props.get("facerec.center_crop", "None")
        values = {
            "image_size": number(props["facerec.image_size"]),
            "center_crop": None if crop in ("None", "", "0") else number(crop),
        }
        prep = Preprocessing.from_dict(values, path, {k: f"facerec.{k}" for k in values})
    else:
        raise ValueError(f"{path} is not a facerec ONNX export (no facerec.image_size metadata)")
    return dataclasses.replace(prep, channels_last=False)  # the graph takes NCHW


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
        raise ValueError(f"{path}: not a readable ONNX model ({first_line(error)})") from None
    props = session.get_modelmeta().custom_metadata_map
    prep = _preprocessing(props, path)
    cfg = {"preprocessing": prep.to_dict()}
    spec = ModelSpec(None, None, prep, str(path))
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
