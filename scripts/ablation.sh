#!/usr/bin/env bash
# The ablation of Ouroboros3D's central claim (paper Table 2): does joint training with
# 3D-aware feedback beat a decoupled two-stage pipeline? Every variant is trained with
# the same data, steps and seeds, then all are scored by `o3d eval --benchmark
# synthetic` on the same held-out objects (seeds 1,000,000+; training uses 0..999).
# Every step resumes: run the script again after an interruption.
#
#   DATA=data/synth-train OUT=runs/ablation STEPS=5000 SEEDS="0 1 2" LIMIT=20 THREADS=1 scripts/ablation.sh
#
# TIME_LIMIT=DURATION (e.g. 50m, 2h) stops the training runs cleanly once that much time has
# passed since the script started (checkpoints saved) and skips the scoring until every run has
# all its STEPS (exit code 3: not finished yet): for sessions shorter than the whole ablation,
# run it again to continue.
# JOBS=N trains N variants at a time (default 1; on a 2-core machine JOBS=2 THREADS=1 keeps both
# cores busy: each run's result does not depend on what runs beside it).
#
# Results: $OUT/eval-mesh/eval.md (the meshes), $OUT/eval-gaussians/eval.md (the Gaussian
# renders), $OUT/eval-views/eval.md (the generated views), each + .json/.csv, and
# $OUT/ablation-table.md (mean and spread over seeds per variant); docs/ablation.md discusses them.
set -euo pipefail
DATA="${DATA:-data/synth-train}"
OUT="${OUT:-runs/ablation}"
STEPS="${STEPS:-5000}"
SEEDS="${SEEDS:-0 1 2}"
LIMIT="${LIMIT:-20}"
THREADS="${THREADS:-0}"
N_OBJECTS="${N_OBJECTS:-1000}"
JOBS="${JOBS:-1}"
TIME_LIMIT="${TIME_LIMIT:-}"
if [ -n "$TIME_LIMIT" ]; then
  DEADLINE=$(( $(date +%s) + $(python3 -c "import sys; from o3dcli.commands.train import parse_duration as p; print(int(p(sys.argv[1])))" "$TIME_LIMIT") ))
fi
EXTRA_SETS="${EXTRA_SETS:-}"  # key=value overrides for every variant, e.g. "train.p_mean=-1.2 train.p_std=1.2"

# variant name -> config overrides (training and sampling)
declare -A VARIANTS=(
  [decoupled]="train.joint=false train.feedback_p=0 denoiser.feedback_rgb=false denoiser.feedback_ccm=false diffusion.feedback=false"
  [joint]="train.joint=true train.feedback_p=0 denoiser.feedback_rgb=false denoiser.feedback_ccm=false diffusion.feedback=false"
  [joint+ccm]="train.joint=true train.feedback_p=0.5 denoiser.feedback_rgb=false denoiser.feedback_ccm=true diffusion.feedback=true"
  [joint+rgb]="train.joint=true train.feedback_p=0.5 denoiser.feedback_rgb=true denoiser.feedback_ccm=false diffusion.feedback=true"
  [joint+ccm+rgb]="train.joint=true train.feedback_p=0.5 denoiser.feedback_rgb=true denoiser.feedback_ccm=true diffusion.feedback=true"
)
ORDER=(decoupled joint joint+ccm joint+rgb joint+ccm+rgb)

o3d data synth -n "$N_OBJECTS" -o "$DATA" --seed 0 --size 64 --extra-views 4
mkdir -p "$OUT"
PRESETS=()
PIDS=()
for variant in "${ORDER[@]}"; do
  for seed in $SEEDS; do
    run="$OUT/${variant}-s${seed}"
    sets=()
    for kv in $EXTRA_SETS ${VARIANTS[$variant]}; do sets+=(--set "$kv"); done
    cmd=(o3d train --preset tiny --data "$DATA" -o "$run" --steps "$STEPS" --seed "$seed"
         --set "runtime.threads=$THREADS" "${sets[@]}" --no-progress)
    if [ -n "$TIME_LIMIT" ]; then
      while [ "$JOBS" -gt 1 ] && [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 5; done
      left=$(( DEADLINE - $(date +%s) ))
      [ "$left" -ge 1 ] || left=1  # too late to start: load, save a checkpoint at once, stop
      cmd+=(--time-limit "${left}s")
    fi
    if [ "$JOBS" -le 1 ]; then
      "${cmd[@]}" || { rc=$?; [ "$rc" -eq 3 ] || exit "$rc"; }  # 3: stopped by --time-limit (checked below)
    else  # at most JOBS at a time; their exit codes are checked below
      while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 5; done
      "${cmd[@]}" > "$run.log" 2>&1 &
      PIDS+=("$!")
    fi
    # a preset = the run's resolved config + its EMA weights
    preset="$OUT/${variant}-s${seed}.yaml"
    printf 'description: ablation variant %s, seed %s, %s steps\nbase: %s\nmodel:\n  weights: %s\n' \
      "$variant" "$seed" "$STEPS" "$(realpath -m "$run/config.yaml")" "$(realpath -m "$run/model.safetensors")" > "$preset"
    PRESETS+=("$preset")
  done
done
for pid in "${PIDS[@]}"; do
  wait "$pid" || { rc=$?; [ "$rc" -eq 3 ] || {  # 3: stopped by --time-limit (checked below)
    echo "a training run failed or was interrupted (exit $rc; its log: $OUT/<variant>-s<seed>.log); run this again" >&2; exit 1; }; }
done
if [ -n "$TIME_LIMIT" ]; then  # score only complete runs: all of them have STEPS steps
  for p in "${PRESETS[@]}"; do
    w="$(python3 -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['model']['weights'])" "$p")"
    step="$(python3 -c "import sys; from safetensors import safe_open; print(safe_open(sys.argv[1], 'pt').metadata().get('step', 0))" "$w")"
    if [ "$step" -lt "$STEPS" ]; then
      echo "TIME_LIMIT $TIME_LIMIT reached: $(basename "$p" .yaml) is at step $step of $STEPS; run this again to continue"
      exit 3
    fi
  done
fi
# Generate with every variant and score the meshes; then score the Gaussian renders and the
# generated views of the same assets (no second generation). The meshes are textured from the
# generated views only (mesh.input_weight=0): projecting the input photo would lift view 0 of
# every variant alike and hide the models' differences (rounds 1-3 predate the projection).
o3d eval --benchmark synthetic --limit "$LIMIT" -o "$OUT/eval-mesh" --no-progress --asset mesh \
  --set "runtime.threads=$THREADS" --set mesh.input_weight=0 \
  --variants "$(IFS=,; echo "${PRESETS[*]}")"
ASSETS=()
for p in "${PRESETS[@]}"; do ASSETS+=("$OUT/eval-mesh/assets/$(basename "$p" .yaml)"); done
o3d eval --benchmark synthetic --limit "$LIMIT" -o "$OUT/eval-gaussians" --no-progress --asset gaussians --set "runtime.threads=$THREADS" \
  --predictions "$(IFS=,; echo "${ASSETS[*]}")"
o3d eval --benchmark synthetic --limit "$LIMIT" -o "$OUT/eval-views" --no-progress --asset views --set "runtime.threads=$THREADS" \
  --predictions "$(IFS=,; echo "${ASSETS[*]}")"
python "$(dirname "$0")/ablation_table.py" "$OUT" --save "$OUT/ablation-results.json" > "$OUT/ablation-table.md"
echo "results: $OUT/eval-{mesh,gaussians,views}/eval.md; per variant over seeds: $OUT/ablation-table.md"
