"""A checkpoint's config, read as data: the model is rebuilt only from facerec's own parts.

The tools rebuild the backbone and embedding from the config saved in a checkpoint; through
Hydra a ``_target_`` naming any importable function would be called with the file's chosen
arguments. Here every ``_target_`` must be one of the choices in ``configs/backbone`` and
``configs/embedding`` (the allow-list is the config folders themselves: adding a backbone adds
it), checked before anything is imported. The same check guards exported model folders
(:mod:`facerec.pretrained`), and :func:`rebuild` is the one place either is turned into a model.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from facerec.cli import CONFIG_DIR
from facerec.model import FaceModel, build_face_model

__all__ = ["check_components", "component_targets", "model_config", "rebuild", "targets_in"]


def component_targets(group: str) -> frozenset[str]:
    """The ``_target_`` of every choice in ``configs/<group>/``: facerec's own components."""
    return frozenset(
        str(OmegaConf.load(f).get("_target_")) for f in (CONFIG_DIR / group).glob("*.yaml")
    )


def targets_in(node: Any) -> list[str]:
    """Every ``_target_`` value anywhere in a nested config (nested ones are built too)."""
    if isinstance(node, Mapping):
        own = [str(node["_target_"])] if "_target_" in node else []
        return own + [t for value in node.values() for t in targets_in(value)]
    if isinstance(node, (list, tuple)):
        return [t for value in node for t in targets_in(value)]
    return []


def check_components(cfg: Mapping[str, Any], path: Path, what: str) -> None:
    """Refuse a config whose ``backbone``/``embedding`` could build anything but facerec's own.

    Args:
        cfg: a mapping that should hold ``backbone`` and ``embedding`` sections.
        path: the file it came from (named in the message).
        what: what the file should be ("a facerec training checkpoint", ...).

    Raises:
        ValueError: naming ``path``: no such sections, or a ``_target_`` outside the list.
    """
    if not isinstance(cfg, Mapping) or not all(
        isinstance(cfg.get(k), Mapping) and "_target_" in cfg[k] for k in ("backbone", "embedding")
    ):
        raise ValueError(
            f"{path} is not {what}: it holds no config with backbone and embedding sections, so "
            f"the model cannot be rebuilt"
        )
    for group in ("backbone", "embedding"):
        allowed = component_targets(group)
        for target in targets_in(cfg[group]):
            if target not in allowed:
                raise ValueError(
                    f"{path} refused: its {group} config names _target_ {target!r}, which is not"
                    f" one of facerec's {group} components ({', '.join(sorted(allowed))})"
                )


def model_config(state: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """The checkpoint's config, checked to build only facerec's own backbones and embeddings.

    A file's config is data: the model is rebuilt from it only when every ``_target_`` in its
    ``backbone`` and ``embedding`` sections is one of ``configs/backbone`` or
    ``configs/embedding``; anything else (an importable function with chosen arguments) is
    refused before anything is imported or called.

    Raises:
        ValueError: naming ``path``: no such sections, or a ``_target_`` outside the list.
    """
    cfg = state.get("config")
    check_components(cfg, path, "a facerec training checkpoint")
    # Plain values only from here: interpolations (${...}) are resolved once, here.
    return OmegaConf.to_container(OmegaConf.create(dict(cfg)), resolve=True)


def rebuild(cfg: Mapping[str, Any], weights: Mapping[str, Any], path: Path) -> FaceModel:
    """Backbone + embedding built from a checked config, with the file's weights loaded.

    Args:
        cfg: sections ``backbone`` and ``embedding`` that passed :func:`check_components`.
        weights: a ``FaceModel.state_dict()`` (keys ``backbone.*``, ``embedding.*``).
        path: the file they came from (named in the messages).

    Raises:
        ValueError: naming ``path``: the component refuses its arguments, or the weights do not
            fit the architecture (missing, unexpected or mis-shaped tensors).
    """
    try:
        model = build_face_model(cfg)
    except Exception as error:
        cause = error.__cause__ or error  # Hydra wraps the component's own message
        raise ValueError(
            f"{path}: cannot rebuild the model from its saved config "
            f"(backbone {cfg['backbone']['_target_']}): {str(cause).splitlines()[0]}"
        ) from None
    try:
        model.load_state_dict(weights)
    except (RuntimeError, TypeError, AttributeError) as error:
        raise ValueError(
            f"{path}: the weights do not fit the saved architecture "
            f"({cfg['backbone']['_target_']}): {str(error).splitlines()[0]}"
        ) from None
    return model
