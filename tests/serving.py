"""What the ``facerec serve`` tests share: a tiny model folder whose threshold separates two
LFW pairs, and the app served by uvicorn on a free localhost port in a thread."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from safetensors.torch import save_file
from test_embedder import tiny_config, tiny_weights
from test_partial_fc import free_port

from facerec.inference import FaceEmbedder, save_threshold

IMAGES = "lfw-deepfunneled"
SAME = ("Aaron_Peirsol/Aaron_Peirsol_0001.jpg", "Aaron_Peirsol/Aaron_Peirsol_0002.jpg")
DIFFERENT = ("Aaron_Peirsol/Aaron_Peirsol_0001.jpg", "George_W_Bush/George_W_Bush_0001.jpg")
# Enrolled from two photos each, then the third photo of the first identified; the tiny random
# model happens to rank it right (test_serve_gallery.py checks its numbers independently).
ENROL = {"Serena_Williams": [f"Serena_Williams/Serena_Williams_000{i}.jpg" for i in (1, 2)],
         "Aaron_Peirsol": [f"Aaron_Peirsol/Aaron_Peirsol_000{i}.jpg" for i in (1, 2)]}  # fmt: skip
QUERY = "Serena_Williams/Serena_Williams_0003.jpg"
MANY_FACES = "Abdel_Nasser_Assidi/Abdel_Nasser_Assidi_0001.jpg"  # MTCNN finds 3 faces


def tiny_folder(folder: Path, lfw: Path, aligned: bool = False) -> Path:
    """A model folder of random weights (test_embedder's tiny MobileFaceNet, 8-d).

    Random weights separate nothing reliably, so its stored threshold is put halfway between
    the distances of :data:`SAME` and :data:`DIFFERENT` (checked to be in that order): the
    page's "same" and "different" are then both reachable with real photos, and what is tested
    is the plumbing (decision = distance below the threshold), not the model.
    """
    folder.mkdir(parents=True)
    config = tiny_config(None if aligned else 150)
    if aligned:
        config["preprocessing"]["alignment"] = {"select": "largest"}
    (folder / "config.json").write_text(json.dumps(config))
    save_file(tiny_weights(config), str(folder / "model.safetensors"))
    if not aligned:
        model = FaceEmbedder.load(folder, "cpu")
        same, different = (model.compare(*(lfw / IMAGES / p for p in pair)).distance
                           for pair in (SAME, DIFFERENT))  # fmt: skip
        assert same < different, (same, different)
        save_threshold(folder, "lfw", {"threshold": (same + different) / 2, "accuracy": 0.9}, 3)
    return folder


def app_for(folder: Path, gallery: Path | None = None, **options):
    """The ``facerec serve`` application of a model folder, on the CPU."""
    from facerec.serve.app import create_app
    from facerec.serve.service import Service

    return create_app(Service(FaceEmbedder.load(folder, "cpu"), gallery), **options)


@contextlib.contextmanager
def served(app) -> Iterator[str]:
    """``app`` served by uvicorn on 127.0.0.1 in a thread; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
