"""A trained model outside the trainer: load a checkpoint, embed images, keep a threshold.

The shared library of the tools (``facerec evaluate|extract|verify|export|export-onnx``,
:mod:`facerec.tools`); each takes a training checkpoint or an exported model folder::

    model, cfg, meta = load_model("runs/demo/<stamp>/checkpoints/best.pt", "auto")
    images = load_images([path1, path2], image_size(cfg), center_crop(cfg))  # uint8 (2,3,H,W)
    emb = embed_images(model, images, device)       # float32 (2, D), flip-fused, unit length
    dist = ((emb[0] - emb[1]) ** 2).sum()           # "same" when dist < threshold

Embeddings follow the verification protocol (:mod:`facerec.eval.verification`): the raw
embeddings of an image and of its mirror are summed, then L2-normalised; pairs are compared by
squared Euclidean distance (``2 - 2 cos``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facerec import checkpoint, pretrained
from facerec.data.decode import read_image
from facerec.data.folder import IMAGE_EXTENSIONS
from facerec.data.transforms import geometry, to_tensor
from facerec.distributed import resolve_device
from facerec.eval.verification import fuse_flip
from facerec.evaluate import embed_batches
from facerec.model import FaceModel
from facerec.model_config import model_config, rebuild

__all__ = [
    "IMAGE_EXTENSIONS",
    "PREPROCESSING",
    "align_paths",
    "batch_size_for",
    "center_crop",
    "embed_images",
    "image_size",
    "list_images",
    "load_images",
    "load_model",
    "load_threshold",
    "preparation",
    "resolve_alignment",
    "save_threshold",
    "threshold_path",
]

PREPROCESSING = (
    "RGB float32 (B, 3, H, W) = (uint8 - 127.5) / 127.5 of an aligned face, H = W = the "
    "training image size (112), after the training centre crop if any"
)


def load_model(
    checkpoint_path: str | Path, device: str | torch.device = "cpu"
) -> tuple[FaceModel, dict[str, Any], dict[str, Any]]:
    """Rebuild backbone + embedding from a training checkpoint or an exported folder.

    Args:
        checkpoint_path: a ``.pt`` file written by the trainer (``best.pt``, ``last.pt``), a
            folder written by ``facerec export`` (:mod:`facerec.pretrained`), or a ``.onnx``
            file written by ``facerec export-onnx`` (:mod:`facerec.onnx_model`, CPU only).
        device: ``"auto"``, ``"cpu"``, an accelerator name, or a ``torch.device``.

    Returns:
        ``(model, cfg, meta)``: the model in eval mode on ``device``; the resolved training
        config (a folder: its ``config.json``) as a plain dict; ``meta`` with ``path``,
        ``step``, ``epoch``, ``best``, ``best_step``, ``results`` (last verification
        summaries), ``num_classes``, ``backbone`` (its ``_target_``) and ``device``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: naming the file: not a facerec checkpoint or model folder, or weights that
            do not fit the saved architecture.
    """
    path = Path(checkpoint_path)
    if not isinstance(device, torch.device):
        device = resolve_device(device)
    load = next((loader for test, loader in _LOADERS if test(path)), _from_checkpoint)
    model, cfg, summary = load(path)
    # A loader may pin the device: ONNX runs in onnxruntime on the CPU.
    device = torch.device(summary.pop("device", device))
    model.to(device).eval()
    meta = {
        "path": str(path),
        **summary,
        "backbone": cfg["backbone"]["_target_"],
        "device": str(device),
    }
    return model, cfg, meta


def _from_checkpoint(path: Path) -> tuple[FaceModel, dict[str, Any], dict[str, Any]]:
    try:
        state = checkpoint.load(path)
    except ValueError as error:
        if isinstance(error.__cause__, Exception):  # torch.load itself failed
            raise ValueError(
                f"{path} is not a facerec checkpoint, or is truncated (torch.load: "
                f"{str(error.__cause__).splitlines()[0]})"
            ) from None
        raise
    cfg = model_config(state, path)
    # checkpoint.summary: the same reader the trainer's resume uses
    return rebuild(cfg, state["model"], path), cfg, checkpoint.summary(state)


def _from_folder(path: Path) -> tuple[FaceModel, dict[str, Any], dict[str, Any]]:
    cfg, weights = pretrained.read_pretrained(path)
    return rebuild(cfg, weights, path / pretrained.WEIGHTS), cfg, pretrained.summary(cfg)


def _from_onnx(path: Path) -> tuple[torch.nn.Module, dict[str, Any], dict[str, Any]]:
    from facerec.onnx_model import load_onnx  # onnxruntime only when an ONNX file is given

    model, cfg, summary = load_onnx(path)
    return model, cfg, {**summary, "device": "cpu"}


def is_onnx(path: str | Path) -> bool:
    """Whether ``path`` names an ONNX file (by its suffix): a model to run, not to re-export."""
    return Path(path).suffix.lower() == ".onnx"


# What else a model path may be besides a training checkpoint, tried in order.
_LOADERS = ((pretrained.is_pretrained, _from_folder), (is_onnx, _from_onnx))


def batch_size_for(device: torch.device, requested: int | None = None) -> int:
    """Images per forward pass: ``requested``, else 32 on a CPU and 256 on an accelerator.

    On a CPU, big batches buy no throughput: their activations (hundreds of MB at 256 images
    with mirrors) are fresh allocations each time, and the page faults showed up as more
    system than user time in measurements.
    """
    if requested is not None:
        if requested < 1:
            raise ValueError(f"--batch-size must be >= 1, got {requested}")
        return requested
    return 32 if device.type == "cpu" else 256


def preprocessing(cfg: Mapping[str, Any]) -> Mapping[str, Any]:
    """Where a config keeps image size and crop: an exported folder's ``preprocessing``, a
    training config's ``data``."""
    return cfg.get("preprocessing") or cfg.get("data") or {}


