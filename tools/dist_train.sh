#!/usr/bin/env bash
# Distributed training on one or more nodes with torchrun (torch.distributed.run).
#   tools/dist_train.sh CONFIG GPUS [train.py args...]
# e.g. tools/dist_train.sh configs/det/mask_rcnn_vssm_t_fpn_1x_coco.py 8 --work-dir work_dirs/x
# Multi-node: NNODES=2 NODE_RANK=0|1 MASTER_ADDR=host PORT=29500 on every node.
# Without CUDA, GPUS is the number of CPU processes: tools/train.py uses the gloo backend.
# PYTHON selects the interpreter (default: python).
set -e
if [ $# -lt 2 ]; then
    echo "usage: $0 CONFIG GPUS [train.py args...]" >&2
    exit 2
fi
CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
PYTHON=${PYTHON:-python}

PYTHONPATH="$(dirname "$0")/..":$PYTHONPATH \
"$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$(dirname "$0")/train.py" \
    "$CONFIG" \
    --launcher pytorch "${@:3}"
