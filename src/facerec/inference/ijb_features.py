"""IJB faces embedded once: aligned by their given landmarks, streamed through a DataLoader,
kept on disk in chunks so that a killed run continues where it stopped.

Each face is decoded (:func:`facerec.data.decode.read_image`), warped onto the ArcFace template
at the model's input size by the similarity transform of its five landmarks
(:func:`facerec.align.transform.warp_face`, no detector), and embedded with its mirror
(:func:`facerec.model.embed_batches`; the model normalises its uint8 input itself). The raw
embeddings of both go to ``chunk-<k>.npy`` (float32 ``(c, 2, D)``), written to a temporary name
and renamed, so a chunk file is whole or absent; every feature mode (F, N, D) is computed from
them later without embedding again. The folder's name is a hash of the model's weights and
preprocessing and of the landmark file: another model or another file gets another folder.

Memory while embedding: the DataLoader's prefetched batches (workers x 2 x batch x 3 x S x S
bytes: 38 MB at 2 workers, 256 faces, 112 px) and one chunk's features (8,192 x 2 x 512 x 4 B:
34 MB), whatever the number of faces.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from facerec.align.transform import warp_face
from facerec.data.decode import read_image
from facerec.data.ijb import Faces, IJBFiles
from facerec.eval.ijb import Mode, Templates, TemplateSums, image_features
from facerec.model import embed_batches

__all__ = ["AlignedFaces", "FeatureCache", "cache_identity", "embed_faces", "template_features"]

FORMAT = "facerec-ijb-features"
VERSION = 1
CHUNK = 8192


class AlignedFaces(Dataset):
    """The faces of the meta files as model input: ``(uint8 (3, S, S), error message or "")``.

    An unreadable image yields a black crop and its one-line error, which the consumer raises
    (an exception inside a worker would reach the user as a multi-line traceback).
    """

    def __init__(self, images: Path, names: Sequence[str], landmarks: np.ndarray, size: int):
        self.images, self.names, self.landmarks, self.size = images, names, landmarks, size

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        try:
            image = read_image(self.images / self.names[i])
        except OSError as error:
            return torch.zeros((3, self.size, self.size), dtype=torch.uint8), str(error)
        crop, _ = warp_face(image, self.landmarks[i], self.size)
        return torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))), ""


def _sha256_files(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while block := f.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()


def cache_identity(model: torch.nn.Module, preprocessing: dict, files: IJBFiles) -> dict:
    """What the cached features depend on: the weights (hashed), the preprocessing, the
    landmark file (hashed) and the image folder."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return {
        "format": FORMAT,
        "version": VERSION,
        "target": files.target,
        "weights_sha256": digest.hexdigest(),
        "preprocessing": preprocessing,
        "landmarks_sha256": _sha256_files([files.landmarks]),
        "images": str(files.images.resolve()),
    }


