"""Run the Khronos glTF validator (npm package gltf-validator, tools/gltf) on files the tests write.

Install once: npm ci --prefix tools/gltf. Without node or the package the
``gltf_validator`` fixture skips, unless O3D_REQUIRE_GLTF_VALIDATOR=1 (CI) makes
that a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[1] / "tools" / "gltf"
SCRIPT = TOOLS / "validate.mjs"
INSTALL_HINT = "npm ci --prefix tools/gltf"


def validator_missing() -> str | None:
    """Why the validator cannot run here, or None when it can."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not (TOOLS / "node_modules" / "gltf-validator").is_dir():
        return f"the gltf-validator npm package is not installed (run: {INSTALL_HINT})"
    return None


def validate_glb(path) -> dict:
    """The validator's report for one file: {"errors", "warnings", "infos", "hints", "messages"}
    (or {"fatal": reason} when the file is not glTF at all)."""
    proc = subprocess.run(["node", str(SCRIPT), str(path)], capture_output=True, text=True, timeout=120)
    if proc.returncode not in (0, 1, 2) or not proc.stdout.strip():
        raise RuntimeError(f"glTF validator failed on {path} (exit {proc.returncode}): {proc.stderr.strip()}")
    return json.loads(proc.stdout)["files"][0]


@pytest.fixture
def gltf_validator():
    """``validate_glb``, or a skip (a failure when O3D_REQUIRE_GLTF_VALIDATOR=1) without the validator."""
    missing = validator_missing()
    if missing:
        if os.environ.get("O3D_REQUIRE_GLTF_VALIDATOR") == "1":
            pytest.fail(f"glTF validator required (O3D_REQUIRE_GLTF_VALIDATOR=1) but {missing}")
        pytest.skip(f"glTF validator unavailable: {missing}")
    return validate_glb
