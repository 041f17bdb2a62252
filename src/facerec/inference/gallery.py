"""A gallery: the people one knows, as data (safetensors + JSON), written and read side by side.

    <gallery>/
      gallery.safetensors   embeddings   (N, D) float32 or float16: one flip-fused unit vector
                                         per enrolled image, rows grouped by identity
                            calibration  (M, D) float32 (optional): images of people not enrolled
      gallery.json          format, version, the model's fingerprint, the identities (name, then
                            each image's file, size and mtime: what ``gallery add`` compares),
                            how the calibration set was made, and a generation token that the
                            safetensors header repeats (the two files belong together)

An identity's template is the L2-normalised sum of its images' embeddings (insightface's rule,
:func:`facerec.eval.identification.identity_templates`), computed on reading: adding or removing
a photo and rebuilding from scratch give the same templates. Reading executes nothing and checks
everything: a truncated file, shapes that disagree with the names, rows that are not unit
vectors, or another model's fingerprint are refused in one line naming the file.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from facerec.eval.identification import identity_templates
from facerec.files.atomic import write_atomic
from facerec.inference.folder import read_json

__all__ = ["FORMAT", "INDEX", "TENSORS", "Gallery", "ImageRecord", "fingerprint", "read_gallery",
           "write_gallery"]  # fmt: skip

FORMAT = "facerec-gallery"
FORMAT_VERSION = 1
TENSORS = "gallery.safetensors"
INDEX = "gallery.json"
TEMPLATE_RULE = "L2-normalised sum of the flip-fused unit embeddings of the identity's images"


@dataclass(frozen=True)
class ImageRecord:
    """One enrolled photo: its path (as given), size in bytes and modification time (ns)."""

    file: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> ImageRecord:
        stat = path.stat()
        return cls(str(path), stat.st_size, stat.st_mtime_ns)


@dataclass(frozen=True)
class Gallery:
    """Enrolled identities and their images' embeddings.

    Attributes:
        names: K identity names, sorted.
        images: per identity, its :class:`ImageRecord` s (sorted by file), in row order.
        embeddings: ``(N, D)`` float32 or float16, N = all images, grouped as ``images``.
        model: ``{"fingerprint", "source", "embedding_size"}`` of the model that embedded them.
        calibration: ``{"kind", "source", "names", "far"}`` of the calibration set, or None.
        calibration_embeddings: ``(M, D)`` float32 of that set (empty without one).
        generation: the token of the write it was read from ("" before it is written); a
            search index cached beside the gallery is named by it.
    """

    names: list[str]
    images: list[list[ImageRecord]]
    embeddings: np.ndarray
    model: dict[str, Any]
    calibration: dict[str, Any] | None = None
    calibration_embeddings: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), "f4"))
    generation: str = ""

    @property
    def labels(self) -> np.ndarray:
        """int64 ``(N,)``: the identity (row of :attr:`names`) of each embedding."""
        return np.repeat(np.arange(len(self.names)), [len(i) for i in self.images])

    def templates(self) -> np.ndarray:
        """``(K, D)``, the embeddings' dtype: one unit template per identity, in
        :attr:`names` order."""
        if not self.names:
            return np.zeros((0, self.embeddings.shape[1]), np.float32)
        return identity_templates(self.embeddings, self.labels, self.embeddings.dtype)[0]

    def with_identities(self, entries: dict[str, tuple[list[ImageRecord], np.ndarray]]):
        """A gallery of ``{name: (records, (n, D) embeddings)}``, sorted by name then file."""
        names = sorted(n for n, (records, _) in entries.items() if records)
        images, rows = [], []
        for name in names:
            records, emb = entries[name]
            order = sorted(range(len(records)), key=lambda i: records[i].file)
            images.append([records[i] for i in order])
            rows.append(np.asarray(emb)[order])
        dim = self.embeddings.shape[1]
        emb = np.concatenate(rows) if rows else np.zeros((0, dim))
        return replace(self, names=names, images=images,
                       embeddings=emb.astype(self.embeddings.dtype))  # fmt: skip

    def entries(self) -> dict[str, tuple[list[ImageRecord], np.ndarray]]:
        """``{name: (records, (n, D) embeddings)}``: what :meth:`with_identities` takes."""
        bounds = np.cumsum([0] + [len(i) for i in self.images])
        return {n: (list(self.images[k]), self.embeddings[bounds[k] : bounds[k + 1]])
                for k, n in enumerate(self.names)}  # fmt: skip


def fingerprint(model: torch.nn.Module, preprocessing: Any, file: Path | None = None) -> str:
    """A model's identity: sha256 of its weights (names, shapes, bytes) and its preprocessing
    (a checkpoint and the folder exported from it agree); an ONNX graph (no weights in torch)
    hashes its file instead. 16 hex digits."""
    digest = hashlib.sha256(json.dumps(preprocessing.to_dict(), sort_keys=True).encode())
    tensors = {k: v for k, v in model.state_dict().items() if v.numel()}
    if not tensors and file is not None:
        digest.update(Path(file).read_bytes())
    for name in sorted(tensors):
        value = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# writing


def write_gallery(gallery: Gallery, folder: str | Path) -> Path:
    """Write ``gallery`` to ``folder`` (created): the tensors, then the JSON that names them,
    each to a temporary file renamed when complete.

    Returns:
        The folder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    generation = uuid.uuid4().hex
    tensors = {"embeddings": torch.from_numpy(np.ascontiguousarray(gallery.embeddings))}
    if gallery.calibration is not None:
        calibration = np.ascontiguousarray(gallery.calibration_embeddings, dtype=np.float32)
        tensors["calibration"] = torch.from_numpy(calibration)
    header = {"format": FORMAT, "generation": generation}
    write_atomic(folder / TENSORS, lambda p: save_file(tensors, str(p), metadata=header))
    index = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "generation": generation,
        "written": time.strftime("%Y-%m-%d %H:%M:%S"),
        "model": gallery.model,
        "dtype": str(gallery.embeddings.dtype),
        "template_rule": TEMPLATE_RULE,
        "identities": [
            {"name": n, "images": [vars(r) for r in records]}
            for n, records in zip(gallery.names, gallery.images, strict=True)
        ],
        "calibration": gallery.calibration,
    }
    text = json.dumps(index, indent=1) + "\n"
    write_atomic(folder / INDEX, lambda p: p.write_text(text))
    for stale in folder.glob("index-*.faiss"):  # search caches of earlier writes
        stale.unlink(missing_ok=True)
    return folder


