"""Partial FC against the plain head on the concatenated batch: 2 gloo ranks, float64.

The two-rank runs happen once, in tests/partial_fc_worker.py under torchrun (its cases are
imported from there); this file recomputes each case with the unsharded head in one process.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import partial_fc_worker as worker
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from facerec.configs import CONFIG_DIR
from facerec.criteria.collectives import class_shard, clip_grad_norm_
from facerec.criteria.partial_fc import PartialFC
from facerec.heads.arcface import ArcFace

ROOT = Path(__file__).resolve().parents[1]
HEAD_FILES = sorted((CONFIG_DIR / "head").glob("*.yaml"))
TOL = {"rtol": 1e-6, "atol": 1e-6}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    """Every case of the worker, run once on 2 gloo ranks: one result dict per rank."""
    return run_ranks("partial_fc_worker.py", tmp_path_factory.mktemp("partial_fc"))


def run_ranks(script: str, out: Path, world: int = 2) -> list[dict]:
    """``torchrun --nproc_per_node=<world> tests/<script> <out>`` (gloo, one thread per rank);
    each rank's ``out/rank<r>.pt``, loaded."""
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={world}",
               f"--master_port={free_port()}", str(ROOT / "tests" / script), str(out)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt") for r in range(world)]


def reference_step(head: nn.Module, model: nn.Module, inputs, labels) -> dict:
    """One step of the unsharded head on the whole batch: CE (+ regulariser) and gradients."""
    embeddings = model(inputs)
    embeddings.retain_grad()
    ce = F.cross_entropy(head(embeddings, labels), labels)
    regularizer = getattr(head, "regularizer", None)
    loss = ce if regularizer is None else ce + regularizer(embeddings)
    loss.backward()
    result = {
        "ce": ce.detach(),
        "embeddings": embeddings.detach(),
        "embedding_grad": embeddings.grad,
        "model_grad": [p.grad.clone() for p in model.parameters()],
        "head_grad": {n: p.grad.clone() for n, p in head.named_parameters()},
        "buffers": {n: b.clone() for n, b in head.named_buffers()},
    }
    model.zero_grad(set_to_none=True)
    head.zero_grad(set_to_none=True)
    return result


def check_rank_step(got: dict, ref: dict, head: nn.Module, rank: int, sizes, shard) -> None:
    """One rank's step against the reference: same loss, ×W embedding gradient (DDP then
    averages it back), same model gradient after DDP, its rows of the centres' gradient."""
    start = sum(sizes[:rank])
    local = slice(start, start + sizes[rank])
    regularizer = getattr(head, "regularizer", None)
    expected = ref["ce"]
    if regularizer is not None:  # added on the rank's own embeddings
        expected = expected + regularizer(ref["embeddings"][local])
    torch.testing.assert_close(got["loss"], expected, **TOL)
    world = len(sizes)
    torch.testing.assert_close(got["embedding_grad"], world * ref["embedding_grad"][local], **TOL)
    for g, r in zip(got["model_grad"], ref["model_grad"], strict=True):
        torch.testing.assert_close(g, r, **TOL)
    for name, grad in got["head_grad"].items():
        rows = ref["head_grad"][name]
        k = rows.shape[0] // head.num_classes if name == "weight" else 1
        class_start, count = shard
        torch.testing.assert_close(grad, rows[class_start * k : (class_start + count) * k], **TOL)
    for name, value in got["buffers"].items():
        torch.testing.assert_close(value, ref["buffers"][name], **TOL)


# --- two ranks, sample_rate = 1: equal to the plain head -----------------------------------


