#!/usr/bin/env bash
# Create, install, run, watch and delete a Cloud TPU VM (single host or pod slice) for metalm_jax.
# Every remote step runs on all workers at once (gcloud ... --worker=all). See docs/launch.md.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: launch/tpu_vm.sh SUBCOMMAND [options] [-- trainer flags]

Subcommands:
  create    create the TPU VM (gcloud compute tpus tpu-vm create), or with --queued a queued
            resource holding one node of the same name (gcloud compute tpus queued-resources create)
  status    describe the TPU VM (or the queued resource with --queued)
  install   copy this checkout to every worker (or git clone --repo there) and run README's
            install command with the tpu and gcs extras: python3 -m venv .venv && .venv/bin/pip install -e '.[tpu,gcs]'
  run       start the trainer on every worker, in the background under nohup:
              python -m metalm_jax.train --config CONFIG --workdir WORKDIR --multihost [trainer flags]
            Running the same command again resumes from the latest checkpoint in WORKDIR.
  mount     mount a bucket read-only on every worker with gcsfuse (prepared rows for
            data.prepared_dir), its metadata caches kept for the whole job; a no-op where
            already mounted
  logs      stream a worker's log (worker 0 unless --worker)
  stop      send SIGTERM to the trainer on every worker (it saves a checkpoint, then exits)
  delete    delete the TPU VM (or with --queued: queued-resources delete --force)

Options:
  --name NAME               TPU VM / queued resource name (required)
  --zone ZONE               e.g. us-east5-a (required)
  --project PROJECT         GCP project (default: gcloud's configured project)
  --accelerator-type TYPE   e.g. v5p-128, v5litepod-16, v6e-64, v4-32 (create; required there)
  --version VERSION         TPU software (runtime) version (create; default from the accelerator:
                            v6e: v2-alpha-tpuv6e, v5p: v2-alpha-tpuv5, v5e: v2-alpha-tpuv5-lite,
                            v4 and older: tpu-ubuntu2204-base)
  --spot                    create Spot capacity (preemptible; rerun `run` to resume)
  --queued                  use a queued resource (create/status/delete)
  --repo URL                install: git clone URL on the workers instead of copying this checkout
  --python BIN              install: the interpreter that creates .venv (default python3; the
                            trainer needs Python >= 3.11; a missing BIN is apt-installed with BIN-venv)
  --config FILE             run: config file, relative to the repo root (required there)
  --workdir DIR             run: run directory seen by all workers, e.g. gs://bucket/run (required there)
  --log FILE                run/logs: log file on each worker (default: /tmp/metalm_jax/<workdir
                            basename>.log for a gs:// workdir, else <workdir>/train.log)
  --worker N                logs: which worker's log (default 0)
  --bucket BUCKET           mount: the bucket's name (no gs://; required there)
  --mount-point DIR         mount: where (default /mnt/BUCKET)
  --dry-run                 print every command, one per line, instead of running it
  -h, --help                this help

Everything after `--` is passed to the trainer, e.g. -- --config.train.steps=1000

Example:
  launch/tpu_vm.sh create  --name pod --zone us-east5-a --accelerator-type v5p-128 --spot --queued
  launch/tpu_vm.sh install --name pod --zone us-east5-a
  launch/tpu_vm.sh mount   --name pod --zone us-east5-a --bucket my-bucket
  launch/tpu_vm.sh run     --name pod --zone us-east5-a --config configs/metalm_lm.py \
      --workdir gs://my-bucket/metalm_lm
  launch/tpu_vm.sh logs    --name pod --zone us-east5-a --workdir gs://my-bucket/metalm_lm
  launch/tpu_vm.sh delete  --name pod --zone us-east5-a --queued
EOF
}

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SCRIPT_USAGE=launch/tpu_vm.sh
# die, require, quote, x (--dry-run): shared with gke.sh and slurm_gpu.sh
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$SCRIPT_DIR/common.sh"
REPO_ROOT=$(dirname "$SCRIPT_DIR")
REMOTE_DIR=metalm_jax # on each worker, relative to the login user's home
# Matches the trainer's command line (`.venv/bin/python -m metalm_jax.train ...`) but not the shell
# that runs this pattern (its command line starts with the shell's name).
TRAINER_PATTERN='^[^ ]*python[^ ]* -m metalm_jax[.]train'

SUBCOMMAND=""
NAME="" ZONE="" PROJECT="" ACCEL="" VERSION="" SPOT=0 QUEUED=0 REPO="" PYTHON=python3
CONFIG="" WORKDIR="" LOG="" WORKER=0 BUCKET="" MOUNT_POINT=""
TRAINER_ARGS=()

while (($#)); do
  opt=$1
  val=""
  case $opt in
    --*=*) val=${opt#*=}; opt=${opt%%=*}; set -- "$opt" "$val" "${@:2}" ;;
  esac
  case $opt in
    -h | --help) usage; exit 0 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --spot) SPOT=1; shift ;;
    --queued) QUEUED=1; shift ;;
    --name | --zone | --project | --accelerator-type | --version | --repo | --python | --config | \
      --workdir | --log | --worker | --bucket | --mount-point)
      (($# >= 2)) || die "$opt needs a value"
      val=$2
      case $opt in
        --name) NAME=$val ;;
        --zone) ZONE=$val ;;
        --project) PROJECT=$val ;;
        --accelerator-type) ACCEL=$val ;;
        --version) VERSION=$val ;;
        --repo) REPO=$val ;;
        --python) PYTHON=$val ;;
        --config) CONFIG=$val ;;
        --workdir) WORKDIR=$val ;;
        --log) LOG=$val ;;
        --worker) WORKER=$val ;;
        --bucket) BUCKET=$val ;;
        --mount-point) MOUNT_POINT=$val ;;
      esac
      shift 2
      ;;
    --) shift; TRAINER_ARGS=("$@"); break ;;
    -*) die "unknown option $opt" ;;
    *)
      [[ -z $SUBCOMMAND ]] || die "unexpected argument $opt (trainer flags go after --)"
      SUBCOMMAND=$opt
      shift
      ;;
  esac
