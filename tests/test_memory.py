"""Resident memory of CPU training: the heap pages the allocator setting keeps are handed back
before verification (docs/performance.md, "Peak memory of the demo")."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from facerec.backbones.mobilefacenet import MobileFaceNet
from facerec.backbones.recompute import recomputes, run_chain
from facerec.training import outputs

SRC = Path(__file__).resolve().parents[1] / "src"

# A fresh process (the allocator's state is per process): 256 MB in 8 MB blocks, written, freed
# below a small live block; VmRSS (the kernel's count) after the free and after the release.
HEAP_SCRIPT = textwrap.dedent(
    """
    import ctypes, sys
    from facerec.training.malloc import keep_freed_memory, release_freed_memory

    def rss_mb():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    assert keep_freed_memory(True)
    size = 8 << 20
    blocks = [libc.malloc(size) for _ in range(32)]
    pin = libc.malloc(4096)  # live above the blocks, as the model's tensors are
    for block in blocks:
        libc.memset(block, 1, size)
    start = rss_mb()
    for block in blocks:
        libc.free(block)
    kept = rss_mb()
    released = release_freed_memory()
    print(start, kept, rss_mb(), released)
    """
)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux's /proc")
def test_release_freed_memory_returns_the_heap_pages_training_keeps():
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    out = subprocess.run([sys.executable, "-c", HEAP_SCRIPT], env=env, capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    if "AssertionError" in out.stderr:
        pytest.skip("not glibc: no mallopt")
    assert out.returncode == 0, out.stderr
    start, kept, after, released = out.stdout.split()
    start, kept, after = float(start), float(kept), float(after)
    assert kept > start - 32, "the setting keeps freed blocks resident (the cause measured)"
    assert released == "True"
    assert kept - after > 200, f"released only {kept - after:.0f} of 256 MB"


def test_verification_starts_on_a_released_heap(monkeypatch):
    """The training heap's free pages go back before the first verification forward pass."""
    calls: list[str] = []
    monkeypatch.setattr(outputs, "release_freed_memory", lambda: calls.append("release"))

    class Verifier:
        def evaluate(self, model, device, **kwargs):
            calls.append("verify")
            return SimpleNamespace(summary=dict, accuracy=0.5)

    report = SimpleNamespace(pause=lambda: None, resume=lambda: None,
                             verification=lambda *args: None)  # fmt: skip
    t = SimpleNamespace(report=report, env=SimpleNamespace(is_main=True, device="cpu"),
                        verifiers={"v": Verifier(), "w": Verifier()},
                        recognizer=SimpleNamespace(model=None),
                        average=SimpleNamespace(model=lambda raw: raw),
                        loop=SimpleNamespace(amp_dtype=None, channels_last=False, progress=False,
                                             best_metric="none"),
                        state=SimpleNamespace(results={}, step=1, best=0.0))  # fmt: skip
    outputs.evaluate(t)
    assert calls == ["release", "verify", "verify"]


def test_a_verification_pass_is_no_bigger_than_a_demo_training_batch(compose_train):
    """Each image goes through with its mirror: 2 x eval_batch_size images per forward pass.
    At 256 (512 images) the CPU verification needed about 2 GB beside the training heap."""
    cfg = compose_train("experiment=demo")
    assert 2 * cfg.trainer.eval_batch_size <= cfg.data.batch_size


def test_chunked_verification_embeds_as_one_pass():
    """The smaller verification batches give the embeddings of one big pass (the numbers of a
    run do not depend on trainer.eval_batch_size)."""
    import torch

    from facerec.backbones import MobileFaceNet
    from facerec.model import embed_batches

    torch.manual_seed(0)
    model = MobileFaceNet(num_features=32).to(memory_format=torch.channels_last)
    with torch.no_grad():  # running statistics that are not the initial ones
        model.train()(torch.randn(8, 3, 112, 112))
    model.eval()
    images, cpu = torch.randn(24, 3, 112, 112), torch.device("cpu")
    one_pass = embed_batches(model, images, cpu, 24, True, None, True)
    chunked = embed_batches(model, images, cpu, 8, True, None, True)
    for whole, parts in zip(one_pass, chunked, strict=True):
        torch.testing.assert_close(torch.from_numpy(parts), torch.from_numpy(whole), rtol=0,
                                   atol=1e-5)  # fmt: skip


