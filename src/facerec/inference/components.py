"""facerec's own components (``configs/backbone``, ``configs/embedding``), as files name them.

A section of a saved config (``{"_target_": ..., **arguments}``) is never instantiated: its
``_target_`` (or the component's name, e.g. ``resnet50``) is looked up among the choices of
``configs/backbone`` and ``configs/embedding`` (the allow-list is the config folders
themselves: adding a backbone adds it), and that class is called directly with the arguments
it declares (its signature), each checked by its :data:`facerec.inference.rules.RULES` entry.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from torch import nn

from facerec.inference.rules import read_section, show

__all__ = ["Component", "ComponentKind", "check_components", "component_targets", "components",
           "read_component", "targets_in"]  # fmt: skip

# The config folders shipped inside the package (the same folder the command line composes).
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
# Extra keyword arguments a component with ``**kwargs`` (TimmBackbone) may take from a file.
EXTRA_OPTIONS = ("drop_rate", "drop_path_rate", "img_size")
# Given by facerec when it builds the component, never by a file.
BUILT_BY_FACEREC = frozenset({"in_shape"})


@dataclass(frozen=True)
class ComponentKind:
    """One choice of ``configs/<group>/``: its name (the file's stem) and ``_target_``."""

    group: str
    name: str
    target: str

    @functools.cached_property
    def factory(self) -> Callable[..., nn.Module]:
        """The class or function the choice names; only facerec's own are ever imported."""
        module, _, attribute = self.target.rpartition(".")
        if not module.startswith("facerec."):
            raise ValueError(f"configs/{self.group}/{self.name}.yaml names {self.target}")
        return getattr(importlib.import_module(module), attribute)

    @functools.cached_property
    def options(self) -> tuple[str, ...]:
        """The keyword arguments a file may give: the signature's, less facerec's own."""
        parameters = inspect.signature(self.factory).parameters.values()
        named = [p.name for p in parameters if p.kind == p.POSITIONAL_OR_KEYWORD]
        extra = EXTRA_OPTIONS if any(p.kind == p.VAR_KEYWORD for p in parameters) else ()
        return tuple(n for n in named if n not in BUILT_BY_FACEREC) + extra


@functools.cache
def components(group: str) -> dict[str, ComponentKind]:
    """``configs/<group>/*.yaml`` by ``_target_`` and by name (``resnet50``)."""
    kinds = {}
    for file in sorted((CONFIG_DIR / group).glob("*.yaml")):
        kind = ComponentKind(group, file.stem, str(OmegaConf.load(file).get("_target_")))
        kinds[kind.target] = kinds[kind.name] = kind
    return kinds


def component_targets(group: str) -> frozenset[str]:
    """The ``_target_`` of every choice in ``configs/<group>/``: facerec's own components."""
    return frozenset(kind.target for kind in components(group).values())


@dataclass(frozen=True)
class Component:
    """A backbone or embedding layer to build: facerec's component and its checked arguments."""

    kind: ComponentKind
    arguments: tuple[tuple[str, Any], ...] = ()

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.arguments)

    @property
    def target(self) -> str:
        return self.kind.target

    def section(self) -> dict[str, Any]:
        """How files store it (``config.json``, the training config): ``_target_`` + arguments."""
        return {"_target_": self.kind.target, **self.kwargs}

    def build(self, **given: Any) -> nn.Module:
        """The module, called directly with the file's checked arguments and facerec's own."""
        return self.kind.factory(**self.kwargs, **given)


def read_component(group: str, section: Any, path: Path | str) -> Component:
    """``section`` (``{"_target_": ..., **arguments}``) as a :class:`Component`, or refused."""
    if not isinstance(section, Mapping) or "_target_" not in section:
        raise ValueError(f"{path} refused: {group}: no {group} section with a _target_")
    target = section["_target_"]
    kind = components(group).get(target) if isinstance(target, str) else None
    if kind is None:
        allowed = sorted(component_targets(group))
        raise ValueError(
            f"{path} refused: its {group} config names _target_ {show(target)}, which is not"
            f" one of facerec's {group} components ({', '.join(allowed)})"
        )
    values = {k: v for k, v in section.items() if k != "_target_"}
    arguments = read_section(values, kind.options, f"{group}.", path)
    return Component(kind, tuple(arguments.items()))


def targets_in(node: Any) -> list[str]:
    """Every ``_target_`` value anywhere in a nested config (named in refusals)."""
    if isinstance(node, Mapping):
        own = [str(node["_target_"])] if "_target_" in node else []
        return own + [t for value in node.values() for t in targets_in(value)]
    if isinstance(node, (list, tuple)):
        return [t for value in node for t in targets_in(value)]
    return []


def check_components(cfg: Any, path: Path | str, what: str) -> None:
    """Refuse a config without ``backbone``/``embedding`` sections or with a ``_target_`` in them
    (nested ones included) that is not one of facerec's components: one line naming ``path``."""
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
                    f"{path} refused: its {group} config names _target_ {show(target)}, which is"
                    f" not one of facerec's {group} components ({', '.join(sorted(allowed))})"
                )
