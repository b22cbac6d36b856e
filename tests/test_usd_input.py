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


INSTANCED_ANIMATED = """#usda 1.0
(
    upAxis = "Y"
    startTimeCode = 1
    endTimeCode = 2
)

class "Proto"
{
    def Mesh "tri"
    {
        int[] faceVertexCounts = [3, 3]
        int[] faceVertexIndices = [0, 1, 2, 0, 2, 3]
        int[] holeIndices = [1]
        point3f[] points = [(0, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 0)]
    }
}

def Xform "a" (instanceable = true
    inherits = </Proto>)
{
}

def Xform "b" (instanceable = true
    inherits = </Proto>)
{
    double3 xformOp:translate.timeSamples = {1: (5, 0, 0), 2: (9, 0, 0)}
    uniform token[] xformOpOrder = ["xformOp:translate"]
}

def Mesh "moving"
{
    int[] faceVertexCounts = [3]
    int[] faceVertexIndices = [0, 1, 2]
    point3f[] points.timeSamples = {1: [(0, 3, 0), (1, 3, 0), (0, 4, 0)], 2: [(0, 7, 0), (1, 7, 0), (0, 8, 0)]}
}
"""


def test_instances_animation_and_holes(tmp_path):
    path = tmp_path / "scene.usda"
    path.write_text(INSTANCED_ANIMATED)
    mesh = load_mesh(path)
    # two instances of the proto's one triangle (the other is a hole) and the moving triangle, at the first frame
    assert len(mesh.faces) == 3
    xs = sorted({round(float(x), 3) for x in mesh.vertices[:, 0]})
    assert xs == [0, 1, 5, 6]  # instance b at its first frame's x = 5
    assert np.isclose(mesh.vertices[:, 1].max(), 4.0)  # the moving triangle's first frame


UV_MAP = """#usda 1.0
def Mesh "quad" (prepend apiSchemas = ["MaterialBindingAPI"])
{
    int[] faceVertexCounts = [4]
    int[] faceVertexIndices = [0, 1, 2, 3]
    point3f[] points = [(-0.5, -0.5, 0), (0.5, -0.5, 0), (0.5, 0.5, 0), (-0.5, 0.5, 0)]
    texCoord2f[] primvars:UVMap = [(0, 0), (1, 0), (1, 1), (0, 1)] (interpolation = "faceVarying")
    rel material:binding:preview = </M>
}
def Material "M"
{
    token outputs:surface.connect = </M/surface.outputs:surface>
    def Shader "surface"
    {
        uniform token info:id = "UsdPreviewSurface"
        color3f inputs:diffuseColor.connect = </M/tex.outputs:rgb>
        token outputs:surface
    }
    def Shader "reader"
    {
        uniform token info:id = "UsdPrimvarReader_float2"
        string inputs:varname = "UVMap"
        float2 outputs:result
    }
    def Shader "tex"
    {
        uniform token info:id = "UsdUVTexture"
        asset inputs:file = @TEXTURE@
        float2 inputs:st.connect = </M/reader.outputs:result>
        float3 outputs:rgb
    }
}
"""


def test_texture_coordinates_named_by_the_reader_a_preview_binding_and_a_missing_texture(tmp_path, caplog):
    import logging

    from PIL import Image

    Image.fromarray(quadrant_plane().texture).save(tmp_path / "quads.png")
    path = tmp_path / "quad.usda"
    path.write_text(UV_MAP.replace("TEXTURE", "./quads.png"))
    mesh = load_mesh(path)
    assert mesh.has_texture and front_quadrant_colors(mesh) == QUADRANTS
    path.write_text(UV_MAP.replace("TEXTURE", "./nope.png"))
    with caplog.at_level(logging.WARNING, logger="o3d"):
        mesh = load_mesh(path)
    assert not mesh.has_texture and "the texture ./nope.png of /quad cannot be read" in caplog.text


def test_a_syntax_error_says_where(tmp_path):
    bad = tmp_path / "bad.usda"
    bad.write_text('#usda 1.0\ndef Mesh "m"\n{\n    int[] faceVertexCounts = [3\n')
    with pytest.raises(MeshLoadError, match=r"bad.usda: USD cannot open it \(.*bad.usda:\d+"):
        load_mesh(bad)


