"""scripts/gpu_checks.py: every section runs and measures on the CPU (--quick); gsplat rows say why they are skipped."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import gpu_checks  # noqa: E402


@pytest.mark.slow
def test_quick_run_on_cpu_measures_every_section(tmp_path):
    out = tmp_path / "gc.json"
    rc = gpu_checks.main(["--device", "cpu", "--quick", "--json", str(out)])
    rep = json.loads(out.read_text())
    assert rc == 0, rep
    assert rep["environment"]["device"] == "cpu" and rep["quick"] is True
    torch_rows = [r for r in rep["render"] if r["backend"] == "torch"]
    # both measured (which is larger is a timing, not a unit test's business: it flipped on a busy machine)
    assert torch_rows and all(0 < r["forward_ms"] < math.inf and 0 < r["forward_backward_ms"] < math.inf
                              for r in torch_rows)
    assert [r["skipped"] for r in rep["render"] if r["backend"] == "gsplat"] == ["gsplat needs CUDA"]
    (s,) = rep["sample"]  # float32 only on the CPU
    assert s["dtype"] == "float32" and s["steps"] == 2 and s["finite"] is True and s["s_per_image"] > 0
    (t,) = rep["train"]
    assert t["batch"] == 2 and t["surface_points"] is True and t["s_per_step"] > 0
    assert t["objects_per_s"] == pytest.approx(2 / t["s_per_step"])
    assert t["resume"] == "ok" and t["resume_loss_diff"] == 0  # the CPU is deterministic


def test_agreement_of_a_backend_with_itself_and_with_a_perturbed_copy():
    scene = gpu_checks.random_scene(256, seed=3)
    from o3dcli.geometry.cameras import orbit_cameras

    cams = orbit_cameras([10.0, 10.0], [0.0, 90.0], size=24)
    a = gpu_checks._render_once(scene, cams, "torch", True)
    same = gpu_checks.agreement(a, a)
    assert same["rgb_max_diff"] == 0 and same["alpha_mean_diff"] == 0 and same["depth_max_diff_opaque"] == 0
    assert all(math.isclose(same[f"grad_cos_{k}"], 1.0, abs_tol=1e-9) for k in ("means", "scales", "opacities", "colors"))
    jitter = 0.05 * torch.randn(256, 3, generator=torch.Generator().manual_seed(1))
    moved = type(scene)(scene.means + jitter, scene.scales, scene.quats, scene.opacities, scene.colors.flip(-1))
    b = gpu_checks._render_once(moved, cams, "torch", True)
    diff = gpu_checks.agreement(a, b)
    assert diff["rgb_max_diff"] > 0.05 and max(v for k, v in diff.items() if k.startswith("grad_cos")) < 0.95


def test_unknown_section_is_a_usage_error():
    with pytest.raises(SystemExit) as e:
        gpu_checks.main(["--device", "cpu", "--only", "render,nope"])
    assert e.value.code == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only message")
def test_cuda_device_without_cuda_is_a_usage_error():
    with pytest.raises(SystemExit) as e:
        gpu_checks.main(["--device", "cuda", "--only", "render"])
    assert e.value.code == 2
