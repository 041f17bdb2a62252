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
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Sequence

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig

from facerec.cli import UsageError, check_overrides, report

__all__ = ["main", "train_status"]

INTERRUPTED = 128 + signal.SIGINT  # 130, the shell's status for Ctrl-C


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def _train(cfg: DictConfig) -> None:
    # Imported after Hydra parsed the CLI, so `--help` stays fast.
    from facerec.train import run

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
    from facerec.engine import NonFiniteError
    from facerec.train import Preempted

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
    # Hydra reads its command line from sys.argv, whoever called.
    sys.argv = [sys.argv[0], *args]
    _train()
    return 0
