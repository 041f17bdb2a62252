#!/usr/bin/env python
"""Train a face-recognition model; the config is composed by Hydra from configs/.

python train.py                                        # defaults: configs/train.yaml
python train.py head=arcface backbone=resnet50 head.s=32 head.m=0.4
python train.py experiment=demo                        # the README's CPU demo
torchrun --nproc_per_node=8 train.py data=folder data.root=/data/casia
python train.py trainer.resume=auto                    # continue the latest run
python train.py --cfg job                              # print the composed config
"""

import sys

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig

from facerec.cli import UsageError, check_overrides, fail


@hydra.main(version_base="1.3", config_path="src/facerec/configs", config_name="train")
def main(cfg: DictConfig) -> None:
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


if __name__ == "__main__":
    try:
        check_overrides(sys.argv[1:])
    except UsageError as error:
        fail(error)
    main()
