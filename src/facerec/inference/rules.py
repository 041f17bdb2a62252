"""What a value read from a saved model file may be: a type, a range, whether null is allowed.

Every model file (a training checkpoint's ``config``, a model folder's ``config.json``, an ONNX
file's ``facerec.*`` metadata, a pack's header) is JSON-like data and stays so: nothing in it is
resolved (``"${...}"`` is a string like any other) and every value is checked by its
:data:`RULES` entry before use: ``embedding_size`` 1..65536, ``image_size`` 16..1024, ... A
legitimate file never meets them; a hostile size is refused before anything is allocated.

Every refusal is one line, ``<file> refused: <key>: <why>``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["BOOL", "FORMULA", "NORMALISATION", "RULES", "Rule", "read_section", "show"]

NORMALISATION = 127.5  # FaceModel.preprocess: (uint8 - 127.5) / 127.5, fixed in every model
FORMULA = f"(uint8 - {NORMALISATION}) / {NORMALISATION}"
NAME = re.compile(r"[A-Za-z0-9_.\-]{1,100}")


@dataclass(frozen=True)
class Rule:
    """What one value of a saved config may be: its type, its range, whether null is allowed.

    Attributes:
        kind: ``int``, ``float``, ``bool``, ``str`` (a name: letters, digits, ``_.-``),
            ``choice`` (one of ``choices``) or ``choices`` (a list of at most 16 of them).
        low, high: inclusive bounds of a number.
        nullable: ``None`` is a value.
        choices: the values a ``choice`` may take.
    """

    kind: str
    low: float = -math.inf
    high: float = math.inf
    nullable: bool = False
    choices: tuple[str, ...] = ()

    def read(self, value: Any, key: str, path: Path | str) -> Any:
        """``value`` checked (an int stays an int, a float is finite) or a one-line refusal."""
        if value is None and self.nullable:
            return None
        why = self._why_not(value)
        if why is None:
            return float(value) if self.kind == "float" else value
        if isinstance(value, str) and "${" in value:
            why += " (a saved config is plain data: interpolations are never resolved)"
        raise ValueError(f"{path} refused: {key}: {show(value)} {why}")

    def _why_not(self, value: Any) -> str | None:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if self.kind == "bool":
            return None if isinstance(value, bool) else "is not true/false"
        if self.kind == "str":
            return None if isinstance(value, str) and NAME.fullmatch(value) else "is not a name"
        if self.kind == "choice":
            return None if value in self.choices else f"is not one of {', '.join(self.choices)}"
        if self.kind == "choices":
            fits = isinstance(value, list) and len(value) <= 16
            if fits and all(isinstance(v, str) and v in self.choices for v in value):
                return None
            return f"is not a list of {', '.join(self.choices)}"
        if self.kind == "int" and not (number and isinstance(value, int)):
            return "is not an integer"
        if not number or not math.isfinite(value):
            return "is not a finite number"
        if not self.low <= value <= self.high:
            return f"is outside {self.low:g}..{self.high:g}"
        return None


def show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _int(low: int, high: int, nullable: bool = False) -> Rule:
    return Rule("int", low, high, nullable)


def _float(low: float, high: float, nullable: bool = False) -> Rule:
    return Rule("float", low, high, nullable)


BOOL = Rule("bool")

# Every argument a component (or the preprocessing) may take from a file, by name; a component
# parameter missing here cannot be read from a file (tests/test_security.py checks they all are).
RULES: dict[str, Rule] = {
    "embedding_size": _int(1, 65536),
    "num_features": _int(1, 65536),
    "dropout": _float(0.0, 0.99),
    "freeze_scale": BOOL,
    "conv_init_std": _float(0.0, 10.0, nullable=True),
    "zero_init_residual": BOOL,
    "memory_efficient": BOOL,
    "model_name": Rule("str"),
    # timm.create_model options a timm backbone may carry (+backbone.<key>=...)
    "drop_rate": _float(0.0, 0.99),
    "drop_path_rate": _float(0.0, 0.99),
    "img_size": _int(16, 1024),
    # preprocessing
    "image_size": _int(16, 1024),
    "center_crop": _int(0, 8192, nullable=True),
    "channels_last": BOOL,
    "mean": _float(NORMALISATION, NORMALISATION),
    "std": _float(NORMALISATION, NORMALISATION),
    "formula": Rule("choice", choices=(FORMULA,)),
    "color": Rule("choice", choices=("RGB",)),
    "layout": Rule("choice", choices=("NCHW",)),
    "resize": Rule("choice", choices=("cv2.INTER_AREA",)),
    # alignment (facerec.align.AlignOptions)
    "size": _int(16, 1024),
    "select": Rule("choice", choices=("largest", "center")),
    "on_missing": Rule("choice", choices=("auto", "whole", "center", "skip")),
    "crop_score": _float(0.0, 1.0),
    "search": Rule("choices", choices=("pad", "enhance", "small", "rotate")),
    "fallback_crop": _float(0.01, 1.0),
    "min_face": _int(1, 4096),
    "max_side": _int(16, 16384),
    "min_side": _int(1, 16384),
}


def read_section(
    section: Any, allowed: tuple[str, ...], prefix: str, path: Path | str
) -> dict[str, Any]:
    """``section``'s values, each read with its :data:`RULES` entry; another key is refused."""
    if not isinstance(section, Mapping):
        raise ValueError(f"{path} refused: {prefix.rstrip('.')}: {show(section)} is not a mapping")
    unknown = sorted(str(k) for k in section if k not in allowed)
    if unknown:
        raise ValueError(
            f"{path} refused: {prefix}{unknown[0]}: not an option here "
            f"(options: {', '.join(allowed) or 'none'})"
        )
    return {k: RULES[k].read(v, f"{prefix}{k}", path) for k, v in section.items()}
