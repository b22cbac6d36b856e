"""Benchmarks: the ground-truth objects of an evaluation, and where each one's prediction is.

- ``gso``: a folder in the official Google Scanned Objects layout, one folder per
  object with ``meshes/model.obj`` (+ ``materials/textures/texture.png``, which may
  be missing: the object is then scored on geometry and silhouettes only). Meshes
  are Z-up there and loaded into o3d's +Y-up world (``load_mesh(up="z")``, also for copies
  that left out the Gazebo files ``model.sdf`` and ``model.config``).
  Folders without ``meshes/model.obj`` are not objects and are skipped.
- ``synthetic``: procedural objects (``o3dcli.synth.make_object``) from seeds
  1,000,000 + i, a range the training data (seeds 0..999,999) and the shipped
  examples (2,000,000+) never use; made on the fly, nothing to download.
- ``folder``: every GLB/glTF/OBJ/PLY/STL/USD file at the top of a folder (STL and USD with
  their own up axis, see ``load_mesh``).

Objects are in sorted name order (synthetic: seed order); ``limit`` keeps the first N.
Every ground-truth mesh is normalised to the unit box before use.

An object's ``name`` is what the benchmark calls it (a GSO folder's name, a file's stem):
reports, ``--objects`` and the lookup of predictions use it. Its ``file_name`` (o3d's safe
naming, unique in the benchmark) is used only where eval makes a file for it (its input view,
its renders); predictions are also found under that name, which is what o3d generate calls
the asset folder of an image named after the object.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

from o3dcli.geometry.mesh import TriMesh

BENCHMARKS = ("gso", "synthetic", "folder")
SYNTHETIC_FIRST_SEED = 1_000_000
SYNTHETIC_LAST_SEED = 1_999_999
SYNTHETIC_DEFAULT_COUNT = 10
PREDICTION_FILES = ("model.glb", "model.obj", "gaussians.ply")
"""Files looked for in an o3d asset folder ``DIR/<object>/``, in order of preference."""
PREDICTION_SUFFIXES = (".glb", ".gltf", ".obj", ".ply", ".stl", ".usdz", ".usd", ".usda", ".usdc")
"""Any tool's ``DIR/<object><suffix>``, in order of preference."""


class BenchmarkError(ValueError):
    """A benchmark cannot be set up (missing folder, unknown object); a usage error."""


@dataclass(frozen=True)
class BenchmarkObject:
    name: str
    source: str
    """Where the ground truth comes from: a path, or "synthetic seed N"."""
    loader: Callable[[], TriMesh]
    appearance: bool = True
    """False when the object has no real colour (image metrics other than mask IoU are n/a)."""
    seed: int | None = None
    file_name: str = ""
    """The name of the files eval makes for the object (OUT/inputs/<file_name>.png,
    OUT/renders/<variant>/<file_name>.png): o3dcli.naming.safe_name of ``name``, made unique."""

    aliases: tuple[str, ...] = ()
    """Other names its prediction may go by (set with file_name): o3d's safe naming of its name
    and its file name, leaving out any that is another object's own name."""

    def load(self) -> TriMesh:
        """The ground-truth mesh in the unit box."""
        return self.loader().normalized()

    @property
    def prediction_names(self) -> tuple[str, ...]:
        """The names its prediction may go by, in order: its own name, then o3d's safe naming of it
        (the asset folder o3d generate makes for an image named after the object; an earlier
        o3d's name for the object), then its file name (an o3d eval's own assets folder); a name
        that is another object's own is never used, so no two objects share a prediction."""
        return tuple(dict.fromkeys(n for n in (self.name, *self.aliases) if n))


