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


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> None:
    from facerec.train import run  # after Hydra parsed the CLI: `--help` stays fast

    try:
        run(cfg)
    except (UsageError, FileNotFoundError, ValueError, InstantiationException) as error:
        fail(error)


if __name__ == "__main__":
    try:
        check_overrides(sys.argv[1:])
    except UsageError as error:
        fail(error)
    main()
