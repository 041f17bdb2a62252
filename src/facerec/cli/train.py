"""The training app: ``facerec train <overrides>``, ``python train.py <overrides>``.

The config is composed by Hydra from the package's own ``configs/`` (``pkg://facerec/configs``,
so an installed wheel trains from any folder); ``--config-dir DIR`` or
``hydra.searchpath=[file://DIR]`` adds a user's folder whose files override or add choices::

    facerec train head=arcface backbone=resnet50 head.s=32 head.m=0.4
    facerec train experiment=demo                        # the README's CPU demo
    facerec train --config-dir my_configs head=my_head   # my_configs/head/my_head.yaml
    torchrun --nproc_per_node=8 train.py data=folder data.root=/data/casia
    facerec train trainer.resume=auto                    # continue the latest run
    facerec train --cfg job                              # print the composed config
    facerec train -m head=arcface,cosface seed=1,2       # a sweep: 4 runs (docs/studies.md)
    facerec train -m hydra/launcher=joblib hydra.launcher.n_jobs=2 head=arcface,cosface

In a sweep (``-m``), each job trains in ``<hydra.sweep.dir>/<job number>/<name>/<timestamp>``
and keeps its overrides in ``<job>/.hydra/``; with a parallel launcher each job runs torch on
its share of the cores (cores // ``hydra.launcher.n_jobs``).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Sequence

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig

from facerec.cli.errors import UsageError, report
from facerec.cli.overrides import check_overrides, is_multirun, overrides_of

__all__ = ["main", "train_status"]

INTERRUPTED = 128 + signal.SIGINT  # 130, the shell's status for Ctrl-C


@hydra.main(version_base="1.3", config_path="pkg://facerec.configs", config_name="train")
def _train(cfg: DictConfig) -> None:
    # Imported after Hydra parsed the CLI, so `--help` stays fast.
    from facerec.training.run import run

    sweep_job(cfg)
    status = train_status(run, cfg)
    if status:
        sys.exit(status)


def train_status(run: Callable[[DictConfig], object], cfg: DictConfig) -> int:
    """Run ``run(cfg)`` and turn how it ended into the exit status, with one line on stderr.

    0: trained. 2: a user's mistake (config, data, checkpoint, full disk), one line. After a
    preemption signal or Ctrl-C, once the checkpoint is written: ``trainer.preempt_exit_code``
    (143, a status schedulers requeue on) or 130. A second Ctrl-C (or one before training
    started): 130 at once, nothing written since the last checkpoint.
    """
    from facerec.training.engine import NonFiniteError
    from facerec.training.run import Preempted

    try:
        run(cfg)
    except Preempted as stop:
        print(f"facerec: {stop}", file=sys.stderr)
        return stop.exit_code  # resume=auto continues
    except KeyboardInterrupt:
        print(
            "facerec: interrupted: stopped at once, without a checkpoint of the steps since the"
            " last one (trainer.resume=auto continues from the last one written, if any)",
            file=sys.stderr,
        )
        return INTERRUPTED
    except (UsageError, OSError, ValueError, InstantiationException,
            NonFiniteError) as error:  # fmt: skip
        return report(error)
    return 0


def threads_per_job(n_jobs: int | None, cores: int) -> int | None:
    """Torch threads for one of ``n_jobs`` parallel jobs on ``cores`` cores (None: leave as is).

    ``n_jobs`` counts as joblib counts: -1 all cores, -2 all but one, ... so each parallel job
    gets an equal share and the jobs together do not oversubscribe the machine.
    """
    if not n_jobs:
        return None  # a sequential launcher: one job at a time has every core
    parallel = n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)
    return max(1, cores // parallel)


def platform_start_method() -> None:
    """Give this process the platform's default start method if a launcher replaced it.

    The joblib launcher runs each job in a loky worker, whose default start method is loky's
    own; DataLoader workers started with it fail ("'Process' object has no attribute 'env'"),
    so every parallel sweep with ``data.num_workers > 0`` stopped at its first batch.
    """
    method = multiprocessing.get_start_method(allow_none=True)
    if method is not None and method not in multiprocessing.get_all_start_methods():
        multiprocessing.set_start_method(multiprocessing.get_all_start_methods()[0], force=True)


def sweep_job(cfg: DictConfig) -> None:
    """A job of a sweep trains under its own job folder, on its share of the cores.

    Every job of a sweep resolves the same ``paths.output_dir``: runs started in the same second
    (parallel launchers) would race for one ``<name>/<timestamp>`` folder. The job's own folder
    (``hydra.sweep.dir/hydra.sweep.subdir``) is its output root instead, which also lets
    ``trainer.resume=auto`` with the same ``hydra.sweep.dir`` continue each job's run.
    """
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return
    cfg.paths.output_dir = hydra_cfg.runtime.output_dir
    platform_start_method()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = threads_per_job(hydra_cfg.launcher.get("n_jobs"), cores or 1)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
        print(f"facerec: sweep job {hydra_cfg.job.num}: {threads} torch threads of {cores} cores",
              file=sys.stderr)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Check the overrides (one readable line for a mistake), then run the Hydra app.

    Args:
        argv: the command line after the program name (default: ``sys.argv[1:]``).

    Returns:
        0 (a run that did not finish exits through :func:`train_status`'s status).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        check_overrides(args)
    except UsageError as error:
        return report(error)
    if is_multirun(args) and not any(
        o.startswith("hydra.output_subdir=") for o in overrides_of(args)
    ):
        # Each job keeps its overrides (.hydra/overrides.yaml) for `facerec compare` and people;
        # a single run writes none (its folder is the working directory).
        args.append("hydra.output_subdir=.hydra")
    # Hydra reads its command line from sys.argv, whoever called.
    sys.argv = [sys.argv[0], *args]
    _train()
    return 0
