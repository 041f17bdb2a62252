"""A checkpoint's config, read as data: the model is rebuilt only from facerec's own parts.

The tools rebuild the backbone and embedding from the config saved in a checkpoint; through
Hydra a ``_target_`` naming any importable function would be called with the file's chosen
arguments. Here every ``_target_`` must be one of the choices in ``configs/backbone`` and
``configs/embedding`` (the allow-list is the config folders themselves: adding a backbone adds
it), checked before anything is imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from facerec.cli import CONFIG_DIR

__all__ = ["component_targets", "model_config", "targets_in"]


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
    if not isinstance(cfg, Mapping) or not all(
        isinstance(cfg.get(k), Mapping) and "_target_" in cfg[k] for k in ("backbone", "embedding")
    ):
        raise ValueError(
            f"{path} is not a facerec training checkpoint: it holds no config with backbone and "
            f"embedding sections, so the model cannot be rebuilt"
        )
    for group in ("backbone", "embedding"):
        allowed = component_targets(group)
        for target in targets_in(cfg[group]):
            if target not in allowed:
                raise ValueError(
                    f"{path} refused: its {group} config names _target_ {target!r}, which is not"
                    f" one of facerec's {group} components ({', '.join(sorted(allowed))})"
                )
    # Plain values only from here: interpolations (${...}) are resolved once, here.
    return OmegaConf.to_container(OmegaConf.create(dict(cfg)), resolve=True)
