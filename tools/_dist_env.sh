# The torchrun call shared by tools/dist_train.sh and tools/dist_test.sh (sourced, not run).
#
#   dist_run GPUS SCRIPT [ARGS...]
# runs tools/SCRIPT ARGS... in GPUS processes per node with torch.distributed.run, with the
# repository root on PYTHONPATH. Environment (defaults): NNODES (1), NODE_RANK (0),
# MASTER_ADDR (127.0.0.1), PORT (29500), PYTHON (the repository's .venv/bin/python when it
# exists, else python; the Makefile and tools/demo.sh read PY, default
# $MMVSSM_VENV/bin/python, else .venv/bin/python; with another MMVSSM_VENV set PYTHON too).

# The repository's tools/ folder, symlinks resolved (tools/ reached through a symlink: its
# lexical ../.venv is another folder's).
dist_tools() {
    (cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
}

dist_python() {
    local venv
    venv="$(dist_tools)/../.venv/bin/python"
    if [ -n "${PYTHON:-}" ]; then
        echo "$PYTHON"
    elif [ -x "$venv" ]; then
        echo "$venv"
    else
        echo python
    fi
}

dist_run() {
    local gpus=$1 script=$2 tools python
    shift 2
    case "$gpus" in  # torchrun's own answer to 0 is a bare AssertionError
        '' | *[!0-9]* | 0*)
            echo "GPUS must be a positive number of processes per node, got '$gpus'" >&2
            return 2 ;;
    esac
    tools=$(dist_tools)
    python=$(dist_python)
    PYTHONPATH="$tools/..":$PYTHONPATH \
    "$python" -m torch.distributed.run \
        --nnodes="${NNODES:-1}" \
        --node_rank="${NODE_RANK:-0}" \
        --master_addr="${MASTER_ADDR:-127.0.0.1}" \
        --nproc_per_node="$gpus" \
        --master_port="${PORT:-29500}" \
        "$tools/$script" "$@"
}
