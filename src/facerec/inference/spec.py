"""A saved model's config, read as plain data into one typed :class:`ModelSpec`.

Every loader (a training checkpoint's ``config``, a model folder's ``config.json``, an ONNX
file's ``facerec.*`` metadata) turns the file's mapping into a :class:`ModelSpec` with
:func:`read_spec`, and every tool reads the architecture and the preprocessing from it. The
mapping is JSON-like data and stays so:

* nothing is resolved: ``"${...}"`` is a string like any other (no interpolation, no
  resolvers), and where a number or a name is due it is refused;
* nothing is instantiated: a section's ``_target_`` (or the component's name, e.g.
  ``resnet50``) is looked up among facerec's own components, the choices of
  ``configs/backbone`` and ``configs/embedding`` (the allow-list is the config folders
  themselves: adding a backbone adds it), and that class is called directly;
* the arguments are only those the component declares (its signature), each with a type and a
  range (:data:`RULES`): ``embedding_size`` 1..65536, ``image_size`` 16..1024, ... A
  legitimate file never meets them; a hostile size is refused before anything is allocated.

Every refusal is one line, ``<file> refused: <key>: <why>``.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from facerec.align.folder import AlignOptions
from facerec.cli import CONFIG_DIR
from facerec.model import FaceModel

__all__ = [
    "RULES",
    "Component",
    "ModelSpec",
    "Preprocessing",
    "Rule",
    "check_components",
    "component_targets",
    "read_preprocessing",
    "read_spec",
    "rebuild",
    "targets_in",
]

NORMALISATION = 127.5  # FaceModel.preprocess: (uint8 - 127.5) / 127.5, fixed in every model
FORMULA = f"(uint8 - {NORMALISATION}) / {NORMALISATION}"
NORMALISATION_KEYS = ("mean", "std", "formula")
NAME = re.compile(r"[A-Za-z0-9_.\-]{1,100}")


# --------------------------------------------------------------------------------------------
# typed values


@dataclass(frozen=True)
class Rule:
    """What one value of a saved config may be: its type, its range, whether null is allowed.

    Attributes:
        kind: ``int``, ``float``, ``bool``, ``str`` (a name: letters, digits, ``_.-``) or
            ``choice`` (one of ``choices``).
        low, high: inclusive bounds of a number.
        nullable: ``None`` is a value.
        choices: the values a ``choice`` may take.
    """

    kind: str
    low: float = -math.inf
    high: float = math.inf
    nullable: bool = False
    choices: tuple[str, ...] = ()

    def read(self, value: Any, key: str, path: Path | str) -> Any:
        """``value`` checked (an int stays an int, a float is finite) or a one-line refusal."""
        if value is None and self.nullable:
            return None
        why = self._why_not(value)
        if why is None:
            return float(value) if self.kind == "float" else value
        if isinstance(value, str) and "${" in value:
            why += " (a saved config is plain data: interpolations are never resolved)"
        raise ValueError(f"{path} refused: {key}: {_show(value)} {why}")

    def _why_not(self, value: Any) -> str | None:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if self.kind == "bool":
            return None if isinstance(value, bool) else "is not true/false"
        if self.kind == "str":
            return None if isinstance(value, str) and NAME.fullmatch(value) else "is not a name"
        if self.kind == "choice":
            return None if value in self.choices else f"is not one of {', '.join(self.choices)}"
        if self.kind == "int" and not (number and isinstance(value, int)):
            return "is not an integer"
        if not number or not math.isfinite(value):
            return "is not a finite number"
        if not self.low <= value <= self.high:
            return f"is outside {self.low:g}..{self.high:g}"
        return None


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _int(low: int, high: int, nullable: bool = False) -> Rule:
    return Rule("int", low, high, nullable)


def _float(low: float, high: float, nullable: bool = False) -> Rule:
    return Rule("float", low, high, nullable)


BOOL = Rule("bool")

# Every argument a component (or the preprocessing) may take from a file, by name; a component
# parameter missing here cannot be read from a file (tests/test_security.py checks they all are).
RULES: dict[str, Rule] = {
    "embedding_size": _int(1, 65536),
    "num_features": _int(1, 65536),
    "dropout": _float(0.0, 0.99),
    "freeze_scale": BOOL,
    "conv_init_std": _float(0.0, 10.0, nullable=True),
    "zero_init_residual": BOOL,
    "model_name": Rule("str"),
    # timm.create_model options a timm backbone may carry (+backbone.<key>=...)
    "drop_rate": _float(0.0, 0.99),
    "drop_path_rate": _float(0.0, 0.99),
    "img_size": _int(16, 1024),
    # preprocessing
    "image_size": _int(16, 1024),
    "center_crop": _int(0, 8192, nullable=True),
    "channels_last": BOOL,
    "mean": _float(NORMALISATION, NORMALISATION),
    "std": _float(NORMALISATION, NORMALISATION),
    "formula": Rule("choice", choices=(FORMULA,)),
    "color": Rule("choice", choices=("RGB",)),
    "layout": Rule("choice", choices=("NCHW",)),
    "resize": Rule("choice", choices=("cv2.INTER_AREA",)),
    # alignment (facerec.align.AlignOptions)
    "size": _int(16, 1024),
    "select": Rule("choice", choices=("largest", "center")),
    "on_missing": Rule("choice", choices=("skip", "center")),
    "fallback_crop": _float(0.01, 1.0),
    "min_face": _int(1, 4096),
    "max_side": _int(16, 16384),
    "min_side": _int(1, 16384),
}
# Extra keyword arguments a component with ``**kwargs`` (TimmBackbone) may take from a file.
EXTRA_OPTIONS = ("drop_rate", "drop_path_rate", "img_size")
# Given by facerec when it builds the component, never by a file.
BUILT_BY_FACEREC = frozenset({"in_shape"})


def read_section(
    section: Any, allowed: tuple[str, ...], prefix: str, path: Path | str
) -> dict[str, Any]:
    """``section``'s values, each read with its :data:`RULES` entry; another key is refused."""
    if not isinstance(section, Mapping):
        raise ValueError(f"{path} refused: {prefix.rstrip('.')}: {_show(section)} is not a mapping")
    unknown = sorted(str(k) for k in section if k not in allowed)
    if unknown:
        raise ValueError(
            f"{path} refused: {prefix}{unknown[0]}: not an option here "
            f"(options: {', '.join(allowed) or 'none'})"
        )
    return {k: RULES[k].read(v, f"{prefix}{k}", path) for k, v in section.items()}


