"""Settings of the mesh stages: Gaussians -> mesh, cleanup, decimation, UV, bake, export.

A pure dataclass (no torch, no mesh libraries imported here) so the config
system and `o3d --help` stay fast. Nested into `Config` as the section `mesh`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from o3dcli.errors import ConfigError

MESH_FORMATS = ("glb", "obj", "usdz", "stl")
"""The formats o3d writes."""
DEFAULT_FORMATS = ("glb", "obj")
EXPORT_FILES = ("model.glb", "model.obj", "model.mtl", "model.png", "model.jpg", "model.usdz", "model.stl")
"""Every file an asset's export may write (stem "model"): what a run without some format removes."""


def parse_formats(text: str) -> tuple[str, ...]:
    """The --formats option's comma-separated list ("glb, USDZ" -> ("glb", "usdz")); checked by MeshConfig.check."""
    return tuple(f.strip().lower() for f in text.split(",") if f.strip())
CARVE_BELOW = 8192
"""mesh.method "auto" carves sets of fewer Gaussians than this (measured on the synthetic benchmark with
1,024: opacity gives volume IoU 0.11, carving 0.63 at the same F-score) and uses the opacity field above."""


def _require(ok: bool, key: str, value, what: str) -> None:
    if not ok:
        raise ConfigError(f"bad value for 'mesh.{key}': {value!r} must be {what}")


