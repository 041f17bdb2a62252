"""A model a user can share: one folder of data (safetensors + JSON + a model card), no pickle.

The Hugging Face ``save_pretrained`` convention, for facerec's backbone + embedding::

    <folder>/
      model.safetensors   FaceModel.state_dict() (backbone.*, embedding.*): tensors only
      config.json         the architecture (backbone and embedding sections with their
                          _target_, as the training config had them), the preprocessing (image
                          size, centre crop, alignment, normalisation) and what training said
      README.md           the model card: data, recipe, steps, verification table + protocol
      threshold.json      (when one was chosen) the same-person threshold, see facerec.inference

    save_pretrained(model, training_cfg, "exported/demo", meta=meta, threshold=record)
    model = load_pretrained("exported/demo")            # FaceModel, eval mode
    config, weights = read_pretrained("exported/demo")  # validated, nothing built yet

Reading a folder executes nothing: the JSON is parsed as JSON, the weights are read by
safetensors (no unpickling), and the architecture is rebuilt only when every ``_target_`` in
``backbone`` and ``embedding`` is one of facerec's own components
(:func:`facerec.model_config.check_components`). Writing and reading are side by side here:
the format is defined once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from facerec.model import FaceModel
from facerec.model_config import check_components, rebuild

__all__ = [
    "CARD",
    "CONFIG",
    "FORMAT",
    "FORMAT_VERSION",
    "THRESHOLD",
    "WEIGHTS",
    "is_pretrained",
    "load_pretrained",
    "read_pretrained",
    "save_pretrained",
]

FORMAT = "facerec-pretrained"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
CARD = "README.md"
THRESHOLD = "threshold.json"
_PREFIXES = ("backbone.", "embedding.")
NORMALISATION = {"mean": 127.5, "std": 127.5, "formula": "(uint8 - 127.5) / 127.5"}
PROTOCOL = (
    "image and mirror embedded, summed and L2-normalised; squared Euclidean distance; "
    "10 folds, the threshold (0 to 4 in steps of 0.01) chosen on 9 and applied to the 10th"
)


def is_pretrained(path: str | Path) -> bool:
    """Whether ``path`` is a folder (the tools take a folder as an exported model)."""
    return Path(path).is_dir()


# --------------------------------------------------------------------------------------------
# writing


def describe(cfg: Mapping[str, Any], meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``config.json``'s content from a training config (plain dict) and the checkpoint's meta.

    Args:
        cfg: the resolved training config (a checkpoint's ``config``), with ``backbone``,
            ``embedding``, ``data`` and optionally ``head``, ``criterion``, ``optim``, ...
        meta: :func:`facerec.checkpoint.summary` of the checkpoint (step, results, ...).
    """
    data = cfg.get("data") or {}
    meta = dict(meta or {})
    recipe_keys = ("head", "criterion", "optim", "sched", "trainer", "seed", "name")
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "backbone": dict(cfg["backbone"]),
        "embedding": dict(cfg["embedding"]),
        "embedding_size": (cfg["embedding"] or {}).get("embedding_size"),
        "preprocessing": {
            "image_size": int(data.get("image_size") or 112),
            "center_crop": data.get("center_crop") or None,
            # face alignment before the crop (facerec.align); None: the images as given
            "alignment": data.get("align") or None,
            "color": "RGB",
            "layout": "NCHW",
            "resize": "cv2.INTER_AREA",
            "normalisation": NORMALISATION,
            "channels_last": bool((cfg.get("trainer") or {}).get("channels_last", True)),
        },
        "comparison": {"embeddings": "flip-fused, L2-normalised", "protocol": PROTOCOL},
        "training": {
            **{k: meta.get(k) for k in ("step", "epoch", "best", "best_step", "num_classes")},
            "results": meta.get("results") or {},
            "data": {k: v for k, v in data.items() if k != "val"},
            "val": {  # each verification set and the file it read
                name: (node or {}).get("pairs_file") or (node or {}).get("bin_file")
                for name, node in (data.get("val") or {}).items()
            },
            **{k: cfg[k] for k in recipe_keys if k in cfg},
        },
    }


