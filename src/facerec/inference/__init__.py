"""A trained model outside the trainer: load any format, prepare images, embed, decide.

    from facerec import FaceEmbedder
    model = FaceEmbedder.load("exported/demo")      # checkpoint, model folder or ONNX
    a, b = model.embed(["a.jpg", "b.jpg"])          # float32 (2, D), flip-fused, unit length
    result = model.compare("a.jpg", "b.jpg")        # cosine, squared distance, same or not

One job per module (imports run downwards; nothing here imports the trainer):

- :mod:`.embedder`: :class:`FaceEmbedder`, the object users and every ``facerec`` tool use.
- :mod:`.loader`: any saved model -> model + :class:`ModelSpec` + config + meta.
- :mod:`.spec`: :class:`ModelSpec` and :func:`read_spec`, the one parser of every model file,
  built on :mod:`.rules` (typed, range-checked values) and :mod:`.components` (facerec's own
  backbones and embedding layers, never a name found in a file).
- :mod:`.preprocessing`: :class:`Preprocessing`, written into every model file and read back.
- :mod:`.images`, :mod:`.alignment`, :mod:`.faces`: images as the model wants them.
- :mod:`.folder` (+ :mod:`.card`): the shareable folder, written and read side by side.
- :mod:`.onnx`: an ONNX export run in onnxruntime.
- :mod:`.thresholds`: the same-person threshold kept beside a model.
- :mod:`.gallery` (the format, written and read side by side), :mod:`.enrol` (identity folders
  into it), :mod:`.calibration` (the "unknown" threshold), :mod:`.search` (exact and FAISS
  top-k), :mod:`.identify` (:class:`Searcher`: every face of a photo answered).
"""

from __future__ import annotations

import importlib

# Lazy (PEP 562): a module that needs only Preprocessing (the checkpoint writer, the pack
# writer) does not load every format's reader, and `import facerec.inference` stays cheap.
_EXPORTS = {
    "FaceEmbedder": "embedder", "Comparison": "embedder", "embed_images": "embedder",
    "batch_size_for": "embedder", "DetectedFace": "faces",
    "LoadedModel": "loader", "load": "loader", "load_model": "loader", "is_onnx": "loader",
    "ModelSpec": "spec", "read_spec": "spec", "rebuild": "spec",
    "Preprocessing": "preprocessing",
    "IMAGE_EXTENSIONS": "images", "PREPROCESSING": "images", "center_crop": "images",
    "image_size": "images", "list_images": "images", "load_images": "images",
    "preparation": "images", "prepare_arrays": "images",
    "align_paths": "alignment", "align_sets": "alignment",
    "default_align_cache": "alignment", "resolve_alignment": "alignment",
    "MAX_THRESHOLD": "thresholds", "check_threshold": "thresholds",
    "impostor_accept_rate": "thresholds", "load_threshold": "thresholds",
    "save_threshold": "thresholds", "threshold_claim": "thresholds",
    "threshold_path": "thresholds",
    "load_pretrained": "folder", "read_pretrained": "folder", "save_pretrained": "folder",
    "Gallery": "gallery", "read_gallery": "gallery", "write_gallery": "gallery",
    "build_gallery": "enrol", "add_folders": "enrol", "remove_from": "enrol",
    "threshold_for": "calibration", "Searcher": "identify", "FaceAnswer": "identify",
    "ExactIndex": "search", "FaissIndex": "search", "build_index": "search",
}  # fmt: skip
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'facerec.inference' has no attribute {name!r}")
    return getattr(importlib.import_module(f"facerec.inference.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
