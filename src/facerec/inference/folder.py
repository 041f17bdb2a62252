"""A model a user can share: one folder of data (safetensors + JSON + a model card), no pickle.

The Hugging Face ``save_pretrained`` convention, for facerec's backbone + embedding::

    <folder>/
      model.safetensors   FaceModel.state_dict() (backbone.*, embedding.*): tensors only
      config.json         the architecture (backbone and embedding sections with their
                          _target_, as the training config had them), the preprocessing (image
                          size, centre crop, alignment, normalisation) and what training said
      README.md           the model card: data, recipe, steps, verification table + protocol
      threshold.json      (when chosen) the same-person threshold (facerec.inference.thresholds)

    save_pretrained(model, training_cfg, "exported/demo", meta=meta, threshold=record)
    model = load_pretrained("exported/demo")            # FaceModel, eval mode
    config, weights = read_pretrained("exported/demo")  # validated, nothing built yet

Reading a folder executes nothing: the JSON is parsed as JSON and read as plain data into a
:class:`facerec.inference.spec.ModelSpec` (never resolved, never instantiated: the architecture
is one of facerec's own components with typed, range-checked arguments), and the weights are
read by safetensors (no unpickling). Writing and reading are side by side here: the format is
defined once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from facerec.files import jsonfile
from facerec.files.atomic import write_atomic
from facerec.inference.spec import ModelSpec, read_spec, rebuild
from facerec.messages import first_line
from facerec.model import FaceModel

__all__ = [
    "CARD",
    "CONFIG",
    "FORMAT",
    "FORMAT_VERSION",
    "THRESHOLD",
    "WEIGHTS",
    "is_pretrained",
    "load_pretrained",
    "read_folder",
    "read_json",
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
PROTOCOL = (
    "image and mirror embedded, summed and L2-normalised; squared Euclidean distance; "
    "10 folds, the threshold (0 to 4 in steps of 0.01) chosen on 9 and applied to the 10th"
)


def is_pretrained(path: str | Path) -> bool:
    """Whether ``path`` is a folder (the tools take a folder as an exported model)."""
    return Path(path).is_dir()


# --------------------------------------------------------------------------------------------
# writing


def describe(
    cfg: Mapping[str, Any], meta: Mapping[str, Any] | None = None, spec: ModelSpec | None = None
) -> dict[str, Any]:
    """``config.json``'s content: the architecture and preprocessing from ``spec``, what
    training said from ``cfg`` and ``meta``.

    Args:
        cfg: the training config (a checkpoint's ``config``, plain data, never resolved) or an
            exported folder's ``config.json`` (its ``training`` section is carried over).
        meta: :func:`facerec.files.checkpoint.summary` of the checkpoint (step, results, ...).
        spec: the model's spec (default: read from ``cfg``).
    """
    spec = spec or read_spec(cfg, "the training config", "a facerec training config")
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "backbone": spec.backbone.section(),
        "embedding": spec.embedding.section(),
        "embedding_size": spec.embedding_size,
        "preprocessing": spec.preprocessing.to_dict(),
        "comparison": {"embeddings": "flip-fused, L2-normalised", "protocol": PROTOCOL},
        "training": _training(cfg, meta),
    }


def _training(cfg: Mapping[str, Any], meta: Mapping[str, Any] | None) -> dict[str, Any]:
    """What training said: copied as text and numbers, for the card (nothing here is used)."""
    if cfg.get("format") == FORMAT:  # a folder exported again: its record as it was
        return dict(cfg.get("training") or {})
    data = cfg.get("data") if isinstance(cfg.get("data"), Mapping) else {}
    val = data.get("val") if isinstance(data.get("val"), Mapping) else {}
    meta = dict(meta or {})
    recipe_keys = ("head", "criterion", "optim", "sched", "trainer", "seed", "name")
    return {
        **{k: meta.get(k) for k in ("step", "epoch", "best", "best_step", "num_classes")},
        "results": meta.get("results") or {},
        "data": {k: v for k, v in data.items() if k != "val"},
        "val": {name: _set_file(node) for name, node in val.items()},  # the file each read
        **{k: cfg[k] for k in recipe_keys if k in cfg},
    }


def _set_file(node: Any) -> Any:
    """The pairs or ``.bin`` file a verification set's config names (None: neither)."""
    return (node.get("pairs_file") or node.get("bin_file")) if isinstance(node, Mapping) else None


def save_pretrained(
    model: FaceModel,
    cfg: Mapping[str, Any],
    folder: str | Path,
    *,
    meta: Mapping[str, Any] | None = None,
    threshold: Mapping[str, Any] | None = None,
    spec: ModelSpec | None = None,
) -> Path:
    """Write ``model`` (backbone + embedding only) as a shareable folder.

    Args:
        model: the :class:`FaceModel` (no head, no optimizer: nothing of the training state).
        cfg: the training config it was built from (plain dict), or the ``config.json`` of
            the folder it was loaded from.
        folder: created if missing; the four files in it are replaced.
        meta: the checkpoint's summary (step, epoch, results, ...), for the card.
        threshold: a :func:`facerec.inference.load_threshold` record to ship with the model.
        spec: its :class:`ModelSpec` (default: read from ``cfg``).

    Returns:
        The folder.
    """
    from facerec.inference.card import model_card  # the card is prose, kept apart from the format

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    description = describe(cfg, meta, spec)
    weights = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    write_atomic(folder / WEIGHTS, lambda p: save_file(weights, str(p), metadata={"format": "pt"}))
    text = json.dumps(description, indent=2, default=str) + "\n"
    write_atomic(folder / CONFIG, lambda p: p.write_text(text))
    record = None
    if threshold is not None:
        record = {k: v for k, v in threshold.items() if k != "file"}
        write_atomic(
            folder / THRESHOLD, lambda p: p.write_text(json.dumps(record, indent=2) + "\n")
        )
    card = model_card(description, record)
    write_atomic(folder / CARD, lambda p: p.write_text(card))
    return folder


# --------------------------------------------------------------------------------------------
# reading


def read_json(path: Path) -> Any:
    """The JSON in ``path`` as plain data (a model's config, a gallery's index).

    Raises:
        ValueError: one line naming the file: not valid JSON, nested too deeply, too large.
    """
    return jsonfile.read_json(path, "JSON file", expect=None)


def _read_config(folder: Path) -> tuple[ModelSpec, dict[str, Any]]:
    path = folder / CONFIG
    if not path.is_file():
        raise ValueError(f"{folder} is not a facerec model folder: it has no {CONFIG}")
    config = read_json(path)
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ValueError(f'{path} is not a facerec model config (no "format": "{FORMAT}")')
    version = config.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise ValueError(
            f"{path}: format_version {version!r} is not one this facerec reads "
            f"(1..{FORMAT_VERSION}); a newer facerec wrote it?"
        )
    return read_spec(config, path, "a facerec model config"), config


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    path = folder / WEIGHTS
    if not path.is_file():
        raise ValueError(f"{folder} is not a facerec model folder: it has no {WEIGHTS}")
    try:
        weights = load_file(str(path))  # safetensors: a header of JSON + raw tensor bytes
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"{path}: not a readable safetensors file ({first_line(error)})") from None
    stray = sorted(k for k in weights if not k.startswith(_PREFIXES))
    if stray:
        raise ValueError(
            f"{path}: holds tensors outside backbone.* and embedding.* ({', '.join(stray[:3])}"
            f"{' ...' if len(stray) > 3 else ''}); not a facerec face model"
        )
    return weights


