"""The JSON the API answers with, as pydantic models (they are the OpenAPI schema at ``/docs``).

Coordinates are in the uploaded photo's pixels; crops are PNG images as base64 text.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

__all__ = ["CandidateOut", "EnrollOut", "ErrorOut", "FaceOut", "GalleryOut", "IdentifyOut",
           "ModelOut", "PhotoOut", "ThresholdOut", "VerifyOut"]  # fmt: skip


class ErrorOut(BaseModel):
    """Every 4xx/5xx answer: one readable sentence (naming the upload when it is at fault)."""

    error: str


class FaceOut(BaseModel):
    """One face of a photo and the crop the model embedded for it."""

    box: list[float] = Field(description="x1, y1, x2, y2 in the photo's pixels")
    landmarks: list[list[float]] | None = Field(
        None, description="5 (x, y): eyes, nose, mouth corners; None for a centre crop"
    )
    score: float | None = Field(None, description="detector confidence; None for a centre crop")
    crop_png: str = Field(description="the model's input for this face, PNG as base64")


class PhotoOut(BaseModel):
    """One uploaded photo: its faces, and which one was used."""

    name: str = Field(description="the upload's file name (shown, never used as a path)")
    width: int
    height: int
    method: str = Field(description="'aligned', 'centre crop (no face found)' or 'centre crop'")
    faces: list[FaceOut]
    chosen: int = Field(description="index into faces of the face compared")


class VerifyOut(BaseModel):
    """Two faces compared, as ``facerec verify`` does."""

    photos: list[PhotoOut]
    similarity: float = Field(description="cosine of the two flip-fused unit embeddings")
    distance: float = Field(description="squared distance, 2 - 2 * similarity")
    threshold: float | None = Field(description="squared distance; same person below it")
    threshold_source: str | None
    decision: str | None = Field(description="'same', 'different', or None without threshold")


class CandidateOut(BaseModel):
    """One gallery identity and its cosine similarity to a face."""

    name: str
    similarity: float


class GalleryOut(BaseModel):
    """The gallery the page identifies against."""

    path: str
    identities: int
    images: int
    names: list[str] = Field(description="the first 200 names, sorted")
    calibrated: bool


class IdentifyOut(BaseModel):
    """Every face of one photo searched in the gallery."""

    photo: PhotoOut
    answers: list[list[CandidateOut]] = Field(description="per face: top-k identities, best first")
    identities: list[str | None] = Field(
        description="per face: the best name, 'unknown' below the threshold, None without one"
    )
    threshold: float | None = Field(description="cosine; a face below it is 'unknown'")
    threshold_source: str


class EnrollOut(BaseModel):
    """Photos added to the gallery under one name."""

    name: str
    photos: list[PhotoOut] = Field(description="each photo's enrolled face (one per photo)")
    images: int = Field(description="the name's photos in the gallery now")
    gallery: GalleryOut


class ThresholdOut(BaseModel):
    """The model's stored threshold and where it came from."""

    value: float
    source: str


class ModelOut(BaseModel):
    """The model card's essentials and how photos are prepared."""

    path: str
    title: str
    backbone: str
    embedding: str
    embedding_size: int | None
    head: str
    step: int | None
    epoch: int | None
    num_classes: int | None
    data: str
    results: dict[str, dict[str, float | None]]
    protocol: str | None
    preparation: str = Field(description="how a photo becomes the model's input")
    threshold: ThresholdOut | None
    device: str
    gallery: GalleryOut | None = Field(description="identify and enrol's gallery (None: off)")