# --------------------------------------------------------------------------------------------
# facerec's own components


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
            f"{path} refused: its {group} config names _target_ {_show(target)}, which is not"
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
                    f"{path} refused: its {group} config names _target_ {_show(target)}, which is"
                    f" not one of facerec's {group} components ({', '.join(sorted(allowed))})"
                )


# --------------------------------------------------------------------------------------------
# preprocessing


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the model's input; every tool reads it from here.

    Attributes:
        image_size: side of the square input (the training ``data.image_size``).
        center_crop: side of the centre crop taken before resizing, None for none.
        alignment: detect + align faces this way first (``data.align``), None for images as
            given.
        mean, std: ``(uint8 - mean) / std``, done inside the model (:class:`FaceModel`).
        color: channel order of the input.
        channels_last: feed NHWC tensors (as training did; the numbers agree either way).
    """

    image_size: int = 112
    center_crop: int | None = None
    alignment: AlignOptions | None = None
    mean: float = NORMALISATION
    std: float = NORMALISATION
    color: str = "RGB"
    channels_last: bool = True

    def describe(self) -> dict[str, Any]:
        """``config.json``'s ``preprocessing`` section (read back by :func:`read_preprocessing`)."""
        return {
            "image_size": self.image_size,
            "center_crop": self.center_crop,
            # face alignment before the crop (facerec.align); None: the images as given
            "alignment": self.alignment.as_dict() if self.alignment else None,
            "color": self.color,
            "layout": "NCHW",
            "resize": "cv2.INTER_AREA",
            "normalisation": {
                "mean": self.mean,
                "std": self.std,
                "formula": FORMULA,
            },
            "channels_last": self.channels_last,
        }

    def crop(self, override: int | None = None, aligned: bool = False) -> int | None:
        """The centre crop to use: ``override`` if given (0 = none), else none for ``aligned``
        images (already the face), else the training one."""
        if override is not None:
            return override or None
        return None if aligned else self.center_crop

    def align_options(self) -> AlignOptions:
        """The training alignment, or the default one at this image size."""
        return self.alignment or AlignOptions(size=self.image_size)


