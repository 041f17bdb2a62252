#!/usr/bin/env bash
# Multi-GPU / multi-node training with torchrun. Run the same command on every node.
#
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=node0 GPUS=8 scripts/torchrun_train.sh data=folder data.root=/data/casia
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=node0 GPUS=8 scripts/torchrun_train.sh data=folder data.root=/data/casia
#
# Single node: GPUS=8 scripts/torchrun_train.sh <overrides>. The rendezvous is c10d on
# MASTER_ADDR:MASTER_PORT; every rank agrees on one run directory (rank 0 picks it).
set -euo pipefail
cd "$(dirname "$0")/.."
NNODES=${NNODES:-1}
GPUS=${GPUS:-$(python -c "import torch; print(max(1, torch.cuda.device_count()))")}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}
RDZV_ID=${RDZV_ID:-facerec-${USER:-job}}
export NO_ALBUMENTATIONS_UPDATE=1
exec torchrun \
  --nnodes="$NNODES" --nproc_per_node="$GPUS" \
  --rdzv_backend=c10d --rdzv_endpoint="$MASTER_ADDR:$MASTER_PORT" --rdzv_id="$RDZV_ID" \
  train.py "$@"