@pytest.mark.parametrize("name", [*worker.EXACT_HEADS, worker.UNEVEN])
def test_two_ranks_equal_single_process_head(ranks, name: str) -> None:
    head_name = "arcface" if name == worker.UNEVEN else name
    sizes = worker.UNEVEN_SIZES if name == worker.UNEVEN else (4, 4)
    head = worker.full_head(head_name, worker.EXACT_C)
    model = worker.model_for(head_name)
    assert [r[name]["num_local"] for r in ranks] == [4, 3]  # C = 7 does not split evenly
    for step in range(worker.STEPS):
        inputs, labels = worker.batch(name, step, sizes, worker.EXACT_C)
        ref = reference_step(head, model, inputs, labels)
        for rank, result in enumerate(ranks):
            got = result[name]["steps"][step]
            assert got["index"] is None  # r = 1 uses every centre
            shard = (result[name]["class_start"], result[name]["num_local"])
            check_rank_step(got, ref, head, rank, sizes, shard)


def test_stateful_heads_stay_identical_across_ranks(ranks) -> None:
    for name in ("curricularface", "adaface", "sphereface"):
        for step in range(worker.STEPS):
            buffers = [r[name]["steps"][step]["buffers"] for r in ranks]
            assert buffers[0], name
            for key in buffers[0]:
                assert torch.equal(buffers[0][key], buffers[1][key]), (name, key)


# --- two ranks, sample_rate < 1 --------------------------------------------------------------


def shard_labels(labels: torch.Tensor, start: int, count: int) -> torch.Tensor:
    local = labels - start
    return torch.where((local >= 0) & (local < count), local, -1)


@pytest.mark.parametrize("name", list(worker.SAMPLE_CASES))
def test_sampling_keeps_positives_draws_the_right_count_and_matches_reference(ranks, name):
    head_name, rate = worker.SAMPLE_CASES[name]
    labels = torch.tensor(worker.SAMPLE_LABELS)
    chosen = []
    for result in ranks:
        start, count = result[name]["class_start"], result[name]["num_local"]
        index = result[name]["steps"][0]["index"]
        positives = torch.unique(shard_labels(labels, start, count))
        positives = positives[positives >= 0]
        assert torch.isin(positives, index).all()
        assert len(index) == max(max(1, int(rate * count)), len(positives))
        assert torch.equal(index, torch.unique(index))  # sorted, no repeats
        chosen.append(start + index)
    assert [len(r[name]["steps"][0]["index"]) for r in ranks] != [21, 20]  # really sampled
    if rate == 0.1:  # rank 1 has more positives (3) than its sample size (2)
        assert len(ranks[1][name]["steps"][0]["index"]) == 3

    # Reference: the plain head over exactly the sampled classes of both ranks.
    ids = torch.cat(chosen)
    full = worker.full_head(head_name, worker.SAMPLE_C)
    cfg = worker.head_config(head_name)
    ref_head = instantiate(cfg, embedding_size=worker.D, num_classes=len(ids)).double()
    k = full.weight.shape[0] // worker.SAMPLE_C
    rows = (ids.unsqueeze(1) * k + torch.arange(k)).flatten()
    with torch.no_grad():
        ref_head.weight.copy_(full.weight[rows])
        if hasattr(ref_head, "bias"):
            ref_head.bias.copy_(full.bias[ids])
    worker.prepare_state(ref_head)
    model = worker.model_for(head_name)
    inputs, _ = worker.batch(name, 0, (3, 3), worker.SAMPLE_C)
    ref = reference_step(ref_head, model, inputs, torch.searchsorted(ids, labels))
    for rank, result in enumerate(ranks):
        got = result[name]["steps"][0]
        start, count = result[name]["class_start"], result[name]["num_local"]
        local = slice(sum(len(c) for c in chosen[:rank]), sum(len(c) for c in chosen[: rank + 1]))
        torch.testing.assert_close(got["loss"], ref["ce"], **TOL)
        torch.testing.assert_close(
            got["embedding_grad"], 2 * ref["embedding_grad"][3 * rank : 3 * rank + 3], **TOL
        )
        for g, r in zip(got["model_grad"], ref["model_grad"], strict=True):
            torch.testing.assert_close(g, r, **TOL)
        # The full shard's gradient: the sampled rows' reference gradient, zero elsewhere.
        index = got["index"]
        expected = torch.zeros_like(got["head_grad"]["weight"])
        shard_rows = (index.unsqueeze(1) * k + torch.arange(k)).flatten()
        expected[shard_rows] = ref["head_grad"]["weight"][local.start * k : local.stop * k]
        torch.testing.assert_close(got["head_grad"]["weight"], expected, **TOL)
        if "bias" in got["head_grad"]:
            expected = torch.zeros_like(got["head_grad"]["bias"])
            expected[index] = ref["head_grad"]["bias"][local]
            torch.testing.assert_close(got["head_grad"]["bias"], expected, **TOL)
        assert got["step_after"] == 1
        assert count == class_shard(worker.SAMPLE_C, rank, worker.WORLD)[1]


