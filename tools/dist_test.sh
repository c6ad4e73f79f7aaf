#!/usr/bin/env bash
# Distributed testing with torchrun (torch.distributed.run).
#   tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args...]
# Multi-node: NNODES, NODE_RANK, MASTER_ADDR, PORT as in dist_train.sh. Without CUDA, GPUS is
# the number of CPU processes (gloo). PYTHON selects the interpreter (default: the
# repository's .venv/bin/python when it exists, else python).
# The torchrun call: tools/_dist_env.sh.
set -e
if [ $# -lt 3 ]; then
    echo "usage: $0 CONFIG CHECKPOINT GPUS [test.py args...]" >&2
    exit 2
fi
source "$(dirname "$0")/_dist_env.sh"
dist_run "$3" test.py "$1" "$2" --launcher pytorch "${@:4}"
