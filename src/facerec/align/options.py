"""How to align: :class:`AlignOptions`, whose :attr:`~AlignOptions.key` names them in caches
and checkpoints."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from facerec.align.search import SEARCH_STEPS

__all__ = ["ON_MISSING", "AlignOptions"]

# Options added after checkpoints stored AlignOptions (see AlignOptions.as_dict).
_LATER_FIELDS = ("crop_score", "search")
# --on-missing choices: what a file with no face found becomes.
ON_MISSING = ("auto", "whole", "center", "skip")


@dataclass(frozen=True)
class AlignOptions:
    """How to align; :attr:`key` names them in caches and checkpoints.

    Attributes:
        size: side of the output crop (the ArcFace template is scaled from 112).
        select: several faces: keep the ``"largest"`` or the one nearest the ``"center"``.
        on_missing: no face found: ``"auto"`` resizes a photo that is already a face crop
            whole (see :meth:`facerec.align.detect.FaceDetector.crop_scores`) and centre-crops
            any other; ``"whole"`` or ``"center"`` (the default) does that to every such file;
            ``"skip"`` writes nothing. Counted and named per file either way.
        fallback_crop: side of that centre crop as a fraction of the image's shorter side
            (0.6 = LFW's usual 150 of 250 px).
        crop_score: O-Net score of the whole image from which ``"auto"`` takes it for a face
            crop.
        search: where to look again when the plain detection finds nothing, in order (names
            of :data:`facerec.align.search.SEARCH_STEPS`; empty: nowhere).
        min_face: smallest face side (px, in the detection image) MTCNN looks for.
        max_side: images with a longer side are shrunk to it for detection only (the crop is
            cut from the full image): a 6000 px photo costs no more than a 1280 px one.
        min_side: images with a shorter side than this are reported as too small.
    """

    size: int = 112
    select: str = "largest"
    # "center" by default here: checkpoints and exported folders store these options, and
    # their readers accept "skip" and "center"; the command line defaults to "auto".
    on_missing: str = "center"
    fallback_crop: float = 0.6
    crop_score: float = 0.8
    search: tuple[str, ...] = ("pad", "enhance", "small", "rotate")
    min_face: int = 20
    max_side: int = 1280
    min_side: int = 32

    def __post_init__(self) -> None:
        if self.select not in ("largest", "center"):
            raise ValueError(f"align select must be 'largest' or 'center', got {self.select!r}")
        if self.on_missing not in ON_MISSING:
            raise ValueError(
                f"align on_missing must be one of {ON_MISSING}, got {self.on_missing!r}"
            )
        object.__setattr__(self, "search", tuple(self.search))  # a config's list
        unknown = [step for step in self.search if step not in SEARCH_STEPS]
        if unknown:
            raise ValueError(f"unknown align search step(s) {unknown}; valid: {list(SEARCH_STEPS)}")
        if self.size < 16 or not 0 < self.fallback_crop <= 1 or self.max_side < self.min_side:
            raise ValueError(f"impossible align options: {self}")

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> AlignOptions:
        """From a config mapping; unknown keys are an error naming the valid ones."""
        values = dict(values or {})
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            valid = list(cls.__dataclass_fields__)
            raise ValueError(f"unknown align option(s) {sorted(unknown)}; valid: {valid}")
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        """The fields as plain JSON types. The fields added after checkpoints began to store
        these options are left out while they hold their defaults, so readers that predate
        them read what this version writes."""
        values = asdict(self)
        for name in _LATER_FIELDS:
            if values[name] == self.__dataclass_fields__[name].default:
                del values[name]
        if "search" in values:
            values["search"] = list(values["search"])
        return values

    @property
    def key(self) -> str:
        """8 hex digits that change with any option (and with the method's version)."""
        text = json.dumps({"method": "mtcnn-umeyama-arcface/2", **self.as_dict()}, sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:8]
