# shellcheck shell=bash
# Helpers that launch/tpu_vm.sh, gke.sh and slurm_gpu.sh source (not a command of its own): the
# error line, shell quoting and --dry-run. One copy, so that the three quote a command the same
# way (each had its own, and gke.sh's had lost the --flag=value branch).
# A script sets SCRIPT_USAGE (how it is run for --help, e.g. launch/tpu_vm.sh) before sourcing.

# die MESSAGE: the error in one line and where the usage is; exit 2.
die() {
  echo "${SCRIPT_USAGE##*/}: error: $*" >&2
  echo "Run $SCRIPT_USAGE --help for usage." >&2
  exit 2
}

# require VALUE OPTION: die unless VALUE is set ($SUBCOMMAND needs OPTION).
require() {
  [[ -n $1 ]] || die "${SUBCOMMAND:-this} needs $2"
}

# One shell word that a shell reads back as $1: safe words bare, words without $ ` " \ ! in double
# quotes, the rest in single quotes; for --flag=value only the value is quoted, so that the flag
# stays bare and readable (--config.x="'a b'").
quote_word() {
  local a=$1
  if [[ $a =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
    printf '%s' "$a"
  elif [[ $a =~ ^(--[A-Za-z0-9_.-]+=)(.*)$ ]]; then
    printf '%s' "${BASH_REMATCH[1]}"
    quote_word "${BASH_REMATCH[2]}"
  elif [[ ! $a =~ [\$\`\"\\!] ]]; then
    printf '"%s"' "$a"
  else
    printf "'%s'" "${a//\'/\'\\\'\'}"
  fi
}

# Print the arguments as one line of shell words (a line that can be pasted back into a shell).
quote() {
  local a out=()
  for a in "$@"; do
    out+=("$(quote_word "$a")")
  done
  printf '%s\n' "${out[*]}"
}

DRY_RUN=0
# Run a command, or print it under --dry-run (DRY_RUN=1).
x() {
  if ((DRY_RUN)); then
    quote "$@"
  else
    echo "+ $(quote "$@")" >&2
    "$@"
  fi
}
