"""A trained model outside the trainer: load a checkpoint, embed images, keep a threshold.

The shared library of the tools (``facerec evaluate|extract|verify|export|export-onnx``,
:mod:`facerec.tools`); each takes a training checkpoint, an exported model folder or ONNX, read
as plain data into a :class:`facerec.model_config.ModelSpec` (never resolved or instantiated)::

    loaded = load("runs/demo/<stamp>/checkpoints/best.pt", "auto")   # model, spec, config, meta
    prep = loaded.spec.preprocessing   # image size, centre crop, alignment: read from here only
    images = load_images([path1, path2], prep.image_size, prep.crop())  # uint8 (2, 3, H, W)
    emb = embed_images(loaded.model, images, device)  # float32 (2, D), flip-fused, unit length
    dist = ((emb[0] - emb[1]) ** 2).sum()           # "same" when dist < threshold

Embeddings follow the verification protocol (:mod:`facerec.eval.verification`): the raw
embeddings of an image and of its mirror are summed, then L2-normalised; pairs are compared by
squared Euclidean distance (``2 - 2 cos``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
from facerec.model_config import ModelSpec, Preprocessing, Rule, read_spec, rebuild

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_THRESHOLD",
    "PREPROCESSING",
    "LoadedModel",
    "align_paths",
    "align_sets",
    "batch_size_for",
    "center_crop",
    "check_threshold",
    "default_align_cache",
    "embed_images",
    "image_size",
    "impostor_accept_rate",
    "list_images",
    "load",
    "load_images",
    "load_model",
    "load_threshold",
    "preparation",
    "preprocessing",
    "resolve_alignment",
    "save_threshold",
    "threshold_claim",
    "threshold_path",
]

PREPROCESSING = (
    "RGB float32 (B, 3, H, W) = (uint8 - 127.5) / 127.5 of an aligned face, H = W = the "
    "training image size (112), after the training centre crop if any"
)


@dataclass(frozen=True)
class LoadedModel:
    """What :func:`load` gives: the model, its :class:`ModelSpec` (architecture and
    preprocessing: the one place the tools read them from), the file's config as plain data
    (never resolved) and what the file says of its training (``meta``)."""

    model: torch.nn.Module
    spec: ModelSpec
    config: dict[str, Any]
    meta: dict[str, Any]


def load(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild backbone + embedding from a training checkpoint, an exported folder or ONNX.

    Args:
        path: a ``.pt`` file written by the trainer (``best.pt``, ``last.pt``), a folder written
            by ``facerec export`` (:mod:`facerec.pretrained`), or a ``.onnx`` file written by
            ``facerec export-onnx`` (:mod:`facerec.onnx_model`, CPU only).
        device: ``"auto"``, ``"cpu"``, an accelerator name, or a ``torch.device``.

    Returns:
        The model in eval mode on ``device``, its spec, the file's config and ``meta``:
        ``path``, ``step``, ``epoch``, ``best``, ``best_step``, ``results`` (last verification
        summaries), ``num_classes``, ``backbone`` (its ``_target_``) and ``device``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: one line naming the file (and the key): not a facerec model, a value of the
            wrong type or out of range, or weights that do not fit the saved architecture.
    """
    path = Path(path)
    if not isinstance(device, torch.device):
        device = resolve_device(device)
    loader = next((loader for test, loader in _LOADERS if test(path)), _from_checkpoint)
    model, spec, cfg, summary = loader(path)
    # A loader may pin the device: ONNX runs in onnxruntime on the CPU.
    device = torch.device(summary.pop("device", device))
    model.to(device).eval()
    backbone = summary.pop("backbone", None) or (spec.backbone.target if spec.backbone else "-")
    meta = {"path": str(path), **summary, "backbone": backbone, "device": str(device)}
    return LoadedModel(model, spec, cfg, meta)


def load_model(
    checkpoint_path: str | Path, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, dict[str, Any], dict[str, Any]]:
    """``(model, config, meta)`` of :func:`load` (the config is plain data: pass it to
    :func:`image_size`, :func:`center_crop`, ... or use :func:`load`'s ``spec``)."""
    loaded = load(checkpoint_path, device)
    return loaded.model, loaded.config, loaded.meta


Loaded = tuple[torch.nn.Module, ModelSpec, dict[str, Any], dict[str, Any]]


