"""A saved model's config, read as plain data into one typed :class:`ModelSpec`.

Every loader (a training checkpoint's ``config``, a model folder's ``config.json``, an ONNX
file's ``facerec.*`` metadata) turns the file's mapping into a :class:`ModelSpec` with
:func:`read_spec`, and every tool reads the architecture and the preprocessing from it. The
mapping is JSON-like data and stays so:

* nothing is resolved: ``"${...}"`` is a string like any other (no interpolation, no
  resolvers), and where a number or a name is due it is refused;
* nothing is instantiated: the architecture is one of facerec's own components
  (:mod:`facerec.inference.components`), called directly with checked arguments;
* every value has a type and a range (:data:`facerec.inference.rules.RULES`).

Every refusal is one line, ``<file> refused: <key>: <why>``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from facerec.inference.components import Component, check_components, read_component
from facerec.inference.preprocessing import Preprocessing, from_config
from facerec.messages import first_line
from facerec.model import FaceModel

__all__ = ["ModelSpec", "read_spec", "rebuild"]


@dataclass(frozen=True)
class ModelSpec:
    """What a saved model is: its backbone and embedding to build, and its preprocessing.

    Attributes:
        backbone, embedding: the components (None for a graph that is run, not rebuilt: ONNX).
        preprocessing: how images become its input.
        source: the file it was read from (named in messages).
    """

    backbone: Component | None
    embedding: Component | None
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    source: str = ""

    @property
    def embedding_size(self) -> int | None:
        """``D`` of the embeddings (the argument, else the embedding layer's default)."""
        if self.embedding is None:
            return None
        default = inspect.signature(self.embedding.kind.factory).parameters["embedding_size"]
        return self.embedding.kwargs.get("embedding_size", default.default)

    def build(self) -> FaceModel:
        """A freshly initialised :class:`FaceModel` of this architecture."""
        if self.backbone is None or self.embedding is None:
            raise ValueError(f"{self.source}: no architecture to rebuild (a graph to run)")
        backbone = self.backbone.build()
        return FaceModel(backbone, self.embedding.build(in_shape=backbone.feature_shape))


def read_spec(
    cfg: Any,
    path: Path | str,
    what: str,
    *,
    architecture: bool = True,
    preprocessing: Preprocessing | None = None,
) -> ModelSpec:
    """The :class:`ModelSpec` of a saved config; the one parser of every model file.

    Args:
        cfg: a training checkpoint's ``config`` (``backbone``, ``embedding``, ``data``,
            ``trainer``) or a model folder's ``config.json`` (``backbone``, ``embedding``,
            ``preprocessing``), as loaded: plain containers, never resolved.
        path: the file (named in every message).
        what: what the file should be, for the message when it is not.
        architecture: read ``backbone`` and ``embedding`` (False: preprocessing only).
        preprocessing: already read from the file's own entry (a training checkpoint's
            ``preprocessing``); None: :func:`facerec.inference.preprocessing.from_config`.

    Raises:
        ValueError: one line naming ``path`` and the key.
    """
    if not isinstance(cfg, Mapping):
        raise ValueError(f"{path} is not {what}: it holds no config")
    backbone = embedding = None
    if architecture:
        check_components(cfg, path, what)
        backbone = read_component("backbone", cfg["backbone"], path)
        embedding = read_component("embedding", cfg["embedding"], path)
    if preprocessing is None:
        preprocessing = from_config(cfg, path)
    return ModelSpec(backbone, embedding, preprocessing, str(path))


def rebuild(spec: ModelSpec, weights: Mapping[str, Any], path: Path | str) -> FaceModel:
    """Backbone + embedding built from ``spec``, with the file's weights loaded.

    The architecture is first built on the ``meta`` device (no memory): weights whose names or
    shapes do not fit are refused before a real tensor is allocated.

    Raises:
        ValueError: naming ``path``: the component refuses its arguments, or the weights do not
            fit the architecture (missing, unexpected or mis-shaped tensors).
    """
    target = spec.backbone.target if spec.backbone else "none"
    try:
        with torch.device("meta"):
            shapes = {k: tuple(v.shape) for k, v in spec.build().state_dict().items()}
    except Exception as error:  # a component's own check of its arguments
        raise ValueError(
            f"{path}: cannot rebuild the model from its saved config "
            f"(backbone {target}): {first_line(error)}"
        ) from None
    _check_fit(shapes, weights, path, target)
    model = spec.build()
    try:
        model.load_state_dict(weights)
    except (RuntimeError, TypeError, AttributeError) as error:
        raise ValueError(
            f"{path}: the weights do not fit the saved architecture ({target}): {first_line(error)}"
        ) from None
    return model


def _check_fit(
    shapes: Mapping[str, tuple[int, ...]], weights: Any, path: Path | str, target: str
) -> None:
    """Refuse weights whose names or shapes are not those of the architecture."""
    if not isinstance(weights, Mapping):
        raise ValueError(f"{path}: its weights are not a state dict")
    given = {k: tuple(getattr(v, "shape", ("not a tensor",))) for k, v in weights.items()}
    wrong = [k for k in shapes if k in given and given[k] != shapes[k]]
    missing = [k for k in shapes if k not in given]
    extra = [k for k in given if k not in shapes]
    if wrong:
        why = f"{wrong[0]} is {given[wrong[0]]} there, {shapes[wrong[0]]} in the architecture"
    elif missing or extra:
        why = f"{missing[0]} is missing" if missing else f"{extra[0]} is not in the architecture"
    else:
        return
    raise ValueError(f"{path}: the weights do not fit the saved architecture ({target}): {why}")
