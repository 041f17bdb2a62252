"""facerec: face-recognition training and inference.

``import facerec`` is cheap (no torch): the inference object is imported on first use::

    from facerec import FaceEmbedder
    model = FaceEmbedder.load("exported/demo")
"""

from __future__ import annotations

import importlib

# Lazy (PEP 562): the command line and `import facerec` pay for torch only when a model is used.
_EXPORTS = {"FaceEmbedder": "facerec.inference.embedder"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'facerec' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