def _write(path: Path, write: Any) -> None:
    """``write(tmp)`` then rename: a file in the folder is either old or complete."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_pretrained(
    model: FaceModel,
    cfg: Mapping[str, Any],
    folder: str | Path,
    *,
    meta: Mapping[str, Any] | None = None,
    threshold: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` (backbone + embedding only) as a shareable folder.

    Args:
        model: the :class:`FaceModel` (no head, no optimizer: nothing of the training state).
        cfg: the resolved training config it was built from (plain dict).
        folder: created if missing; the four files in it are replaced.
        meta: the checkpoint's summary (step, epoch, results, ...), for the card.
        threshold: a :func:`facerec.inference.load_threshold` record to ship with the model.

    Returns:
        The folder.
    """
    from facerec.model_card import model_card  # the card is prose, kept apart from the format

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    description = describe(cfg, meta)
    weights = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    _write(folder / WEIGHTS, lambda p: save_file(weights, str(p), metadata={"format": "pt"}))
    text = json.dumps(description, indent=2, default=str) + "\n"
    _write(folder / CONFIG, lambda p: p.write_text(text))
    record = None
    if threshold is not None:
        record = {k: v for k, v in threshold.items() if k != "file"}
        _write(folder / THRESHOLD, lambda p: p.write_text(json.dumps(record, indent=2) + "\n"))
    card = model_card(description, record)
    _write(folder / CARD, lambda p: p.write_text(card))
    return folder


# --------------------------------------------------------------------------------------------
# reading


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG
    if not path.is_file():
        raise ValueError(f"{folder} is not a facerec model folder: it has no {CONFIG}")
    try:
        config = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ValueError(f'{path} is not a facerec model config (no "format": "{FORMAT}")')
    version = config.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise ValueError(
            f"{path}: format_version {version!r} is not one this facerec reads "
            f"(1..{FORMAT_VERSION}); a newer facerec wrote it?"
        )
    check_components(config, path, "a facerec model config")
    prep = config.get("preprocessing")
    size = prep.get("image_size") if isinstance(prep, dict) else None
    crop = prep.get("center_crop") if isinstance(prep, dict) else None
    if not (isinstance(size, int) and size > 0 and (crop is None or isinstance(crop, int))):
        raise ValueError(
            f"{path}: preprocessing must give image_size (a positive integer) and center_crop "
            f"(an integer or null), got {prep!r}"
        )
    return config


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    path = folder / WEIGHTS
    if not path.is_file():
        raise ValueError(f"{folder} is not a facerec model folder: it has no {WEIGHTS}")
    try:
        weights = load_file(str(path))  # safetensors: a header of JSON + raw tensor bytes
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(
            f"{path}: not a readable safetensors file ({str(error).splitlines()[0]})"
        ) from None
    stray = sorted(k for k in weights if not k.startswith(_PREFIXES))
    if stray:
        raise ValueError(
            f"{path}: holds tensors outside backbone.* and embedding.* ({', '.join(stray[:3])}"
            f"{' ...' if len(stray) > 3 else ''}); not a facerec face model"
        )
    return weights


def read_pretrained(folder: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The checked config and the weights of an exported folder, nothing built or imported.

    Args:
        folder: a folder written by :func:`save_pretrained` (``facerec export``).

    Returns:
        ``(config, state_dict)``: ``config`` is ``config.json`` checked (its ``backbone`` and
        ``embedding`` sections build only facerec's own components, so
        :func:`facerec.model.build_face_model` ``(config)`` is safe), with ``preprocessing``
        and ``training``; ``state_dict`` has exactly the keys of ``FaceModel.state_dict()``
        (``backbone.*``, ``embedding.*``), on the CPU.

    Raises:
        FileNotFoundError: no such folder.
        ValueError: one line naming the file: missing, not JSON / not safetensors, another
            format or version, an architecture outside facerec's, or stray tensors.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder not found: {folder}")
    return _read_config(folder), _read_weights(folder)


def load_pretrained(folder: str | Path, device: str | torch.device = "cpu") -> FaceModel:
    """The :class:`FaceModel` of an exported folder, weights loaded, in eval mode on ``device``.

    Raises:
        FileNotFoundError, ValueError: as :func:`read_pretrained`; also weights that do not fit
            the architecture the config names.
    """
    config, weights = read_pretrained(folder)
    model = rebuild(config, weights, Path(folder) / WEIGHTS)
    return model.to(device).eval()


def summary(config: Mapping[str, Any]) -> dict[str, Any]:
    """What the tools report of a folder, in the keys :func:`facerec.checkpoint.summary` uses."""
    training = config.get("training") or {}
    keys = ("step", "epoch", "best", "best_step", "num_classes")
    return {**{k: training.get(k) for k in keys}, "results": training.get("results") or {}}
