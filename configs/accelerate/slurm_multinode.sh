#!/bin/bash
# Several machines with SLURM: one task per node, each running `accelerate launch` for that node's GPUs.
#   sbatch --nodes 2 configs/accelerate/slurm_multinode.sh dpo.py --config configs/paper/dpo.yaml
# The run folders (runs/, generations/) must be on a filesystem every node sees: the main process (node 0, GPU 0)
# writes them, and every process reads them (which checkpoint to resume from, whether a run is finished).
# Rerunning the same sbatch line after a pre-emption or a time limit resumes where the runs stopped.
#SBATCH --job-name=dpo
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --exclusive
#SBATCH --output=%x-%j.out
set -euo pipefail
: "${ACCELERATE_CONFIG:=configs/accelerate/zero3.yaml}"   # or ddp.yaml, zero2.yaml, fsdp.yaml
export ACCELERATE_CONFIG GPUS_PER_NODE=${SLURM_GPUS_ON_NODE:-8}
export MAIN_HOST=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
# One `accelerate launch` per node; $SLURM_NODEID is that node's rank. The script and its arguments pass through.
srun --kill-on-bad-exit=1 bash -c 'accelerate launch --config_file "$ACCELERATE_CONFIG" \
    --num_machines "$SLURM_NNODES" --num_processes $((SLURM_NNODES * GPUS_PER_NODE)) \
    --machine_rank "$SLURM_NODEID" --main_process_ip "$MAIN_HOST" --main_process_port 29500 "$@"' _ "$@"
