#!/usr/bin/env bash
# Table 1a at small scale: run the given runs one after another, each resumed if it has a
# checkpoint and skipped if finished. Usage: queue.sh NAME:VARIANT:SEED[:CONFIG[:EPOCHS]] ...
# (CONFIG small unless given, EPOCHS the config's own unless given; e.g. the large c_only model
# of results/lm_large_c_only, whose checkpoint an earlier machine took with it, again for its
# 2 epochs: ./queue.sh lm_large_c_only:c_only:0:large:2)
# Run from ~/tinyhw-runs (results/runs_setup.sh lays it out: code snapshot in ./code, venv in
# ./venv), run folders ./lm_small_*. A run whose final record is already in the work tree's
# results/ ($RESULTS, default /work/main/results) is skipped too: a session on a new machine
# has none of the earlier run folders, and must not train those runs again.
# The two queues started on 2026-12-01 (one BLAS thread each, side by side, which measured
# 3,624 words/s together against 2,897 for one run on two threads):
#   ./queue.sh lm_small_coupled:coupled:0 lm_small_c_only:c_only:0 lm_small_full:full:0 \
#              lm_small_coupled_seed1:coupled:1 &
#   ./queue.sh lm_small_residual:residual:0 lm_small_t_only:t_only:0 lm_small_plain:plain:0 \
#              lm_small_residual_seed1:residual:1 &
cd "$(dirname "$0")"
. venv/bin/activate
export TINYHW_DATA=/work/shared/data OPENBLAS_NUM_THREADS=1
# This machine's environment forces OpenBLAS onto its Haswell (AVX2) kernels for the sake of
# old OpenBLAS builds; numpy 2.4's OpenBLAS 0.3.31 runs its SkylakeX (AVX-512) kernels
# correctly, and the small LM's 1-thread step takes 0.22 s on them against 0.35 s (2026-12-02).
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
finished() { [ -f "$1/metrics.jsonl" ] && grep -q '"final": true' "$1/metrics.jsonl"; }
for spec in "$@"; do
  IFS=: read -r name variant seed config epochs <<< "$spec"
  out="$PWD/$name"
  if finished "$out" || finished "${RESULTS:-/work/main/results}/$name"; then continue; fi
  # --resume where a checkpoint exists; else start over (a run killed before its first
  # checkpoint leaves only command.txt, and train.lm reuses a run folder only when told)
  flag="--overwrite"; [ -f "$out/last.npz" ] && flag="--resume"
  # shellcheck disable=SC2046  (no --epochs flag at all when EPOCHS is not given)
  (cd code && python -m train.lm --config "${config:-small}" --variant "$variant" --seed "$seed" \
      $([ -n "$epochs" ] && echo --epochs "$epochs") --checkpoint-every 300 --out "$out" $flag) \
      >> "$out.log" 2>> "$out.err"
done
