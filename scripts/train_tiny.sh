#!/usr/bin/env bash
# Reproduce the shipped `tiny` weights: synthetic data + joint training on the CPU.
# Both steps resume: run this script again after an interruption and it continues.
#   DATA (default data/synth-train), RUN (default runs/tiny), STEPS (default: the preset's train.steps)
set -euo pipefail
DATA="${DATA:-data/synth-train}"
RUN="${RUN:-runs/tiny}"
EXTRA=()
[ -n "${STEPS:-}" ] && EXTRA+=(--steps "$STEPS")

# 1,000 procedural objects, seeds 0..999 (the synthetic benchmark uses 1,000,000+, examples 2,000,000+).
o3d data synth -n 1000 -o "$DATA" --seed 0 --size 64 --extra-views 4
# Joint training with feedback (train.joint=true, train.feedback_p=0.5), seed 0.
o3d train --preset tiny --data "$DATA" -o "$RUN" --seed 0 "${EXTRA[@]}"
# Ship the EMA weights:  cp "$RUN/model.safetensors" o3dcli/assets/weights/tiny.safetensors