def _from_checkpoint(path: Path) -> Loaded:
    try:
        state = checkpoint.load(path)
    except ValueError as error:
        if isinstance(error.__cause__, Exception):  # torch.load itself failed
            raise ValueError(
                f"{path} is not a facerec checkpoint, or is truncated (torch.load: "
                f"{str(error.__cause__).splitlines()[0]})"
            ) from None
        raise
    cfg = state.get("config")
    spec = read_spec(cfg, path, "a facerec training checkpoint")
    # checkpoint.summary: the same reader the trainer's resume uses
    return rebuild(spec, state.get("model"), path), spec, cfg, checkpoint.summary(state)


def _from_folder(path: Path) -> Loaded:
    spec, cfg, weights = pretrained.read_folder(path)
    return rebuild(spec, weights, path / pretrained.WEIGHTS), spec, cfg, pretrained.summary(cfg)


def _from_onnx(path: Path) -> Loaded:
    from facerec.onnx_model import load_onnx  # onnxruntime only when an ONNX file is given

    model, spec, cfg, summary = load_onnx(path)
    return model, spec, cfg, {**summary, "device": "cpu"}


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


Source = ModelSpec | Preprocessing | Mapping[str, Any]


def preprocessing(source: Source) -> Preprocessing:
    """The :class:`Preprocessing` of a spec, or of a loaded config (read by the one parser,
    :func:`facerec.model_config.read_spec`)."""
    if isinstance(source, ModelSpec):
        return source.preprocessing
    if isinstance(source, Preprocessing):
        return source
    return read_spec(
        source, "the model's config", "a model config", architecture=False
    ).preprocessing


def image_size(source: Source) -> int:
    """The side of the square images the model was trained on (``data.image_size``)."""
    return preprocessing(source).image_size


def center_crop(source: Source, override: int | None = None, aligned: bool = False) -> int | None:
    """The centre crop to use: ``override`` if given (0 = none), else none for ``aligned``
    images (already the face), else the training one."""
    return preprocessing(source).crop(override, aligned)


# --------------------------------------------------------------------------------------------
# how the training images were prepared, and the same for raw photos at inference


def preparation(source: Source) -> dict[str, Any]:
    """How a model's training images were made.

    Returns:
        ``{"method": "aligned", "align": {...options}}`` (``data.align`` set: MTCNN + the
        ArcFace template) or ``{"method": "center_crop", "center_crop": N or None}``.
    """
    prep = preprocessing(source)
    if prep.alignment is not None:
        return {"method": "aligned", "align": prep.alignment.as_dict()}
    return {"method": "center_crop", "center_crop": prep.center_crop}


def resolve_alignment(source: Source, choice: str = "auto", prog: str = "facerec"):
    """The :class:`facerec.align.AlignOptions` to align raw photos with, or None (crop).

    Args:
        source: the model's spec or config (:func:`load`).
        choice: ``"auto"`` (as the model was trained), ``"on"`` or ``"off"``.
        prog: the tool's name for the warning.

    A choice that differs from the training preparation works but prints one warning on
    stderr: embeddings of crops unlike the training ones are worse.
    """
    prep = preprocessing(source)
    trained = prep.alignment is not None
    aligned = trained if choice == "auto" else choice == "on"
    if aligned != trained:
        how = ("aligned faces (data.align)" if trained else
               f"centre crops (data.center_crop={prep.center_crop})")  # fmt: skip
        print(f"{prog}: warning: the checkpoint was trained on {how}, but --align {choice}: "
              f"{'aligning' if aligned else 'centre-cropping'} these images instead; "
              "accuracy will suffer", file=sys.stderr)  # fmt: skip
    if not aligned:
        return None
    # A raw photo with no detected face is still embedded (centre-cropped, and named in a
    # warning): a tool's answer for every image beats one that silently lacks some.
    return dataclasses.replace(prep.align_options(), on_missing="center")


def default_align_cache() -> Path:
    """Where the tools keep aligned copies: ``$FACEREC_ALIGN_CACHE``, else
    ``~/.cache/facerec/align`` (never a place a model file names)."""
    base = os.environ.get("FACEREC_ALIGN_CACHE") or Path.home() / ".cache" / "facerec" / "align"
    return Path(base).expanduser()


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
    root = Path(cache or default_align_cache() / f"files-{options.key}").expanduser()
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


