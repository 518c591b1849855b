#!/usr/bin/env bash
# metalm_jax on several GPU nodes under Slurm: one trainer process per node (it drives all of the
# node's GPUs), started by srun. Submit from the repository root (see docs/launch.md):
#
#   sbatch [--nodes=N --gpus-per-node=G ...] launch/slurm_gpu.sh --config configs/metalm_lm.py \
#       --workdir /shared/runs/metalm_lm [-- --config.train.steps=1000]
#
# sbatch options given on its command line override the #SBATCH lines below; edit those (or add
# --partition, --account, --cpus-per-task, --mem, ...) for your cluster. Check the command first
# with `bash launch/slurm_gpu.sh --dry-run --config ... --workdir ...` (prints the srun command).
#
#SBATCH --job-name=metalm_jax
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --time=24:00:00
#SBATCH --output=%x-%j.out
# SIGTERM 5 minutes before the time limit: the trainer saves a checkpoint and stops; submitting
# the same command again resumes from it.
#SBATCH --signal=TERM@300
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: sbatch [sbatch options] launch/slurm_gpu.sh --config FILE --workdir DIR [options] [-- trainer flags]
       bash launch/slurm_gpu.sh --dry-run --config FILE --workdir DIR [options] [-- trainer flags]

Starts one process per node with srun, each running
  python -m metalm_jax.train --config FILE --workdir DIR --multihost \
      --coordinator_address=FIRST_NODE:PORT --num_processes=$SLURM_NNODES --process_id=$SLURM_PROCID

Options:
  --config FILE     config file, relative to the repository root (required)
  --workdir DIR     run directory on storage all nodes share (required); rerunning resumes from it
  --repo-dir DIR    repository root on the nodes (default: the directory sbatch was run from)
  --python BIN      interpreter (default: REPO_DIR/.venv/bin/python, from README's install
                    command plus: .venv/bin/pip install 'jax[cuda12]==<jax version in setup.cfg>')
  --port PORT       coordinator port on the first node (default: 10000 + job id mod 20000)
  --dry-run         print the srun command instead of running it (outside an allocation it uses
                    the #SBATCH --nodes value and FIRST_NODE as the coordinator host)
  -h, --help        this help

Everything after `--` is passed to the trainer, e.g. -- --config.train.steps=1000
EOF
}

# launch/common.sh (die, quote, x for --dry-run; shared with tpu_vm.sh and gke.sh) is beside this
# file when it is run with bash; sbatch runs a copy of it from Slurm's spool directory, so then it
# is in --repo-dir, or else in the directory sbatch was run from (the repository root).
find_common() {
  local dir prev="" a
  dir=$(dirname "${BASH_SOURCE[0]}")
  if [[ ! -r $dir/common.sh ]]; then
    dir=${SLURM_SUBMIT_DIR:-.}/launch
    for a in "$@"; do
      [[ $a != -- ]] || break
      if [[ $prev == --repo-dir ]]; then dir=$a/launch; fi
      if [[ $a == --repo-dir=* ]]; then dir=${a#*=}/launch; fi
      prev=$a
    done
  fi
  if [[ ! -r $dir/common.sh ]]; then
    echo "slurm_gpu.sh: error: no $dir/common.sh: submit from the repository root or give --repo-dir" >&2
    return 2
  fi
  printf '%s\n' "$dir/common.sh"
}
COMMON=$(find_common "$@") || exit 2
SCRIPT_USAGE="bash launch/slurm_gpu.sh"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$COMMON"

CONFIG="" WORKDIR="" REPO_DIR="" PYTHON="" PORT=""
TRAINER_ARGS=()
while (($#)); do
  opt=$1
  case $opt in
    --*=*) set -- "${opt%%=*}" "${opt#*=}" "${@:2}"; opt=$1 ;;
  esac
  case $opt in
    -h | --help) usage; exit 0 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --config | --workdir | --repo-dir | --python | --port)
      (($# >= 2)) || die "$opt needs a value"
      case $opt in
        --config) CONFIG=$2 ;;
        --workdir) WORKDIR=$2 ;;
        --repo-dir) REPO_DIR=$2 ;;
        --python) PYTHON=$2 ;;
        --port) PORT=$2 ;;
      esac
      shift 2
      ;;
    --) shift; TRAINER_ARGS=("$@"); break ;;
    *) die "unknown argument $opt (trainer flags go after --)" ;;
  esac
done
[[ -n $CONFIG ]] || die "missing --config"
[[ -n $WORKDIR ]] || die "missing --workdir"

# Under sbatch this file runs from Slurm's spool directory, so the repository is where sbatch was
# run; run directly with bash, it is this file's parent directory.
if [[ -z $REPO_DIR ]]; then
  if [[ -n ${SLURM_SUBMIT_DIR:-} ]]; then
    REPO_DIR=$SLURM_SUBMIT_DIR
  else
    REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  fi
fi
PYTHON=${PYTHON:-$REPO_DIR/.venv/bin/python}

if [[ -n ${SLURM_JOB_NODELIST:-} ]]; then
  NNODES=${SLURM_NNODES:?SLURM_NNODES is not set}
  HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
  PORT=${PORT:-$((10000 + ${SLURM_JOB_ID:-0} % 20000))}
elif ((DRY_RUN)); then
  NNODES=$(sed -n 's/^#SBATCH --nodes=\([0-9][0-9]*\).*/\1/p' "${BASH_SOURCE[0]}" | head -n 1)
  HEAD=FIRST_NODE
  PORT=${PORT:-12345}
  echo "slurm_gpu.sh: not inside a Slurm allocation: showing --num_processes=$NNODES (#SBATCH --nodes)" \
    "and coordinator FIRST_NODE:$PORT" >&2
else
  die "not inside a Slurm allocation: submit with sbatch launch/slurm_gpu.sh ... (or use --dry-run)"
fi
if ! ((DRY_RUN)) && [[ ! -x $PYTHON ]]; then
  die "no interpreter at $PYTHON: install first (docs/launch.md, Slurm) or give --python"
fi

# $SLURM_PROCID stays unexpanded here: each task expands its own.
TRAIN="$(quote exec "$PYTHON" -m metalm_jax.train --config "$CONFIG" --workdir "$WORKDIR" --multihost \
  "--coordinator_address=$HEAD:$PORT" "--num_processes=$NNODES") --process_id=\$SLURM_PROCID"
if ((${#TRAINER_ARGS[@]})); then
  TRAIN+=" $(quote "${TRAINER_ARGS[@]}")"
fi
SRUN=(srun --nodes="$NNODES" --ntasks-per-node=1 --kill-on-bad-exit=1 --chdir="$REPO_DIR"
  "--export=ALL,PYTHONUNBUFFERED=1" bash -c "$TRAIN")

x "${SRUN[@]}"