done

[[ -n $SUBCOMMAND ]] || die "missing SUBCOMMAND (create, status, install, mount, run, logs, stop, delete)"
case $SUBCOMMAND in
  create | status | install | mount | run | logs | stop | delete) ;;
  *) die "unknown subcommand $SUBCOMMAND" ;;
esac
require "$NAME" --name
require "$ZONE" --zone
((${#TRAINER_ARGS[@]} == 0)) || [[ $SUBCOMMAND == run ]] || die "trainer flags after -- are only for run"

GCLOUD_FLAGS=("--zone=$ZONE")
[[ -z $PROJECT ]] || GCLOUD_FLAGS+=("--project=$PROJECT")

ssh_all() { # ssh_all COMMAND: run COMMAND on every worker
  x gcloud compute tpus tpu-vm ssh "$NAME" "${GCLOUD_FLAGS[@]}" --worker=all --command="$1"
}

default_version() {
  case $1 in
    v6e-*) echo v2-alpha-tpuv6e ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v5litepod-* | v5e-*) echo v2-alpha-tpuv5-lite ;;
    v2-* | v3-* | v4-*) echo tpu-ubuntu2204-base ;;
    *) die "no default --version for --accelerator-type $1: give --version" ;;
  esac
}

log_file() {
  if [[ -n $LOG ]]; then
    echo "$LOG"
  elif [[ $WORKDIR == *://* ]]; then
    echo "/tmp/metalm_jax/$(basename "$WORKDIR").log"
  else
    echo "${WORKDIR%/}/train.log"
  fi
}

cmd_create() {
  require "$ACCEL" --accelerator-type
  local version=$VERSION args
  [[ -n $version ]] || version=$(default_version "$ACCEL")
  if ((QUEUED)); then
    args=(gcloud compute tpus queued-resources create "$NAME" "${GCLOUD_FLAGS[@]}"
      --node-id="$NAME" --accelerator-type="$ACCEL" --runtime-version="$version")
  else
    args=(gcloud compute tpus tpu-vm create "$NAME" "${GCLOUD_FLAGS[@]}"
      --accelerator-type="$ACCEL" --version="$version")
  fi
  if ((SPOT)); then args+=(--spot); fi
  x "${args[@]}"
}

cmd_status() {
  if ((QUEUED)); then
    x gcloud compute tpus queued-resources describe "$NAME" "${GCLOUD_FLAGS[@]}"
  else
    x gcloud compute tpus tpu-vm describe "$NAME" "${GCLOUD_FLAGS[@]}"
  fi
}

cmd_install() {
  local py fetch=""
  py=$(quote "$PYTHON")
  if [[ -n $REPO ]]; then
    fetch="if [ -d $REMOTE_DIR/.git ]; then git -C $REMOTE_DIR pull --ff-only; else git clone $(quote "$REPO") $REMOTE_DIR; fi"
  else
    # A clean copy of the working tree (no .git, nothing .gitignore'd such as .venv or runs/).
    local stage="${TMPDIR:-/tmp}/metalm_jax-launch-$NAME"
    if ! ((DRY_RUN)) && ! command -v rsync >/dev/null; then
      die "install copies the checkout with rsync, which is not installed (or give --repo URL)"
    fi
    x mkdir -p "$stage"
    x rsync -a --delete --exclude=.git --filter=':- .gitignore' "$REPO_ROOT/" "$stage/$REMOTE_DIR/"
    x gcloud compute tpus tpu-vm scp "$stage/$REMOTE_DIR" "$NAME:~/" "${GCLOUD_FLAGS[@]}" \
      --worker=all --recurse --compress
  fi
  ssh_all "set -e; ${fetch:+$fetch; }command -v $py >/dev/null || { sudo apt-get update -q && sudo apt-get install -y -q $py $(quote "$PYTHON-venv"); }; cd $REMOTE_DIR && $py -m venv .venv && .venv/bin/pip install -e '.[tpu,gcs]'"
}

# gcsfuse for prepared rows: read-only, and every metadata cache (stat, type, kernel list) kept
# for the whole job, since a prepared directory does not change while a run reads it; without
# them every open of a shard is a metadata request to the bucket.
GCSFUSE_FLAGS="-o ro --implicit-dirs --metadata-cache-ttl-secs=-1 --stat-cache-max-size-mb=-1 --type-cache-max-size-mb=-1 --kernel-list-cache-ttl-secs=-1"

cmd_mount() {
  require "$BUCKET" --bucket
  [[ $BUCKET != *://* && $BUCKET != */* ]] || die "--bucket $BUCKET: give the bucket's name alone (my-bucket, not gs://my-bucket/dir)"
  local dir=${MOUNT_POINT:-/mnt/$BUCKET} q
  q=$(quote "$dir")
  ssh_all "set -e; command -v gcsfuse >/dev/null || { echo \"\$(hostname): gcsfuse is not installed (https://cloud.google.com/storage/docs/gcsfuse-install)\" >&2; exit 1; }; if mountpoint -q $q; then echo \"\$(hostname):\" $q \"is mounted already\"; exit 0; fi; sudo mkdir -p $q && sudo chown \"\$(id -u):\$(id -g)\" $q && gcsfuse $GCSFUSE_FLAGS $(quote "$BUCKET") $q && echo \"\$(hostname): gs://$BUCKET on\" $q \"(read-only)\""
}

cmd_run() {
  require "$CONFIG" --config
  require "$WORKDIR" --workdir
  local log train inner
  log=$(log_file)
  train=$(quote .venv/bin/python -m metalm_jax.train --config "$CONFIG" --workdir "$WORKDIR" \
    --multihost ${TRAINER_ARGS[@]+"${TRAINER_ARGS[@]}"})
  inner="PYTHONUNBUFFERED=1 $train; echo \"[tpu_vm.sh] trainer exited with status \$?\""
  ssh_all "set -e; cd $REMOTE_DIR; if pgrep -f $(quote "$TRAINER_PATTERN") >/dev/null; then echo \"\$(hostname): a trainer is already running (launch/tpu_vm.sh stop first)\" >&2; exit 1; fi; mkdir -p $(quote "$(dirname "$log")"); nohup bash -c $(quote "$inner") >>$(quote "$log") 2>&1 </dev/null & echo \"\$(hostname): trainer started, log $(quote "$log")\""
}

cmd_logs() {
  [[ -n $LOG ]] || require "$WORKDIR" "--workdir (or --log)"
  x gcloud compute tpus tpu-vm ssh "$NAME" "${GCLOUD_FLAGS[@]}" --worker="$WORKER" \
    --command="cd $REMOTE_DIR && tail -n 200 -F $(quote "$(log_file)")"
}

cmd_stop() {
  ssh_all "pkill -TERM -f $(quote "$TRAINER_PATTERN") && echo \"\$(hostname): sent SIGTERM\" || echo \"\$(hostname): no trainer running\""
}

cmd_delete() {
  if ((QUEUED)); then
    x gcloud compute tpus queued-resources delete "$NAME" "${GCLOUD_FLAGS[@]}" --force
  else
    x gcloud compute tpus tpu-vm delete "$NAME" "${GCLOUD_FLAGS[@]}"
  fi
}

"cmd_$SUBCOMMAND"
