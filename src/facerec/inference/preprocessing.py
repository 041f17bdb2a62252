"""How an image becomes a model's input, as one small frozen object: :class:`Preprocessing`.

timm's pretrained config in spirit: image size, centre crop, alignment options, normalisation
and colour order travel with the weights, written once by :meth:`Preprocessing.to_dict` into
every training checkpoint (``preprocessing``), model folder (``config.json``), ONNX export
(``facerec.preprocessing_json``) and pack header (``pack.json``), and read back by
:meth:`Preprocessing.from_dict` (every value range-checked) and nowhere else. Files of the
previous release, which have no such entry, derive it from their training config
(:func:`from_config`: ``data.image_size``, ``data.center_crop``, ``data.align``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facerec.align.options import AlignOptions
from facerec.inference.rules import FORMULA, NORMALISATION, RULES, read_section, show

__all__ = [
    "PREPROCESSING_KEYS",
    "TRAINING_KEYS",
    "Preprocessing",
    "from_config",
    "from_pack",
    "preprocessing_entry",
]

NORMALISATION_KEYS = ("mean", "std", "formula")


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

    def to_dict(self) -> dict[str, Any]:
        """The ``preprocessing`` entry of every model file (read back by :meth:`from_dict`)."""
        return {
            "image_size": self.image_size,
            "center_crop": self.center_crop,
            # face alignment before the crop (facerec.align); None: the images as given
            "alignment": self.alignment.as_dict() if self.alignment else None,
            "color": self.color,
            "layout": "NCHW",
            "resize": "cv2.INTER_AREA",
            "normalisation": {"mean": self.mean, "std": self.std, "formula": FORMULA},
            "channels_last": self.channels_last,
        }

    @classmethod
    def from_dict(
        cls, values: Any, path: Path | str, names: Mapping[str, str] | None = None
    ) -> Preprocessing:
        """A :class:`Preprocessing` from a file's plain values, each checked.

        Args:
            values: :meth:`to_dict`'s mapping: ``image_size``, ``center_crop`` (0 or None:
                none), ``alignment`` (a mapping of :class:`AlignOptions` fields, or None),
                ``normalisation`` (``mean``, ``std``, ``formula``), ``color``, ``layout``,
                ``resize``, ``channels_last``; missing ones take the defaults.
            path: the file (named in every message).
            names: the key the file gives a field, for the messages (``image_size`` ->
                ``data.image_size``); default ``preprocessing.<field>``.

        Raises:
            ValueError: one line, ``<path> refused: <key>: <why>``.
        """
        if not isinstance(values, Mapping):
            raise ValueError(f"{path} refused: preprocessing: {show(values)} is not a mapping")
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
            size = fields.get("image_size", cls.image_size)
            fields["alignment"] = _read_alignment(
                given["alignment"], size, names["alignment"], path
            )
        return cls(**fields)

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


def _read_alignment(section: Any, size: int, key: str, path: Path | str) -> AlignOptions:
    options = tuple(AlignOptions.__dataclass_fields__)
    values = {"size": size, **read_section(section, options, f"{key}.", path)}
    try:
        return AlignOptions(**values)
    except ValueError as error:
        raise ValueError(f"{path} refused: {key}: {error}") from None


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


def from_config(cfg: Any, path: Path | str) -> Preprocessing:
    """The :class:`Preprocessing` a saved config holds: its ``preprocessing`` entry (a model
    folder's ``config.json``, an ONNX file's metadata), else, for a training config (and files
    of the release before the entry), derived from :data:`TRAINING_KEYS`."""
    if isinstance(cfg, Mapping) and "preprocessing" in cfg:
        return Preprocessing.from_dict(cfg["preprocessing"], path)
    values = _training_preprocessing(cfg) if isinstance(cfg, Mapping) else {}
    return Preprocessing.from_dict(values, path, TRAINING_KEYS)


def from_pack(header: Mapping[str, Any], path: Path | str) -> Preprocessing:
    """How a pack's stored images were made (its ``pack.json``, read by
    :func:`facerec.data.packed.read_pack_header`): the ``preprocessing`` entry, else, in a pack
    of the release before it, its ``image_size`` and ``center_crop``."""
    if "preprocessing" in header:
        return Preprocessing.from_dict(header["preprocessing"], path)
    values = {k: header[k] for k in ("image_size", "center_crop") if k in header}
    return Preprocessing.from_dict(values, path, {k: k for k in values})


def preprocessing_entry(config: Mapping[str, Any]) -> dict[str, Any]:
    """A training config's :class:`Preprocessing` as the checkpoint's ``preprocessing`` entry
    (checked now: a run whose config no tool could read fails at its first checkpoint, not when
    it is used)."""
    return from_config(config, "the training config").to_dict()