# --- Recomputed BN + PReLU (facerec.backbones.recompute): the demo's activation memory ---


def _twin_mobilefacenets(dtype: torch.dtype = torch.float32):
    """The same MobileFaceNet twice: memory-efficient, and the plain module chain."""
    torch.manual_seed(0)
    chained = MobileFaceNet(num_features=64, memory_efficient=True).to(dtype)
    for m in chained.modules():  # BN weights away from 1 / 0 so a wrong BN backward shows
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.5, 0.5)
        if isinstance(m, nn.PReLU):
            nn.init.uniform_(m.weight, -0.3, 0.6)  # negative slopes too
    plain = copy.deepcopy(chained)
    for m in plain.modules():
        if hasattr(m, "memory_efficient"):
            m.memory_efficient = False
    return chained, plain


def _saved_bytes(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``model(x)`` and the bytes autograd keeps for its backward pass."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        return model(x), total


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_memory_efficient_training_gives_the_plain_chains_outputs_and_gradients_bit_for_bit(
    layout: torch.memory_format,
):
    chained, plain = _twin_mobilefacenets()
    chained, plain = chained.to(memory_format=layout), plain.to(memory_format=layout)
    x = torch.randn(4, 3, 112, 112).contiguous(memory_format=layout)
    y_chained, kept_chained = _saved_bytes(chained, x)
    y_plain, kept_plain = _saved_bytes(plain, x)
    grad = torch.randn_like(y_plain)
    y_chained.backward(grad)
    y_plain.backward(grad)
    assert torch.equal(y_chained, y_plain)
    for (name, p), q in zip(chained.named_parameters(), plain.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad), name
    for (name, b), c in zip(chained.named_buffers(), plain.buffers(), strict=True):
        assert torch.equal(b, c), name  # running statistics updated once, as the plain BN does
    # What the change is for: one kept tensor per layer where the plain chain keeps three.
    assert kept_chained < 0.5 * kept_plain, (kept_chained, kept_plain)


def test_a_batchnorm_frozen_inside_a_training_model_keeps_its_running_statistics_gradients():
    """A BN put in eval mode on its own uses its running statistics: not recomputable from
    the batch's, so its layer runs as it is; the gradients stay the plain chain's."""
    chained, plain = _twin_mobilefacenets()
    for model in (chained, plain):
        model.features[3].block[0][1].eval()
    x = torch.randn(2, 3, 112, 112)
    y_chained, y_plain = chained(x), plain(x)
    y_chained.sum().backward()
    y_plain.sum().backward()
    assert torch.equal(y_chained, y_plain)
    for (name, p), q in zip(chained.named_parameters(), plain.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad), name


def test_the_recomputing_layer_passes_a_finite_difference_gradient_check():
    """float64 central differences, independent of autograd's own BN and PReLU backward."""
    torch.manual_seed(1)
    units = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 6, 1, bias=False), nn.BatchNorm2d(6), nn.PReLU(6)),
        nn.Sequential(nn.Conv2d(6, 6, 3, padding=1, stride=2, groups=6, bias=False),
                      nn.BatchNorm2d(6), nn.PReLU(6)),
        nn.Sequential(nn.Conv2d(6, 4, 1, bias=False), nn.BatchNorm2d(4)),
    ).double()  # fmt: skip
    for m in units.modules():
        if isinstance(m, nn.PReLU):
            nn.init.uniform_(m.weight, -0.5, 0.5)
    params = [p for p in units.parameters()]
    x = torch.randn(3, 3, 6, 6, dtype=torch.float64, requires_grad=True)

    def chain(x: torch.Tensor, *_: torch.Tensor) -> torch.Tensor:
        return run_chain(units, x)

    assert torch.autograd.gradcheck(chain, (x, *params), eps=1e-6, atol=1e-5)


def test_inference_autocast_and_eval_take_the_plain_path():
    chained, plain = _twin_mobilefacenets()
    x = torch.randn(2, 3, 112, 112)
    for model in (chained, plain):
        model.eval()
    with torch.no_grad():
        assert torch.equal(chained(x), plain(x))
    chained.train()
    assert recomputes(chained, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not recomputes(chained, x)
    with torch.no_grad():
        assert not recomputes(chained, x)