def image_size(cfg: Mapping[str, Any]) -> int:
    """The side of the square images the model was trained on (``data.image_size``)."""
    return int(preprocessing(cfg).get("image_size") or 112)


def center_crop(
    cfg: Mapping[str, Any], override: int | None = None, aligned: bool = False
) -> int | None:
    """The centre crop to use: ``override`` if given (0 = none), else none for ``aligned``
    images (already the face), else the training one."""
    if override is not None:
        return override or None
    if aligned:
        return None
    return preprocessing(cfg).get("center_crop") or None


# --------------------------------------------------------------------------------------------
# how the training images were prepared, and the same for raw photos at inference


def preparation(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """How a checkpoint's (or an exported folder's) training images were made.

    Returns:
        ``{"method": "aligned", "align": {...options}}`` (``data.align`` set: MTCNN + the
        ArcFace template) or ``{"method": "center_crop", "center_crop": N or None}``.
    """
    prep = preprocessing(cfg)  # a checkpoint's data.align, an exported folder's alignment
    align = prep.get("align") or prep.get("alignment")
    if align is not None:
        return {"method": "aligned", "align": {"size": image_size(cfg), **dict(align)}}
    return {"method": "center_crop", "center_crop": prep.get("center_crop") or None}


def resolve_alignment(cfg: Mapping[str, Any], choice: str = "auto", prog: str = "facerec"):
    """The :class:`facerec.align.AlignOptions` to align raw photos with, or None (crop).

    Args:
        cfg: the checkpoint's config (:func:`load_model`).
        choice: ``"auto"`` (as the checkpoint was trained), ``"on"`` or ``"off"``.
        prog: the tool's name for the warning.

    A choice that differs from the training preparation works but prints one warning on
    stderr: embeddings of crops unlike the training ones are worse.
    """
    from facerec.align.folder import AlignOptions

    trained = preparation(cfg)
    aligned = trained["method"] == "aligned" if choice == "auto" else choice == "on"
    if aligned != (trained["method"] == "aligned"):
        how = ("aligned faces (data.align)" if trained["method"] == "aligned" else
               f"centre crops (data.center_crop={trained.get('center_crop')})")  # fmt: skip
        print(f"{prog}: warning: the checkpoint was trained on {how}, but --align {choice}: "
              f"{'aligning' if aligned else 'centre-cropping'} these images instead; "
              "accuracy will suffer", file=sys.stderr)  # fmt: skip
    if not aligned:
        return None
    values = dict(trained.get("align") or {"size": image_size(cfg)})
    # A raw photo with no detected face is still embedded (centre-cropped, and named in a
    # warning): a tool's answer for every image beats one that silently lacks some.
    values["on_missing"] = "center"
    return AlignOptions.from_dict(values)


def align_paths(
    paths: Sequence[str | Path],
    options,
    device: str | torch.device = "cpu",
    cache: str | Path | None = None,
    progress: bool = False,
) -> list[Path]:
    """Detect and align image files; the aligned crops' paths, in order.

    Crops are cached in ``cache`` (default ``$FACEREC_ALIGN_CACHE/files-<options key>``, else
    ``~/.cache/facerec/align/files-<options key>``),
    named by a hash of the source path and keyed by its size and mtime, so a second call on
    the same photos detects nothing. ``options`` None returns ``paths`` unchanged. A file that
    yields no crop (unreadable, too small) keeps its own path, and the reader that follows
    names it as it would have anyway.
    """
    import hashlib

    from facerec.align.detect import FaceDetector
    from facerec.align.folder import WRITTEN, align_files

    paths = [Path(p) for p in paths]
    if options is None:
        return paths
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"image not found: {p}")
    base = os.environ.get("FACEREC_ALIGN_CACHE") or Path.home() / ".cache" / "facerec" / "align"
    root = Path(cache or Path(base) / f"files-{options.key}").expanduser()
    jobs = []
    for p in paths:
        name = hashlib.sha1(str(p.resolve()).encode()).hexdigest()[:20]
        jobs.append((p.resolve(), root / f"{name}{p.suffix.lower() or '.png'}"))
    device = device if isinstance(device, torch.device) else resolve_device(str(device))
    detector = FaceDetector(device, min_face=options.min_face)
    summary = align_files(jobs, options, detector, root, progress=progress)
    outcome = {path: kind for kind in WRITTEN for path in getattr(summary, kind)}
    return [dst if str(src) in outcome else orig
            for orig, (src, dst) in zip(paths, jobs, strict=True)]  # fmt: skip