POINT_INSTANCER = """#usda 1.0
(
    metersPerUnit = 0.5
)
def Xform "world"
{
    double3 xformOp:translate = (0, 10, 0)
    uniform token[] xformOpOrder = ["xformOp:translate"]
    def PointInstancer "scatter"
    {
        point3f[] positions = [(0, 0, 0), (5, 0, 0), (0, 0, 5), (-5, 0, 0), (9, 9, 9)]
        float3[] scales = [(1, 1, 1), (1, 1, 1), (1, 1, 1), (-1, 1, 1), (1, 1, 1)]
        quath[] orientations = [(1, 0, 0, 0), (0, 0, 0, 1), (1, 0, 0, 0), (1, 0, 0, 0), (1, 0, 0, 0)]
        int[] protoIndices = [0, 1, 0, 0, 1]
        int64[] invisibleIds = [2]
        rel prototypes = [</world/scatter/protos/tri>, </outside>]
        def Scope "protos"
        {
            def Mesh "tri"
            {
                int[] faceVertexCounts = [3]
                int[] faceVertexIndices = [0, 1, 2]
                point3f[] points = [(0, 0, 0), (1, 0, 0), (0, 1, 0)]
            }
        }
    }
    def PointInstancer "masked"
    {
        point3f[] positions = [(0, 0, 0)]
        int[] protoIndices = [0]
        bool[] inactiveIds = []
        int64[] invisibleIds = [0]
        rel prototypes = [</world/scatter/protos/tri>]
    }
}
over Xform "outside"
{
    double3 xformOp:translate = (100, 100, 100)
    double3 xformOp:scale = (2, 2, 2)
    uniform token[] xformOpOrder = ["xformOp:translate", "xformOp:scale"]
    token visibility = "invisible"
    over Mesh "m"
    {
        double3 xformOp:translate = (0, 0, 1)
        uniform token[] xformOpOrder = ["xformOp:translate"]
        int[] faceVertexCounts = [3]
        int[] faceVertexIndices = [0, 1, 2]
        point3f[] points = [(0, 0, 0), (1, 0, 0), (0, 1, 0)]
    }
    over Mesh "hidden"
    {
        token visibility = "invisible"
        int[] faceVertexCounts = [3]
        int[] faceVertexIndices = [0, 1, 2]
        point3f[] points = [(0, 0, 50), (1, 0, 50), (0, 1, 50)]
    }
}
"""


def test_point_instancers_place_their_unmasked_instances(tmp_path):
    from o3dcli.io.usd_read import load_usd

    path = tmp_path / "scatter.usda"
    path.write_text(POINT_INSTANCER)
    parts, _ = load_usd(path)
    tris = {tuple(np.round(t, 4).reshape(-1)) for p in parts for t in p.vertices[p.faces]}
    half = 0.5  # metersPerUnit
    expected = {
        # instance 0: the prototype where the instancer (under /world, y + 10) puts it
        ((0, 10, 0), (1, 10, 0), (0, 11, 0)),
        # instance 1: /outside's prototype with its root's transform (scale 2, then + 100), turned
        # 180 degrees about z, then moved by the instance's position and /world's translation
        ((-95, -90, 102), (-97, -90, 102), (-95, -92, 102)),
        # instance 3: mirrored in x, so its corners are taken the other way round to keep facing +z
        ((-5, 10, 0), (-5, 11, 0), (-6, 10, 0)),
        # instance 4, at (9, 9, 9)
        ((109, 119, 111), (111, 119, 111), (109, 121, 111)),
    }  # instance 2 and the "masked" instancer's one are invisibleIds; /outside/hidden is invisible
    assert len(tris) == 4

    def canon(tri):  # the same triangle, whichever corner comes first, winding kept
        tri = [tuple(float(x) for x in c) for c in tri]
        i = tri.index(min(tri))
        return tuple(tri[i:] + tri[:i])

    assert {canon(np.reshape(t, (3, 3))) for t in tris} == {canon(np.asarray(t) * half) for t in expected}
    mesh = load_mesh(path)
    assert len(mesh.faces) == 4
    normals = np.cross(*(mesh.vertices[mesh.faces[:, i]] - mesh.vertices[mesh.faces[:, 0]] for i in (1, 2)))
    assert (normals[:, 2] > 0).all()  # every copy faces +z, the mirrored one too


@pytest.mark.parametrize("mode", ["MASK", "BLEND"])
def test_o3d_usdz_reads_back_see_through(tmp_path, mode):
    from test_mesh_alpha import leaf_card

    card = leaf_card(mode)
    back = load_mesh(save_mesh_usdz(tmp_path / "card.usdz", card, binary=False))
    assert back.alpha_mode == mode and back.has_alpha
    assert np.array_equal(back.texture, card.hard_alpha().texture)
    if mode == "MASK":
        assert back.alpha_cutoff == 0.5


GLASS = """#usda 1.0
def Mesh "pane" (prepend apiSchemas = ["MaterialBindingAPI"])
{
    int[] faceVertexCounts = [3]
    int[] faceVertexIndices = [0, 1, 2]
    point3f[] points = [(0, 0, 0), (1, 0, 0), (0, 1, 0)]
    rel material:binding = </M>
}
def Material "M"
{
    token outputs:surface.connect = </M/surface.outputs:surface>
    def Shader "surface"
    {
        uniform token info:id = "UsdPreviewSurface"
        color3f inputs:diffuseColor = (0, 0, 1)
        float inputs:opacity = 0.4
        token outputs:surface
    }
}
"""


def test_a_see_through_plain_colour(tmp_path):
    path = tmp_path / "glass.usda"
    path.write_text(GLASS)
    mesh = load_mesh(path)
    assert mesh.alpha_mode == "BLEND" and {tuple(t) for t in mesh.texture.reshape(-1, 4)} == {(0, 0, 255, 102)}
    path.write_text(GLASS.replace("float inputs:opacity = 0.4", "float inputs:opacity = 1"))
    assert not load_mesh(path).has_alpha
