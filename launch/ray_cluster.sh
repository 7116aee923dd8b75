#!/usr/bin/env bash
# Bring up a Ray cluster for rlvr, one command per node, and wait until it really is up.
#
#   launch/ray_cluster.sh head   [--port 6379] [--expect-gpus N] [--timeout 600] [--block]
#   launch/ray_cluster.sh worker --address HOST:6379 [--block]
#   launch/ray_cluster.sh wait   --address HOST:6379 --expect-gpus N [--timeout 600]
#   launch/ray_cluster.sh stop
# Every form takes --dry-run: print the commands ("+ ..." lines) instead of running them.
#
# `head` starts the head node (dashboard on 8265 for `ray job submit`) and, with --expect-gpus,
# waits for that many GPUs; `worker` joins a head; `wait` blocks until the cluster reports the
# expected GPUs (launch/wait_for_gpus.py polls ray.cluster_resources(), the cluster's real
# state) or fails after --timeout with what is missing. Nothing here synchronises by sleeping.
# The project must already be installed on every node (same path or same venv): this script
# installs nothing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python}"
ray_bin="${RAY:-ray}"
dry_run=0
port=6379
address=""
expect_gpus=""
timeout=600
block=0

usage() { sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2; }

run() {
    # Print, then run unless --dry-run. Arguments stay separate words (no eval).
    printf '+'
    printf ' %q' "$@"
    printf '\n'
    if [[ "$dry_run" == 0 ]]; then
        "$@"
    fi
}

[[ $# -ge 1 ]] || usage
role="$1"
shift
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dry-run) dry_run=1 ;;
        --port) port="$2"; shift ;;
        --address) address="$2"; shift ;;
        --expect-gpus) expect_gpus="$2"; shift ;;
        --timeout) timeout="$2"; shift ;;
        --block) block=1 ;;
        -h|--help) usage ;;
        *) echo "ray_cluster.sh: unknown argument $1" >&2; usage ;;
    esac
    shift
done

block_flag=()
if [[ "$block" == 1 ]]; then
    block_flag=(--block)
fi

wait_for_gpus() {
    run "$python" "$here/wait_for_gpus.py" --address "$1" --gpus "$expect_gpus" --timeout "$timeout"
}

case "$role" in
    head)
        # --block keeps the process in the foreground (SLURM's srun needs that); waiting then
        # happens from another process, as slurm_train.sbatch does.
        run "$ray_bin" start --head --port="$port" --dashboard-host=0.0.0.0 "${block_flag[@]}"
        if [[ -n "$expect_gpus" && "$block" == 0 ]]; then
            wait_for_gpus "127.0.0.1:$port"
        fi
        ;;
    worker)
        [[ -n "$address" ]] || { echo "ray_cluster.sh worker: --address HOST:PORT is required" >&2; exit 2; }
        run "$ray_bin" start --address="$address" "${block_flag[@]}"
        ;;
    wait)
        [[ -n "$address" && -n "$expect_gpus" ]] || {
            echo "ray_cluster.sh wait: --address and --expect-gpus are required" >&2; exit 2; }
        wait_for_gpus "$address"
        ;;
    stop)
        run "$ray_bin" stop
        ;;
    *)
        echo "ray_cluster.sh: unknown role $role (head, worker, wait, stop)" >&2
        usage
        ;;
esac
