"""Run by torchrun from test_train.py: train, then save this rank's weights for comparison.

Usage: torchrun --nproc_per_node=2 tests/ddp_worker.py OUT_DIR override [override ...]
"""

import sys
from pathlib import Path

import torch
from conftest import compose_train  # this script's folder is first on sys.path

from facerec import distributed
from facerec.training.run import fit

if __name__ == "__main__":
    out, overrides = Path(sys.argv[1]), sys.argv[2:]
    cfg = compose_train(*overrides)
    with distributed.process_group(cfg.trainer.device) as env:
        _, recognizer = fit(cfg, env)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(recognizer.state_dict(), out / f"rank{env.rank}.pt")
