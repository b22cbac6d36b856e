"""Procedural synthetic objects (1-4 textured primitives) and their rendered-object folders.

The folder format is documented in :mod:`o3dcli.synth.dataset`. Submodules load
lazily so ``import o3dcli.synth`` stays cheap (no torch, no open3d).
"""

from o3dcli._lazy import lazy_exports

_EXPORTS = {
    "make_object": "objects",
    "signed_volume": "objects",
    "synthesize": "generate",
    "synthesize_object": "generate",
    "SynthSettings": "generate",
    "view_plan": "generate",
    "GENERATION_AZIMUTHS": "generate",
    "GENERATION_ELEVATIONS": "generate",
    "load_rendered_object": "dataset",
    "RenderedObject": "dataset",
    "RenderedObjectError": "dataset",
    "list_objects": "dataset",
    "read_index": "dataset",
    "object_id": "dataset",
    "write_obj": "dataset",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
