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

import sys
from collections.abc import Sequence

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig

from facerec.cli import UsageError, check_overrides, fail, report

__all__ = ["main"]


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def _train(cfg: DictConfig) -> None:
    # Imported after Hydra parsed the CLI, so `--help` stays fast.
    from facerec.engine import NonFiniteError
    from facerec.train import Preempted, run

    try:
        run(cfg)
    except Preempted as stop:
        print(f"facerec: {stop}", file=sys.stderr)
        sys.exit(stop.exit_code)  # a status the scheduler requeues on; resume=auto continues
    except (UsageError, OSError, ValueError, InstantiationException,
            NonFiniteError) as error:  # fmt: skip
        fail(error)


def main(argv: Sequence[str] | None = None) -> int:
    """Check the overrides (one readable line for a mistake), then run the Hydra app.

    Args:
        argv: the command line after the program name (default: ``sys.argv[1:]``).

    Returns:
        0 (a failed run exits through :func:`facerec.cli.fail` with status 2).
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
