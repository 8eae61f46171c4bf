#!/usr/bin/env bash
# The table of stages .ci/run prints at the end of every run, passed or failed.
#   hack/stage.sh NAME COMMAND [ARG...]   runs one stage of `make test` and records its
#                                         time and exit status in $CI_STAGES (without
#                                         CI_STAGES it only runs the command)
#   hack/stage.sh --report RC SECONDS     prints $CI_STAGES as a table, with a total
set -uo pipefail
row() { printf '  %-48s %-6s %6s\n' "$1" "$([[ $2 == 0 ]] && echo ok || echo FAILED)" "$3"; }

if [[ ${1:-} == --report ]]; then
  echo "== stages of this run (seconds; 'kind:' lines are parts of the kind flow)"
  if [[ -s ${CI_STAGES:-} ]]; then
    while IFS=$'\t' read -r name rc seconds; do row "$name" "$rc" "$seconds"; done <"$CI_STAGES"
  fi
  row "total" "$2" "$3"
  exit 0
fi

name=$1
shift
start=$(date +%s)
"$@"
rc=$?
if [[ -n ${CI_STAGES:-} ]]; then
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - start))" >>"$CI_STAGES"
fi
exit "$rc"
