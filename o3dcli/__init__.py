"""o3d: image-to-3D by recursive multi-view diffusion with 3D-aware feedback.

Importing the package is cheap: torch, open3d and friends are imported by the
modules that need them, so ``o3d --help`` stays fast.
"""

__version__ = "0.1.0"
