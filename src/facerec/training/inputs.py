"""A run's inputs: the data module and its scan, the verifiers, the training loader."""

from __future__ import annotations

import signal
from collections.abc import Callable
from functools import partial
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from facerec import distributed
from facerec.training.validate import check_identities
from facerec.training.verifier import Verifier

__all__ = ["build_data", "ignore_ctrl_c", "train_loader"]


def ignore_ctrl_c(worker_id: int, then: Callable[[int], None] | None = None) -> None:
    """A DataLoader worker's start: ignore SIGINT. Ctrl-C reaches every process of the
    terminal's group; the training process checkpoints at the step boundary and stops the
    workers itself, which must not die under it meanwhile (a forked worker inherits the
    trainer's handler; one started by spawn or forkserver, Python 3.14's default, would not)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if then is not None:
        then(worker_id)


def build_data(cfg: DictConfig, env: distributed.Dist) -> tuple[Any, Any, dict[str, Verifier]]:
    """The data module, its scan (identities checked) and a :class:`Verifier` per validation
    set (checked on rank 0)."""
    tcfg = cfg.trainer
    data = instantiate(cfg.data)
    scan = data.setup()
    check_identities(scan.classes, getattr(data, "source", cfg.data.get("root")))
    verifiers = {
        name: Verifier(s, tcfg.eval_batch_size, data.num_workers, tcfg.eval_fusion)
        for name, s in data.val.items()
    }
    for verifier in verifiers.values() if env.is_main else ():  # rank 0 alone verifies
        verifier.check(show_progress=tcfg.progress)
    return data, scan, verifiers


def train_loader(cfg: DictConfig, env: distributed.Dist, data: Any) -> Any:
    """The training loader of this rank; its workers ignore Ctrl-C (:func:`ignore_ctrl_c`)."""
    loader = data.train_loader(env.rank, env.world_size, cfg.seed, show_progress=env.is_main,
                               sampler=instantiate(cfg.sampler, _partial_=True))  # fmt: skip
    if getattr(loader, "num_workers", 0) > 0:  # Ctrl-C must not kill them under the step
        loader.worker_init_fn = partial(ignore_ctrl_c, then=loader.worker_init_fn)
    return loader