class FeatureCache:
    """A folder of chunk files holding every face's raw embedding and its mirror's.

    Args:
        root: where cache folders go; this one is ``<target>-<hash of identity>``.
        identity: :func:`cache_identity`'s mapping (written as ``cache.json``).
        faces: how many faces; chunk ``k`` holds faces ``k * chunk ...``.
        chunk: faces per file.
    """

    def __init__(self, root: Path, identity: dict, faces: int, chunk: int = CHUNK) -> None:
        key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
        self.folder = Path(root).expanduser() / f"{identity['target']}-{key}"
        self.faces, self.chunk = faces, chunk
        self.folder.mkdir(parents=True, exist_ok=True)
        manifest = {**identity, "faces": faces, "chunk": chunk}
        path = self.folder / "cache.json"
        if path.is_file() and json.loads(path.read_text()) != manifest:
            raise ValueError(f"{path}: written for other faces or chunks; remove the folder")
        _write_atomic(path, lambda f: f.write(json.dumps(manifest, indent=2).encode()))

    def __len__(self) -> int:
        return -(-self.faces // self.chunk)

    def rows(self, k: int) -> range:
        """The faces chunk ``k`` holds."""
        return range(k * self.chunk, min((k + 1) * self.chunk, self.faces))

    def path(self, k: int) -> Path:
        return self.folder / f"chunk-{k:06d}.npy"

    def missing(self) -> list[int]:
        """The chunks not written yet."""
        return [k for k in range(len(self)) if not self.path(k).is_file()]

    def write(self, k: int, features: np.ndarray) -> None:
        """Chunk ``k``: float32 ``(c, 2, D)``, written whole or not at all."""
        if features.shape[:2] != (len(self.rows(k)), 2):
            raise ValueError(
                f"chunk {k}: features {features.shape}, expected ({len(self.rows(k))}, 2, D)"
            )
        _write_atomic(self.path(k), lambda f: np.save(f, features.astype(np.float32)))

    def __iter__(self) -> Iterator[np.ndarray]:
        """Every chunk in order, memory-mapped: float32 ``(c, 2, D)``."""
        for k in range(len(self)):
            yield np.load(self.path(k), mmap_mode="r")


def _write_atomic(path: Path, write: Callable) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _batches(cache: FeatureCache, batch_size: int) -> list[tuple[int, range]]:
    """``(chunk, faces)`` of every batch still to embed; a batch never spans two chunks."""
    out = []
    for k in cache.missing():
        rows = cache.rows(k)
        out += [(k, rows[s : s + batch_size]) for s in range(0, len(rows), batch_size)]
    return out


def embed_faces(
    model: torch.nn.Module,
    dataset: AlignedFaces,
    cache: FeatureCache,
    device: torch.device,
    batch_size: int,
    workers: int,
    channels_last: bool = True,
    progress: bool = False,
    on_chunk: Callable[[int], None] | None = None,
) -> int:
    """Embed the faces of every chunk not yet in ``cache``; returns how many were embedded.

    Raises:
        OSError: one line naming the first image that cannot be read.
    """
    batches = _batches(cache, batch_size)
    loader = DataLoader(dataset, batch_sampler=[list(rows) for _, rows in batches],
                        num_workers=workers, persistent_workers=False)  # fmt: skip
    todo = sum(len(rows) for _, rows in batches)
    parts: list[np.ndarray] = []
    with tqdm(total=todo, desc="embed faces", unit="face", disable=not progress) as bar:
        for (k, rows), (images, errors) in zip(batches, loader, strict=True):
            failed = next((e for e in errors if e), None)
            if failed:
                raise OSError(failed)
            plain, mirror = embed_batches(model, images, device, len(images), True,
                                          channels_last=channels_last)  # fmt: skip
            parts.append(np.stack([plain, mirror], 1))
            if rows.stop == cache.rows(k).stop:
                cache.write(k, np.concatenate(parts))
                parts = []
                if on_chunk is not None:
                    on_chunk(k)
            bar.update(len(rows))
    return todo


def template_features(
    cache: FeatureCache, faces: Faces, templates: Templates, modes: Sequence[Mode],
    progress: bool = False,
) -> dict[Mode, np.ndarray]:  # fmt: skip
    """Every mode's template features, float64 ``(T, D)`` in ``templates.ids`` order, from one
    pass over the cached chunks (memory: T x D x 8 bytes per mode)."""
    sums: dict[Mode, TemplateSums] = {}
    with tqdm(total=faces.scores.size, desc="template features", unit="face",
              disable=not progress) as bar:  # fmt: skip
        for k, chunk in enumerate(cache):
            rows = cache.rows(k)
            for mode in modes:
                features = image_features(
                    chunk[:, 0], chunk[:, 1], faces.scores[rows.start : rows.stop], mode
                )
                sums.setdefault(mode, TemplateSums(templates, chunk.shape[2])).add(features)
            bar.update(len(rows))
    return {mode: s.features() for mode, s in sums.items()}
