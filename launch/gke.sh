#!/usr/bin/env bash
# Run metalm_jax on a multi-host TPU slice in GKE: renders launch/gke_jobset.yaml with this
# script's options and applies it with kubectl. See docs/launch.md.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: launch/gke.sh SUBCOMMAND [options] [-- trainer flags]

Subcommands:
  apply     render the JobSet and apply it: kubectl apply -f -
  render    print the rendered JobSet YAML (nothing else)
  status    show the JobSet and its pods
  logs      stream the log of the pod with completion index 0 (process 0)
  delete    delete the JobSet (and its pods)

Options:
  --name NAME             JobSet name: lowercase letters, digits, dashes (required)
  --image IMAGE           trainer image built from launch/Dockerfile (apply/render; required there)
  --config FILE           config file inside the image, e.g. configs/metalm_lm.py (apply/render; required)
  --workdir DIR           run directory all pods can write, e.g. gs://bucket/run (apply/render; required)
  --accelerator NAME      gke-tpu-accelerator node label (default tpu-v5p-slice; also
                          tpu-v5-lite-podslice, tpu-v6e-slice, tpu-v4-podslice)
  --topology TOPO         gke-tpu-topology node label (default 4x4x4, i.e. v5p-128)
  --chips-per-host N      TPU chips per host VM (default 4); the pod count is chips / N
  --template FILE         JobSet template (default launch/gke_jobset.yaml)
  --dry-run               print every command, one per line, instead of running it
                          (apply prints `kubectl apply -f - <<'EOF'`, the YAML, then EOF)
  -h, --help              this help

Everything after `--` is passed to the trainer, e.g. -- --config.train.steps=1000
Applying the same JobSet again after it finished (delete it first) resumes from the latest
checkpoint in --workdir.

Example:
  launch/gke.sh apply --name metalm-lm --image us-docker.pkg.dev/my-project/my-repo/metalm_jax:latest \
      --config configs/metalm_lm.py --workdir gs://my-bucket/metalm_lm --topology 4x4x4
  launch/gke.sh logs --name metalm-lm
EOF
}

# A YAML scalar: plain when that reads back as the same string, else single-quoted ('' escapes ').
yaml_scalar() {
  shopt -s nocasematch
  if [[ $1 =~ ^[A-Za-z0-9_./=,@%+-][A-Za-z0-9_./:=,@%+-]*$ && ! $1 =~ ^[0-9.+-]*$ &&
    ! $1 =~ ^(true|false|yes|no|y|n|on|off|null)$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\'}"
  fi
  shopt -u nocasematch
}

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SCRIPT_USAGE=launch/gke.sh
# die, require, quote, x (--dry-run): shared with tpu_vm.sh and slurm_gpu.sh
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$SCRIPT_DIR/common.sh"
SUBCOMMAND=""
NAME="" IMAGE="" CONFIG="" WORKDIR="" ACCELERATOR=tpu-v5p-slice TOPOLOGY=4x4x4 CHIPS_PER_HOST=4
TEMPLATE=$SCRIPT_DIR/gke_jobset.yaml
TRAINER_ARGS=()

while (($#)); do
  opt=$1
  case $opt in
    --*=*) set -- "${opt%%=*}" "${opt#*=}" "${@:2}"; opt=$1 ;;
  esac
  case $opt in
    -h | --help) usage; exit 0 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --name | --image | --config | --workdir | --accelerator | --topology | --chips-per-host | --template)
      (($# >= 2)) || die "$opt needs a value"
      case $opt in
        --name) NAME=$2 ;;
        --image) IMAGE=$2 ;;
        --config) CONFIG=$2 ;;
        --workdir) WORKDIR=$2 ;;
        --accelerator) ACCELERATOR=$2 ;;
        --topology) TOPOLOGY=$2 ;;
        --chips-per-host) CHIPS_PER_HOST=$2 ;;
        --template) TEMPLATE=$2 ;;
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

[[ -n $SUBCOMMAND ]] || die "missing SUBCOMMAND (apply, render, status, logs, delete)"
case $SUBCOMMAND in
  apply | render | status | logs | delete) ;;
  *) die "unknown subcommand $SUBCOMMAND" ;;
