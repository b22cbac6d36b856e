"""USD files (.usd/.usda/.usdc/.usdz) as inputs of o3d mesh and o3d render (with usd-core)."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from o3dcli.cli import app
from o3dcli.io.mesh import MeshLoadError, load_mesh
from o3dcli.io.usdz import save_mesh_usdz
from test_mesh_export import QUADRANTS, front_quadrant_colors, quadrant_plane

pytest.importorskip("pxr")

Z_UP_QUADS = """#usda 1.0
(
    defaultPrim = "root"
    metersPerUnit = 0.01
    upAxis = "Z"
)

def Xform "root"
{
    def Mesh "slab" (
        prepend apiSchemas = ["MaterialBindingAPI"]
    )
    {
        double3 xformOp:translate = (100, 0, 0)
        uniform token[] xformOpOrder = ["xformOp:translate"]
        int[] faceVertexCounts = [4, 3]
        int[] faceVertexIndices = [0, 1, 2, 3, 0, 3, 4]
        point3f[] points = [(0, 0, 0), (100, 0, 0), (100, 100, 0), (0, 100, 0), (0, 50, 80)]
        uniform token orientation = "leftHanded"
        color3f[] primvars:displayColor = [(1, 0, 0), (0, 0, 1)] (
            interpolation = "uniform"
        )
    }
    def Mesh "hidden"
    {
        token visibility = "invisible"
        int[] faceVertexCounts = [3]
        int[] faceVertexIndices = [0, 1, 2]
        point3f[] points = [(0, 0, 900), (1, 0, 900), (0, 1, 900)]
    }
}
"""


@pytest.mark.parametrize("binary", [False, True], ids=["usda", "usdc"])
def test_o3d_usdz_reads_back_with_its_texture_the_right_way_up(tmp_path, binary):
    mesh = quadrant_plane()
    back = load_mesh(save_mesh_usdz(tmp_path / "plane.usdz", mesh, binary=binary))
    assert back.has_texture and np.array_equal(back.texture, mesh.texture)
    assert np.allclose(np.sort(back.vertices, axis=0), np.sort(mesh.vertices, axis=0))
    assert front_quadrant_colors(back) == front_quadrant_colors(mesh) == QUADRANTS


def test_polygons_transforms_units_up_axis_winding_and_colours(tmp_path):
    path = tmp_path / "slab.usda"
    path.write_text(Z_UP_QUADS)
    mesh = load_mesh(path)  # auto: the stage's up axis (Z) is turned to o3d's +Y
    assert len(mesh.faces) == 3  # a quad fanned into two triangles, and a triangle; the hidden mesh skipped
    lo, hi = mesh.vertices.min(0), mesh.vertices.max(0)
    # centimetres to metres, translated 1 m along x; Z up -> (x, z, -y)
    assert np.allclose(lo, [1, 0, -1]) and np.allclose(hi, [2, 0.8, 0])
    # left-handed: turned round, so the quad (z = 0 plane in the file, now y = 0) faces down (-Y),
    # as its left-handed winding seen from above says
    tri = mesh.vertices[mesh.faces]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    assert (normals[:2, 1] < 0).all()
    # uniform displayColor: red quad, blue triangle (averaged onto the shared points)
    assert mesh.vertex_colors is not None
    apex = np.argmax(mesh.vertices[:, 1])
    assert np.allclose(mesh.vertex_colors[apex], [0, 0, 1])
    far = np.argmax(mesh.vertices[:, 0] - mesh.vertices[:, 2])  # (2, 0, -1): only the quad's
    assert np.allclose(mesh.vertex_colors[far], [1, 0, 0])
    assert np.allclose(load_mesh(path, up="y").vertices.max(0)[2], 0.8)  # --up y keeps the file's axes


def test_bad_usd_files_are_named(tmp_path):
    junk = tmp_path / "junk.usda"
    junk.write_text("#usda 1.0\n( this is not usd")
    with pytest.raises(MeshLoadError, match="junk.usda"):
        load_mesh(junk)
    empty = tmp_path / "empty.usda"
    empty.write_text('#usda 1.0\ndef Xform "nothing" {}\n')
    with pytest.raises(MeshLoadError, match="empty.usda.*no triangles"):
        load_mesh(empty)


def test_o3d_mesh_takes_a_usdz(tmp_path):
    save_mesh_usdz(tmp_path / "plane.usdz", quadrant_plane())
    res = CliRunner().invoke(app, ["mesh", str(tmp_path / "plane.usdz"), "--formats", "glb", "-o", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert front_quadrant_colors(load_mesh(tmp_path / "out" / "plane" / "model.glb")) == QUADRANTS