def align_sets(sets: Mapping[str, Any], options, cfg: Mapping[str, Any], device="cpu") -> None:
    """Align the images of each pairs-file set in place (``options`` None: nothing to do).

    Each :class:`facerec.data.PairsSet` is re-pointed at an aligned copy of its images, made
    once in the checkpoint's ``data.align_cache`` (the folder training used, so a set trained
    on is not aligned twice) or beside the images. ``.bin`` packs are aligned already.
    """
    if options is None:
        return
    from facerec.align.dataset import align_training_data

    cache = (cfg.get("data") or {}).get("align_cache")
    for name, pairs_set in sets.items():
        if hasattr(pairs_set, "image_root") and hasattr(pairs_set, "load"):
            show = sys.stderr.isatty()
            _, summary = align_training_data(
                pairs_set.image_root, [], {name: pairs_set}, options, cache, str(device), show
            )
            # The counts reach the user even where logging is not set up (the scripts).
            print(f"set {name}: aligned: {summary.lines()[0]}", file=sys.stderr)


def load_images(
    paths: Sequence[str | Path], size: int = 112, crop: int | None = None
) -> torch.Tensor:
    """Decode, centre-crop and resize image files as verification does.

    Args:
        paths: image files.
        size: side of the square output images.
        crop: side of the centre crop taken before resizing (None: none).

    Returns:
        uint8 ``(N, 3, size, size)``.

    Raises:
        OSError: naming a file that is missing or not an image.
    """
    for p in paths:
        if not Path(p).is_file():
            raise FileNotFoundError(f"image not found: {p}")
    transform = geometry(size, crop)
    return torch.stack([to_tensor(transform(image=read_image(p))["image"]) for p in paths])


