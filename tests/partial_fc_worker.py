"""Run by torchrun from test_partial_fc.py: Partial FC on 2 gloo ranks, results saved per rank.

Usage: torchrun --nproc_per_node=2 tests/partial_fc_worker.py OUT_DIR

The cases (heads, sizes, batches, initial weights and states) are defined here and imported by
the test, which recomputes each one with the plain, unsharded head on the concatenated batch.
Everything is float64 so the comparison can be tight (1e-6 asks for far less than float64
gives; the differences are summation order only).
"""

from __future__ import annotations

import sys
import zlib
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from facerec import distributed
from facerec.configs import CONFIG_DIR
from facerec.criteria.partial_fc import PartialFC, class_shard

HEAD_DIR = CONFIG_DIR / "head"
WORLD = 2
D_IN, D = 5, 6

# r = 1: every head that can be sharded (AdaCos cannot), C = 7 split 4 + 3, two steps so the
# stateful heads' updated state is used by the second one.
EXACT_HEADS = sorted(p.stem for p in HEAD_DIR.glob("*.yaml") if p.stem != "adacos")
EXACT_C = 7
STEPS = 2
# One more r = 1 case with different batch sizes on the two ranks.
UNEVEN = "arcface-uneven"
UNEVEN_SIZES = (5, 3)

# r < 1: C = 41 split 21 + 20; fixed labels so each shard's positives are known: rank 0 owns
# {0, 5}, rank 1 {22, 30, 40} (local 1, 9, 19). With r = 0.3 both shards sample 6 centres
# (negatives fill the rest); with r = 0.1 they sample 2, fewer than rank 1's 3 positives.
SAMPLE_C = 41
SAMPLE_LABELS = [0, 5, 5, 22, 30, 40]
SAMPLE_CASES = {
    "arcface-r0.3": ("arcface", 0.3),
    "subcenter_arcface-r0.3": ("subcenter_arcface", 0.3),
    "softmax-r0.3": ("softmax", 0.3),
    "cosface-r0.1": ("cosface", 0.1),
}
SEED = 7


def head_config(name: str) -> DictConfig:
    return OmegaConf.load(HEAD_DIR / f"{name}.yaml")


def prepare_state(head: nn.Module) -> None:
    """Move stateful heads away from their initial values so their state matters."""
    with torch.no_grad():
        if hasattr(head, "iteration"):  # SphereFace: λ far into its annealing
            head.iteration.fill_(50)
        if hasattr(head, "t"):  # CurricularFace
            head.t.fill_(0.3)
        if hasattr(head, "batch_mean"):  # AdaFace: norms of the test embeddings are ~1 to 5
            head.batch_mean.fill_(2.5)
            head.batch_std.fill_(1.0)


def full_head(name: str, num_classes: int) -> nn.Module:
    """The unsharded head with the case's seeded weights and state, float64."""
    torch.manual_seed(zlib.crc32(name.encode()))
    head = instantiate(head_config(name), embedding_size=D, num_classes=num_classes).double()
    prepare_state(head)
    return head


def shard_of(head: nn.Module, name: str, num_classes: int, rank: int) -> nn.Module:
    """This rank's head: built for its shard, rows copied from the full head, same state."""
    start, count = class_shard(num_classes, rank, WORLD)
    shard = instantiate(head_config(name), embedding_size=D, num_classes=count).double()
    k = head.weight.shape[0] // num_classes  # sub-centres are class-major
    with torch.no_grad():
        shard.weight.copy_(head.weight[start * k : (start + count) * k])
        if hasattr(shard, "bias"):
            shard.bias.copy_(head.bias[start : start + count])
    prepare_state(shard)
    return shard


def model_for(name: str) -> nn.Linear:
    """A linear "backbone", so the test can check the gradient DDP gives the model."""
    torch.manual_seed(zlib.crc32(name.encode()) + 1)
    model = nn.Linear(D_IN, D).double()
    if name == "magface":  # its margin needs ‖x‖ inside [l_a, u_a] = [10, 110]
        with torch.no_grad():
            model.weight.mul_(15.0)
    return model


def batch(name: str, step: int, sizes: tuple[int, ...], num_classes: int):
    """The global batch of a step: inputs ``(B, D_IN)`` and labels ``(B,)``, rank after rank."""
    gen = torch.Generator().manual_seed(zlib.crc32(f"{name}/{step}".encode()))
    inputs = torch.randn(sum(sizes), D_IN, generator=gen, dtype=torch.float64)
    if name in SAMPLE_CASES:
        return inputs, torch.tensor(SAMPLE_LABELS)
    return inputs, torch.randint(num_classes, (sum(sizes),), generator=gen)


def run_case(
    name: str, head_name: str, num_classes: int, sizes: tuple[int, ...], rate: float, rank: int
) -> dict:
    head = full_head(head_name, num_classes)
    pfc = PartialFC(
        shard_of(head, head_name, num_classes, rank),
        num_classes,
        D,
        rate,
        rank=rank,
        world_size=WORLD,
        seed=SEED,
    )
    model = DistributedDataParallel(model_for(head_name))
    start = sum(sizes[:rank])
    steps = []
    for step in range(STEPS if rate == 1.0 else 1):
        inputs, labels = batch(name, step, sizes, num_classes)
        embeddings = model(inputs[start : start + sizes[rank]])
        embeddings.retain_grad()
        loss = pfc(embeddings, labels[start : start + sizes[rank]])
        loss.backward()
        steps.append(
            {
                "loss": loss.detach(),
                "embedding_grad": embeddings.grad,
                "model_grad": [p.grad.clone() for p in model.parameters()],
                "head_grad": {n: p.grad.clone() for n, p in pfc.head.named_parameters()},
                "buffers": {n: b.clone() for n, b in pfc.head.named_buffers()},
                "index": None if pfc.last_index is None else pfc.last_index.clone(),
                "step_after": pfc.step,
            }
        )
        model.zero_grad(set_to_none=True)
        pfc.zero_grad(set_to_none=True)
    return {"steps": steps, "class_start": pfc.class_start, "num_local": pfc.num_local}


if __name__ == "__main__":
    out = Path(sys.argv[1])
    with distributed.process_group("cpu") as env:
        assert env.world_size == WORLD, env
        torch.set_num_threads(1)
        results = {}
        for name in EXACT_HEADS:
            results[name] = run_case(name, name, EXACT_C, (4, 4), 1.0, env.rank)
        results[UNEVEN] = run_case(UNEVEN, "arcface", EXACT_C, UNEVEN_SIZES, 1.0, env.rank)
        for name, (head_name, rate) in SAMPLE_CASES.items():
            results[name] = run_case(name, head_name, SAMPLE_C, (3, 3), rate, env.rank)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(results, out / f"rank{env.rank}.pt")
