"""UsdPreviewSurface materials of the meshes `o3dcli.io.usd_read` reads: the diffuse texture
(with the primvar its coordinates come from) or colour, the opacity, and the texture images
USD resolves (inside .usdz packages too).
"""

from __future__ import annotations

import io
import logging

import numpy as np


_log = logging.getLogger("o3d")


def usd_material(prim, path) -> tuple[np.ndarray | None, np.ndarray | None, str, dict]:
    """(texture [H, W, 3 or 4] uint8, colour [3], texture coordinate primvar, alpha style) of the
    UsdPreviewSurface bound to the prim (its preview binding, else the general one): a
    diffuseColor texture or a colour, or neither when there is no such material. Opacity: a
    texture's alpha (the "a" output of the diffuse texture connected to opacity) becomes the
    texture's fourth channel, a value below 1 the style's "alpha"; the style holds alpha_mode
    ("MASK" with opacityThreshold above 0, else "BLEND") and alpha_cutoff when the material is
    see-through, and with a texture its "image_format" (Pillow's name: "JPEG", "PNG")."""
    from pxr import UsdShade

    material = UsdShade.MaterialBindingAPI(prim).ComputeBoundMaterial(UsdShade.Tokens.preview)[0]
    if not material:
        return None, None, "st", {}
    surface = material.ComputeSurfaceSource()
    shader = surface[0] if isinstance(surface, tuple) else surface
    if not shader or shader.GetIdAttr().Get() != "UsdPreviewSurface":
        return None, None, "st", {}
    style = _usd_opacity(shader)
    diffuse = shader.GetInput("diffuseColor")
    if not diffuse:
        return None, None, "st", style
    sources = diffuse.GetConnectedSources()[0]
    if sources:
        texture = UsdShade.Shader(sources[0].source.GetPrim())
        if texture.GetIdAttr().Get() != "UsdUVTexture" or not texture.GetInput("file"):
            return None, None, "st", style
        uv_name = "st"  # what the texture's coordinates come from: a primvar reader's varname
        st = texture.GetInput("st")
        readers = st.GetConnectedSources()[0] if st else []
        if readers:
            varname = UsdShade.Shader(readers[0].source.GetPrim()).GetInput("varname")
            uv_name = str(varname.Get()) if varname and varname.Get() else uv_name
        asset = texture.GetInput("file").Get()
        with_alpha = style.pop("texture", None) == texture.GetPrim().GetPath()
        image, style["image_format"] = _read_usd_asset(asset.resolvedPath, with_alpha) if asset and asset.resolvedPath \
            else (None, None)
        if image is None:
            _log.warning("%s: the texture %s of %s cannot be read; the mesh is loaded white", path,
                         asset.path if asset else "(none)", prim.GetPath())
        elif with_alpha and image.shape[2] == 3:
            style = {"image_format": style["image_format"]}  # an opaque image: nothing to see through
        return image, None, uv_name, style
    style.pop("texture", None)  # an alpha texture beside a plain colour: not read
    value = diffuse.Get()
    return None, (np.asarray(value, np.float64) if value is not None else None), "st", style


def _usd_opacity(shader) -> dict:
    """The see-through part of a UsdPreviewSurface: {"texture": the path of the UsdUVTexture whose
    alpha is the opacity} or {"alpha": a value below 1}, with alpha_mode and alpha_cutoff; {} when opaque."""
    from pxr import UsdShade

    opacity = shader.GetInput("opacity")
    if not opacity:
        return {}
    threshold = shader.GetInput("opacityThreshold")
    cutoff = float(threshold.Get()) if threshold and threshold.Get() is not None else 0.0
    mode = {"alpha_mode": "MASK", "alpha_cutoff": cutoff} if cutoff > 0 else {"alpha_mode": "BLEND"}
    sources = opacity.GetConnectedSources()[0]
    if sources:
        source = UsdShade.Shader(sources[0].source.GetPrim())
        if source.GetIdAttr().Get() == "UsdUVTexture" and str(sources[0].sourceName) == "a":
            return {"texture": source.GetPrim().GetPath(), **mode}
        return {}
    value = opacity.Get()
    return {"alpha": float(np.clip(value, 0, 1)), **mode} if value is not None and value < 1 else {}


def _read_usd_asset(resolved: str, with_alpha: bool = False) -> tuple[np.ndarray | None, str | None]:
    """An image USD resolved (a file, or a file inside a .usdz, nested ones too) as RGB uint8 (with
    ``with_alpha``: RGBA when the image has alpha), or None, and its file format (Pillow's name)."""
    from PIL import Image
    from pxr import Ar

    try:
        asset = Ar.GetResolver().OpenAsset(Ar.ResolvedPath(resolved))
        data = bytes(asset.GetBuffer()) if asset else None
        if data is None:
            return None, None
        image = Image.open(io.BytesIO(data))
        alpha = with_alpha and (image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info)
        return np.asarray(image.convert("RGBA" if alpha else "RGB")), image.format
    except Exception:  # noqa: BLE001 - anything unreadable is reported by the caller
        return None, None
