"""Gaussian PLY reading and writing (o3dcli.io.ply)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from o3dcli.geometry.gaussians import Gaussians
from o3dcli.io.ply import OPACITY_EPS, SH_C0, VIEWER_FRAME_COMMENT, PlyError, load_gaussians, save_gaussians

STD_NAMES = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
             "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]


def random_gaussians(n: int = 500, seed: int = 0) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    quats = torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1)
    opac = torch.rand(n, generator=g)
    opac[:4] = torch.tensor([0.0, 1.0, 0.5, 1e-9])  # edge cases: clamped by OPACITY_EPS
    scales = torch.exp(torch.randn(n, 3, generator=g) * 2 - 4)
    scales[0] = torch.tensor([1.0, 0.9999, 1.0001])  # log near 0: hardest case for exactness
    colors = torch.rand(n, 3, generator=g)
    colors[1] = torch.tensor([0.0, 1.0, 0.5])
    return Gaussians(torch.randn(n, 3, generator=g), scales, quats, opac, colors)


def write_ply(path, fmt: str, props: list[tuple[str, str]], rows: np.ndarray, extra_header=()):
    """Hand-written PLY: props [(name, ply type)], rows [N, P] of numbers."""
    lines = ["ply", f"format {fmt} 1.0", *extra_header, f"element vertex {len(rows)}"]
    lines += [f"property {t} {n}" for n, t in props] + ["end_header"]
    head = ("\n".join(lines) + "\n").encode()
    if fmt == "ascii":
        body = "".join(" ".join(repr(float(x)) for x in r) + "\n" for r in rows).encode()
    else:
        codes = {"float": "f4", "double": "f8", "uchar": "u1", "int": "i4"}
        order = "<" if fmt == "binary_little_endian" else ">"
        data = np.zeros(len(rows), dtype=[(n, order + codes[t]) for n, t in props])
        for i, (n, _) in enumerate(props):
            data[n] = rows[:, i]
        body = data.tobytes()
    path.write_bytes(head + body)
    return path


def std_rows(n=3):
    """Raw stored values for n Gaussians in STD_NAMES order, and their expected activations."""
    rng = np.random.default_rng(1)
    rows = np.zeros((n, len(STD_NAMES)))
    rows[:, 0:3] = rng.normal(size=(n, 3))
    rows[:, 6:9] = rng.normal(size=(n, 3))
    rows[:, 9] = rng.normal(size=n) * 3
    rows[:, 10:13] = rng.normal(size=(n, 3)) - 4
    rows[:, 13:17] = rng.normal(size=(n, 4)) * 3  # deliberately not unit length
    expect = {
        "means": rows[:, 0:3],
        "colors": np.clip(rows[:, 6:9] * SH_C0 + 0.5, 0, 1),
        "opacities": 1 / (1 + np.exp(-rows[:, 9])),
        "scales": np.exp(rows[:, 10:13]),
        "quats": rows[:, 13:17] / np.linalg.norm(rows[:, 13:17], axis=1, keepdims=True),
    }
    return rows, expect


def assert_matches(g: Gaussians, expect: dict, rtol=1e-6, atol=1e-6):
    for k, v in expect.items():
        np.testing.assert_allclose(getattr(g, k).numpy(), v, rtol=rtol, atol=atol, err_msg=k)


def test_round_trip_bytes_and_values(tmp_path):
    g = random_gaussians()
    a = save_gaussians(tmp_path / "a.ply", g)
    loaded = load_gaussians(a)
    b = save_gaussians(tmp_path / "b.ply", loaded)
    assert a.read_bytes() == b.read_bytes()  # what we store survives load + save exactly
    again = load_gaussians(b)
    for k in ("means", "scales", "quats", "opacities", "colors"):
        assert torch.equal(getattr(again, k), getattr(loaded, k)), k
    # tolerances of the float32 log / logit / SH round trip: relative 2e-6, absolute 1e-6
    clamped = g.opacities.clamp(OPACITY_EPS, 1 - OPACITY_EPS)
    torch.testing.assert_close(loaded.opacities, clamped, rtol=2e-6, atol=1e-6)
    torch.testing.assert_close(loaded.means, g.means, rtol=0, atol=0)
    torch.testing.assert_close(loaded.scales, g.scales, rtol=2e-6, atol=0)
    torch.testing.assert_close(loaded.colors, g.colors, rtol=0, atol=1e-6)
    torch.testing.assert_close(loaded.quats, g.quats, rtol=0, atol=1e-6)


def test_written_layout_is_standard_3dgs(tmp_path):
    g = random_gaussians(4)
    raw = save_gaussians(tmp_path / "g.ply", g).read_bytes()
    head, body = raw.split(b"end_header\n")
    assert b"format binary_little_endian 1.0" in head
    assert [ln.split()[-1].decode() for ln in head.splitlines() if ln.startswith(b"property")] == STD_NAMES
    data = np.frombuffer(body, dtype=[(n, "<f4") for n in STD_NAMES])
    np.testing.assert_allclose(data["scale_1"], np.log(g.scales[:, 1].double().numpy()), rtol=1e-6)
    np.testing.assert_allclose(data["f_dc_2"], (g.colors[:, 2].double().numpy() - 0.5) / 0.28209479, rtol=1e-6, atol=1e-6)
    # opacity 0 and 1 are clamped to 1e-6 and 1 - 1e-6 (float32 0.99999899), not +-inf:
    # logit(1e-6) = -13.815510, logit(0.99999899) = 13.802318
    np.testing.assert_allclose(data["opacity"][:2], [-13.815510, 13.802318], rtol=1e-6)
    assert (data["nx"] == 0).all()
    # written in the splat viewers' frame (-Y up): o3d's world turned 180 degrees about Z
    assert b"comment " + VIEWER_FRAME_COMMENT.encode() in head
    xyz = np.stack([data["x"], data["y"], data["z"]], 1)
    assert np.array_equal(xyz, g.means.numpy() * np.array([-1, -1, 1], np.float32))
    w, x, y, z = g.quats.numpy().T
    assert np.array_equal(np.stack([data[f"rot_{i}"] for i in range(4)], 1), np.stack([-z, -y, x, w], 1))


def rotation_matrix(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def test_the_written_gaussians_are_the_same_shapes_turned_upside_down_for_splat_viewers(tmp_path):
    # SuperSplat and other viewers turn a PLY 180 degrees about Z on load (PLYs are mostly -Y up):
    # each Gaussian's position and covariance in the file are o3d's turned so, and turned back on load
    g = random_gaussians(6)
    raw = save_gaussians(tmp_path / "g.ply", g).read_bytes()
    data = np.frombuffer(raw.split(b"end_header\n")[1], dtype=[(n, "<f4") for n in STD_NAMES])
    turn = np.diag([-1.0, -1.0, 1.0])
    for i in range(len(g)):
        q = np.array([data[f"rot_{k}"][i] for k in range(4)], np.float64)
        sigma = np.diag(np.exp(2 * np.array([data[f"scale_{k}"][i] for k in range(3)], np.float64)))
        ours = rotation_matrix(g.quats[i].double().numpy())
        ours_sigma = ours @ np.diag(g.scales[i].double().numpy() ** 2) @ ours.T
        file_sigma = rotation_matrix(q) @ sigma @ rotation_matrix(q).T
        np.testing.assert_allclose(file_sigma, turn @ ours_sigma @ turn.T, rtol=1e-5, atol=1e-9)
    back = load_gaussians(tmp_path / "g.ply")
    assert torch.equal(back.means, g.means) and torch.equal(back.quats, g.quats)


def test_a_ply_without_the_frame_comment_is_read_as_it_is(tmp_path):
    # o3d's files from before the viewers' frame, and other tools' files: no turn
    g = random_gaussians(5)
    raw = save_gaussians(tmp_path / "g.ply", g).read_bytes()
    head, body = raw.split(b"end_header\n")
    data = np.frombuffer(body, dtype=[(n, "<f4") for n in STD_NAMES]).copy()
    data["x"], data["y"] = -data["x"], -data["y"]
    data["rot_0"], data["rot_1"], data["rot_2"], data["rot_3"] = (
        data["rot_3"].copy(), data["rot_2"].copy(), -data["rot_1"], -data["rot_0"])
    old = tmp_path / "old.ply"
    old.write_bytes(head.replace(b"comment " + VIEWER_FRAME_COMMENT.encode() + b"\n", b"") + b"end_header\n"
                    + data.tobytes())
    loaded = load_gaussians(old)
    assert torch.equal(loaded.means, g.means) and torch.equal(loaded.quats, g.quats)


@pytest.mark.parametrize("fmt", ["ascii", "binary_big_endian", "binary_little_endian"])
def test_reads_other_formats_and_orders(tmp_path, fmt):
    rows, expect = std_rows()
    order = list(reversed(range(len(STD_NAMES))))  # any property order
    ptype = "double" if fmt == "binary_big_endian" else "float"
    props = [(STD_NAMES[i], ptype) for i in order]
    if ptype == "float":
        rows = rows.astype(np.float32).astype(np.float64)
        _, expect = std_rows()
    path = write_ply(tmp_path / f"{fmt}.ply", fmt, props, rows[:, order], extra_header=["comment hand-written"])
    g, info = load_gaussians(path, return_info=True)
    assert_matches(g, expect, rtol=2e-6, atol=2e-6)
    assert info["renormalized_quaternions"] == 3 and info["sh_degree"] == 0
    assert torch.allclose(g.quats.norm(dim=-1), torch.ones(3))


def test_sh_degree_3_keeps_dc_and_reports_dropped(tmp_path):
    rows, expect = std_rows(5)
    rest = np.random.default_rng(2).normal(size=(5, 45))
    names = STD_NAMES + [f"f_rest_{i}" for i in range(45)] + ["filter_3D"]
    all_rows = np.concatenate([rows, rest, np.ones((5, 1))], axis=1).astype(np.float32)
    path = write_ply(tmp_path / "sh3.ply", "binary_little_endian", [(n, "float") for n in names], all_rows)
    g, info = load_gaussians(path, return_info=True)
    assert info["sh_degree"] == 3
    assert info["dropped_properties"] == [f"f_rest_{i}" for i in range(45)] + ["filter_3D"]
    np.testing.assert_allclose(g.colors.numpy(), np.clip(all_rows[:, 6:9] * SH_C0 + 0.5, 0, 1), atol=1e-6)
    assert isinstance(load_gaussians(path), Gaussians)


def test_point_cloud_ply_becomes_small_isotropic_gaussians(tmp_path):
    xyz = np.array([[0, 0, 0], [0.1, 0, 0], [0, 0.3, 0]], np.float64)
    rgb = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 51]], np.float64)
    props = [("x", "float"), ("y", "float"), ("z", "float"), ("red", "uchar"), ("green", "uchar"), ("blue", "uchar")]
    path = write_ply(tmp_path / "pc.ply", "binary_little_endian", props, np.concatenate([xyz, rgb], 1))
    g, info = load_gaussians(path, return_info=True)
    assert info["point_cloud"]
    np.testing.assert_allclose(g.colors.numpy(), rgb / 255, atol=1e-7)
    # the RMS distance to the (here two) other points, as 3DGS starts its Gaussians from points
    d01, d02, d12 = 0.1, 0.3, np.hypot(0.1, 0.3)
    want = np.sqrt([(d01**2 + d02**2) / 2, (d01**2 + d12**2) / 2, (d02**2 + d12**2) / 2])
    np.testing.assert_allclose(g.scales[:, 0].numpy(), want, rtol=1e-6)
    assert (g.opacities == 1).all() and (g.quats[:, 0] == 1).all()


def test_repeated_points_do_not_shrink_a_point_clouds_gaussians(tmp_path):
    # a cloud written twice over (merged scans): each copy sat at distance 0 from its twin, which
    # halved (four times over: shrank to the 0.01 fallback) every Gaussian
    rng = np.random.default_rng(1)
    xyz = rng.normal(size=(200, 3)) * 10.0
    props = [("x", "float"), ("y", "float"), ("z", "float")]
    once = load_gaussians(write_ply(tmp_path / "once.ply", "binary_little_endian", props, xyz))
    four = load_gaussians(write_ply(tmp_path / "four.ply", "binary_little_endian", props, np.tile(xyz, (4, 1))))
    assert len(four) == 800
    np.testing.assert_allclose(four.scales[:200].numpy(), once.scales.numpy(), rtol=1e-6)
    np.testing.assert_allclose(four.scales[600:].numpy(), once.scales.numpy(), rtol=1e-6)


def test_a_large_point_cloud_is_thinned_the_same_way_on_every_read_and_3dgs_files_never(tmp_path, monkeypatch):
    import o3dcli.io.assets as assets

    rng = np.random.default_rng(0)
    xyz = rng.random((50, 3))
    props = [("x", "float"), ("y", "float"), ("z", "float")]
    path = write_ply(tmp_path / "pc.ply", "binary_little_endian", props, xyz)
    g = load_gaussians(path, max_points=20)
    assert len(g) == 20 and torch.equal(g.means, load_gaussians(path, max_points=20).means)
    rows = {tuple(r) for r in xyz.astype(np.float32).tolist()}
    assert all(tuple(r) in rows for r in g.means.tolist())  # points of the file, not new ones
    assert len(load_gaussians(path)) == 50 and len(load_gaussians(path, max_points=50)) == 50
    splats = tmp_path / "splats.ply"
    save_gaussians(splats, load_gaussians(path))  # a 3DGS file of the same 50: read whole
    assert len(load_gaussians(splats, max_points=20)) == 50
    monkeypatch.setattr(assets, "POINT_CLOUD_MAX_POINTS", 20)  # what o3d mesh and o3d render read
    assert len(assets.load_asset(path)) == 20 and len(assets.load_asset(splats)) == 50


def test_bad_files_raise_ply_error_naming_the_file(tmp_path):
    not_ply = tmp_path / "notes.ply"
    not_ply.write_text("hello world\n")
    with pytest.raises(PlyError, match="notes.ply.*not a PLY"):
        load_gaussians(not_ply)
    good = save_gaussians(tmp_path / "good.ply", random_gaussians(10))
    cut = tmp_path / "cut.ply"
    cut.write_bytes(good.read_bytes()[:-7])
    with pytest.raises(PlyError, match="cut.ply.*truncated"):
        load_gaussians(cut)
    no_header_end = tmp_path / "nohead.ply"
    no_header_end.write_bytes(good.read_bytes()[:60])
    with pytest.raises(PlyError, match="nohead.ply.*end_header"):
        load_gaussians(no_header_end)
    rows, _ = std_rows()
    keep = [i for i, n in enumerate(STD_NAMES) if n != "scale_2"]
    partial = write_ply(tmp_path / "partial.ply", "ascii", [(STD_NAMES[i], "float") for i in keep], rows[:, keep])
    with pytest.raises(PlyError, match=r"partial.ply.*\['scale_2'\]"):
        load_gaussians(partial)
    short_ascii = write_ply(tmp_path / "short.ply", "ascii", [(n, "float") for n in STD_NAMES], rows)
    short_ascii.write_bytes(short_ascii.read_bytes().replace(b"element vertex 3", b"element vertex 4"))
    with pytest.raises(PlyError, match="short.ply.*truncated"):
        load_gaussians(short_ascii)
    with pytest.raises(PlyError, match="missing.ply"):
        load_gaussians(tmp_path / "missing.ply")


def test_non_finite_gaussians_are_dropped_with_a_warning(tmp_path, caplog):
    import logging

    rows, expect = std_rows(6)
    rows[1, 0] = np.nan  # a position
    rows[3, 14] = np.inf  # a rotation
    rows[4, 11] = 1e6  # a log-scale whose exp overflows
    path = write_ply(tmp_path / "diverged.ply", "binary_little_endian", [(n, "double") for n in STD_NAMES], rows)
    with caplog.at_level(logging.WARNING, logger="o3d"):
        g, info = load_gaussians(path, return_info=True)
    assert "3 of 6 Gaussians have non-finite values (NaN or infinity); dropped" in caplog.text
    assert info["dropped_nonfinite"] == 3 and len(g.means) == 3
    np.testing.assert_allclose(g.means.numpy(), expect["means"][[0, 2, 5]], rtol=1e-6)
    rows[:, 1] = np.nan
    path = write_ply(tmp_path / "all.ply", "binary_little_endian", [(n, "double") for n in STD_NAMES], rows)
    with pytest.raises(PlyError, match="all.ply: every Gaussian has non-finite values"):
        load_gaussians(path)


def test_a_point_cloud_with_a_non_finite_point(tmp_path, caplog):
    import logging

    xyz = np.array([[0, 0, 0], [0.1, 0, 0], [np.nan, 0, 0], [0, 0.3, 0]], np.float64)
    props = [("x", "float"), ("y", "float"), ("z", "float")]
    path = write_ply(tmp_path / "pc.ply", "binary_little_endian", props, xyz)
    with caplog.at_level(logging.WARNING, logger="o3d"):
        g = load_gaussians(path)
    assert len(g.means) == 3 and "1 of 4 Gaussians have non-finite values" in caplog.text
