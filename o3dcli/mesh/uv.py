"""UV unwrapping with xatlas: charts, parametrisation and packing into one square atlas."""

from __future__ import annotations

import numpy as np

from o3dcli.geometry.mesh import TriMesh
from o3dcli.mesh.config import MeshConfig


CHART_MAX_COST = 4.0
"""xatlas's ChartOptions.max_cost (its default is 2). On smooth surfaces the charts stop growing at
uv_chart_area or a crease first, so the layout is about the same (the 4 example assets and the
reference shapes at 20,000 faces: within 10 charts of 140-310, the same texel density and spread).
On a crumpled one (half the neighbouring faces more than 60 degrees apart: the surface of
scattered, gappy Gaussians) it is about twice as fast, with about 12 % fewer charts: 9-13 s
against 19-26 s and 5,600 against 6,400 charts at 20,000 faces, the same texel density spread."""


def unwrap_uv(mesh: TriMesh, cfg: MeshConfig | None = None) -> TriMesh:
    """The mesh with UVs in [0, 1]^2 (origin bottom-left) packed for a cfg.texture_size texture.

    Vertices on chart seams are split (one vertex per distinct (position, uv)), so the
    result has more vertices than the input; faces keep their order. Vertex colours
    follow the split; any old texture is dropped (bake a new one).

    Charts are capped at cfg.uv_chart_area of the surface: xatlas spends most of its
    time parametrising large charts (a 20k-face sphere: ~3 s with 9 charts, ~0.4 s
    with ~140), and smaller charts cost only more seams, which the bake dilates.
    A chart grows while its cost stays under CHART_MAX_COST (see there).
    """
    import xatlas

    cfg = cfg or MeshConfig()
    if len(mesh.faces) == 0:
        raise ValueError("cannot unwrap a mesh with no faces")
    atlas = xatlas.Atlas()
    atlas.add_mesh(mesh.vertices.astype(np.float32), mesh.faces.astype(np.uint32))
    chart = xatlas.ChartOptions()
    chart.max_chart_area = float(cfg.uv_chart_area * max(mesh.area(), 1e-12))
    chart.max_cost = CHART_MAX_COST
    pack = xatlas.PackOptions()
    pack.resolution = cfg.texture_size
    pack.padding = cfg.uv_padding
    pack.bilinear = True  # keep a texel of air for bilinear lookups at chart borders
    atlas.generate(chart, pack)
    if atlas.atlas_count != 1:  # did not fit one page at this resolution: let xatlas size the page
        atlas = xatlas.Atlas()
        atlas.add_mesh(mesh.vertices.astype(np.float32), mesh.faces.astype(np.uint32))
        pack.resolution = 0
        atlas.generate(chart, pack)
    vmapping, faces, uv = atlas[0]
    colors = mesh.vertex_colors[vmapping] if mesh.vertex_colors is not None else None
    return TriMesh(mesh.vertices[vmapping], faces.astype(np.int32), uv=np.clip(uv, 0.0, 1.0),
                   vertex_colors=colors, material_color=mesh.material_color)
