"""One object for users and tools: a saved model that turns face images into unit vectors.

    from facerec import FaceEmbedder
    model = FaceEmbedder.load("exported/demo")           # checkpoint, folder or .onnx
    a, b = model.embed(["a.jpg", "b.jpg"])               # float32 (2, D), unit length
    print(model.compare("a.jpg", "b.jpg"))               # cosine, distance, same or not

Hugging Face's ``from_pretrained`` for the loading, insightface's ``FaceAnalysis`` for
:meth:`FaceEmbedder.faces`. Everything the images need (size, crop, alignment) comes from the
model's :class:`facerec.inference.preprocessing.Preprocessing`, read from the file. Embeddings
follow the verification protocol (:mod:`facerec.eval.verification`): the raw embeddings of an
image and of its mirror are summed, then L2-normalised; pairs are compared by squared Euclidean
distance (``2 - 2 cos``), "same" below the threshold.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facerec.data.decode import read_image
from facerec.eval.verification import fuse_flip
from facerec.inference import faces as faces_module
from facerec.inference.alignment import align_paths, resolve_alignment
from facerec.inference.folder import CARD, is_pretrained
from facerec.inference.images import load_images, prepare_arrays
from facerec.inference.loader import LoadedModel, load
from facerec.inference.thresholds import load_threshold, threshold_claim
from facerec.model import embed_batches

__all__ = ["Comparison", "FaceEmbedder", "batch_size_for", "embed_images"]

Image = str | Path | np.ndarray


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
        model: backbone + embedding (e.g. :attr:`FaceEmbedder.model`).
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


@dataclass(frozen=True)
class Comparison:
    """Two faces compared.

    Attributes:
        similarity: cosine of the two embeddings, in [-1, 1].
        distance: squared Euclidean distance, ``2 - 2 * similarity``, in [0, 4].
        threshold: the squared-distance threshold used (None: the model has none).
        source: where the threshold came from (a threshold file's claim, or the caller).
    """

    similarity: float
    distance: float
    threshold: float | None
    source: str | None

    @property
    def same(self) -> bool | None:
        """Same person: the distance is below the threshold (None without a threshold)."""
        return None if self.threshold is None else self.distance < self.threshold


class FaceEmbedder:
    """A loaded model with its preprocessing: images in, flip-fused unit embeddings out.

    Args:
        loaded: what :func:`facerec.inference.load` read.
        align: ``"auto"`` (align raw photos when the model was trained on aligned faces),
            ``"on"`` or ``"off"``; a choice unlike training warns once on stderr.
        center_crop: override the training centre crop (0: none; None: the model's).
        batch_size: images per forward pass (None: 32 on a CPU, 256 on an accelerator).
        flip: fuse each image with its mirror (the protocol; False: half the compute).
        prog: the name warnings start with.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        align: str = "auto",
        center_crop: int | None = None,
        batch_size: int | None = None,
        flip: bool = True,
        prog: str = "facerec",
    ) -> None:
        self.loaded = loaded
        self.path = Path(loaded.meta["path"])
        self.device = next(loaded.model.parameters()).device
        self.batch_size = batch_size_for(self.device, batch_size)
        self.flip = flip
        self._choice = (align, center_crop, prog)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "auto", **options: Any):
        """The model at ``path``: a training checkpoint (``.pt``), a folder written by
        ``facerec export`` or an ``.onnx`` file (always on the CPU); ``options`` as the class.

        Raises:
            FileNotFoundError, ValueError: one line naming the file (:func:`load`).
        """
        return cls(load(path, device), **options)

    # what the file says ------------------------------------------------------------------

    model = property(lambda self: self.loaded.model, doc="backbone + embedding, eval mode")
    spec = property(lambda self: self.loaded.spec, doc="the :class:`ModelSpec` read")
    config = property(lambda self: self.loaded.config, doc="the file's config, plain data")
    meta = property(lambda self: self.loaded.meta, doc="step, results, backbone, device, ...")

    @property
    def preprocessing(self):
        """The model's :class:`Preprocessing` (size, crop, alignment, normalisation)."""
        return self.loaded.spec.preprocessing

    @functools.cached_property
    def threshold(self) -> dict[str, Any] | None:
        """The stored threshold record (``facerec evaluate``'s, checked), or None."""
        return load_threshold(self.path)

    @functools.cached_property
    def card(self) -> str | None:
        """A model folder's card (``README.md``), or None."""
        card = self.path / CARD
        return card.read_text() if is_pretrained(self.path) and card.is_file() else None

    # how images are prepared ---------------------------------------------------------------

    @functools.cached_property
    def alignment(self):
        """The :class:`facerec.align.AlignOptions` raw photos are aligned with, or None."""
        align, _, prog = self._choice
        return resolve_alignment(self.preprocessing, align, prog)

    @property
    def crop(self) -> int | None:
        """The centre crop applied (none once aligned, unless overridden)."""
        return self.preprocessing.crop(self._choice[1], aligned=self.alignment is not None)

    def align_paths(self, paths: Sequence[str | Path], progress: bool = False) -> list[Path]:
        """The files to read for ``paths``: aligned copies (cached) when aligning, else them."""
        return align_paths(paths, self.alignment, self.device, progress=progress)

    def read(self, images: Sequence[Image]) -> torch.Tensor:
        """Image files or RGB uint8 ``(H, W, 3)`` arrays as the model's uint8 ``(N, 3, S, S)``
        input: aligned if the model wants it, centre-cropped and resized."""
        size = self.preprocessing.image_size
        if all(isinstance(x, (str, Path)) for x in images):
            return load_images(self.align_paths(images), size, self.crop)
        arrays = [read_image(x) if isinstance(x, (str, Path)) else np.asarray(x) for x in images]
        if self.alignment is not None:
            from facerec.align.image import align_image  # the align extra, only when used

            # as align_paths: the face its select rule picks, else the centre crop
            arrays = [align_image(a, self._detector, self.alignment)[0] for a in arrays]
        return prepare_arrays(arrays, size, self.crop)

    def face_crop(self, image: np.ndarray) -> tuple[np.ndarray | None, int | None]:
        """One photo's face as training prepared it, before the resize: ``(crop, faces)``.

        For a model trained on aligned faces: the aligned crop of the face its alignment's
        select rule picks and how many faces were found (``(None, 0)``: none). Otherwise the
        photo itself and None (no detection: the centre crop is the training preparation).

        Args:
            image: RGB uint8 ``(H, W, 3)``.
        """
        if self.alignment is None:
            return image, None
        from facerec.align.image import align_image  # the align extra, only when used

        options = dataclasses.replace(self.alignment, on_missing="skip")
        crop, _, found = align_image(image, self._detector, options)
        return crop, found

    @functools.cached_property
    def _detector(self):
        return faces_module.detector(self.preprocessing.align_options(), self.device)

    # embeddings ------------------------------------------------------------------------------

    def embed(self, images: Sequence[Image] | torch.Tensor, flip: bool | None = None):
        """Unit embeddings, float32 ``(N, D)``, flip-fused unless ``flip`` (or the object's)
        says otherwise.

        Args:
            images: image files or RGB uint8 ``(H, W, 3)`` arrays (prepared by :meth:`read`),
                or a uint8 ``(N, 3, S, S)`` tensor already prepared.
        """
        flip = self.flip if flip is None else flip
        prepared = images if isinstance(images, torch.Tensor) else self.read(images)
        return embed_images(self.model, prepared, self.device, flip, self.batch_size,
                            self.preprocessing.channels_last)  # fmt: skip

    def faces(self, photo: str | Path | np.ndarray) -> list[faces_module.DetectedFace]:
        """Every face in ``photo`` (a file or RGB uint8 ``(H, W, 3)``), highest score first,
        each with its box, 5 landmarks, score, aligned uint8 crop and embedding.

        Raises:
            ImportError: one line, when the ``align`` extra is not installed.
        """
        image = read_image(photo) if isinstance(photo, (str, Path)) else np.asarray(photo)
        options = self.preprocessing.align_options()
        found = faces_module.detect_faces(image, self._detector, options)
        if not found:
            return []
        emb = self.embed(prepare_arrays([f.crop for f in found], self.preprocessing.image_size))
        return [replace(f, embedding=e) for f, e in zip(found, emb, strict=True)]

    def compare(self, a: Image, b: Image, threshold: float | None = None) -> Comparison:
        """Cosine similarity and squared distance of two faces, and the decision at
        ``threshold`` (default: the model's stored one, its file named as the source)."""
        x, y = self.embed([a, b])
        return self.compare_embeddings(x, y, threshold)

    def compare_embeddings(
        self, x: np.ndarray, y: np.ndarray, threshold: float | None = None
    ) -> Comparison:
        """:meth:`compare` of two embeddings already computed, float ``(D,)`` each (e.g. two
        faces of :meth:`faces`)."""
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        source = "given" if threshold is not None else None
        if threshold is None and self.threshold is not None:
            threshold, source = float(self.threshold["threshold"]), threshold_claim(self.threshold)
        return Comparison(float(x @ y), float(((x - y) ** 2).sum()), threshold, source)
