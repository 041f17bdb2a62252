"""Shared fixtures: the repo's config folder, the real LFW copy, Hydra-composed configs."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from facerec.configs import CONFIG_DIR

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# Tests never write beside the data (a shared LFW copy may be writable): aligned copies go to a
# temporary cache unless the caller names one.
os.environ.setdefault("FACEREC_ALIGN_CACHE", tempfile.mkdtemp(prefix="facerec-test-align-"))

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = CONFIG_DIR


def lfw_path() -> Path:
    """FACEREC_LFW_ROOT if set, else the shared copy beside the repository."""
    return Path(os.environ.get("FACEREC_LFW_ROOT") or ROOT.parent / "shared" / "data" / "lfw")


def compose_train(*overrides: str) -> DictConfig:
    """facerec's train config as ``facerec train <overrides>`` composes it, without running.

    A plain function for scripts run beside the tests (``ddp_worker.py`` imports it); tests
    take the ``compose_train`` fixture, which is this function.
    """
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides))


@pytest.fixture(name="compose_train", scope="session")
def compose_train_fixture() -> Callable[..., DictConfig]:
    """``compose_train("head=cosface", "trainer.max_steps=2", ...)`` -> the composed config."""
    return compose_train


@pytest.fixture(scope="session")
def lfw_root() -> Path:
    """The real LFW folder; skipped when absent, a failure when FACEREC_REQUIRE_LFW=1 (CI)."""
    root = lfw_path()
    if not (root / "pairsDevTest.txt").is_file():
        message = f"LFW not found at {root} (set FACEREC_LFW_ROOT to an LFW copy)"
        if os.environ.get("FACEREC_REQUIRE_LFW") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return root


@pytest.fixture(scope="session")
def tiny_pairs(tmp_path_factory) -> Path:
    """An LFW-format pairs file of 20 pairs over only 7 images (every forward pass costs on a
    shared CPU): 10 same pairs among George_W_Bush 1-5, 10 different against Colin_Powell 1-2."""
    same = [f"George_W_Bush {i} {j}" for i in range(1, 6) for j in range(i + 1, 6)]
    diff = [f"George_W_Bush {i} Colin_Powell {j}" for i in range(1, 6) for j in (1, 2)]
    out = tmp_path_factory.mktemp("pairs") / "pairs_tiny.txt"
    out.write_text("\n".join(["10", *same, *diff]) + "\n")
    return out


def pytest_collection_modifyitems(config, items):
    """``gpu`` tests skip, with the reason, where no CUDA device is found."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device (gpu tests: `pytest -m gpu` on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def serve_folder(tmp_path_factory, lfw_root) -> Path:
    """A tiny model folder for ``facerec serve`` (tests/serving.py); needs the serve extra."""
    pytest.importorskip("fastapi", reason="the serve extra (pip install facerec[serve])")
    from serving import tiny_folder

    return tiny_folder(tmp_path_factory.mktemp("serve") / "model", lfw_root)


@pytest.fixture(scope="session")
def live_server(serve_folder, tmp_path_factory) -> Iterator[str]:
    """The base URL of ``serve_folder``'s application, served by uvicorn on 127.0.0.1, with a
    gallery folder empty at start."""
    from serving import app_for, served

    gallery = tmp_path_factory.mktemp("served") / "people"
    with served(app_for(serve_folder, gallery=gallery)) as url:
        yield url


def save_flatten_onnx(path: Path, props: dict[str, str], image_size: int = 4) -> Path:
    """A minimal ONNX model (a Flatten of (N, 3, 4, 4) to (N, 48)) carrying ``props``
    as metadata: enough for a loader to read, check and run the facerec.* keys.

    ``image_size`` > 4 (a multiple of 4): (N, 3, S, S) images are average-pooled to 4 x 4.
    """
    import onnx
    from onnx import TensorProto, helper

    pool = image_size // 4  # 1: an identity
    nodes = [
        helper.make_node("AveragePool", ["images"], ["pooled"], kernel_shape=[pool, pool],
                         strides=[pool, pool]),
        helper.make_node("Flatten", ["pooled"], ["embeddings"]),
    ]  # fmt: skip
    size = [None, 3, image_size, image_size]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, size)],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, [None, 48])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, props)
    onnx.save(model, str(path))
    return path
