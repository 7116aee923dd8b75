#!/usr/bin/env bash
# Submit an rlvr training run to a running Ray cluster with `ray job submit`.
#
#   launch/submit_job.sh --output-dir /shared/runs [--address http://HEAD:8265] [--name NAME]
#                        [--no-wait] [--dry-run] RECIPE [section.key=value ...]
#
# The project directory is uploaded as the job's working directory (runs/, virtualenvs and
# .git left out) and the driver runs `python -m rlvr.cli train` from it on the head node. The
# working directory is temporary, so checkpoints go to --output-dir, which every node must see.
# With --name the run can be resubmitted after a failure or preemption and continues from its
# newest checkpoint (trainer.resume=auto). --dry-run prints the command instead of running it.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
address="${RAY_DASHBOARD_ADDRESS:-http://127.0.0.1:8265}"
output_dir=""
name=""
dry_run=0
wait_flag=()

while [[ $# -gt 0 ]]; do
    case "$1" in
        --address) address="$2"; shift 2 ;;
        --output-dir) output_dir="$2"; shift 2 ;;
        --name) name="$2"; shift 2 ;;
        --no-wait) wait_flag=(--no-wait); shift ;;
        --dry-run) dry_run=1; shift ;;
        -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        --*) echo "submit_job.sh: unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done
[[ $# -ge 1 ]] || { echo "submit_job.sh: a recipe is required (see --help)" >&2; exit 2; }
[[ -n "$output_dir" ]] || { echo "submit_job.sh: --output-dir (on a shared filesystem) is required" >&2; exit 2; }
recipe="$1"
shift

overrides=("trainer.output_dir=$output_dir")
if [[ -n "$name" ]]; then
    overrides+=("trainer.name=$name" trainer.resume=auto)
fi
runtime_env='{"excludes": ["runs/", ".venv*/", ".git/", ".whl/", "__pycache__/"]}'
cmd=(ray job submit --address "$address" --working-dir "$root" --runtime-env-json "$runtime_env"
     "${wait_flag[@]}" -- python -m rlvr.cli train "$recipe" "${overrides[@]}" "$@")

printf '+'
printf ' %q' "${cmd[@]}"
printf '\n'
if [[ "$dry_run" == 0 ]]; then
    exec "${cmd[@]}"
fi
