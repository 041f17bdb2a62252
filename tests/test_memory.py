"""Resident memory of CPU training: the heap pages the allocator setting keeps are handed back
before verification (docs/performance.md, "Peak memory of the demo")."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

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