def read_folder(folder: str | Path) -> tuple[ModelSpec, dict[str, Any], dict[str, torch.Tensor]]:
    """The spec, the ``config.json`` (plain data) and the weights of an exported folder.

    Raises:
        FileNotFoundError: no such folder.
        ValueError: one line naming the file: missing, not JSON / not safetensors, another
            format or version, an architecture outside facerec's, a value of the wrong type or
            out of range, or stray tensors.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder not found: {folder}")
    spec, config = _read_config(folder)
    return spec, config, _read_weights(folder)


def read_pretrained(folder: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The checked config and the weights of an exported folder, nothing built or imported.

    Args:
        folder: a folder written by :func:`save_pretrained` (``facerec export``).

    Returns:
        ``(config, state_dict)``: ``config`` is ``config.json`` as plain data, checked by
        :func:`facerec.inference.spec.read_spec` (build it with :func:`read_folder`'s spec, never
        by instantiating it), with ``preprocessing`` and ``training``; ``state_dict`` has
        exactly the keys of ``FaceModel.state_dict()`` (``backbone.*``, ``embedding.*``), on
        the CPU.

    Raises:
        FileNotFoundError, ValueError: as :func:`read_folder`.
    """
    _, config, weights = read_folder(folder)
    return config, weights


def load_pretrained(folder: str | Path, device: str | torch.device = "cpu") -> FaceModel:
    """The :class:`FaceModel` of an exported folder, weights loaded, in eval mode on ``device``.

    Raises:
        FileNotFoundError, ValueError: as :func:`read_folder`; also weights that do not fit
            the architecture the config names.
    """
    spec, _, weights = read_folder(folder)
    model = rebuild(spec, weights, Path(folder) / WEIGHTS)
    return model.to(device).eval()


def summary(config: Mapping[str, Any]) -> dict[str, Any]:
    """What the tools report of a folder, in the keys of
    :func:`facerec.files.checkpoint.summary`."""
    training = config.get("training") or {}
    keys = ("step", "epoch", "best", "best_step", "num_classes")
    return {**{k: training.get(k) for k in keys}, "results": training.get("results") or {}}