def _with_file_names(objects: list[BenchmarkObject]) -> list[BenchmarkObject]:
    """Give each object a unique safe file name (collisions, e.g. "chair(1)" and "chair_1_", get
    -2, -3, ... in benchmark order), before any selection so an object's files keep their name."""
    from o3dcli.naming import clean_name, fit_name, next_free_name

    taken, out = set(), []
    own = {o.name for o in objects}
    for o in objects:
        clean = clean_name(o.name)
        base = fit_name(clean)
        name = next_free_name(base, lambda name: name.lower() in taken,  # case-insensitive file systems too
                              make=lambda suffix: fit_name(clean, suffix))  # -2, -3, ... fitted as well
        taken.add(name.lower())
        aliases = tuple(a for a in dict.fromkeys((base, name)) if a != o.name and a not in own)
        out.append(replace(o, file_name=name, aliases=aliases))
    return out


def _select(objects: list[BenchmarkObject], names: list[str] | None, limit: int | None, where: str,
            hint: str = "") -> list[BenchmarkObject]:
    objects = _with_file_names(objects)
    if names:
        by_name = {o.file_name: o for o in objects}  # o3d's safe name of an object, as earlier o3d named it...
        by_name.update({o.name: o for o in objects})  # ...and the benchmark's own name, which wins
        unknown = [n for n in names if n not in by_name]
        if unknown:
            close = difflib.get_close_matches(unknown[0], list(by_name), n=1)
            suggest = f"; did you mean '{close[0]}'?" if close else ""
            raise BenchmarkError(f"{where}: no object named {', '.join(unknown)}{suggest}")
        objects = list({id(o): o for o in (by_name[n] for n in names)}.values())
    if limit is not None:
        objects = objects[:limit]
    if not objects:
        raise BenchmarkError(f"{where}: no objects to evaluate{hint}")
    return objects


def _one_object_hint(root: Path) -> str:
    """A hint when ``root`` looks like one GSO object's folder (or its meshes/ folder) rather than
    the folder of objects; "" otherwise."""
    if (root / "meshes" / "model.obj").is_file():
        return f"; this looks like one object's folder: give its parent folder ({root.resolve().parent})"
    if root.name == "meshes" and (root / "model.obj").is_file():
        return (f"; this looks like one object's meshes/ folder: give the folder that holds the objects "
                f"({root.resolve().parent.parent})")
    return ""


def _need_folder(data: Path | None, benchmark: str) -> Path:
    if data is None:
        raise BenchmarkError(f"--benchmark {benchmark} needs --data PATH (the folder of objects)")
    data = Path(data)
    if not data.is_dir():
        raise BenchmarkError(f"--data {data}: not a folder")
    return data


def gso_objects(data: Path | None, names: list[str] | None = None, limit: int | None = None) -> list[BenchmarkObject]:
    from o3dcli.io.mesh import load_mesh

    root = _need_folder(data, "gso")
    objects = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and (p / "meshes" / "model.obj").is_file()):
        textured = (d / "materials" / "textures" / "texture.png").is_file()
        objects.append(BenchmarkObject(d.name, str(d), partial(load_mesh, d, up="z"), appearance=textured))
    if not objects:
        hint = _one_object_hint(root) or "; for a folder of mesh files use --benchmark folder"
        raise BenchmarkError(f"GSO folder {root}: no objects in the GSO layout (<object>/meshes/model.obj){hint}")
    return _select(objects, names, limit, f"GSO folder {root}")


def _synthetic_mesh(seed: int) -> TriMesh:
    from o3dcli.synth.objects import make_object

    return make_object(seed)[0]


def synthetic_objects(names: list[str] | None = None, limit: int | None = None) -> list[BenchmarkObject]:
    """Objects from seeds 1,000,000 + i; names are ``synth_<seed>`` (o3dcli.synth.object_id)."""
    from o3dcli.synth.dataset import object_id

    def make(seed: int) -> BenchmarkObject:
        return BenchmarkObject(object_id(seed), f"synthetic seed {seed}", partial(_synthetic_mesh, seed), seed=seed)

    if names:
        seeds = []
        for n in names:
            digits = n.removeprefix("synth_")
            seed = int(digits) if digits.isdigit() else -1
            if not SYNTHETIC_FIRST_SEED <= seed <= SYNTHETIC_LAST_SEED:
                raise BenchmarkError(f"synthetic benchmark: '{n}' is not an object of it "
                                     f"(names are {object_id(SYNTHETIC_FIRST_SEED)} .. {object_id(SYNTHETIC_LAST_SEED)})")
            seeds.append(seed)
        return _select([make(s) for s in dict.fromkeys(seeds)], None, limit, "synthetic benchmark")
    count = SYNTHETIC_DEFAULT_COUNT if limit is None else limit
    return _select([make(SYNTHETIC_FIRST_SEED + i) for i in range(count)], None, None, "synthetic benchmark")


