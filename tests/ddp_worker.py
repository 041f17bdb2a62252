"""Run by torchrun from test_train.py: train, then save this rank's weights for comparison.

Usage: torchrun --nproc_per_node=2 tests/ddp_worker.py OUT_DIR override [override ...]
"""

import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from facerec import distributed
from facerec.cli import CONFIG_DIR
from facerec.train import fit

if __name__ == "__main__":
    out, overrides = Path(sys.argv[1]), sys.argv[2:]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    env = distributed.init(cfg.trainer.device)
    try:
        _, recognizer = fit(cfg, env)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(recognizer.state_dict(), out / f"rank{env.rank}.pt")
    finally:
        distributed.cleanup()
