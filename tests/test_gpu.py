"""The CUDA paths: nvjpeg decoding, the training step, every head under autocast, compile.

Each is checked against an independent reference computed on the CPU (float64 where the
arithmetic allows), never against an earlier run of itself. Run with ``pytest -m gpu`` on a
machine with a CUDA GPU; elsewhere they skip with the reason.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from facerec.configs import CONFIG_DIR
from facerec.data.device_decode import decode_batch
from facerec.data.pack_writer import pack_images
from facerec.data.packed import PackedDataset
from facerec.data.packed_module import PackedDataModule
from facerec.model import Recognizer
from facerec.model import build_recognizer as build
from facerec.training.speed import compile_backbone, resolve_amp, resolve_compile

pytestmark = pytest.mark.gpu

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = CONFIG_DIR
HEAD_FILES = sorted((CONFIGS / "head").glob("*.yaml"))
CUDA = torch.device("cuda")


@contextmanager
def no_tf32():
    """Full fp32 matrix products, for comparisons at float32 tolerance."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def jpegs(count: int, sampling: int | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Smooth random colour images (face-like spectra, not white noise) and their JPEG bytes.

    Returns the RGB sources ``(count, 3, 112, 112)`` int32 and the q95 JPEGs (chroma
    subsampling ``sampling``, OpenCV's 4:2:0 by default).
    """
    rng = np.random.default_rng(0)
    params = [cv2.IMWRITE_JPEG_QUALITY, 95]
    if sampling is not None:
        params += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, sampling]
    sources, data = [], []
    for _ in range(count):
        small = rng.integers(0, 256, (14, 14, 3), dtype=np.uint8)
        image = cv2.resize(small, (112, 112), interpolation=cv2.INTER_CUBIC)
        ok, encoded = cv2.imencode(".jpg", image, params)
        assert ok
        sources.append(torch.from_numpy(image[:, :, ::-1].copy()).permute(2, 0, 1))
        data.append(torch.from_numpy(encoded.reshape(-1).copy()))
    return torch.stack(sources).int(), data


def cv2_decode(data: list[torch.Tensor]) -> torch.Tensor:
    """The training loader's decoder: libjpeg-turbo through OpenCV, BGR -> RGB, CHW."""
    bgr = [cv2.imdecode(d.numpy(), cv2.IMREAD_COLOR) for d in data]
    return torch.stack([torch.from_numpy(b[:, :, ::-1].copy()).permute(2, 0, 1) for b in bgr])


def test_nvjpeg_decode_equals_the_cpu_decoder_without_chroma_subsampling():
    _, data = jpegs(32, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444)
    gpu = decode_batch(data, CUDA)
    assert gpu.device.type == "cuda" and gpu.dtype == torch.uint8
    assert gpu.shape == (32, 3, 112, 112)
    assert torch.equal(gpu.cpu(), cv2_decode(data))  # seen on an H100: bit-identical


def test_nvjpeg_decode_of_subsampled_chroma_is_unbiased_but_coarser():
    """4:2:0 (OpenCV's default): nvjpeg upsamples chroma more crudely than libjpeg-turbo.

    Seen on an H100: mean |error| against the source 6.4 grey levels for nvjpeg, 2.6 for the
    CPU decoders, no bias in any channel. Bounded here so a real regression (a colour shift,
    swapped channels: errors of 50+) fails.
    """
    sources, data = jpegs(32)
    gpu = decode_batch(data, CUDA).cpu().int()
    cpu = cv2_decode(data).int()
    gpu_error = (gpu - sources).abs().float().mean()
    cpu_error = (cpu - sources).abs().float().mean()
    assert gpu_error < 3 * cpu_error, (gpu_error, cpu_error)
    bias = (gpu - sources).float().mean((0, 2, 3)).abs()
    assert (bias < 0.5).all(), bias


def test_device_decoding_loader_on_cuda_equals_decoding_in_the_workers(tmp_path):
    """``data=packed data.decode=device``: a 4:4:4 pack decodes on the GPU bit-identically."""
    _, data = jpegs(24, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444)
    paths = []
    for i, encoded in enumerate(data):
        path = tmp_path / "src" / f"id{i % 4}" / f"{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encoded.numpy().tobytes())
        paths.append(path)
    pack_images(paths, [i % 4 for i in range(24)], [f"id{c}" for c in range(4)],
                tmp_path / "pack", chroma="444")  # fmt: skip
    module = PackedDataModule(str(tmp_path / "pack"), hflip=False, batch_size=8,
                              num_workers=2, decode="device")  # fmt: skip
    module.setup()
    loader = module.train_loader(seed=3, show_progress=False)
    loader.sampler.set_epoch(0)
    items = list(loader.sampler)
    plain = PackedDataset(tmp_path / "pack")
    for b, (batch, labels) in enumerate(loader):
        images = batch.to(CUDA, non_blocking=True)
        assert images.device.type == "cuda"
        chosen = [index for index, _ in items[8 * b : 8 * b + 8]]
        assert torch.equal(images.cpu(), torch.stack([plain[i][0] for i in chosen]))
        assert labels.tolist() == [plain[i][1] for i in chosen]


def loss_and_grad(model, images, labels, amp=None, channels_last=False, compiled=False):
    """Loss and flat gradient of one forward/backward on the inputs' device."""
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    # What the trainer steps through with trainer.compile on (parameters shared with `model`).
    run = Recognizer(compile_backbone(model.model), model.criterion) if compiled else model
    device = images.device.type
    with torch.autocast(device, dtype=amp or torch.bfloat16, enabled=amp is not None):
        loss = run(images, labels)
    loss.backward()
    grad = torch.cat([p.grad.flatten().double().cpu() for p in model.parameters()])
    return loss.detach().double().cpu(), grad


@pytest.fixture(scope="module")
def reference(compose_train):
    """A float64 CPU forward/backward of MobileFaceNet + ArcFace (the independent answer)."""
    cfg = compose_train("backbone=mobilefacenet", "head=arcface")
    torch.manual_seed(0)
    base = build(cfg, num_classes=50).train()
    torch.manual_seed(1)
    images, labels = torch.randn(32, 3, 112, 112), torch.randint(0, 50, (32,))
    loss, grad = loss_and_grad(copy.deepcopy(base).double(), images.double(), labels)
    return base, images, labels, loss, grad


# Gradient tolerances are relative to the whole gradient's norm. float32 rounding is amplified
# through BatchNorm (3e-3 seen on the CPU); in bf16/fp16 the error is dominated by parameters
# whose true gradient is ~0 (BatchNorm biases followed by BatchNorm), 0.25 seen for bf16.
@pytest.mark.parametrize(
    ("name", "kwargs", "loss_rtol", "grad_rtol"),
    [
        ("fp32", {}, 1e-4, 1e-2),
        ("fp32 channels_last", {"channels_last": True}, 1e-4, 1e-2),
        ("bf16 autocast", {"amp": torch.bfloat16}, 1e-2, 0.35),
        ("fp16 autocast", {"amp": torch.float16}, 5e-3, 0.1),
        ("compiled fp32", {"compiled": True}, 1e-4, 1e-2),
        ("compiled bf16 channels_last", {"compiled": True, "amp": torch.bfloat16,
                                         "channels_last": True}, 1e-2, 0.35),
    ],
)  # fmt: skip
def test_cuda_training_step_matches_float64_cpu(reference, name, kwargs, loss_rtol, grad_rtol):
    base, images, labels, ref_loss, ref_grad = reference
    torch._dynamo.reset()
    with no_tf32():
        loss, grad = loss_and_grad(
            copy.deepcopy(base).to(CUDA), images.to(CUDA), labels.to(CUDA), **kwargs
        )
    torch.testing.assert_close(loss, ref_loss, rtol=loss_rtol, atol=0)
    assert torch.isfinite(grad).all()
    assert (grad - ref_grad).norm() / ref_grad.norm() < grad_rtol


@pytest.mark.parametrize("path", HEAD_FILES, ids=[p.stem for p in HEAD_FILES])
@pytest.mark.parametrize("amp", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_every_head_under_cuda_autocast_matches_float64_cpu(path, amp):
    """Logits in fp16/bf16 (cos near ±1, s = 64) must still give the float64 loss."""
    cfg = OmegaConf.load(path)
    torch.manual_seed(0)
    head = instantiate(cfg, embedding_size=128, num_classes=1000).train()
    # Some rows nearly on their centre (cos ≈ 1, the margin's edge cases), others random.
    embeddings = torch.randn(64, 128)
    labels = torch.randint(0, 1000, (64,))
    weight = getattr(head, "weight", None)
    if weight is not None and weight.shape == (1000, 128):
        with torch.no_grad():
            close = F.normalize(weight[labels[:16]]) + 1e-3 * torch.randn(16, 128)
            embeddings[:16] = 7.0 * close
    ref_head = copy.deepcopy(head).double()
    ref = F.cross_entropy(ref_head(embeddings.double(), labels), labels)
    gpu_head = copy.deepcopy(head).to(CUDA)
    with torch.autocast("cuda", dtype=amp):
        logits = gpu_head(embeddings.to(CUDA), labels.to(CUDA))
    loss = F.cross_entropy(logits.float(), labels.to(CUDA))
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss.double().cpu(), ref, rtol=3e-2, atol=1e-2)


def test_auto_switches_pick_bf16_and_compile_on_cuda():
    assert resolve_amp("auto", CUDA) == (
        "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "none"
    )
    assert resolve_compile("auto", CUDA) is True
    assert resolve_amp("fp16", CUDA) == "fp16" and resolve_compile(False, CUDA) is False


def test_train_cli_runs_on_cuda_with_the_default_switches(tmp_path):
    """train.py on the GPU with amp/compile left at auto: runs, logs them, writes a checkpoint."""
    rng = np.random.default_rng(0)
    for person in range(4):
        folder = tmp_path / "data" / f"id{person}"
        folder.mkdir(parents=True)
        for i in range(8):
            image = rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)
            cv2.imwrite(str(folder / f"{i}.jpg"), image)
    out = tmp_path / "out"
    args = [
        "data=folder", f"data.root={tmp_path / 'data'}", "data.batch_size=8",
        "data.num_workers=2", "~data.val", "backbone=mobilefacenet", f"paths.output_dir={out}",
        "name=gpu", "trainer.device=cuda", "trainer.progress=false", "trainer.max_steps=6",
        "trainer.log_every=1", "trainer.eval_every=0",
    ]  # fmt: skip
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    logged = result.stdout + result.stderr
    expected_amp = "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "none"
    assert f"amp {expected_amp}, compile on" in logged, logged[-3000:]
    (run_dir,) = (out / "gpu").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["step"] == 6 and metrics["skipped_steps"] == 0, metrics
    assert (run_dir / "checkpoints" / "last.pt").exists()