# --------------------------------------------------------------------------------------------
# reading


def _refuse(path: Path, why: str) -> ValueError:
    return ValueError(f"{path} refused: {why}; rebuild it with `facerec gallery build`")


def _read_index(folder: Path) -> dict[str, Any]:
    path = folder / INDEX
    if not path.is_file():
        raise FileNotFoundError(f"gallery not found: {folder} has no {INDEX}")
    index = read_json(path)
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise _refuse(path, f'not a facerec gallery (no "format": "{FORMAT}")')
    if index.get("format_version") != FORMAT_VERSION:
        raise _refuse(path, f"format_version {index.get('format_version')!r} is not 1")
    return index


def _identities(index: dict[str, Any], path: Path) -> tuple[list[str], list[list[ImageRecord]]]:
    """The names and image records, each checked (hand edits are refused, not guessed)."""
    entries = index.get("identities")
    if not isinstance(entries, list):
        raise _refuse(path, "identities is not a list")
    names, images = [], []
    for i, entry in enumerate(entries):
        name = entry.get("name") if isinstance(entry, dict) else None
        files = entry.get("images") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name or not isinstance(files, list) or not files:
            raise _refuse(path, f"identities[{i}] is not a name with a list of images")
        try:
            records = [ImageRecord(str(r["file"]), int(r["size"]), int(r["mtime_ns"]))
                       for r in files]  # fmt: skip
        except (TypeError, KeyError, ValueError):
            raise _refuse(path, f"identities[{i}] ({name[:40]!r}): an image record is not "
                          "file, size, mtime_ns") from None  # fmt: skip
        names.append(name)
        images.append(records)
    if names != sorted(set(names)):
        raise _refuse(path, "identity names are not distinct and sorted")
    return names, images


def _tensors(folder: Path, generation: Any) -> dict[str, np.ndarray]:
    path = folder / TENSORS
    if not path.is_file():
        raise _refuse(folder, f"it has no {TENSORS}")
    try:
        with safe_open(str(path), "np") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError) as error:
        raise _refuse(path, f"not a readable safetensors file ({str(error)[:80]})") from None
    if header.get("generation") != generation:
        raise _refuse(path, f"it is not the file {INDEX} was written with (another write, or an "
                      "edit by hand)")  # fmt: skip
    return tensors


def read_gallery(folder: str | Path) -> Gallery:
    """The gallery in ``folder``, checked.

    Raises:
        FileNotFoundError: no gallery there.
        ValueError: one line naming the file: not JSON or not a gallery, the two files from
            different writes, shapes or names that disagree, rows that are not unit vectors.
    """
    folder = Path(folder)
    index = _read_index(folder)
    path = folder / INDEX
    names, images = _identities(index, path)
    model = index.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("fingerprint"), str):
        raise _refuse(path, "model.fingerprint is missing")
    tensors = _tensors(folder, index.get("generation"))
    emb = tensors.get("embeddings")
    n = sum(len(i) for i in images)
    dim = model.get("embedding_size")
    if emb is None or emb.ndim != 2 or emb.shape != (n, dim if isinstance(dim, int) else -1):
        shape = None if emb is None else emb.shape
        raise _refuse(folder / TENSORS, f"embeddings {shape} disagree with {INDEX} ({n} images "
                      f"of {len(names)} identities, {dim}-d)")  # fmt: skip
    _check_unit(emb, folder / TENSORS)
    calibration = index.get("calibration")
    extra = tensors.get("calibration", np.zeros((0, emb.shape[1]), np.float32))
    if calibration is not None:
        _check_calibration(calibration, extra, emb.shape[1], path)
    return Gallery(names, images, emb, model, calibration, extra, index["generation"])


def _check_unit(emb: np.ndarray, path: Path) -> None:
    norms = np.linalg.norm(emb.astype(np.float32), axis=1)
    bad = np.flatnonzero(~np.isfinite(norms) | (np.abs(norms - 1) > 1e-2))
    if len(bad):
        raise _refuse(path, f"row {bad[0]} is not a unit vector (norm {norms[bad[0]]:.4g})")


def _check_calibration(record: Any, emb: np.ndarray, dim: int, path: Path) -> None:
    names = record.get("names") if isinstance(record, dict) else None
    far = record.get("far") if isinstance(record, dict) else None
    if not isinstance(names, list) or len(names) != len(emb) or emb.shape[1:] != (dim,):
        raise _refuse(path, f"calibration names and its {emb.shape} embeddings disagree")
    if not isinstance(far, (int, float)) or not 0.0 < far < 1.0:
        raise _refuse(path, f"calibration far {far!r} is outside (0, 1)")
    _check_unit(emb, path.with_name(TENSORS))
