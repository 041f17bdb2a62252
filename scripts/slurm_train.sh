#!/usr/bin/env bash
# SLURM: one task per GPU, launched by srun; facerec reads SLURM_PROCID/SLURM_LOCALID/SLURM_NTASKS.
#
#   sbatch --nodes=2 --ntasks-per-node=8 --gpus-per-node=8 --requeue scripts/slurm_train.sh \
#       data=folder data.root=/data/casia trainer.resume=auto
#
# trainer.resume=auto makes a requeued job continue its latest checkpoint.
#SBATCH --job-name=facerec
#SBATCH --signal=B:USR1@120
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export MASTER_ADDR
export MASTER_PORT=${MASTER_PORT:-29500}
export NO_ALBUMENTATIONS_UPDATE=1
srun --kill-on-bad-exit=1 python train.py "$@"
