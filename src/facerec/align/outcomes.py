"""What became of each file an alignment run saw: the outcome names and the :class:`Summary`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ALIGNED", "CENTERED", "FALLBACKS", "NO_FACE", "TOO_SMALL", "UNREADABLE", "WHOLE",
           "WRITTEN", "Summary"]  # fmt: skip

# Outcomes; the first three write a crop.
ALIGNED, WHOLE, CENTERED, NO_FACE, TOO_SMALL, UNREADABLE = (
    "aligned", "whole", "center_crop", "no_face", "too_small", "unreadable",
)  # fmt: skip
WRITTEN = (ALIGNED, WHOLE, CENTERED)
FALLBACKS = (WHOLE, CENTERED, NO_FACE)


@dataclass
class Summary:
    """What a run did: every input file is in exactly one of the outcome lists.

    ``cached`` counts the files whose outcome was read from the manifest instead of redone;
    ``found_by`` how the aligned faces were found (``detect``: the plain detection, a search
    step's name, ``given``: a landmarks file); ``look_cropped`` how many files without a face
    looked like face crops already (whatever ``on_missing`` made of them).
    """

    aligned: list[str] = field(default_factory=list)
    whole: list[str] = field(default_factory=list)
    center_crop: list[str] = field(default_factory=list)
    no_face: list[str] = field(default_factory=list)
    too_small: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    several_faces: int = 0
    cached: int = 0
    look_cropped: int = 0
    found_by: dict[str, int] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)  # file -> its one-line message

    @property
    def total(self) -> int:
        return sum(len(getattr(self, k)) for k in (*WRITTEN, NO_FACE, TOO_SMALL, UNREADABLE))

    @property
    def missing(self) -> list[str]:
        """Files with no output crop."""
        return self.no_face + self.too_small + self.unreadable

    def add(self, path: str, outcome: str, message: str | None = None, how: str = "") -> None:
        """Count one file; ``how``: the face's source (aligned) or ``"cropped"`` (a fallback
        that looked like a face crop)."""
        getattr(self, outcome).append(path)
        if message:
            self.problems[path] = message
        if outcome == ALIGNED:
            self.found_by[how or "detect"] = self.found_by.get(how or "detect", 0) + 1
        self.look_cropped += how == "cropped"

    def fallbacks(self) -> dict[str, str]:
        """``{file: what it became}`` for every file without a face found: ``whole``,
        ``center_crop`` or ``no_face`` (a tool's JSON names the fallback per image)."""
        return {path: kind for kind in FALLBACKS for path in getattr(self, kind)}

    def as_json(self) -> dict[str, Any]:
        """Everything in plain JSON types: the outcome lists, counts, fallbacks, advice."""
        return {"several_faces": self.several_faces, "cached": self.cached,
                **{kind: getattr(self, kind) for kind in (*WRITTEN, NO_FACE, TOO_SMALL,
                                                          UNREADABLE)},
                "found_by": self.found_by, "look_cropped": self.look_cropped,
                "fallback": self.fallbacks(), "advice": self.advice(),
                "problems": self.problems}  # fmt: skip

    def advice(self) -> str | None:
        """One loud line when most readable files had no face found, naming the option that
        fits what they look like; None otherwise."""
        fallen = sum(len(getattr(self, kind)) for kind in FALLBACKS)
        readable = fallen + len(self.aligned)
        if not fallen or fallen * 2 <= readable:
            return None
        head = f"WARNING: no face found in {fallen} of {readable} images ({fallen / readable:.0%})"
        if self.look_cropped * 2 > fallen:
            return (f"{head}; {self.look_cropped} of them look like face crops already: if the"
                    " folder holds cropped faces, use --on-missing whole (resize each image"
                    " whole), or give their landmarks with --landmarks FILE")  # fmt: skip
        return (f"{head}, and most do not look like face crops: check the folder, give"
                " landmarks with --landmarks FILE, or use --on-missing skip to keep only the"
                " faces found")  # fmt: skip

    def lines(self, examples: int = 5) -> list[str]:
        """A short human report: the counts, then the first few files of each problem."""
        head = (
            f"{self.total} images: {len(self.aligned)} aligned, {len(self.center_crop)} without"
            f" a detected face centre-cropped, {len(self.whole)} resized whole (face crops),"
            f" {len(self.no_face)} without a face skipped,"
            f" {len(self.too_small)} too small, {len(self.unreadable)} unreadable"
            f" ({self.several_faces} with several faces, {self.cached} from the cache)"
        )
        found = ", ".join(f"{how} {n}" for how, n in sorted(self.found_by.items()))
        out = [head, f"  faces found by: {found}"] if found else [head]
        for kind in ("whole", "center_crop", "no_face", "too_small", "unreadable"):
            files = getattr(self, kind)
            for path in files[:examples]:
                out.append(f"  {kind}: {self.problems.get(path, path)}")
            if len(files) > examples:
                out.append(f"  {kind}: ... and {len(files) - examples} more")
        advice = self.advice()
        return [*out, advice] if advice else out
