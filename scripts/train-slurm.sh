#!/usr/bin/env bash
# A data-parallel dsv3c training job under SLURM, one task per rank on the CPUs of its nodes: each
# task reads its rank from SLURM_PROCID / SLURM_NTASKS, the ranks meet at the first host of
# SLURM_NODELIST on MASTER_PORT (default 29500) over TCP, and rank 0 writes metrics and checkpoints
# (to a folder every node sees). The recipe's parallel.dp must equal the task count.
#   sbatch --nodes=1 --ntasks-per-node=2 scripts/train-slurm.sh configs/tiny-dp2.yaml [dsv3c train flags...]
# SLURM's TERM two minutes before the time limit (the --signal below) reaches every task; the ranks
# agree to stop after the same step, rank 0 checkpoints, and the job exits 75: resubmit with --resume.
#SBATCH --job-name=dsv3c-train
#SBATCH --signal=TERM@120
#SBATCH --output=dsv3c-%j.log
set -euo pipefail
CONFIG=${1:-configs/tiny-dp2.yaml}
shift || true
DSV3C=${DSV3C:-./target/release/dsv3c}
export MASTER_PORT=${MASTER_PORT:-29500}
# --kill-on-bad-exit: a rank that fails ends its job step at once (the others would stop at their next
# collective anyway, naming it).
exec srun --kill-on-bad-exit=1 "$DSV3C" train --config "$CONFIG" --device cpu "$@"
