#!/usr/bin/env bash
# The threshold race's trainings in one call of a device machine (docs/threshold-race.md,
# "Running the race on a device machine"): a recipe trained per channel and judged on a
# grid, and the same recipe's cross-fitted fold models counted on that grid, processes
# sharing the GPU. What the race reads comes back packed in $OUT/race.tar.xz; the models
# stay behind (over what a call returns), as the sixteenth look's did.
#
# Here, once: `make device-kit` (wheels for the device's Python, the data packed). There, with
# `.whl` and `.device` carried, in the repository's root:
#
#   RACE_NAME=telemanom-recipe RACE_FLAGS="--window 260 --epochs 35 ..." deploy/device/race.sh
#
# Back here: `tar -C artifacts/eval/RACE_NAME-device -xJf race.tar.xz` gives race/ (the grid
# report, for proxy-check and --against) and counts/ (for `replay_counts`), times.txt, logs/,
# and the warm late key (thirty-fifth look): late/warm.json.gz (for `crossfit_injection
# report` and `compare`) and late-key.md, its checks and rule v7's verdict.
set -euo pipefail

: "${RACE_NAME:?names the recipe: its cache is artifacts/cache/RACE_NAME}"
: "${OUT:?a folder for what comes back}"
RACE_FLAGS=${RACE_FLAGS:-}          # evaluate's recipe flags, as in the look's command
FOLD_FLAGS=${FOLD_FLAGS:-}          # crossfit_replay's own, e.g. --fold-epochs N or --channel
RACE_GRID=${RACE_GRID:-docs/threshold-race-lstm-dt.json}
RACE_DATASET=${RACE_DATASET:-both}
FOLD_DATASET=${FOLD_DATASET:-both}  # "none" trains no fold models
JOBS=${JOBS:-8}                     # race processes (training on the GPU, judging on a core)
FOLD_JOBS=${FOLD_JOBS:-6}           # fold processes
LATE_KEY=${LATE_KEY:-warm}          # after the folds: the thirty-fifth look's key; "none" skips it
PYTHON=${PYTHON:-python3}
CACHE_ROOT=${CACHE_ROOT:-artifacts/cache}
WHEELS=${WHEELS:-.whl}              # "none" where the packages are installed (a CPU test)

cd "$(dirname "$0")/../.."
stamp() { echo "$(date -u +%T) $*" | tee -a "$pack/times.txt"; }
pack=$(mktemp -d)
mkdir -p "$pack/logs" "$pack/counts"
work=$(mktemp -d)

if [ "$WHEELS" != none ]; then  # the packages the device's image lacks (make device-kit)
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --target "$work/site" "$WHEELS"/*.whl
  export PYTHONPATH="$work/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ -z "${SD_DATA__ROOT:-}" ]; then
  tar -C "$work" -xJf .device/smap_msl.tar.xz
  export SD_DATA__ROOT="$work/smap_msl"
fi
export SD_MODEL__TORCH_THREADS=1 PYTHONUNBUFFERED=1
cache=$CACHE_ROOT/$RACE_NAME
device=$("$PYTHON" -c "import torch; c = torch.cuda
print(torch.__version__, c.get_device_name() if c.is_available() else 'without a GPU')")
stamp "start: $RACE_NAME, $JOBS race and $FOLD_JOBS fold processes, torch $device"

pids=()
for i in $(seq 0 $((JOBS - 1))); do
  # shellcheck disable=SC2086  # RACE_FLAGS is a list of flags
  "$PYTHON" -m stream_detector.cli evaluate --dataset "$RACE_DATASET" $RACE_FLAGS \
    --thresholds "$RACE_GRID" --score-cache "$cache" --no-plots --shard "$i/$JOBS" \
    --out "$work/eval/race-shard-$i" > "$pack/logs/race-$i.log" 2>&1 & pids+=($!)
done
if [ "$FOLD_DATASET" != none ]; then
  # The fold models read their recipe from the cache, which the race stamps as it starts.
  until [ -f "$cache/recipe.json" ]; do
    sleep 1
    kill -0 "${pids[0]}" 2>/dev/null || break
  done
  for i in $(seq 0 $((FOLD_JOBS - 1))); do
    # shellcheck disable=SC2086
    "$PYTHON" -m stream_detector.evaluation.crossfit_replay --dataset "$FOLD_DATASET" \
      --cache "$cache" --thresholds "$RACE_GRID" $FOLD_FLAGS --shard "$i/$FOLD_JOBS" \
      --save-counts "$pack/counts/crossfit-shard-$i.json" > "$pack/logs/fold-$i.log" 2>&1 & pids+=($!)
  done
fi
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
stamp "trainings done (status $status)"
if [ $status -ne 0 ]; then tail -n 20 "$pack"/logs/*.log; fi

"$PYTHON" -m stream_detector.cli grid-report "$work"/eval/race-shard-* --thresholds "$RACE_GRID" \
  --out "$pack/race" > "$pack/logs/grid-report.log" 2>&1 || status=1
"$PYTHON" -m stream_detector.cli prediction-error "$cache" > "$pack/prediction-error.md" 2>&1 || true

# The warm late key reads the uncapped fold models (crossfit/): capped ones are another stream.
case "$FOLD_DATASET $FOLD_FLAGS" in none*|*--fold-epochs*) LATE_KEY=none ;; esac
if [ "$LATE_KEY" != none ] && [ $status -eq 0 ]; then
  pids=()
  for i in $(seq 0 $((FOLD_JOBS - 1))); do
    # shellcheck disable=SC2086  # FOLD_FLAGS is a list of flags
    "$PYTHON" -m stream_detector.evaluation.crossfit_injection run --warm --dataset "$FOLD_DATASET" \
      --cache "$cache" --thresholds "$RACE_GRID" $FOLD_FLAGS --shard "$i/$FOLD_JOBS" \
      --out "$work/late/shard-$i" > "$pack/logs/late-$i.log" 2>&1 & pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || status=1; done
  stamp "late key done (status $status)"
  # Its record and report come back; the shares (megabytes) stay.
  mkdir -p "$pack/late"
  "$PYTHON" -m stream_detector.evaluation.crossfit_injection report "$work"/late/shard-* --rule v7 \
    --thresholds "$RACE_GRID" --against "$pack/race" --counts "$pack/counts" \
    --save "$pack/late/warm.json.gz" > "$pack/late-key.md" 2> "$pack/logs/late-report.log" || status=1
fi
stamp "packed"
tar -C "$pack" -cJf "$OUT/race.tar.xz" .
cat "$pack/times.txt"
exit $status
