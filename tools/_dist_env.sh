# The torchrun call shared by tools/dist_train.sh and tools/dist_test.sh (sourced, not run).
#
#   dist_run GPUS SCRIPT [ARGS...]
# runs tools/SCRIPT ARGS... in GPUS processes per node with torch.distributed.run, with the
# repository root on PYTHONPATH. Environment (defaults): NNODES (1), NODE_RANK (0),
# MASTER_ADDR (127.0.0.1), PORT (29500), PYTHON (python).
dist_run() {
    local gpus=$1 script=$2 tools
    shift 2
    tools=$(dirname "${BASH_SOURCE[0]}")
    PYTHONPATH="$tools/..":$PYTHONPATH \
    "${PYTHON:-python}" -m torch.distributed.run \
        --nnodes="${NNODES:-1}" \
        --node_rank="${NODE_RANK:-0}" \
        --master_addr="${MASTER_ADDR:-127.0.0.1}" \
        --nproc_per_node="$gpus" \
        --master_port="${PORT:-29500}" \
        "$tools/$script" "$@"
}
