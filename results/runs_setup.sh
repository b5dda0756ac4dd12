#!/usr/bin/env bash
# Lay out ~/tinyhw-runs for the queue scripts on a machine that has none (sessions may land on
# a new machine, whose $HOME holds no earlier run): a code snapshot of the work tree's HEAD in
# ./code (so that editing the work tree never changes a running job's code), a venv in ./venv,
# and the queue and snapshot scripts. On a machine that has it, it refreshes code/ to HEAD and
# the scripts, and leaves the runs alone. Usage: bash results/runs_setup.sh [DIR]
set -eu
tree="$(cd "$(dirname "$0")/.." && pwd)"
runs="${1:-$HOME/tinyhw-runs}"
mkdir -p "$runs"
if [ -d "$runs/code/.git" ]; then
  git -C "$runs/code" fetch -q "$tree" HEAD && git -C "$runs/code" checkout -q --detach FETCH_HEAD
else
  git clone -q "$tree" "$runs/code"
fi
if [ ! -x "$runs/venv/bin/python" ]; then
  python3 -m venv "$runs/venv"
  "$runs/venv/bin/pip" install -q -e "$runs/code[plot,fast]"
fi
cp "$tree"/results/lm_small_queue.sh "$runs/queue.sh"
cp "$tree"/results/issue12_queue.sh "$tree"/results/snapshot.sh "$runs/"
echo "ready: $runs (code at $(git -C "$runs/code" log -1 --format='%h %cs'))"
