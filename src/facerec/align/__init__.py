"""Face alignment: MTCNN landmarks -> least-squares similarity -> the ArcFace 112x112 crop.

- :mod:`~facerec.align.transform`: the template, :func:`umeyama`, :func:`warp_face` (numpy +
  OpenCV only).
- :mod:`~facerec.align.detect`: :class:`FaceDetector` (facenet-pytorch, the ``align`` extra,
  imported on first use).
- :mod:`~facerec.align.options`: :class:`AlignOptions`, how to align.
- :mod:`~facerec.align.image`: one decoded image: find its faces, warp, or fall back.
- :mod:`~facerec.align.folder`: :func:`align_files` / :func:`align_folder`, the run over many
  files, with the cache (:mod:`~facerec.align.manifest`) and the :class:`Summary` of what
  happened to every file (:mod:`~facerec.align.outcomes`).
- :mod:`~facerec.align.dataset`: aligned copies for a data module (``data=lfw_aligned``).
- :mod:`~facerec.align.prepare`: that alignment as the data module's ``prepare`` step (the
  LFW data configs' ``_target_``; ``facerec.data`` never imports ``facerec.align``).
- :mod:`~facerec.cli.align`: ``facerec align SRC DST``.
"""

from __future__ import annotations

import importlib

# Lazy (PEP 562): `facerec.cli.align --help` and the tools' argument parsers import this
# package without paying for torch, OpenCV and albumentations.
_EXPORTS = {
    "ARCFACE_TEMPLATE": "transform",
    "AlignOptions": "options",
    "Summary": "outcomes",
    "align_files": "folder",
    "align_folder": "folder",
    "template": "transform",
    "umeyama": "transform",
    "warp_face": "transform",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'facerec.align' has no attribute {name!r}")
    return getattr(importlib.import_module(f"facerec.align.{_EXPORTS[name]}"), name)
