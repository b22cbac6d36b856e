"""Gaussian rasterizer: analytic single Gaussians, occlusion, gradients, tiling vs dense, conventions, gsplat."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from o3dcli.geometry.cameras import orbit_cameras
from o3dcli.geometry.gaussians import Gaussians
from o3dcli.render import render_gaussians, select_backend

RADIUS = 1.7417


def _cam(size, fov=39.6):
    """The azimuth-0 orbit camera: on +Z at RADIUS, looking at the origin."""
    return orbit_cameras(0.0, 0.0, radius=RADIUS, fov_deg=fov, size=size)


def _quat_z(angle):
    """(w, x, y, z) rotation by ``angle`` about +Z, and its matrix written out by hand."""
    c, s = math.cos(angle), math.sin(angle)
    q = torch.tensor([math.cos(angle / 2), 0.0, 0.0, math.sin(angle / 2)], dtype=torch.float64)
    return q, torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def _gaussians(means, scales, quats, opac, colors, dtype=torch.float64):
    return Gaussians(*(torch.as_tensor(x, dtype=dtype) for x in (means, scales, quats, opac, colors)))


def _pixel_centres(w, h, dtype=torch.float64):
    v, u = torch.meshgrid(torch.arange(h, dtype=dtype), torch.arange(w, dtype=dtype), indexing="ij")
    return u + 0.5, v + 0.5


@pytest.mark.parametrize("scales,angle", [((0.05, 0.05, 0.05), 0.0), ((0.08, 0.03, 0.02), 0.6)])
def test_single_gaussian_matches_analytic_2d_gaussian(scales, angle):
    size, mean, opac, color = 32, torch.tensor([0.07, -0.05, 0.1], dtype=torch.float64), 0.8, (0.2, 0.5, 0.9)
    q, rot = _quat_z(angle)
    g = _gaussians(mean[None], [scales], q[None], [opac], [color])
    cam = _cam(size)
    out = render_gaussians(g, cam, background=(0.1, 0.3, 1.0), backend="torch")

    # the camera sits at (0, 0, R) looking down -Z: camera x = world x, y = -world y, z = R - world z
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
    p = flip @ mean + torch.tensor([0.0, 0.0, RADIUS], dtype=torch.float64)
    f = float(cam.fx[0])
    jac = torch.tensor([[f / p[2], 0, -f * p[0] / p[2] ** 2],
                        [0, f / p[2], -f * p[1] / p[2] ** 2]], dtype=torch.float64)
    sigma = rot @ torch.diag(torch.tensor(scales, dtype=torch.float64) ** 2) @ rot.T
    cov2d = jac @ flip @ sigma @ flip.T @ jac.T + 0.3 * torch.eye(2, dtype=torch.float64)
    inv = torch.linalg.inv(cov2d)
    u, v = _pixel_centres(size, size)
    du, dv = u - (f * p[0] / p[2] + size / 2), v - (f * p[1] / p[2] + size / 2)
    expect = opac * torch.exp(-0.5 * (inv[0, 0] * du**2 + 2 * inv[0, 1] * du * dv + inv[1, 1] * dv**2))
    expect = torch.where(expect >= 1 / 255, expect, torch.zeros_like(expect))

    assert expect.max() > 0.7 and (expect > 0).sum() > 20  # the test sees a real blob
    assert torch.allclose(out.alpha[0, 0], expect, atol=1e-4)
    bg = torch.tensor([0.1, 0.3, 1.0], dtype=torch.float64)[:, None, None]
    want_rgb = torch.tensor(color, dtype=torch.float64)[:, None, None] * expect + (1 - expect) * bg
    assert torch.allclose(out.rgb[0], want_rgb, atol=1e-4)
    covered = expect > 0
    assert torch.allclose(out.depth[0, 0][covered], p[2].expand(int(covered.sum())), atol=1e-5)
    assert torch.all(out.depth[0, 0][~covered] == 0)
    assert out.features is None


def test_features_are_raw_weighted_sums():
    g = _gaussians([[0.0, 0.05, 0.0]], [[0.06] * 3], [[1.0, 0, 0, 0]], [0.7], [[1.0, 0.0, 0.0]])
    feats = g.means + 0.5
    out = render_gaussians(g, _cam(24), backend="torch", features=feats)
    assert out.features.shape == (1, 3, 24, 24)
    want = out.alpha[0] * feats[0][:, None, None]  # one Gaussian: sum w f = alpha f, no background
    assert torch.allclose(out.features[0], want, atol=1e-6)


def test_two_gaussians_front_to_back():
    # odd size: the principal point (16.5, 16.5) is the centre of pixel (16, 16)
    front = ([0.0, 0.0, 0.3], [0.05] * 3, [1.0, 0, 0, 0], 0.7, [1.0, 0.0, 0.0])
    back = ([0.0, 0.0, -0.2], [0.08] * 3, [1.0, 0, 0, 0], 0.9, [0.0, 0.0, 1.0])
    g = _gaussians(*zip(back, front))  # listed back first: order must come from depth
    out = render_gaussians(g, _cam(33), background=(0.0, 1.0, 0.0), backend="torch")
    a_f, a_b = 0.7, 0.9  # both centred on the pixel, so exp(0) = 1
    want = torch.tensor([a_f, (1 - a_f) * (1 - a_b), (1 - a_f) * a_b], dtype=torch.float64)
    assert torch.allclose(out.rgb[0, :, 16, 16], want, atol=1e-6)
    assert out.alpha[0, 0, 16, 16].item() == pytest.approx(1 - (1 - a_f) * (1 - a_b), abs=1e-6)
    z_f, z_b = RADIUS - 0.3, RADIUS + 0.2
    want_depth = (a_f * z_f + (1 - a_f) * a_b * z_b) / (1 - (1 - a_f) * (1 - a_b))
    assert out.depth[0, 0, 16, 16].item() == pytest.approx(want_depth, abs=1e-5)


def test_gradcheck_float64():
    gen = torch.Generator().manual_seed(3)
    n = 3
    means = (torch.rand(n, 3, generator=gen, dtype=torch.float64) - 0.5) * 0.2
    scales = 0.2 + 0.1 * torch.rand(n, 3, generator=gen, dtype=torch.float64)
    quats = torch.nn.functional.normalize(torch.randn(n, 4, generator=gen, dtype=torch.float64), dim=-1)
    opac = torch.tensor([0.55, 0.7, 0.85], dtype=torch.float64)
    colors = torch.rand(n, 3, generator=gen, dtype=torch.float64)
    feats = torch.rand(n, 2, generator=gen, dtype=torch.float64)
    cam = _cam(8, fov=30.0)

    def render(m, s, q, o, c, f):
        out = render_gaussians(Gaussians(m, s, q, o, c), cam, backend="torch", features=f, tile_size=4)
        return out.rgb, out.alpha, out.depth, out.features

    inputs = [t.clone().requires_grad_() for t in (means, scales, quats, opac, colors, feats)]
    assert render(*inputs)[1].min() > 1 / 255  # every pixel covered: no cut-off edges to trip on
    assert torch.autograd.gradcheck(render, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)


def _dense_reference(g, cams, bg):
    """Every pixel against every Gaussian, no tiles, no culling beyond the near plane."""
    out_rgb, out_alpha = [], []
    for i in range(len(cams)):
        w2c = torch.linalg.inv(cams.c2w[i].double())
        p = g.means @ w2c[:3, :3].T + w2c[:3, 3]
        fx, fy, cx, cy = (float(t[i]) for t in (cams.fx, cams.fy, cams.cx, cams.cy))
        u, v = _pixel_centres(cams.width, cams.height)
        alpha_all, colour_all, depth_all = [], [], []
        for k in range(len(g)):
            x, y, z = p[k]
            if z <= 0.01:
                continue
            jac = torch.stack([torch.stack([fx / z, 0 * z, -fx * x / z**2]),
                               torch.stack([0 * z, fy / z, -fy * y / z**2])])
            cov = jac @ w2c[:3, :3] @ g.covariances()[k] @ w2c[:3, :3].T @ jac.T + 0.3 * torch.eye(2, dtype=p.dtype)
            inv = torch.linalg.inv(cov)
            du, dv = u - (fx * x / z + cx), v - (fy * y / z + cy)
            a = g.opacities[k] * torch.exp(-0.5 * (inv[0, 0] * du**2 + 2 * inv[0, 1] * du * dv + inv[1, 1] * dv**2))
            alpha_all.append(torch.where(a >= 1 / 255, a.clamp(max=0.999), torch.zeros_like(a)))
            colour_all.append(g.colors[k])
            depth_all.append(float(z))
        rgb = torch.zeros(3, cams.height, cams.width, dtype=p.dtype)
        trans = torch.ones(cams.height, cams.width, dtype=p.dtype)
        for k in sorted(range(len(depth_all)), key=depth_all.__getitem__):
            a = torch.where(trans * (1 - alpha_all[k]) > 1e-4, alpha_all[k], torch.zeros_like(trans))  # pixel done
            rgb = rgb + (trans * a) * colour_all[k][:, None, None]
            trans = trans * (1 - a)
        out_rgb.append(rgb + trans * bg[:, None, None])
        out_alpha.append(1 - trans)
    return torch.stack(out_rgb), torch.stack(out_alpha)[:, None]


@pytest.mark.parametrize("tile_size,max_pairs", [(4, 1 << 21), (8, 64), (16, 1 << 21)])
def test_tiled_matches_dense_reference(tile_size, max_pairs):
    gen = torch.Generator().manual_seed(7)
    n = 40
    means = (torch.rand(n, 3, generator=gen) - 0.5) * 0.8
    means[0] = torch.tensor([0.0, 0.0, 1.9])  # behind the azimuth-0 camera: must be culled
    scales = 0.01 + 0.06 * torch.rand(n, 3, generator=gen)
    quats = torch.nn.functional.normalize(torch.randn(n, 4, generator=gen), dim=-1)
    opac = 0.2 + 0.8 * torch.rand(n, generator=gen)
    opac[1] = 1.0  # hits the 0.999 clamp
    g = Gaussians(means, scales, quats, opac, torch.rand(n, 3, generator=gen))
    cams = orbit_cameras([0.0, 20.0], [0.0, 100.0], size=(26, 19))  # not a multiple of any tile
    bg = torch.tensor([0.3, 0.6, 0.9])
    out = render_gaussians(g, cams, background=bg, backend="torch", tile_size=tile_size, max_pairs=max_pairs)
    ref_rgb, ref_alpha = _dense_reference(g.to(dtype=torch.float64), cams, bg.double())
    assert ref_alpha.max() > 0.99 and (ref_alpha > 0).float().mean() > 0.3
    assert (out.rgb.double() - ref_rgb).abs().max() < 1e-5
    assert (out.alpha.double() - ref_alpha).abs().max() < 1e-5


def _blob_centre(alpha):
    h, w = alpha.shape
    v, u = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    return float((alpha * u).sum() / alpha.sum()), float((alpha * v).sum() / alpha.sum())


def test_orientation_conventions():
    g = _gaussians([[0.3, 0.0, 0.0], [0.0, 0.3, 0.0]], [[0.04] * 3] * 2, [[1.0, 0, 0, 0]] * 2, [0.9, 0.9],
                   [[1.0, 0, 0]] * 2, dtype=torch.float32)
    cam = _cam(32)
    u_x, v_x = _blob_centre(render_gaussians(g[0:1], cam, backend="torch").alpha[0, 0])
    u_y, v_y = _blob_centre(render_gaussians(g[1:2], cam, backend="torch").alpha[0, 0])
    assert u_x > 16 + 4 and v_x == pytest.approx(16, abs=0.01)  # +X on the right
    assert v_y < 16 - 4 and u_y == pytest.approx(16, abs=0.01)  # +Y at the top


def test_select_backend_on_cpu():
    assert select_backend("cpu") == "torch"
    assert select_backend(torch.device("cpu"), "torch") == "torch"
    with pytest.raises(ValueError, match="gsplat"):
        select_backend("cpu", "gsplat")
    with pytest.raises(ValueError, match="unknown backend"):
        select_backend("cpu", "opengl")


@pytest.mark.parametrize("backend_module, why", [
    ("_C = None\n", "found no CUDA toolkit"),  # what gsplat leaves without nvcc: every render would fail
    ("raise RuntimeError('Error building extension gsplat_cuda')\n", "failed to build or load (RuntimeError"),
    ("_C = object()\n", None),  # kernels loaded
])
def test_auto_on_cuda_uses_gsplat_only_when_its_kernels_load(tmp_path, monkeypatch, caplog, backend_module, why):
    # gsplat's wheel is pure Python: `import gsplat` works on any machine, and its kernels are built
    # (or not) only when gsplat.cuda._backend is imported; a stand-in package plays each outcome
    import o3dcli.render.gaussians as rg

    fake = tmp_path / "gsplat"
    (fake / "cuda").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "cuda" / "__init__.py").write_text("")
    (fake / "cuda" / "_backend.py").write_text(backend_module)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "gsplat" or m.startswith("gsplat.")]:
        monkeypatch.delitem(sys.modules, name)
    rg.gsplat_problem.cache_clear()
    monkeypatch.setattr(rg, "_gsplat_warned", False)
    try:
        with caplog.at_level("WARNING", logger="o3d"):
            chosen = [select_backend("cuda", "auto"), select_backend(torch.device("cuda", 0), "auto")]
    finally:
        rg.gsplat_problem.cache_clear()
    if why is None:
        assert chosen == ["gsplat", "gsplat"] and not caplog.records
    else:
        assert chosen == ["torch", "torch"]
        (record,) = caplog.records  # said once, not at every render
        assert "torch splatter" in record.getMessage() and why in record.getMessage()


def test_info_says_torch_renders_on_a_cuda_machine_without_the_toolkit(monkeypatch):
    import torch.utils.cpp_extension

    from o3dcli import sysinfo

    monkeypatch.setattr(torch.utils.cpp_extension, "CUDA_HOME", None)
    monkeypatch.setenv("PATH", "")
    if __import__("importlib").util.find_spec("gsplat.csrc") is not None:
        pytest.skip("this gsplat has its kernels compiled in")
    assert sysinfo._cuda_rasterizer().startswith("torch (gsplat needs the CUDA toolkit's nvcc")


def test_cpu_path_never_imports_gsplat():
    code = (
        "import sys, torch\n"
        "from o3dcli.geometry.gaussians import Gaussians\n"
        "from o3dcli.geometry.cameras import orbit_cameras\n"
        "from o3dcli.render import render_gaussians\n"
        "g = Gaussians(torch.zeros(1, 3), torch.full((1, 3), 0.3), torch.tensor([[1.0, 0, 0, 0]]),\n"
        "              torch.ones(1), torch.ones(1, 3))\n"
        "out = render_gaussians(g, orbit_cameras(0, 0, size=8))\n"
        "assert out.alpha.max() > 0.9\n"
        "assert 'gsplat' not in sys.modules, 'gsplat was imported'\n"
    )
    repo = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=repo, env={"PYTHONPATH": str(repo), "PATH": ""})


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_torch_backend_matches_gsplat():
    gen = torch.Generator().manual_seed(0)
    n = 2048
    dirs = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen), dim=-1)
    means = dirs * 0.35 * torch.rand(n, 1, generator=gen).sqrt()
    scales = 0.005 + 0.03 * torch.rand(n, 3, generator=gen)
    quats = torch.nn.functional.normalize(torch.randn(n, 4, generator=gen), dim=-1)
    opac = 0.1 + 0.85 * torch.rand(n, generator=gen)
    g = Gaussians(means, scales, quats, opac, torch.rand(n, 3, generator=gen)).to("cuda")
    cams = orbit_cameras(10.0, [0.0, 90.0, 180.0, 270.0], size=64).to("cuda")
    bg = (0.2, 0.4, 0.6)
    a = render_gaussians(g, cams, background=bg, backend="torch", features=g.means + 0.5)
    b = render_gaussians(g, cams, background=bg, backend="gsplat", features=g.means + 0.5)
    # float32 sums in another order; gsplat evaluates exp in fast math: expect ~1e-5..1e-4
    for name in ("rgb", "alpha", "features"):
        diff = (getattr(a, name) - getattr(b, name)).abs()
        assert diff.mean() < 1e-3 and diff.max() < 2e-2, (name, diff.mean().item(), diff.max().item())
    covered = (a.alpha > 0.5) & (b.alpha > 0.5)
    assert (a.depth - b.depth)[covered].abs().max() < 1e-2


def test_clamped_alpha_has_no_opacity_gradient_and_empty_scenes_render_background():
    # opacity 1 centred on pixel (8, 8): alpha_raw = 1 there, clamped to 0.999 (as gsplat)
    opac = torch.tensor([1.0], requires_grad=True)
    g = Gaussians(torch.zeros(1, 3), torch.full((1, 3), 0.05), torch.tensor([[1.0, 0, 0, 0]]), opac, torch.ones(1, 3))
    out = render_gaussians(g, _cam(17), backend="torch")
    assert out.alpha[0, 0, 8, 8].item() == pytest.approx(0.999, abs=1e-6)
    (grad,) = torch.autograd.grad(out.alpha[0, 0, 8, 8], opac)
    assert grad.item() == 0.0

    behind = Gaussians(torch.tensor([[0.0, 0.0, 3.0]]), torch.full((1, 3), 0.05), torch.tensor([[1.0, 0, 0, 0]]),
                       torch.ones(1), torch.ones(1, 3))
    for scene in (behind, behind[:0]):
        out = render_gaussians(scene, _cam(8), background=(0.2, 0.3, 0.4), backend="torch", features=scene.means)
        assert torch.equal(out.alpha, torch.zeros(1, 1, 8, 8)) and torch.equal(out.depth, torch.zeros(1, 1, 8, 8))
        assert torch.allclose(out.rgb, torch.tensor([0.2, 0.3, 0.4])[None, :, None, None].expand(1, 3, 8, 8))
        assert out.features.shape == (1, 3, 8, 8) and not out.features.any()


def test_views_binned_in_groups_under_a_memory_bound_render_the_same(monkeypatch):
    # 65,536 large Gaussians at 512 px on 4 px tiles were 10^9 list entries (over 20 GB): views are
    # now binned in groups under MAX_TILE_ENTRIES, and a view over it alone gets coarser tiles
    import o3dcli.render.gaussians as rg

    gen = torch.Generator().manual_seed(3)
    n = 60
    means = (torch.rand(n, 3, generator=gen, dtype=torch.float64) - 0.5) * 0.8
    scales = 0.02 + 0.1 * torch.rand(n, 3, generator=gen, dtype=torch.float64)
    quats = torch.nn.functional.normalize(torch.randn(n, 4, generator=gen, dtype=torch.float64), dim=-1)
    opac = 0.2 + 0.7 * torch.rand(n, generator=gen, dtype=torch.float64)
    colors = torch.rand(n, 3, generator=gen, dtype=torch.float64)
    cams = orbit_cameras([0.0, 20.0, -10.0, 30.0], [0.0, 100.0, 200.0, 300.0], size=(40, 33))

    def render(*tensors):
        out = render_gaussians(Gaussians(*tensors), cams, backend="torch", tile_size=4)
        return out.rgb, out.alpha, out.depth

    inputs = [t.clone().requires_grad_() for t in (means, scales, quats, opac, colors)]
    whole = render(*inputs)
    grads = torch.autograd.grad(sum(o.sum() for o in whole), inputs)
    entries = rg._tile_entries(*(t.detach() for t in _projected(inputs, cams)), cams.width, cams.height, 4).tolist()
    assert min(entries) > 0
    for bound in (max(entries), max(entries) // 3):  # views in groups; then each alone, on coarser tiles
        monkeypatch.setattr(rg, "MAX_TILE_ENTRIES", bound)
        groups = rg._view_groups(*(t.detach() for t in _projected(inputs, cams)), cams.width, cams.height, 4, bound)
        assert len(groups) > 1 and (bound == max(entries) or any(t > 4 for _, t in groups)), groups
        parts = render(*inputs)
        for a, b in zip(parts, whole):
            assert (a - b).abs().max() < 1e-9
        for a, b in zip(torch.autograd.grad(sum(o.sum() for o in parts), inputs), grads):
            assert (a - b).abs().max() < 1e-7


def _projected(inputs, cams):
    """(means2d, radii, valid) of the Gaussians in every view, as the torch backend projects them."""
    from o3dcli.render import _raster_torch as rt

    g = Gaussians(*inputs)
    means2d, _, _, radii, valid = rt.project_gaussians(
        g.means, g.rotation_matrices() * g.scales[:, None, :], g.opacities, cams.viewmats().to(g.means.dtype),
        cams.K().to(g.means.dtype), cams.width, cams.height, 0.01, 100.0, rt.EPS2D)
    return means2d, radii, valid
