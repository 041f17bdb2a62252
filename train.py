#!/usr/bin/env python
"""Train a face-recognition model: the same app as ``facerec train`` (:mod:`facerec.cli.train`).

python train.py                                        # defaults: src/facerec/configs/train.yaml
python train.py head=arcface backbone=resnet50 head.s=32 head.m=0.4
python train.py experiment=demo                        # the README's CPU demo
torchrun --nproc_per_node=8 train.py data=folder data.root=/data/casia
python train.py trainer.resume=auto                    # continue the latest run
python train.py --cfg job                              # print the composed config
"""

import sys

from facerec.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
