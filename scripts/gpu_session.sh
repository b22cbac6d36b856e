#!/usr/bin/env bash
# The GPU checks as one prepared run, for a lent GPU machine that cannot reach a package index
# and has PyTorch but not o3d's other dependencies.
#
#   scripts/gpu_session.sh prepare   # here, with o3d installed: fills .gpu/ (git-ignored)
#   scripts/gpu_session.sh run       # there, from the repo root, .gpu/ copied along
#
# prepare: the wheels the checks need beyond a CUDA PyTorch image (gsplat, diffusers and what
#   diffusers needs that such images lack), for CPython $PYVER on x86-64 Linux, and 16 rendered
#   training objects without their meshes (reading meshes needs open3d, which is too large to
#   copy along; without mesh.obj the train section runs without the surface-point loss and says so).
# run: installs those wheels into /tmp/o3d-site, then
#   1. the CUDA tests (tests marked `cuda`: gsplat against the torch splatter);
#   2. scripts/gpu_checks.py: gsplat vs torch (agreement, gradients, ms per render), fp32/fp16/bf16
#      sampling with the shipped model (s per image, peak memory, PSNR against fp32), and training
#      throughput at batch 2/16/64; all of it in $OUT/gpu_checks.json (or .gpu/out/ without $OUT).
# With this workplace's device tool: run(command="bash scripts/gpu_session.sh run", carry=[".gpu"],
# timeout_s=580); expected: a few minutes for gsplat's compile, then about as much for the checks.
# gsplat compiles its CUDA kernels at first use (minutes); the first render timing includes none of it
# (the checks warm up first), and the compile time is printed on its own.
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER="${PYVER:-3.12}"
mode="${1:-}"

if [ "$mode" = prepare ]; then
  grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
  rm -rf .gpu/whl && mkdir -p .gpu/whl
  plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
        --platform any)
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    "${plat[@]}" -d .gpu/whl "gsplat==${GSPLAT:-1.5.3}" "diffusers==${DIFFUSERS:-0.42.1}" importlib_metadata
  o3d data synth -n 16 -o .gpu/data --seed 0 --size 64 --extra-views 4
  rm -f .gpu/data/*/mesh.obj .gpu/data/*/mesh.mtl .gpu/data/*/mesh_texture.png
  du -sh .gpu
  echo "prepared .gpu/: run 'bash scripts/gpu_session.sh run' on the GPU machine with .gpu carried along"
  exit 0
fi

if [ "$mode" = -h ] || [ "$mode" = --help ] || [ "$mode" = help ]; then
  sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi
if [ "$mode" != run ]; then
  echo "usage: scripts/gpu_session.sh prepare|run (--help says more)" >&2
  exit 2
fi
if ! ls .gpu/whl/*.whl >/dev/null 2>&1 || [ ! -d .gpu/data ]; then
  echo "error: .gpu/ is not prepared: run 'scripts/gpu_session.sh prepare' first (on a machine with o3d" \
       "installed and a package index), then carry .gpu/ to the GPU machine" >&2
  exit 2
fi
if ! python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "error: no CUDA device here (python3 with a CUDA build of torch is needed): these are the GPU checks" >&2
  exit 2
fi
OUTDIR="${OUT:-.gpu/out}"
mkdir -p "$OUTDIR"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/o3d-site .gpu/whl/*.whl
export PYTHONPATH="/tmp/o3d-site:$PWD"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
t0=$(date +%s)
# gsplat builds its kernels at first use with at most 10 jobs unless told: all the cores (the build
# is most of the warm-up). A failed build is reported and the checks go on: "auto" then renders
# with the torch splatter, and the gsplat rows say why.
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
python3 - <<'EOF' || echo "gsplat did not build or render: the checks go on without it"
import torch
from o3dcli.geometry.cameras import orbit_cameras
from o3dcli.geometry.gaussians import Gaussians
from o3dcli.render import render_gaussians
g = Gaussians(torch.zeros(1, 3), torch.full((1, 3), 0.1), torch.tensor([[1.0, 0, 0, 0]]), torch.ones(1), torch.ones(1, 3)).to("cuda")
out = render_gaussians(g, orbit_cameras(0, 0, size=16).to("cuda"), backend="gsplat")
print("gsplat renders: alpha max", float(out.alpha.max()))
EOF
echo "gsplat first use (CUDA compile): $(( $(date +%s) - t0 )) s"
python3 -m pytest -q -m cuda -p no:cacheprovider tests/test_render_gaussians.py 2>&1 | tee "$OUTDIR/pytest_cuda.txt" || true
python3 scripts/gpu_checks.py --json "$OUTDIR/gpu_checks.json" --train-data .gpu/data 2>&1 | tee "$OUTDIR/gpu_checks.txt"
