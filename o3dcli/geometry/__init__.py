"""Cameras, orbits, Plucker rays and transforms (conventions: docs/design.md section 2)."""

from o3dcli.geometry.cameras import (
    Cameras,
    fov_to_focal,
    orbit_cameras,
    look_at_c2w,
)
from o3dcli.geometry.gaussians import Gaussians
from o3dcli.geometry.mesh import TriMesh

__all__ = ["Cameras", "Gaussians", "TriMesh", "fov_to_focal", "look_at_c2w", "orbit_cameras"]