esac
require "$NAME" --name
[[ $NAME =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]] || die "--name $NAME: use lowercase letters, digits and dashes"
((${#TRAINER_ARGS[@]} == 0)) || [[ $SUBCOMMAND == apply || $SUBCOMMAND == render ]] ||
  die "trainer flags after -- are only for apply and render"

# Print the JobSet: the template with the EDIT lines filled in and the trainer flags appended.
render() {
  require "$IMAGE" --image
  require "$CONFIG" --config
  require "$WORKDIR" --workdir
  [[ -r $TEMPLATE ]] || die "cannot read --template $TEMPLATE"
  [[ $TOPOLOGY =~ ^[0-9]+(x[0-9]+)+$ ]] || die "--topology $TOPOLOGY: expected e.g. 4x4x4 or 4x4"
  [[ $CHIPS_PER_HOST =~ ^[1-9][0-9]*$ ]] || die "--chips-per-host $CHIPS_PER_HOST: expected a positive integer"
  local chips=1 d hosts per_host=$CHIPS_PER_HOST
  for d in ${TOPOLOGY//x/ }; do chips=$((chips * d)); done
  ((chips > 0)) || die "--topology $TOPOLOGY has no chips"
  if ((chips < per_host)); then per_host=$chips; fi # a single host smaller than a full VM
  ((chips % per_host == 0)) || die "--topology $TOPOLOGY ($chips chips) is not a multiple of --chips-per-host $per_host"
  hosts=$((chips / per_host))

  local line text="" a rest seen=" "
  while IFS= read -r line || [[ -n $line ]]; do
    if [[ $line =~ ^([[:space:]]*name:[[:space:]]*)metalm-pod(.*)$ ]]; then
      line=${BASH_REMATCH[1]}$NAME${BASH_REMATCH[2]}; seen+="name "
    elif [[ $line =~ ^([[:space:]]*(parallelism|completions):[[:space:]]*)[0-9]+(.*)$ ]]; then
      line=${BASH_REMATCH[1]}$hosts${BASH_REMATCH[3]}; seen+="${BASH_REMATCH[2]} "
    elif [[ $line =~ ^([[:space:]]*cloud\.google\.com/gke-tpu-accelerator:[[:space:]]*)[^[:space:]#]+(.*)$ ]]; then
      line=${BASH_REMATCH[1]}$(yaml_scalar "$ACCELERATOR")${BASH_REMATCH[2]}; seen+="accelerator "
    elif [[ $line =~ ^([[:space:]]*cloud\.google\.com/gke-tpu-topology:[[:space:]]*)[^[:space:]#]+(.*)$ ]]; then
      line=${BASH_REMATCH[1]}$(yaml_scalar "$TOPOLOGY")${BASH_REMATCH[2]}; seen+="topology "
    elif [[ $line =~ ^([[:space:]]*google\.com/tpu:[[:space:]]*)[0-9]+(.*)$ ]]; then
      line=${BASH_REMATCH[1]}$per_host${BASH_REMATCH[2]}; seen+="tpu "
    elif [[ $line =~ ^([[:space:]]*image:[[:space:]]*)[^[:space:]#]+(.*)$ ]]; then
      line=${BASH_REMATCH[1]}$(yaml_scalar "$IMAGE")${BASH_REMATCH[2]}; seen+="image "
    elif [[ $line =~ ^([[:space:]]*-[[:space:]]+)--config=[^[:space:]#]*(.*)$ ]]; then
      line=${BASH_REMATCH[1]}$(yaml_scalar "--config=$CONFIG")${BASH_REMATCH[2]}; seen+="config "
    elif [[ $line =~ ^([[:space:]]*-[[:space:]]+)--workdir=[^[:space:]#]*(.*)$ ]]; then
      line=${BASH_REMATCH[1]}$(yaml_scalar "--workdir=$WORKDIR")${BASH_REMATCH[2]}; seen+="workdir "
    elif [[ $line =~ ^([[:space:]]*-[[:space:]]+)--multihost([[:space:]]*#.*)?$ ]]; then
      rest=${BASH_REMATCH[1]}
      for a in ${TRAINER_ARGS[@]+"${TRAINER_ARGS[@]}"}; do
        line+=$'\n'$rest$(yaml_scalar "$a")
      done
      seen+="multihost "
    fi
    text+=$line$'\n'
  done <"$TEMPLATE"
  for a in name parallelism completions accelerator topology tpu image config workdir multihost; do
    [[ $seen == *" $a "* ]] || die "--template $TEMPLATE has no line for $a (see launch/gke_jobset.yaml)"
  done
  printf '%s' "$text"
}

SELECTOR="jobset.sigs.k8s.io/jobset-name=$NAME"

case $SUBCOMMAND in
  render)
    render
    ;;
  apply)
    yaml=$(render)
    if ((DRY_RUN)); then
      printf '%s\n%s\n%s\n' "kubectl apply -f - <<'EOF'" "$yaml" "EOF"
    else
      echo "+ kubectl apply -f -  (the JobSet from: launch/gke.sh render ...)" >&2
      printf '%s\n' "$yaml" | kubectl apply -f -
    fi
    ;;
  status)
    x kubectl get jobset "$NAME"
    x kubectl get pods -l "$SELECTOR" -o wide
    ;;
  logs)
    x kubectl logs -f --tail=200 -l "$SELECTOR,batch.kubernetes.io/job-completion-index=0"
    ;;
  delete)
    x kubectl delete jobset "$NAME"
    ;;
esac