@dataclass
class MeshConfig:
    method: Literal["auto", "carve", "opacity", "tsdf"] = "auto"
    """Surface extraction: "carve" = the solid inside the Gaussians' rendered silhouettes from all fusion views (always closed and watertight; hollows no view sees into are filled; the surface sits about one splat footprint outside the Gaussians); "opacity" = marching cubes on the Gaussians' opacity field, snapped onto the Gaussians' ridge (most accurate for dense Gaussians: ~0.1% of the object's size on test shapes, but a sparse, leaky shell gives a double-sided surface); "tsdf" = fusion of depth renders (open3d VoxelBlockGrid; ~0.7% outward bias from splatted depth); "auto" = carve below 8,192 Gaussians (the tiny model's 1,024), opacity from there up (the published model's 65,536)."""
    fusion_views: int = 24
    """Views on a sphere (Fibonacci spiral) rendered for TSDF fusion, carving and texture baking."""
    fusion_size: int = 160
    """Side in pixels of each fusion / bake render."""
    fusion_fov_deg: float = 30.0
    """Field of view of the fusion cameras; their distance is chosen so the object's bounding sphere fills the frame."""
    fusion_max_angle_deg: float = 60.0
    """tsdf: pixels seeing the surface more obliquely than this (angle between the view ray and the depth map's normal) are not fused: Gaussian depth is biased towards the camera there."""
    resolution: int = 128
    """Voxels along the longest side of the object's bounding box (voxel size = that side / resolution)."""
    depth_trunc_voxels: float = 4.0
    """TSDF truncation distance, in voxels."""
    alpha_threshold: float = 0.5
    """tsdf: rendered alpha above which a pixel's depth is fused; opacity: opacity level of the extracted surface; texture baking (every method): rendered alpha above which a view's pixel may colour a texel."""
    carve_alpha: float = 0.8
    """carve: rendered alpha at which a pixel counts as inside the silhouette (higher trims semi-transparent floaters: on the synthetic benchmark's generated Gaussians 0.5 gave F-score@0.05 0.42, 0.8 gave 0.47)."""
    input_silhouette: bool = True
    """Cut the surface to the input image's silhouette seen from the input camera (o3d generate, and o3d mesh on an asset folder that has its input.png): the input's outline is known exactly, the Gaussians' is blurred. carve and opacity methods (tsdf ignores it). Synthetic benchmark, 20 objects, tiny: F-score@0.05 0.496 -> 0.532, better on 18 of 20."""
    opacity_smoothing: float = 0.75
    """opacity: each Gaussian is widened by this many voxels (standard deviation) before sampling, so thin surfaces are not missed between grid points."""
    bounds_quantile: float = 0.001
    """Fraction of the Gaussians ignored at each end of every axis when fitting the object's bounds (far floaters do not stretch the grid)."""
    min_component_ratio: float = 0.05
    """Connected parts with fewer faces than this fraction of the largest part are dropped (floaters)."""
    max_hole_edges: int = 64
    """Holes bounded by at most this many edges are closed (0 = leave holes). Also: where decimation pinches a closed surface (an edge shared by four faces), the faces there are cut out and the holes left closed, with at least 16 edges (0 = leave the pinch)."""
    target_faces: int = 20000
    """Face count the mesh is decimated to (quadric edge collapse); meshes already below it are kept."""
    remesh: bool = False
    """Isotropic remeshing before decimation (more even triangles, slower)."""
    remesh_edge_ratio: float = 0.01
    """Target edge length of the isotropic remesh, as a fraction of the bounding-box diagonal."""
    texture_size: int = 1024
    """Side of the baked base-colour texture in pixels."""
    uv_padding: int = 8
    """Gap between UV charts in texels (seams are dilated into it). Viewers sample smaller mipmap levels for a model seen small, where each texel averages 2^k x 2^k of the texture's: charts closer than that bleed into each other (specks of a neighbouring chart's colour). 8 keeps them apart down to the 1/8-size level (a 1024 px texture's 128 px level); at 4, Blender's Eevee at 256 px showed such specks on 124 of 15,931 object pixels of an example asset, at 8 on 14, at 16 on 4. Each step costs texture resolution: the charts' share of a 1024 px texture is 42 % at 4, 35 % at 8, 25 % at 16. Scale it with texture_size (16 for 2048)."""
    uv_chart_area: float = 0.01
    """Largest UV chart as a fraction of the surface area (smaller charts unwrap much faster, at the cost of more seams)."""
    bake_angle_power: float = 4.0
    """Views are weighted by cos(view angle) to this power when baking (higher favours head-on views)."""
    bake_depth_tolerance: float = 2.0
    """A texel counts as visible in a view unless it lies more than this many voxels behind the rendered depth."""
    input_weight: float = 1.0
    """o3d generate (and o3d mesh given an asset folder or its gaussians.ply, from the folder's input.png): the input photo's share of the texture where the input camera sees the surface, in full up to 60 degrees from head-on and fading out towards grazing angles, where the generated colours take over (the photo, 1024 px, is sharper and truer than the generated views); 0 = the generated views only, 1 = the photo alone where it counts in full."""
    mirror_weight: float = 0.0
    """Like input_weight, for the photo mirrored left-right and seen from the opposite side (the camera turned 180 degrees about the up axis): colours the far side for objects that are mirror-symmetric front-to-back, such as an animal or a car photographed in profile; wrong for objects seen from the front (a face would appear on the back). 0 = off."""
    formats: tuple[str, ...] = DEFAULT_FORMATS
    """Files to write, any of: "glb" (glTF binary, PBR base colour), "obj" (+ .mtl + .png), "usdz" (USD package for Apple Quick Look / AR and USD tools), "stl" (binary STL for 3D printing: shape only, Z up, in millimetres, see stl_size_mm)."""
    texture_format: Literal["png", "jpeg"] = "png"
    """Image format of the texture in glb, obj and usdz files: "png" (lossless) or "jpeg" (less than half the size for a baked 1024 px texture at quality 90: 0.42-0.46 of it on the example assets, whose GLBs are a quarter smaller). A texture with alpha (cut-outs, see-through parts: `o3d mesh` inputs) always stays PNG, which JPEG cannot hold."""
    jpeg_quality: int = 90
    """texture_format "jpeg": the encoder's quality, 1-100 (higher is larger and truer)."""
    draco: bool = False
    """glb: compress the geometry with Draco (KHR_draco_mesh_compression; positions kept to 1/16,384 of the object's size, texture coordinates to 1/4,096 of their range): the example assets' GLBs shrink from 1.24 to 0.79 MB on average, 0.48 MB with JPEG textures. three.js, Babylon.js, <model-viewer> and Blender read such files; some viewers do not (Windows 3D Viewer, Apple Quick Look). Needs DracoPy (the draco extra)."""
    crease_angle_deg: float = 60.0
    """glb, obj and usdz: normals are smoothed across edges where the faces meet at less than this angle (degrees) and kept sharp along the others, whose vertices are split ("auto smooth"; 60 is Unity's default, Blender's is 30): flat faces of a box or a CAD part stay flat, curved and generated surfaces stay smooth (on generated assets at most 0.2 % of the vertices are split at 60, a few % at 30). 180 = smooth everywhere (o3d's normals before this setting), 0 = every face flat."""
    stl_size_mm: float = 100.0
    """stl: the printed object's longest side in millimetres (STL has no unit field; slicers read millimetres). The object is turned Z-up, centred on the origin and stood on z = 0. 0 = its own size and place, metres written as millimetres (what o3d mesh does for an STL input unless this is set: its millimetres are written back as they were)."""

    def check(self) -> None:
        _require(self.method in ("auto", "carve", "opacity", "tsdf"), "method", self.method, '"auto", "carve", "opacity" or "tsdf"')
        _require(self.fusion_views >= 4, "fusion_views", self.fusion_views, "at least 4")
        _require(self.fusion_size >= 16, "fusion_size", self.fusion_size, "at least 16")
        _require(5.0 <= self.fusion_fov_deg <= 120.0, "fusion_fov_deg", self.fusion_fov_deg, "in [5, 120]")
        _require(0.0 < self.fusion_max_angle_deg <= 90.0, "fusion_max_angle_deg", self.fusion_max_angle_deg, "in (0, 90]")
        _require(16 <= self.resolution <= 1024, "resolution", self.resolution, "in [16, 1024]")
        _require(self.depth_trunc_voxels >= 1.0, "depth_trunc_voxels", self.depth_trunc_voxels, "at least 1")
        _require(0.0 < self.alpha_threshold < 1.0, "alpha_threshold", self.alpha_threshold, "in (0, 1)")
        _require(0.0 < self.carve_alpha < 1.0, "carve_alpha", self.carve_alpha, "in (0, 1)")
        _require(self.opacity_smoothing >= 0.0, "opacity_smoothing", self.opacity_smoothing, "0 or more")
        _require(0.0 <= self.bounds_quantile < 0.5, "bounds_quantile", self.bounds_quantile, "in [0, 0.5)")
        _require(0.0 <= self.min_component_ratio <= 1.0, "min_component_ratio", self.min_component_ratio, "in [0, 1]")
        _require(self.max_hole_edges >= 0, "max_hole_edges", self.max_hole_edges, "0 or more")
        _require(self.target_faces >= 4, "target_faces", self.target_faces, "at least 4")
        _require(0.0 < self.remesh_edge_ratio < 1.0, "remesh_edge_ratio", self.remesh_edge_ratio, "in (0, 1)")
        _require(16 <= self.texture_size <= 16384, "texture_size", self.texture_size, "in [16, 16384]")
        _require(0 <= self.uv_padding <= 64, "uv_padding", self.uv_padding, "in [0, 64]")
        _require(0.0 < self.uv_chart_area <= 1.0, "uv_chart_area", self.uv_chart_area, "in (0, 1]")
        _require(self.bake_angle_power >= 0.0, "bake_angle_power", self.bake_angle_power, "0 or more")
        _require(self.bake_depth_tolerance > 0.0, "bake_depth_tolerance", self.bake_depth_tolerance, "positive")
        _require(0.0 <= self.input_weight <= 1.0, "input_weight", self.input_weight, "in [0, 1]")
        _require(0.0 <= self.mirror_weight <= 1.0, "mirror_weight", self.mirror_weight, "in [0, 1]")
        _require(self.texture_format in ("png", "jpeg"), "texture_format", self.texture_format, '"png" or "jpeg"')
        _require(1 <= self.jpeg_quality <= 100, "jpeg_quality", self.jpeg_quality, "in [1, 100]")
        if self.draco:
            import importlib.util

            if importlib.util.find_spec("DracoPy") is None:
                raise ConfigError("mesh.draco needs DracoPy: pip install \"o3dcli[draco]\"")
            import inspect

            import DracoPy

            if "tex_coord_quantization_bits" not in inspect.signature(DracoPy.encode).parameters:
                raise ConfigError(f"mesh.draco needs DracoPy 2.2 or later (installed: {getattr(DracoPy, '__version__', '?')}):"
                                  " pip install -U DracoPy")
        _require(0.0 <= self.crease_angle_deg <= 180.0, "crease_angle_deg", self.crease_angle_deg, "in [0, 180]")
        _require(0.0 <= self.stl_size_mm <= 1e6, "stl_size_mm", self.stl_size_mm,
                 "in [0, 1000000] (0: the mesh's own size)")
        # `--set mesh.formats=glb,STL` or a preset's `[GLB]` mean what --formats glb,stl does
        given = list(self.formats)
        bad = [f for f in given if not (isinstance(f, str) and f.strip().lower() in MESH_FORMATS)]
        if bad or not given:
            import difflib

            close = [m for f in bad for m in difflib.get_close_matches(str(f).strip().lower(), MESH_FORMATS, n=1)]
            raise ConfigError(f"bad value for 'mesh.formats': {', '.join(map(str, bad)) or 'none given'}; give one or more "
                              f"of {', '.join(MESH_FORMATS)}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
        # in o3d's order, whatever order they were given in: `obj,glb` is what `glb,obj` makes
        chosen = {f.strip().lower() for f in given}
        self.formats = tuple(f for f in MESH_FORMATS if f in chosen)
