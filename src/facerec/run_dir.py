"""Where a run lives: ``<paths.output_dir>/<name>/<timestamp>``, agreed by every rank, and the
checkpoint a resumed run continues from."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from facerec import checkpoint, distributed

__all__ = ["resolve_run_dir", "target_name"]

log = logging.getLogger("facerec")


def target_name(node: DictConfig) -> str:
    """``facerec.heads.arcface.ArcFace`` -> ``arcface``: a short label for a config choice."""
    return str(node.get("_target_", "x")).rsplit(".", 1)[-1].lower()


def resolve_run_dir(
    cfg: DictConfig, env: distributed.Dist
) -> tuple[Path, tuple[Path, dict[str, Any]] | None]:
    """The run directory (same on every rank) and the checkpoint to resume from, if any."""
    name = cfg.name or f"{target_name(cfg.backbone)}-{target_name(cfg.head)}"
    run_root = Path(cfg.paths.output_dir) / name
    resume = cfg.trainer.resume
    found = None
    if resume == "auto":
        found = checkpoint.load_latest(run_root)
        if found is None:
            log.info("trainer.resume=auto: no checkpoint under %s, starting a new run", run_root)
    elif resume:
        found = Path(resume), checkpoint.load(resume)
    if found is not None:
        return found[0].parent.parent, found
    # One timestamp for all ranks: rank 0's, broadcast (a per-rank ${now:} would give one
    # folder per process).
    run_dir = run_root / time.strftime("%Y%m%d-%H%M%S")
    suffix = 1
    while env.is_main and run_dir.exists():  # two runs started in the same second
        run_dir = run_dir.with_name(f"{run_dir.name.split('+')[0]}+{suffix}")
        suffix += 1
    return Path(distributed.broadcast(str(run_dir))), None
