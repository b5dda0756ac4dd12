#!/usr/bin/env bash
# Copy the small files of runs made by the queue scripts into the work tree's results/:
# command.txt, metrics.jsonl, the run's stdout as log.txt, and analysis/ (JSON, CSV, PNG, and
# the analyses' stdout as analysis/log.txt);
# never a checkpoint. Usage, from the folder holding the runs (~/tinyhw-runs):
#   RESULTS=/work/main/results ./snapshot.sh lm_small_coupled_seed1 ...
#   RESULTS=/work/main/results/issue12 PREFIX=issue12_ ./snapshot.sh bn_resnet20 ...
# A run's folder is $PREFIX$name here and $RESULTS/$name there. machine.txt is written once
# (edit it by hand to say what else ran beside the run); the rest is refreshed on every call.
set -eu
cd "$(dirname "$0")"
: "${RESULTS:?set RESULTS to the work tree results folder, e.g. /work/main/results}"
for name in "$@"; do
  run="${PREFIX:-}$name"; dest="$RESULTS/$name"
  [ -f "$run/metrics.jsonl" ] || { echo "snapshot: $run has no metrics.jsonl yet" >&2; continue; }
  mkdir -p "$dest"
  cp "$run/command.txt" "$run/metrics.jsonl" "$dest/"
  [ -f "$run.log" ] && cp "$run.log" "$dest/log.txt"
  if [ -d "$run/analysis" ]; then
    mkdir -p "$dest/analysis"
    find "$run/analysis" -maxdepth 1 -type f \( -name '*.json' -o -name '*.csv' -o -name '*.png' \) \
        -exec cp {} "$dest/analysis/" \;
    [ -f "$run.analysis.log" ] && cp "$run.analysis.log" "$dest/analysis/log.txt"
  fi
  [ -f "$dest/machine.txt" ] || echo "2-core CPU machine (no GPU), run in \$HOME/tinyhw-runs/$run by" \
      "the results/ queue scripts, one BLAS thread per run, OpenBLAS on its SkylakeX kernels;" \
      "snapshot $(date -u '+%Y-%m-%d %H:%M') UTC" > "$dest/machine.txt"
  grep -q '"final": true' "$run/metrics.jsonl" && state=finished || state="in progress"
  echo "snapshot: $run -> $dest ($state, $(grep -v '"final"' "$run/metrics.jsonl" | grep -c '"epoch"') epochs)"
done