PREPROCESSING_KEYS = ("image_size", "center_crop", "alignment", "normalisation", "color",
                      "layout", "resize", "channels_last")  # fmt: skip


def read_preprocessing(
    values: Mapping[str, Any], path: Path | str, names: Mapping[str, str] | None = None
) -> Preprocessing:
    """A :class:`Preprocessing` from plain values, each checked; ``names`` maps a field to the
    key the file gives it (``image_size`` -> ``data.image_size``) for the messages.

    Keys: ``image_size``, ``center_crop`` (0 or None: none), ``alignment`` (a mapping of
    :class:`AlignOptions` fields, or None), ``normalisation`` (``mean``, ``std``, ``formula``),
    ``color``, ``layout``, ``resize``, ``channels_last``; missing ones take the defaults.
    """
    names = {k: (names or {}).get(k, f"preprocessing.{k}") for k in PREPROCESSING_KEYS}
    unknown = sorted(str(k) for k in values if k not in PREPROCESSING_KEYS)
    if unknown:
        raise ValueError(f"{path} refused: preprocessing.{unknown[0]}: not a preprocessing key")
    given = {k: v for k, v in values.items() if v is not None or k == "center_crop"}
    checked = {k: RULES[k].read(given[k], names[k], path) for k in given if k in RULES}
    fields: dict[str, Any] = {k: v for k, v in checked.items() if k not in ("layout", "resize")}
    fields["center_crop"] = checked.get("center_crop") or None
    if "normalisation" in given:
        prefix = names["normalisation"] + "."
        norm = read_section(given["normalisation"], NORMALISATION_KEYS, prefix, path)
        fields.update({k: v for k, v in norm.items() if k != "formula"})
    if "alignment" in given:
        size = fields.get("image_size", Preprocessing.image_size)
        fields["alignment"] = _read_alignment(given["alignment"], size, names["alignment"], path)
    return Preprocessing(**fields)


def _read_alignment(section: Any, size: int, key: str, path: Path | str) -> AlignOptions:
    options = tuple(AlignOptions.__dataclass_fields__)
    values = {"size": size, **read_section(section, options, f"{key}.", path)}
    try:
        return AlignOptions(**values)
    except ValueError as error:
        raise ValueError(f"{path} refused: {key}: {error}") from None


# --------------------------------------------------------------------------------------------
# the spec


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


# Where a training config keeps each preprocessing value.
TRAINING_KEYS = {"image_size": "data.image_size", "center_crop": "data.center_crop",
                 "alignment": "data.align", "channels_last": "trainer.channels_last"}  # fmt: skip


def _training_preprocessing(cfg: Mapping[str, Any]) -> dict[str, Any]:
    values = {}
    for name, key in TRAINING_KEYS.items():
        section, _, entry = key.partition(".")
        node = cfg.get(section)
        if isinstance(node, Mapping) and entry in node:
            values[name] = node[entry]
    return values


def read_spec(cfg: Any, path: Path | str, what: str, *, architecture: bool = True) -> ModelSpec:
    """The :class:`ModelSpec` of a saved config; the one parser of every model file.

    Args:
        cfg: a training checkpoint's ``config`` (``backbone``, ``embedding``, ``data``,
            ``trainer``) or a model folder's ``config.json`` (``backbone``, ``embedding``,
            ``preprocessing``), as loaded: plain containers, never resolved.
        path: the file (named in every message).
        what: what the file should be, for the message when it is not.
        architecture: read ``backbone`` and ``embedding`` (False: preprocessing only).

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
    if "preprocessing" in cfg:
        prep = cfg["preprocessing"]
        if not isinstance(prep, Mapping):
            raise ValueError(f"{path} refused: preprocessing: {_show(prep)} is not a mapping")
        preprocessing = read_preprocessing(prep, path)
    else:
        preprocessing = read_preprocessing(_training_preprocessing(cfg), path, TRAINING_KEYS)
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
            f"(backbone {target}): {str(error).splitlines()[0] if str(error) else error!r}"
        ) from None
    _check_fit(shapes, weights, path, target)
    model = spec.build()
    try:
        model.load_state_dict(weights)
    except (RuntimeError, TypeError, AttributeError) as error:
        raise ValueError(
            f"{path}: the weights do not fit the saved architecture ({target}): "
            f"{str(error).splitlines()[0]}"
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