def embed_images(
    model: torch.nn.Module,
    images: torch.Tensor,
    device: torch.device,
    flip: bool = True,
    batch_size: int = 256,
    channels_last: bool = True,
) -> np.ndarray:
    """Unit-length embeddings as the verification protocol computes them.

    Args:
        model: backbone + embedding (e.g. from :func:`load_model`).
        images: uint8 ``(N, 3, H, W)``.
        device: where the model is.
        flip: add the embedding of the mirrored image before normalising (the protocol's
            default); False embeds the image alone (half the compute).
        batch_size: images per forward pass.
        channels_last: feed NHWC tensors (as the trainer does by default: faster convolutions
            on CPUs and tensor cores; the numbers agree to float rounding).

    Returns:
        float32 ``(N, D)`` L2-normalised embeddings; compare two with ``2 - 2 * a @ b``
        (squared distance) or ``a @ b`` (cosine).
    """
    emb, emb_flip = embed_batches(
        model, images, device, batch_size, flip, channels_last=channels_last
    )
    return fuse_flip(emb, emb_flip).astype(np.float32)


def list_images(folder: str | Path) -> list[Path]:
    """Every image file under ``folder`` (recursively), sorted by path.

    Raises:
        FileNotFoundError: ``folder`` is not a folder.
        ValueError: it holds no image (extensions :data:`IMAGE_EXTENSIONS`).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found (or not a folder): {folder}")
    paths = sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
    )
    if not paths:
        raise ValueError(f"{folder}: no images ({', '.join(IMAGE_EXTENSIONS)}) found under it")
    return paths


# --------------------------------------------------------------------------------------------
# the threshold chosen by the last evaluation, kept beside the checkpoint


def threshold_path(checkpoint_path: str | Path) -> Path:
    """Where ``facerec evaluate`` leaves its threshold: ``<checkpoint>.threshold.json``, or
    ``threshold.json`` inside an exported model folder (it travels with the model)."""
    path = Path(checkpoint_path)
    if pretrained.is_pretrained(path):
        return path / pretrained.THRESHOLD
    return path.with_name(path.name + ".threshold.json")


def save_threshold(
    checkpoint_path: str | Path, set_name: str, summary: Mapping[str, float], step: int | None
) -> Path:
    """Record a verification set's chosen threshold next to the checkpoint.

    Args:
        checkpoint_path: the evaluated checkpoint.
        set_name: the set the threshold was chosen on.
        summary: ``VerificationResult.summary()`` of that set.
        step: the checkpoint's training step (a later ``last.pt`` is a different model).

    Returns:
        The JSON file written.
    """
    path = threshold_path(checkpoint_path)
    record = {
        "threshold": float(summary["threshold"]),
        "set": set_name,
        "accuracy": float(summary["accuracy"]),
        "step": step,
        "metric": "squared L2 distance of flip-fused, L2-normalised embeddings; same if < "
        "threshold",
        "written": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def load_threshold(checkpoint_path: str | Path) -> dict[str, Any] | None:
    """The record :func:`save_threshold` wrote for this checkpoint, or None if there is none.

    Raises:
        ValueError: the file exists but is not such a record.
    """
    path = threshold_path(checkpoint_path)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        threshold = float(record["threshold"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a threshold record ({error}); re-run evaluate.py") from None
    # Squared distances of unit vectors lie in [0, 4]: a threshold at or past either end calls
    # every pair the same (or different) person, whatever the faces.
    if not 0.0 < threshold < 4.0:
        raise ValueError(
            f"{path}: threshold {threshold!r} is outside (0, 4), where it would decide every pair"
            " alike; re-run evaluate.py"
        )
    record["file"] = str(path)
    return record