def test_sampling_is_deterministic_across_processes(ranks) -> None:
    """The worker's draw is reproduced here, in another process, from (seed, step, rank)."""
    name = "arcface-r0.3"
    labels = torch.tensor(worker.SAMPLE_LABELS)
    for rank, result in enumerate(ranks):
        start, count = class_shard(worker.SAMPLE_C, rank, worker.WORLD)
        head = instantiate(
            worker.head_config("arcface"), embedding_size=worker.D, num_classes=count
        )
        pfc = PartialFC(
            head, worker.SAMPLE_C, worker.D, 0.3, rank=rank, world_size=2, seed=worker.SEED
        )
        local = shard_labels(labels, start, count)
        assert torch.equal(pfc.sample(local), result[name]["steps"][0]["index"])
        pfc.step = 1  # the next step draws other negatives, the same positives
        later = pfc.sample(local)
        assert not torch.equal(later, result[name]["steps"][0]["index"])
        assert torch.isin(local[local >= 0], later).all()


# --- one process ------------------------------------------------------------------------------


def head_from(path: Path, num_classes: int, dim: int = 8) -> nn.Module:
    torch.manual_seed(0)
    return instantiate(OmegaConf.load(path), embedding_size=dim, num_classes=num_classes).double()


@pytest.mark.parametrize("path", HEAD_FILES, ids=[p.stem for p in HEAD_FILES])
def test_single_process_is_plain_cross_entropy(path: Path) -> None:
    head = head_from(path, 11)
    ref = copy.deepcopy(head)
    pfc = PartialFC(head, 11, 8)
    gen = torch.Generator().manual_seed(1)
    for _ in range(2):  # the second step sees the state the first one left
        x = torch.randn(10, 8, generator=gen, dtype=torch.float64, requires_grad=True)
        y = torch.randint(11, (10,), generator=gen)
        x_ref = x.detach().clone().requires_grad_()
        loss = pfc(x, y)
        expected = F.cross_entropy(ref(x_ref, y), y)
        if hasattr(ref, "regularizer"):
            expected = expected + ref.regularizer(x_ref)
        loss.backward()
        expected.backward()
        torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(head.weight.grad, ref.weight.grad, rtol=1e-10, atol=1e-12)
        for (name, a), b in zip(head.named_buffers(), ref.buffers(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=name)
        head.zero_grad()
        ref.zero_grad()


def test_single_process_sampling_count_determinism_and_resume() -> None:
    path = CONFIG_DIR / "head" / "arcface.yaml"
    labels = torch.tensor([3, 3, 17, 40, 41, 49])
    make = lambda seed: PartialFC(head_from(path, 50), 50, 8, 0.2, seed=seed)  # noqa: E731
    a, b, other = make(5), make(5), make(6)
    x = torch.randn(6, 8, dtype=torch.float64)
    a(x, labels)
    b(x, labels)
    other(x, labels)
    assert len(a.last_index) == 10  # int(0.2 · 50)
    assert torch.isin(labels, a.last_index).all()
    assert torch.equal(a.last_index, b.last_index)
    assert not torch.equal(a.last_index, other.last_index)
    # The step is in the state_dict: a resumed copy draws what the original draws next.
    resumed = make(5)
    resumed.load_state_dict(a.state_dict())
    assert resumed.step == 1
    a(x, labels)
    resumed(x, labels)
    assert torch.equal(a.last_index, resumed.last_index)
    # Loss over the sample = plain CE of the head restricted to the sampled classes.
    loss = a(x, labels)
    ids = a.last_index
    ref = ArcFace(8, len(ids)).double()
    with torch.no_grad():
        ref.weight.copy_(a.head.weight[ids])
    positions = torch.searchsorted(ids, labels)
    torch.testing.assert_close(loss, F.cross_entropy(ref(x, positions), positions))
    # eval(): every centre, no draw, the step does not advance.
    step = a.step
    a.eval()
    a(x, labels)
    assert a.last_index is None and a.step == step


@pytest.mark.parametrize("name", ["softmax", "arcface"])
def test_bf16_embeddings_under_autocast_give_a_float32_loss(name: str) -> None:
    path = CONFIG_DIR / "head" / f"{name}.yaml"
    head = instantiate(OmegaConf.load(path), embedding_size=8, num_classes=20)
    pfc = PartialFC(head, 20, 8, 0.5)
    x = torch.randn(6, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = pfc(x.to(torch.bfloat16), torch.arange(6))
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert torch.isfinite(x.grad).all() and torch.isfinite(head.weight.grad).all()


def test_class_shard_covers_every_class_once() -> None:
    for num_classes, world in [(7, 2), (41, 2), (10, 3), (2_000_000, 8), (9, 9)]:
        blocks = [class_shard(num_classes, r, world) for r in range(world)]
        assert blocks[0][0] == 0
        for (start, count), (after, _) in itertools.pairwise(blocks):
            assert start + count == after
        assert sum(c for _, c in blocks) == num_classes
        assert max(c for _, c in blocks) - min(c for _, c in blocks) <= 1
    with pytest.raises(ValueError, match="num_classes >= world_size"):
        class_shard(3, 0, 4)
    with pytest.raises(ValueError, match="rank"):
        class_shard(10, 2, 2)


def test_rejects_what_cannot_be_sharded() -> None:
    adacos = CONFIG_DIR / "head" / "adacos.yaml"
    with pytest.raises(ValueError, match="AdaCos cannot run under Partial FC"):
        PartialFC(head_from(adacos, 5), 10, 8, rank=0, world_size=2)
    with pytest.raises(ValueError, match="AdaCos"):
        PartialFC(head_from(adacos, 10), 10, 8, sample_rate=0.5)
    arcface = CONFIG_DIR / "head" / "arcface.yaml"
    with pytest.raises(ValueError, match="num_classes=5"):
        PartialFC(head_from(arcface, 10), 10, 8, rank=1, world_size=2)
    with pytest.raises(ValueError, match="sample_rate"):
        PartialFC(head_from(arcface, 10), 10, 8, sample_rate=0.0)
    with pytest.raises(TypeError, match="MarginHead or Softmax"):
        PartialFC(nn.Linear(8, 10), 10, 8)


def test_margin_head_shard_path() -> None:
    """``share_target``: all labels known -> the plain forward; a -1 row gets no margin."""
    head = ArcFace(8, 5).double().train()
    x = torch.randn(4, 8, dtype=torch.float64)
    labels = torch.tensor([0, 3, 4, 1])
    torch.testing.assert_close(head(x, labels, share_target=lambda t: t), head(x, labels))
    shared = torch.tensor([[0.1], [0.2], [0.3], [0.4]], dtype=torch.float64)
    seen = []

    def share(known: torch.Tensor) -> torch.Tensor:
        seen.append(known)
        return torch.where(known != 0, known, shared)

    logits = head(x, torch.tensor([0, -1, 4, -1]), share_target=share)
    plain = head.s * head.cosine(x)
    torch.testing.assert_close(logits[[1, 3]], plain[[1, 3]])  # other shards' rows: s·cos
    torch.testing.assert_close(logits[[0, 2]], head(x, labels)[[0, 2]])
    assert seen[0][1].item() == 0.0 and seen[0][3].item() == 0.0  # unknown rows sent as 0


def test_clip_grad_norm_single_process_matches_torch() -> None:
    model, shard = nn.Linear(4, 3), nn.Linear(3, 2)
    (model(torch.randn(5, 4)).sum() + shard(torch.randn(5, 3)).sum() * 7).backward()
    params = [*model.parameters(), *shard.parameters()]
    twins = [nn.Parameter(p.detach().clone()) for p in params]
    for twin, param in zip(twins, params, strict=True):
        twin.grad = param.grad.clone()
    norm = clip_grad_norm_(model.parameters(), shard.parameters(), max_norm=0.5)
    expected = nn.utils.clip_grad_norm_(twins, 0.5)
    assert expected > 0.5  # so the clipping is exercised
    torch.testing.assert_close(norm, expected)
    for param, twin in zip(params, twins, strict=True):
        torch.testing.assert_close(param.grad, twin.grad)


# --- training benchmark script (scripts/bench_train.py) -------------------------------------


def test_bench_train_tiny_cpu_grid(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    command = [
        sys.executable, str(ROOT / "scripts" / "bench_train.py"), "--device", "cpu",
        "--backbones", "mobilefacenet", "--batch", "4", "--classes", "100", "--steps", "2",
        "--warmup", "1", "--dtype", "fp16", "fp32", "--channels-last", "on", "off",
        "--compile", "off", "--peak-tflops", "0.5", "--json", str(out),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "img/s" in result.stdout and "x base" in result.stdout
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert len(rows) == 4
    baseline = rows[0]  # fp32, channels_last off, compile off comes first
    assert (baseline["dtype"], baseline["channels_last"], baseline["compile"]) == (
        "fp32",
        False,
        False,
    )
    assert baseline["vs_baseline"] == 1.0 and baseline["images_per_sec"] > 0
    macs = report["meta"]["macs_per_image"]["mobilefacenet"]
    for row in rows:
        if row["dtype"] == "fp16":  # no fp16 autocast timing on the CPU
            assert row["images_per_sec"] is None and "skipped" in row["note"]
            continue
        assert row["images_per_sec"] > 0 and row["vs_baseline"] > 0
        expected = row["images_per_sec"] * 6 * macs / 0.5e12
        assert row["mfu"] == pytest.approx(expected)


# --- memory figure --------------------------------------------------------------------------


def run_memory_script(*args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    command = [sys.executable, str(ROOT / "scripts" / "partial_fc_memory.py"), *args]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_memory_script_small() -> None:
    out = run_memory_script("--classes", "20000", "--dim", "64", "--batch", "32", "--steps", "2")
    assert "peak RSS" in out and "weight + grad + momentum" in out


@pytest.mark.slow
@pytest.mark.parametrize(("fused", "bytes_per_element"), [(False, 16), (True, 13)])
def test_memory_two_million_classes_one_rank_of_two(fused: bool, bytes_per_element: int) -> None:
    """C = 2M, D = 512, world 2: one rank's 1M x 512 shard (~6 GB steady, ~8 GB peak).

    Steady state: weight + grad + momentum, 12 bytes per element. Peak: 16 with the default
    SGD, whose weight decay makes one gradient-sized temporary; 12.5 with ``fused=True``. The
    allowance covers the step's sampled rows and ``(B, C_sampled)`` buffers.
    """
    args = ["--classes", "2000000", "--world", "2", "--json", "-"]
    figures = json.loads(run_memory_script(*args, *(["--fused"] if fused else [])).splitlines()[-1])
    elements = figures["elements"]
    assert elements == 1_000_000 * 512
    allowance = 2**29
    assert figures["steady_rss_bytes"] - figures["baseline_rss_bytes"] <= 12 * elements + allowance
    assert figures["peak_increase_bytes"] <= bytes_per_element * elements + allowance
