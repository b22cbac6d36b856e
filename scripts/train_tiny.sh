#!/usr/bin/env bash
# Reproduce the shipped `tiny` weights: synthetic data + joint training on the CPU, then the
# float16 export into the package. Every step resumes: run the script again after an
# interruption and it continues where it stopped.
#   DATA (default data/synth-train), RUN (default runs/tiny), STEPS (default 0: the shipped
#   weights' step count, see o3dcli/assets/weights/README.md)
# The shipped run used one thread (runtime.threads=1, as here); other thread counts give
# equivalent weights, not bit-identical ones (floating-point sums are ordered differently).
set -euo pipefail
DATA="${DATA:-data/synth-train}"
RUN="${RUN:-runs/tiny}"
STEPS="${STEPS:-0}"
PHASE1=1112   # steps trained with EDM's pixel-space noise before the preset's (see presets/tiny.yaml)
[ "$STEPS" -gt 0 ] || STEPS=$(python -c "from o3dcli.models.checkpoints import read_metadata; from o3dcli.sysinfo import weights_dirs; print(read_metadata(weights_dirs()[0] / 'tiny.safetensors')['step'])")

# 1,000 procedural objects, seeds 0..999 (the synthetic benchmark uses 1,000,000+, examples 2,000,000+).
o3d data synth -n 1000 -o "$DATA" --seed 0 --size 64 --extra-views 4
# Joint training with feedback (train.joint=true, train.feedback_p=0.5), seed 0, in two phases.
if [ "$STEPS" -gt "$PHASE1" ]; then
  o3d train --preset tiny --data "$DATA" -o "$RUN" --seed 0 --steps "$PHASE1" --no-progress \
    --set runtime.threads=1 --set train.p_mean=-1.2 --set train.p_std=1.2
fi
o3d train --preset tiny --data "$DATA" -o "$RUN" --seed 0 --steps "$STEPS" --set runtime.threads=1
# The EMA weights, in float16, where `o3d generate` finds them.
python "$(dirname "$0")/export_weights.py" "$RUN/model.safetensors" o3dcli/assets/weights/tiny.safetensors
