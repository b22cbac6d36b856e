#!/usr/bin/env bash
# The floors in pyproject.toml (torch>=2.1, diffusers>=0.29, ...) are claims that users with
# older environments rely on. This installs exactly those oldest releases
# (scripts/constraints-min.txt) in a fresh virtual environment and runs the test suite on them.
#
#   scripts/check_min_deps.sh [VENV] [-- PYTEST ARGS]      (VENV default: .ci/venv-min)
#
# About 3 GB of downloads and 7 GB of disk on Linux: PyPI's torch 2.1 is a CUDA build (it runs on the CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=".ci/venv-min"
if [[ $# -gt 0 && "$1" != "--" ]]; then VENV="$1"; shift; fi
[[ "${1:-}" == "--" ]] && shift
export PIP_DISABLE_PIP_VERSION_CHECK=1

start=$(date +%s)
python3 -m venv "$VENV"
. "$VENV/bin/activate"
# o3d with the `video` extra, and every package the constraints name (the `dev` extra's test tools
# among them), each at its floor; not the dev extra itself, whose trimesh>=5.1 (for Draco
# decoding) would lift trimesh above the core floor
pins=$(sed -e 's/#.*//' -e 's/==.*//' scripts/constraints-min.txt | xargs)
pip install -q -c scripts/constraints-min.txt -e ".[video]" $pins
installed=$(( $(date +%s) - start ))

echo "== installed (each must be the floor scripts/constraints-min.txt names)"
python - <<'EOF'
from importlib.metadata import PackageNotFoundError, version

bad = 0
for line in open("scripts/constraints-min.txt"):
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, want = line.split("==")
    try:
        have = version(name)
    except PackageNotFoundError:
        have = "missing"
    ok = have == want or have.startswith(want + "+")  # a local build tag (2.1.0+cpu) is the same release
    bad += not ok
    print(f"  {name:<16} {want:<10} {'ok' if ok else 'INSTALLED ' + have}")
raise SystemExit(1 if bad else 0)
EOF

echo "== tests on the oldest releases"
python -m pytest -q -n 2 -rs -p no:cacheprovider "$@"
echo "== install ${installed} s, total $(( $(date +%s) - start )) s"
