#!/usr/bin/env bash
# o3d on a minimal system with no graphics libraries: what a `python:3.x-slim` container or a
# bare server gives a user. Builds a chroot with debootstrap (root, Debian host), installs o3d
# there from PyPI's newest releases that support the system's Python, checks that `o3d generate`
# names the missing system libraries and their packages before any work, installs them, and
# runs the tests.
#
#   sudo scripts/check_slim_system.sh [SYSTEM] [CHROOT]
#
# SYSTEM: debian13 (Debian 13 "trixie", Python 3.13; the default) or ubuntu22.04 (Ubuntu 22.04
# "jammy", Python 3.10: pyproject.toml's requires-python minimum). CHROOT defaults to
# /tmp/o3d-SYSTEM; about 6 GB. An existing chroot is reused (its venv is made anew).
set -euo pipefail
cd "$(dirname "$0")/.."
SYSTEM="${1:-debian13}"
case "$SYSTEM" in
  debian13) SUITE=trixie MIRROR=http://deb.debian.org/debian COMPONENTS=main ;;
  # Ubuntu's python3-venv is in universe
  ubuntu22.04) SUITE=jammy MIRROR=http://archive.ubuntu.com/ubuntu COMPONENTS=main,universe ;;
  *) echo "unknown system '$SYSTEM': debian13 or ubuntu22.04" >&2; exit 2 ;;
esac
ROOTFS="${2:-/tmp/o3d-$SYSTEM}"
start=$(date +%s)

command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap >/dev/null
if [[ ! -x "$ROOTFS/usr/bin/python3" ]]; then
  # the packages this check needs, and the ones a slim image has; not open3d's or pymeshlab's.
  # (On a Debian host without Ubuntu's archive keyring, debootstrap warns that it cannot check
  # the Release signature and goes on.)
  debootstrap --variant=minbase --components="$COMPONENTS" \
    --include=python3,python3-venv,ca-certificates,libgomp1,libgl1,libusb-1.0-0 \
    "$SUITE" "$ROOTFS" "$MIRROR" >/dev/null
fi
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
cp /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/ca-certificates.crt"  # a proxy's CA, where there is one
mountpoint -q "$ROOTFS/proc" || mount -t proc proc "$ROOTFS/proc"
mountpoint -q "$ROOTFS/dev" || mount --bind /dev "$ROOTFS/dev"
trap 'umount "$ROOTFS/dev" "$ROOTFS/proc" 2>/dev/null || true' EXIT
rm -rf "$ROOTFS/root/o3d" "$ROOTFS/root/venv" && mkdir -p "$ROOTFS/root/o3d"
git ls-files -z | xargs -0 cp --parents -t "$ROOTFS/root/o3d"
in_root() { chroot "$ROOTFS" /bin/bash -c "cd /root/o3d && . /root/venv/bin/activate && $1"; }
chroot "$ROOTFS" /bin/bash -c "python3 -m venv /root/venv"
# the system's pip may predate editable installs from pyproject.toml alone (PEP 660: pip 21.3)
in_root "pip install -q --upgrade pip"
in_root "pip install -q -e '.[dev,video]'"   # PyPI's torch for Linux is a CUDA build: it runs on the CPU
in_root "python --version; pip list 2>/dev/null | grep -E '^(torch|numpy|open3d|pymeshlab|diffusers|scipy|typer|trimesh) '"

echo "== without libegl1 and libopengl0: refused up front, naming them"
chroot "$ROOTFS" /bin/bash -c "apt-get remove -y -qq libegl1 libopengl0 >/dev/null 2>&1 || true"
set +e
rm -rf "$ROOTFS/tmp/slim-out"
in_root "o3d generate --examples -o /tmp/slim-out" > /tmp/o3d-slim-refusal.txt 2>&1
rc=$?
set -e
cat /tmp/o3d-slim-refusal.txt
[[ $rc == 2 ]] && grep -q "apt-get install libegl1" /tmp/o3d-slim-refusal.txt \
  && grep -q "apt-get install libopengl0" /tmp/o3d-slim-refusal.txt && [[ ! -e "$ROOTFS/tmp/slim-out" ]] \
  || { echo "FAIL: expected exit 2 naming libegl1 and libopengl0, and no output folder (exit $rc)"; exit 1; }

echo "== with them: the tests"
chroot "$ROOTFS" /bin/bash -c "apt-get update -qq && apt-get install -y -qq libegl1 libopengl0 >/dev/null"
in_root "python -m pytest -q -n 2 -rs -p no:cacheprovider"
echo "== with them: the README's main command"
rm -rf "$ROOTFS/tmp/slim-out"
in_root "o3d generate --examples -o /tmp/slim-out"
echo "== total $(( $(date +%s) - start )) s"
