#!/usr/bin/env bash
# Distributed training on one or more nodes with torchrun (torch.distributed.run).
#   tools/dist_train.sh CONFIG GPUS [train.py args...]
# e.g. tools/dist_train.sh configs/det/mask_rcnn_vssm_t_fpn_1x_coco.py 8 --work-dir work_dirs/x
# Multi-node: NNODES=2 NODE_RANK=0|1 MASTER_ADDR=host PORT=29500 on every node.
# Without CUDA, GPUS is the number of CPU processes: tools/train.py uses the gloo backend.
# PYTHON selects the interpreter (default: the repository's .venv/bin/python when it exists,
# else python). The torchrun call: tools/_dist_env.sh.
set -e
if [ $# -lt 2 ]; then
    echo "usage: $0 CONFIG GPUS [train.py args...]" >&2
    exit 2
fi
source "$(dirname "$0")/_dist_env.sh"
dist_run "$2" train.py "$1" --launcher pytorch "${@:3}"