def folder_objects(data: Path | None, names: list[str] | None = None, limit: int | None = None) -> list[BenchmarkObject]:
    from o3dcli.io.mesh import load_mesh

    root = _need_folder(data, "folder")
    from o3dcli.naming import next_free_name

    objects, taken = [], set()
    for f in sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in PREDICTION_SUFFIXES):
        # the file's own stem: predictions and --objects go by it (chair.obj and chair.glb: chair, chair-2)
        name = next_free_name(f.stem, taken.__contains__)
        taken.add(name)
        objects.append(BenchmarkObject(name, str(f), partial(load_mesh, f, up="auto")))  # STL, USD: their own up
    hint = ""
    if not objects:  # one GSO object's folder, or a GSO dataset, given to the wrong benchmark
        gso = any((d / "meshes" / "model.obj").is_file() for d in root.iterdir() if d.is_dir())
        hint = _one_object_hint(root) or ("; it holds objects in the GSO layout: use --benchmark gso" if gso else "")
    return _select(objects, names, limit, f"mesh folder {root}", hint)


def benchmark_objects(benchmark: str, data: Path | None = None, names: list[str] | None = None,
                      limit: int | None = None) -> list[BenchmarkObject]:
    """The benchmark's objects, in its fixed order. Raises BenchmarkError for a usage problem."""
    if benchmark == "gso":
        return gso_objects(data, names, limit)
    if benchmark == "synthetic":
        return synthetic_objects(names, limit)
    if benchmark == "folder":
        return folder_objects(data, names, limit)
    raise BenchmarkError(f"unknown benchmark '{benchmark}' (choose {', '.join(BENCHMARKS)})")


ASSET_CHOICES = {"auto": PREDICTION_FILES, "mesh": ("model.glb", "model.obj"), "gaussians": ("gaussians.ply",),
                 "views": ("views.png",)}


def find_prediction(pred_dir: Path, names: str | Sequence[str], asset: str = "auto") -> Path:
    """The prediction of an object in ``pred_dir``: an o3d asset folder ``<name>/`` (model.glb,
    model.obj or gaussians.ply), a GSO-layout folder ``<name>/meshes/model.obj``, a folder with a
    single mesh file, or any tool's ``<name>.glb|.gltf|.obj|.ply``. ``names`` is the object's name or
    the names it may go by, tried in order (BenchmarkObject.prediction_names). ``asset`` picks the
    file of an o3d asset folder (see EvalProtocol.asset). FileNotFoundError names what was tried."""
    names = [names] if isinstance(names, str) else list(names)
    refused = None
    for name in names:
        try:
            return _find_prediction(Path(pred_dir), name, asset)
        except PredictionRefused as e:
            refused = refused or e
        except FileNotFoundError:
            pass
    if refused is not None:  # a folder with the wrong kind of asset, or several meshes, says so, not "nothing there"
        raise refused
    name = names[0]
    also = f"; also as {', '.join(repr(n) for n in names[1:])}" if len(names) > 1 else ""
    raise FileNotFoundError(f"no prediction for '{name}' in {pred_dir} (looked for {name}/{{{','.join(PREDICTION_FILES)}}}, "
                            f"{name}/meshes/model.obj and {name}{{{','.join(PREDICTION_SUFFIXES)}}}{also})")


class PredictionRefused(FileNotFoundError):
    """An object's prediction folder is there but holds nothing this run can score, and says why."""


