#!/usr/bin/env bash
# Issue 12's CIFAR runs on this 2-core CPU (results/PLANNED_issue12.md has the reasons behind
# each choice): two queues, one BLAS thread each, side by side, as results/lm_small_queue.sh
# runs the char-LM. Each run resumes from its last.npz and is skipped once finished.
#   cd ~/tinyhw-runs && nohup ./issue12_queue.sh A > issue12_A.out 2>&1 &
#   cd ~/tinyhw-runs && nohup ./issue12_queue.sh B > issue12_B.out 2>&1 &
# Run from a folder holding a code snapshot in ./code and a venv in ./venv (results/runs_setup.sh
# lays it out); run folders are ./issue12_<name>. Start it when the LM queues are done: both sets
# of runs want both cores. After its analyses each run is snapshotted (small files only) into
# $RESULTS/<name> (default /work/main/results/issue12), and a run already final there is skipped:
# a session on a new machine has none of the earlier run folders. Each run takes 0.7-1.5 hours
# of one core beside the other queue, so a session finishes two or three per queue.
# A smoke test: PREFIX=smoke_ RESULTS=/tmp/smoke EXTRA="--limit 256 --epochs 1 --max-steps 2" \
#   ANALYSIS_EXTRA="--limit 64" ./issue12_queue.sh A
# (EXTRA's flags come last and override the runs' own, ANALYSIS_EXTRA's are added to the
# analyses'; PREFIX names the run folders).
set -u
cd "$(dirname "$0")"
. venv/bin/activate
export TINYHW_DATA=/work/shared/data OPENBLAS_NUM_THREADS=1
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE   # OpenBLAS's SkylakeX kernels (see lm_small_queue.sh)
BN="--limit 10000 --epochs 100 --val-every 5"   # (a) batch norm, compared at equal train loss
NOBN="$BN --no-bn --lr 0.05 --warmup 5"
# the plan's next step for a no-BN net that ends above its BN twin's training loss: twice the
# epochs, into a new folder (val every 10 epochs: the same 20 points on the curve)
NOBN_E200="--limit 10000 --epochs 200 --val-every 10 --no-bn --lr 0.05 --warmup 5"
# (b) shared blocks: the BN runs' 10,000 images (the regime where overfitting shows), 50 epochs
# (a resnet32 run fits one session beside another); a 5-epoch warm-up = 390 steps, as planned
SHARE="--limit 10000 --epochs 50 --val-every 5 --warmup 5 --arch resnet32"
# (a') BN twins on shorter schedules: where a no-BN net fits worse than its BN twin of the same
# schedule, a BN net trained for fewer epochs (cosine to zero like the others) ends at a
# training loss at or above the no-BN net's, so that the pair tests "BN regularises" at equal or
# lower training loss without the no-BN net's much longer run (bn_resnet20_nobn_e200: ~3.5 h).
# Two lengths per net, as where the short run's final loss lands is a guess: no-BN final losses
# 0.254 (resnet20, 10,000 images, 100 ep.), 0.589 (resnet20, all, 15) and 0.496 (highway20).
# They need no analyses: only their training loss and val error enter the comparison.
SHORT="--limit 10000 --val-every 5"
# (d) the README's stale iterative numbers: the five 15-epoch CIFAR nets of results/cifar_*
# again, with the commands in their command.txt (there on a GPU, here on the CPU)
CIFAR="--epochs 15"
CIFAR_NOBN="$CIFAR --no-bn --lr 0.05 --warmup 1"
declare -A args=(
  [bn_resnet20]="--arch resnet20 $BN"             [bn_resnet20_nobn]="--arch resnet20 $NOBN"
  [bn_highway20]="--arch highway20 $BN"           [bn_highway20_nobn]="--arch highway20 $NOBN"
  [bn_resnet20_nobn_e200]="--arch resnet20 $NOBN_E200"
  [share_resnet32]="$SHARE"                       [share_resnet32_shared]="$SHARE --share-blocks"
  [share_resnet32_shared_unsharedbn]="$SHARE --share-blocks --unshared-bn"
  [cifar_resnet20]="--arch resnet20 $CIFAR"       [cifar_resnet20_nobn]="--arch resnet20 $CIFAR_NOBN"
  [cifar_highway20]="--arch highway20 $CIFAR"     [cifar_highway20_nobn]="--arch highway20 $CIFAR_NOBN"
  [cifar_plain20]="--arch plain20 $CIFAR"
  [bn_resnet20_e25]="--arch resnet20 $SHORT --epochs 25"
  [bn_resnet20_e40]="--arch resnet20 $SHORT --epochs 40"
  [cifar_resnet20_e4]="--arch resnet20 --epochs 4"
  [cifar_resnet20_e6]="--arch resnet20 --epochs 6"
  [cifar_highway20_e5]="--arch highway20 --epochs 5"
  [cifar_highway20_e8]="--arch highway20 --epochs 8")
declare -A no_analysis=([bn_resnet20_e25]=1 [bn_resnet20_e40]=1 [cifar_resnet20_e4]=1
  [cifar_resnet20_e6]=1 [cifar_highway20_e5]=1 [cifar_highway20_e8]=1)
# Queue A or B, or the runs named (e.g. a BN pair side by side: one queue bn_resnet20, the
# other bn_resnet20_nobn, when a session has room for only one pair).
case "${1:-}" in
  A) names=(bn_resnet20 bn_resnet20_nobn share_resnet32 share_resnet32_shared cifar_resnet20
            cifar_plain20 cifar_resnet20_nobn) ;;
  B) names=(bn_highway20 bn_highway20_nobn share_resnet32_shared_unsharedbn cifar_highway20
            cifar_highway20_nobn) ;;
  *) names=("$@") ;;
esac
for name in "${names[@]}"; do
  [ -n "${args[$name]:-}" ] || { echo "usage: $0 A|B|RUN... (RUN one of: ${!args[*]}); got '$name'" >&2; exit 2; }
done
[ ${#names[@]} -gt 0 ] || { echo "usage: $0 A|B|RUN..." >&2; exit 2; }
# (c) after each run: the analyses of PLANNED_issue12.md into <run>/analysis/ (skipped when
# their JSON is there), over the 10,000 val images
analyse() {
  for a in iterations iterative estimation-error; do
    [ -f "$1/analysis/${a//-/_}.json" ] && continue
    (cd code && python -m train.analyze "$a" --checkpoint "$1/best.npz" ${ANALYSIS_EXTRA:-}) \
        >> "$1.analysis.log" 2>&1
  done
}
finished() { [ -f "$1/metrics.jsonl" ] && grep -q '"final": true' "$1/metrics.jsonl"; }
RESULTS="${RESULTS:-/work/main/results/issue12}"
for base in "${names[@]}"; do
  out="$PWD/${PREFIX:-issue12_}$base"
  finished "$RESULTS/$base" && continue
  if ! finished "$out"; then
    flag="--overwrite"; [ -f "$out/last.npz" ] && flag="--resume"
    # shellcheck disable=SC2086  (args are several flags)
    (cd code && python -m train.image ${args[$base]} --device cpu --blas-threads 1 \
        --checkpoint-every 200 ${EXTRA:-} --out "$out" $flag) >> "$out.log" 2>> "$out.err" \
        || continue
  fi
  [ -n "${no_analysis[$base]:-}" ] || analyse "$out"
  RESULTS="$RESULTS" PREFIX="${PREFIX:-issue12_}" ./snapshot.sh "$base"
done