def align_sets(
    sets: Mapping[str, Any], options, cache: str | Path | None = None, device="cpu"
) -> None:
    """Align the images of each pairs-file set in place (``options`` None: nothing to do).

    Each :class:`facerec.data.PairsSet` is re-pointed at an aligned copy of its images, made
    once under ``cache`` (default :func:`default_align_cache`: the user's choice, never the
    model file's). ``.bin`` packs are aligned already.
    """
    if options is None:
        return
    from facerec.align.dataset import align_training_data

    cache = cache or default_align_cache()
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


# Squared distances of unit vectors: 2 - 2 cos. At 2.0 a pair is "same" whenever cos > 0, so
# every pair of orthogonal embeddings is accepted: a trained face model puts most impostor
# pairs near cos 0, so a threshold at or past 2 accepts about half or more of them. No trained
# model's best threshold lies there (LFW: 1.2 to 1.6); a file that claims one is refused.
MAX_THRESHOLD = 2.0
# A reference set given to verify: a threshold accepting more of its impostor pairs is refused.
MAX_IMPOSTOR_ACCEPT = 0.5
_CLAIMS = {
    "set": Rule("str", nullable=True),
    "accuracy": Rule("float", 0.0, 1.0, nullable=True),
    "step": Rule("int", 0, 2**62, nullable=True),
}


def load_threshold(checkpoint_path: str | Path) -> dict[str, Any] | None:
    """The record :func:`save_threshold` wrote for this model, or None if there is none.

    A threshold file is a claim, checked before use: the threshold must lie in
    ``(0, MAX_THRESHOLD)`` (see :data:`MAX_THRESHOLD`); ``set``, ``accuracy`` and ``step`` must
    be a name, a number in [0, 1] and a step, or absent. What it says of accuracy is the file's
    claim, quoted as such (:func:`threshold_claim`).

    Raises:
        ValueError: one line naming the file: not such a record, or a threshold refused.
    """
    path = threshold_path(checkpoint_path)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        threshold = float(record["threshold"])
    except (ValueError, KeyError, TypeError, RecursionError) as error:
        raise ValueError(f"{path}: not a threshold record ({error}); re-run evaluate") from None
    for key, rule in _CLAIMS.items():
        rule.read(record.get(key), key, path)
    if not 0.0 < threshold < MAX_THRESHOLD:
        raise ValueError(
            f"{path} refused: threshold {threshold!r} is outside (0, {MAX_THRESHOLD:g}): at "
            f"{MAX_THRESHOLD:g} or more (cosine <= 0) it calls most pairs of different people the"
            " same person; re-run evaluate"
        )
    record["file"] = str(path)
    return record


def threshold_claim(record: Mapping[str, Any]) -> str:
    """Where a threshold file says its threshold came from, worded as the file's claim."""
    accuracy = record.get("accuracy")
    said = f", accuracy {accuracy:.4f} there" if isinstance(accuracy, (int, float)) else ""
    return (
        f"{record['file']}, which claims it was chosen on {str(record.get('set'))[:60]!r} at "
        f"step {record.get('step')}{said} (the file's claim, not checked here)"
    )


def impostor_accept_rate(threshold: float, distances: np.ndarray, issame: np.ndarray) -> float:
    """The fraction of a reference set's different-person pairs called "same" at ``threshold``.

    Args:
        distances: ``(N,)`` squared distances of the pairs.
        issame: ``(N,)`` bool, True for same-person pairs.
    """
    impostors = np.asarray(distances)[~np.asarray(issame, dtype=bool)]
    if len(impostors) == 0:
        raise ValueError("the reference set has no different-person pairs")
    return float((impostors < threshold).mean())


def check_threshold(threshold: float, source: str, rate: float | None, reference: str) -> None:
    """Refuse a threshold that accepts most impostor pairs of a reference set.

    Args:
        threshold: the squared-distance threshold.
        source: where it came from (named in the message).
        rate: :func:`impostor_accept_rate` on the reference set (None: no reference).
        reference: the reference set's description.

    Raises:
        ValueError: ``rate`` > :data:`MAX_IMPOSTOR_ACCEPT`, one line.
    """
    if rate is not None and rate > MAX_IMPOSTOR_ACCEPT:
        raise ValueError(
            f"threshold {threshold:.4f} (from {source}) refused: it calls {rate:.1%} of the "
            f"different-person pairs of {reference} the same person (more than "
            f"{MAX_IMPOSTOR_ACCEPT:.0%})"
        )
