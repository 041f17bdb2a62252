"""Face alignment: MTCNN landmarks -> least-squares similarity -> the ArcFace 112x112 crop.

- :mod:`~facerec.align.transform`: the template, :func:`umeyama`, :func:`warp_face` (numpy +
  OpenCV only).
- :mod:`~facerec.align.detect`: :class:`FaceDetector` (facenet-pytorch, the ``align`` extra,
  imported on first use).
- :mod:`~facerec.align.folder`: :func:`align_files` / :func:`align_folder` with the cache
  manifest and the :class:`Summary` of what happened to every file.
- :mod:`~facerec.align.dataset`: aligned copies for a data module (``data=lfw_aligned``).
- :mod:`~facerec.align.tool`: ``scripts/align.py SRC DST``.
"""

from facerec.align.folder import AlignOptions, Summary, align_files, align_folder
from facerec.align.transform import ARCFACE_TEMPLATE, template, umeyama, warp_face

__all__ = [
    "ARCFACE_TEMPLATE",
    "AlignOptions",
    "Summary",
    "align_files",
    "align_folder",
    "template",
    "umeyama",
    "warp_face",
]