def _find_prediction(pred_dir: Path, name: str, asset: str) -> Path:
    """`find_prediction` for one name: an o3d asset folder's file for ``asset``, else any other
    tool's mesh (`_any_mesh`), refused when ``asset`` asks for what it cannot be."""
    found = _any_mesh(pred_dir, name, asset)
    if found.parent == pred_dir / name and found.name in ASSET_CHOICES[asset]:
        return found  # an o3d asset folder's
    if asset == "views" or (asset == "gaussians" and found.suffix.lower() != ".ply"):
        what = "views.png" if asset == "views" else "Gaussians (a .ply)"
        raise PredictionRefused(f"{found}: not {what}, which --asset {asset} scores (only o3d asset folders have "
                                f"{ASSET_CHOICES[asset][0]}); --asset auto scores it as it is")
    return found


def _any_mesh(pred_dir: Path, name: str, asset: str) -> Path:
    folder = pred_dir / name
    several = None
    if folder.is_dir():
        for f in ASSET_CHOICES[asset]:
            if (folder / f).is_file():
                return folder / f
        if asset != "auto" and any((folder / f).is_file() for f in (*PREDICTION_FILES, "views.png")):
            raise PredictionRefused(f"{folder}: no {' or '.join(ASSET_CHOICES[asset])} to score (--asset {asset})")
        if (folder / "meshes" / "model.obj").is_file():
            return folder
        meshes = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in PREDICTION_SUFFIXES)
        if len(meshes) == 1:
            return meshes[0]
        named = [p for p in meshes if p.stem == name]  # several: the one named after the object
        if len(named) == 1:
            return named[0]
        if meshes:
            shown = ", ".join(p.name for p in meshes[:4]) + (", ..." if len(meshes) > 4 else "")
            several = PredictionRefused(f"{folder}: holds {len(meshes)} meshes ({shown}), none named model.* or "
                                        f"{name}.*: which one is the prediction?")
    for suffix in PREDICTION_SUFFIXES:  # DIR/<object>.<suffix>
        if (pred_dir / f"{name}{suffix}").is_file():
            return pred_dir / f"{name}{suffix}"
    # ...its suffix in another case (box.GLB from a Windows tool); the stem compared first, so a
    # large folder is not stat'ed through for every object
    found = {}
    try:
        for p in pred_dir.iterdir():
            if p.stem == name and p.suffix.lower() in PREDICTION_SUFFIXES and p.is_file():
                found.setdefault(p.suffix.lower(), p)
    except OSError:
        pass
    for suffix in PREDICTION_SUFFIXES:
        if suffix in found:
            return found[suffix]
    raise several or FileNotFoundError(name)


def load_generated_views(path: Path):
    """An o3d views.png (V square RGB views left to right) as GeneratedViews."""
    import torch

    from o3dcli.eval.protocol import GeneratedViews
    from o3dcli.io.images import load_image

    img = torch.from_numpy(load_image(path)).permute(2, 0, 1)  # [4, H, W] in [0, 1]
    h, w = img.shape[-2:]
    if w % h:
        raise ValueError(f"{path}: {w}x{h} is not square views side by side")
    rgb = img[:3] * img[3:] + (1 - img[3:])  # over white, as the protocol's renders
    cameras = None
    if (path.parent / "config.yaml").is_file():  # the asset's resolved config: which cameras made the views
        import yaml

        cameras = (yaml.safe_load((path.parent / "config.yaml").read_text()) or {}).get("cameras")
    return GeneratedViews(rgb.unflatten(2, (w // h, h)).permute(2, 0, 1, 3).contiguous(), str(path), cameras)


def load_prediction(path: Path):
    """Gaussians (a 3DGS PLY), GeneratedViews (an o3d views.png: square views side by side) or a
    TriMesh (anything else; GSO folders are turned Y-up)."""
    if Path(path).suffix.lower() == ".png":
        return load_generated_views(Path(path))
    from o3dcli.io.assets import load_asset

    path = Path(path)
    if path.is_dir() and (path / "meshes" / "model.obj").is_file():  # the GSO layout is Z-up, as its ground truth
        return load_asset(path, up="z")
    return load_asset(path, foreign_splats="stored")  # predictions are in o3d's frame (docs/eval-protocol.md)
