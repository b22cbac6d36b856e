"""Configuration: one dataclass per stage, nested in one `Config`.

Defaults live in the dataclasses; presets (YAML files in `presets/`) override
fields; `--set section.key=value` overrides one field from the command line.
Every field has a docstring right under it: that text is what `o3d presets show`
prints. Unknown keys and ill-typed values are errors that name the key and the
closest valid one. YAML is read with `yaml.safe_load` only.
"""

from __future__ import annotations

import ast
import dataclasses
import datetime
import difflib
import functools
import inspect
import math
import textwrap
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

# Every stage's dataclass (pure dataclasses: importing them costs no torch).
from o3dcli.diffusion.config import DiffusionConfig
from o3dcli.errors import ConfigError  # noqa: F401  (re-exported: o3dcli.config.ConfigError)
from o3dcli.errors import require as _require
from o3dcli.mesh.config import MeshConfig
from o3dcli.models.configs import DenoiserConfig, ModelConfig, ReconConfig
from o3dcli.train.config import TrainConfig

PRESET_META_KEYS = ("description", "base")


@dataclass
class RuntimeConfig:
    device: str = "auto"
    """Torch device: "auto" (CUDA when available, else CPU; never MPS), "cpu", "cuda", "cuda:1", ..., or "mps" (Apple GPUs: accepted, but not part of o3d's tested set)."""
    seed: int = 0
    """Base seed; each item's generator is seeded from it and the item's content hash."""
    threads: int = 0
    """CPU threads for torch (0 = torch's default)."""
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    """Model precision; float16/bfloat16 need CUDA."""

    def check(self) -> None:
        _require(0 <= self.seed < 2**32, "runtime.seed", self.seed, "from 0 to 4294967295 (2**32 - 1)")
        _require(0 <= self.threads <= 1024, "runtime.threads", self.threads,
                 "from 0 (torch's default) to 1024; more threads than cores only slow a run")
        ok = self.device in ("auto", "cpu", "mps") or self.device.split(":")[0] == "cuda"
        _require(ok, "runtime.device", self.device, '"auto", "cpu", "cuda", "cuda:N" or "mps"')


@dataclass
class PreprocessConfig:
    size: int = 256
    """Output side in pixels (the model's input size)."""
    foreground_ratio: float = 0.85
    """Fraction of the square side that the foreground's longer side occupies."""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Colour the foreground is composited on, RGB in [0, 1]."""
    matting: Literal["auto", "alpha", "rembg", "builtin"] = "auto"
    """Foreground source: auto = the image's alpha if it has a real one, else rembg if installed, else the built-in estimator."""
    max_pixels: int = 50_000_000
    """Images with more pixels than this are refused (decompression-bomb guard)."""
    alpha_threshold: float = 0.5
    """Alpha above this counts as foreground for cropping and validation."""

    def check(self) -> None:
        _require(self.size >= 8, "preprocess.size", self.size, "at least 8")
        _require(0.05 <= self.foreground_ratio <= 1.0, "preprocess.foreground_ratio", self.foreground_ratio, "in [0.05, 1]")
        _require(all(0.0 <= c <= 1.0 for c in self.background), "preprocess.background", list(self.background), "RGB values in [0, 1]")
        _require(self.max_pixels > 0, "preprocess.max_pixels", self.max_pixels, "positive")
        _require(0.0 < self.alpha_threshold < 1.0, "preprocess.alpha_threshold", self.alpha_threshold, "in (0, 1)")


@dataclass
class CameraConfig:
    elevations: tuple[float, ...] = (0.0,) * 8
    """Elevation of each generated view in degrees (view 0 is the input view)."""
    azimuths: tuple[float, ...] = (0.0, 45.0, 90.0, 135.0, 180.0, 225.0, 270.0, 337.5)
    """Azimuth of each generated view in degrees (0 = the input view, counter-clockwise seen from above)."""
    radius: float = 1.7417
    """Distance of the cameras from the object centre (objects fit the unit box)."""
    fov_deg: float = 39.6
    """Field of view in degrees."""

    def check(self) -> None:
        _require(len(self.elevations) == len(self.azimuths), "cameras.elevations", list(self.elevations),
                 f"as long as cameras.azimuths ({len(self.azimuths)} values)")
        _require(len(self.azimuths) >= 1, "cameras.azimuths", list(self.azimuths), "at least one view")
        _require(self.radius > 0, "cameras.radius", self.radius, "positive")
        _require(0 < self.fov_deg < 180, "cameras.fov_deg", self.fov_deg, "in (0, 180)")


@dataclass
class Config:
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    """Device, seed, threads."""
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    """Image loading, matting, recentring and resizing."""
    cameras: CameraConfig = field(default_factory=CameraConfig)
    """The multi-view camera rig of generation, training and evaluation."""
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    """The recursive sampler: steps, noise levels, guidance, feedback schedule."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Codec and model weights."""
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    """The multi-view denoiser (UNet, camera MLPs, feedback adapters, image encoder)."""
    recon: ReconConfig = field(default_factory=ReconConfig.tiny)
    """The Gaussian reconstructor (U-Net with cross-view attention)."""
    mesh: MeshConfig = field(default_factory=MeshConfig)
    """Gaussians -> mesh, cleanup and decimation, UV unwrapping, texture bake, export."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Joint training (o3d train)."""

    def section(self, name: str):
        return getattr(self, name)

    def to_dict(self) -> dict[str, Any]:
        return to_plain(dataclasses.asdict(self))


def to_plain(value):
    """Tuples become lists so the YAML stays plain (and safe_load-able)."""
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


# ---------------------------------------------------------------------------
# Field documentation (attribute docstrings) and the key space


@functools.cache
def field_docs(cls) -> dict[str, str]:
    """The docstring written under each field of a dataclass, by field name."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def valid_keys(cls=Config, prefix: str = "") -> list[str]:
    """Every dotted key of the config tree (leaves only)."""
    keys = []
    for f in dataclasses.fields(cls):
        t = _hints(cls)[f.name]
        if dataclasses.is_dataclass(t):
            keys += valid_keys(t, f"{prefix}{f.name}.")
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def _closest(key: str, candidates: list[str]) -> str:
    by_case = {c.lower(): c for c in candidates}
    if key.lower() in by_case:  # mesh.TARGET_FACES
        return f"; did you mean '{by_case[key.lower()]}'?"
    head, _, rest = key.partition(".")
    sections = list(dict.fromkeys(c.split(".", 1)[0] for c in candidates if "." in c))
    if head in sections and not rest:  # `--set mesh=5`: a section, not a setting
        return f"; '{head}' is a section: give one of its keys, {head}.KEY (`o3d presets show {head}` lists them)"
    if head in sections and "." not in rest:  # a known section: its own keys only, compared by name
        own = [c for c in candidates if c.split(".", 1)[0] == head and "." in c]
        near = difflib.get_close_matches(rest.lower(), [c.split(".", 1)[1].lower() for c in own], n=1, cutoff=0.6)
        if near:
            return f"; did you mean '{head}.{next(c.split('.', 1)[1] for c in own if c.split('.', 1)[1].lower() == near[0])}'?"
        elsewhere = [c for c in candidates if c.rsplit(".", 1)[-1] == rest][:1]  # a key of another section
        if elsewhere:
            return f"; did you mean '{elsewhere[0]}'?"
        return f"; keys of '{head}': {', '.join(own)}"
    if head not in sections:  # a misspelt section ('meshh:', --set meshh.target_faces=...): fix the section first
        near = difflib.get_close_matches(head, sections, n=1, cutoff=0.6)
        if near:
            fixed = f"{near[0]}.{rest}" if rest else near[0]
            if not rest or fixed in candidates:
                return f"; did you mean '{fixed}'?"
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.5)
    if not close:  # try the last component alone (a key put under the wrong section)
        last = key.rsplit(".", 1)[-1]
        close = [c for c in candidates if c.rsplit(".", 1)[-1] == last][:1]
    if close:
        return f"; did you mean '{close[0]}'?"
    section = key.split(".", 1)[0]
    same = [c for c in candidates if c.split(".", 1)[0] == section and "." in c]
    if "." in key and same:
        return f"; keys of '{section}': {', '.join(same)}"
    sections = list(dict.fromkeys(c.split(".", 1)[0] for c in candidates))
    return f"; sections: {', '.join(sections)} (`o3d presets show` lists every key)"


def type_name(t) -> str:
    origin = typing.get_origin(t)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(t))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(t))
    if origin in (tuple, list):
        args = typing.get_args(t)
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return f"list of {type_name(args[0])}"
        if origin is tuple:
            return f"list of {len(args)} {type_name(args[0])}"
        return f"list of {type_name(args[0])}"
    if t is type(None):
        return "null"
    return getattr(t, "__name__", str(t))


def _as_list(value, item_type):
    """A list field also takes `a,b,c` (what `--set mesh.formats=glb,stl` gives: one string) and a
    lone number or true/false (`--set recon.input_views=0`). Items of a list of numbers or booleans
    are read as YAML scalars; items of a list of strings stay the text between the commas (none
    of o3d's string lists holds commas, so the split is unambiguous). An empty string is []."""
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")] if value.strip() else []
        if item_type is str or typing.get_origin(item_type) is Literal:
            return items
        out = []
        for v in items:
            try:
                out.append(yaml.safe_load(v) if v else v)
            except yaml.YAMLError:
                out.append(v)
        return out
    if isinstance(value, (bool, int, float)):
        return [value]
    return value


def coerce(value, t, key: str):
    """Check `value` (from YAML) against the annotation `t` and convert it; ConfigError if it does not fit."""

    def bad(extra: str = ""):
        return ConfigError(f"bad value for '{key}': {value!r} is not {type_name(t)}{extra}")

    origin = typing.get_origin(t)
    if origin is Literal:
        if isinstance(value, str) and value not in typing.get_args(t):
            # `--set mesh.method=Carve`, `texture_format: PNG`: the one choice that differs only in case
            same = [a for a in typing.get_args(t) if isinstance(a, str) and a.lower() == value.strip().lower()]
            if len(same) == 1:
                return same[0]
        if value not in typing.get_args(t):
            close = difflib.get_close_matches(str(value), [str(a) for a in typing.get_args(t)], n=1)
            raise bad(f"; did you mean {close[0]!r}?" if close else "")
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(t):
            try:
                return coerce(value, arg, key)
            except ConfigError:
                pass
        raise bad()
    if origin in (tuple, list):
        args = typing.get_args(t)
        value = _as_list(value, args[0])
        if not isinstance(value, (list, tuple)):
            example = "[glb, stl]" if key == "mesh.formats" else "[a, b, c]"
            formats = " (o3d generate and o3d mesh also take --formats glb,stl)" if key == "mesh.formats" else ""
            raise bad(f"; give a list: {example} or a,b,c{formats}")
        fixed = origin is tuple and not (len(args) == 2 and args[1] is Ellipsis)
        if fixed and len(value) != len(args):
            raise bad(f" (needs exactly {len(args)} values)")
        out = []
        for i, (v, a) in enumerate(zip(value, args if fixed else [args[0]] * len(value)), 1):
            try:
                out.append(coerce(v, a, key))
            except ConfigError as e:
                raise ConfigError(f"{e} (item {i} of {len(value)})") from None
        return tuple(out) if origin is tuple else out
    if t is type(None):
        if value is not None:
            raise bad()
        return None
    if t is bool:
        if not isinstance(value, bool):
            raise bad(" (use true or false)")
        return value
    if t is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        return value
    if t is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string: accept it as the number it is
            try:
                number = float(value)
            except ValueError:
                raise bad() from None
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        else:
            try:
                number = float(value)
            except OverflowError:  # an integer past float's range
                raise bad(" (a finite number)") from None
        if not math.isfinite(number):  # .inf, nan, 1e309: no setting means them, and each fails late
            raise bad(" (a finite number)")
        return number
    if t is str:
        if not isinstance(value, str):
            raise bad()
        return value
    raise ConfigError(f"internal: unsupported type {t!r} for '{key}'")


# ---------------------------------------------------------------------------
# Applying presets and overrides


def apply_dict(cfg, data: dict, source: str, prefix: str = "") -> None:
    """Set fields of the dataclass `cfg` from a nested dict, checking every key and value."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: '{prefix.rstrip('.') or 'top level'}' must be a mapping, got {type(data).__name__}")
    hints = _hints(type(cfg))
    names = [f.name for f in dataclasses.fields(cfg)]
    for k, v in data.items():
        key = f"{prefix}{k}"
        if k not in names:
            # a misspelt section holding one key (`--set meshh.target_faces=3`): the suggestion names both
            look = f"{key}.{next(iter(v))}" if isinstance(v, dict) and len(v) == 1 else key
            raise ConfigError(f"{source}: unknown key '{key}'{_closest(look, valid_keys())}")
        t = hints[k]
        if dataclasses.is_dataclass(t):
            apply_dict(getattr(cfg, k), v, source, f"{key}.")
        else:
            try:
                setattr(cfg, k, coerce(v, t, key))
            except ConfigError as e:
                raise ConfigError(f"{source}: {e}") from None


def parse_override(text: str) -> tuple[str, Any]:
    """`section.key=value` -> (dotted key, YAML-parsed value)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {text!r}: value is not valid YAML ({e})") from None
    if isinstance(value, (bool, int, float, datetime.date)) and _text_field(key):
        # a text setting keeps the text as typed: YAML reads a run folder named 2024-06-01 as a
        # date, cuda index 0 as a number, off as false (a list or mapping is still refused)
        value = raw.strip()
    return key, value


def _text_field(key: str) -> bool:
    """Whether the dotted `key` is a setting that holds text (str, or str | None)."""
    cls, parts = Config, key.split(".")
    for i, part in enumerate(parts):
        t = _hints(cls).get(part) if dataclasses.is_dataclass(cls) else None
        if t is None:
            return False
        if i < len(parts) - 1:
            cls = t
    return t is str or (typing.get_origin(t) in (typing.Union, types.UnionType)
                        and set(typing.get_args(t)) == {str, type(None)})


def set_dotted(cfg: Config, key: str, value, source: str) -> None:
    parts = key.split(".")
    nested: dict = {}
    cur = nested
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value
    if len(parts) < 2:
        raise ConfigError(f"{source}: unknown key '{key}'{_closest(key, valid_keys())}")
    apply_dict(cfg, nested, source)


def preset_dirs() -> list[Path]:
    """Where named presets are looked up: the installed o3dcli.presets package
    (the repo's presets/ folder), or that folder beside a source checkout."""
    try:
        from importlib import resources

        return [Path(str(resources.files("o3dcli.presets")))]
    except ModuleNotFoundError:  # running from a checkout that is not pip-installed
        return [Path(__file__).resolve().parents[1] / "presets"]


def available_presets() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for d in preset_dirs():
        for p in sorted(d.glob("*.yaml")):
            out.setdefault(p.stem, p)
    return out


RUN_MARKERS = ("config.yaml", "model.safetensors")
"""The files of an `o3d train` run folder that make it usable as a preset (its settings and weights;
a run shared without its checkpoint.pt is one too)."""


RUN_TRACES = ("checkpoint.pt", "losses.csv")
"""Files only an `o3d train` run folder holds, weights saved or not (o3dcli.train.trainer's
CHECKPOINT and LOSS_CSV; not imported, which would load torch with the settings)."""


def started_run(folder: Path) -> bool:
    """Whether `folder` is an `o3d train` run folder, its weights saved yet or not."""
    return training_run(folder) or any((folder / name).is_file() for name in RUN_TRACES)


def training_run(folder: Path) -> bool:
    """Whether `folder` is an `o3d train` run folder with saved weights."""
    return all((folder / name).is_file() for name in RUN_MARKERS)


def resolve_preset_path(preset: str | Path) -> Path:
    from o3dcli.commands import home_path

    p = home_path(str(preset))
    # A path is a YAML file (or names one explicitly); a bare name is a preset even when
    # a folder of that name (say, a run called "tiny") sits in the working directory.
    if p.suffix in (".yaml", ".yml") or p.is_file():
        if not p.is_file():
            raise ConfigError(f"preset file not found: {p}")
        return p
    presets = available_presets()
    if str(preset) not in presets and p.is_dir() and training_run(p):
        return p / "config.yaml"  # an o3d train run: its settings, with its weights (read_preset)
    if str(preset) not in presets and (p / "o3d-asset.json").is_file() and (p / "config.yaml").is_file():
        return p / "config.yaml"  # an asset folder: the settings that made it
    if str(preset) not in presets and p.is_dir():
        if started_run(p):
            raise ConfigError(f"preset {p}: an o3d train run folder without {' or '.join(RUN_MARKERS)} (written with "
                              "every checkpoint: none saved yet, or removed since)")
        raise ConfigError(f"preset {p}: a folder, but neither an o3d train run (config.yaml and "
                          f"{RUN_MARKERS[1]}) nor an asset folder (o3d-asset.json and config.yaml)")
    if str(preset) not in presets:
        close = closest_preset(str(preset), list(presets))
        hint = f"; did you mean '{close}'?" if close else ""
        raise ConfigError(f"unknown preset '{preset}'{hint} (available: {', '.join(presets) or 'none'})")
    return presets[str(preset)]


def closest_preset(name: str, names: list[str]) -> str | None:
    """The preset `name` most likely means: same name in another case ('TINY'), else a close
    spelling ('tnyi'), else one that contains it ('svd-lgm')."""
    lower = {n.lower(): n for n in names}
    want = name.lower().strip()
    if want in lower:
        return lower[want]
    close = difflib.get_close_matches(want, list(lower), n=1, cutoff=0.6)
    if close:
        return lower[close[0]]
    inside = [n for low, n in lower.items() if want and (want in low or low in want)]
    return inside[0] if len(inside) == 1 else None


def duplicate_keys(text: str) -> list[tuple[str, int, int]]:
    """(dotted key, first line, repeated line) for every key a YAML mapping gives twice: YAML loaders
    keep the last silently, so a preset that sets a field twice would lose the first value unseen.
    Reads the node tree only (`yaml.compose`, SafeLoader): nothing is constructed."""
    found: list[tuple[str, int, int]] = []

    def walk(node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key, value in node.value:
                name = str(key.value) if isinstance(key, yaml.ScalarNode) else "?"
                if name in seen:
                    found.append((prefix + name, seen[name] + 1, key.start_mark.line + 1))
                seen.setdefault(name, key.start_mark.line)
                walk(value, prefix + name + ".")
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                walk(item, prefix)

    walk(yaml.compose(text, Loader=yaml.SafeLoader), "")
    return found


PATH_FIELDS = ("model.weights", "model.published_unet", "model.published_recon", "model.vae_path",
               "denoiser.clip_path", "train.init")
"""Fields that name local files or folders. A relative one in a preset file is taken from the
preset's folder when it is there (else from the working folder, or, for weights, as a name); the
config.yaml written beside an asset holds them absolute, so it reproduces the asset from anywhere."""

WEIGHT_NAME_FIELDS = ("model.weights", "train.init")
"""Path fields that may also hold a name looked up in the weights folders ("tiny"), or "none"."""


def _is_weights_name(key: str, value: str) -> bool:
    """Whether `value` of `key` is "none"/"released" or a weights name found in the weights folders
    (a name wins over a file or folder of that name, as `resolve_weights` has it)."""
    if key not in WEIGHT_NAME_FIELDS:
        return False
    if value in ("", "none", "released"):
        return True
    from o3dcli.sysinfo import named_weights

    return named_weights(value) is not None


def _preset_relative_paths(data: dict, folder: Path) -> None:
    """In place: relative path fields of a preset's `data` that name something in the preset's
    `folder` become absolute paths there."""
    for key in PATH_FIELDS:
        section, name = key.split(".")
        values = data.get(section)
        value = values.get(name) if isinstance(values, dict) else None
        if not isinstance(value, str) or not value or value.startswith("~") or Path(value).is_absolute():
            continue
        if not _is_weights_name(key, value) and (folder / value).exists():
            values[name] = str((folder / value).resolve())


def absolute_paths(cfg: Config) -> Config:
    """`cfg` with its path fields (PATH_FIELDS) that name an existing file or folder made absolute
    (`~` expanded), and so are weights names found through $O3D_WEIGHTS_DIR (another shell may not
    have it); the shipped weights' names, "none" and paths that do not exist are left as they are."""
    from o3dcli.sysinfo import named_weights, weights_dirs

    changes: dict[str, dict] = {}
    for key in PATH_FIELDS:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if not value or _is_weights_name(key, value):
            found = named_weights(value) if value and key in WEIGHT_NAME_FIELDS else None
            if found is not None and found.parent != weights_dirs()[0]:
                changes.setdefault(section, {})[name] = str(found.resolve())
            continue
        p = Path(value).expanduser()
        if p.exists() and str(p.resolve()) != value:
            changes.setdefault(section, {})[name] = str(p.resolve())
    return dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **fields)
                                       for section, fields in changes.items()})


def read_preset(preset: str | Path, _seen: tuple = (), warn_rootless: bool = True) -> list[tuple[str, dict]]:
    """The chain of (source name, overrides) for a preset, base presets first."""
    from o3dcli.commands import home_path

    path = resolve_preset_path(preset)
    if path.resolve() in _seen:
        raise ConfigError(f"preset {path}: 'base' chain loops back to itself")
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text) or {}
        twice = duplicate_keys(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read preset {path}: {e}") from None
    if twice:
        raise ConfigError(f"preset {path}: " + "; ".join(f"'{k}' is set twice (lines {a} and {b})" for k, a, b in twice))
    if not isinstance(data, dict):
        raise ConfigError(f"preset {path}: top level must be a mapping of sections")
    if path.parent not in preset_dirs():
        _preset_relative_paths(data, path.parent)
    if path.name == "config.yaml" and training_run(path.parent) and isinstance(data.get("model", {}), dict):
        # a run's config.yaml records the weights it started from (train.init): the run's own are meant
        data.setdefault("model", {})["weights"] = str(path.parent.resolve())
    chain = []
    base = data.pop("base", None)
    data.pop("description", None)
    if base is not None:
        if not isinstance(base, str) or not base.strip():
            raise ConfigError(f"preset {path}: 'base' must be a preset's name, a preset file or an o3d train run "
                              f"folder, got {base!r}")
        # a file, or a run folder that is no preset's name, is found from the preset's own folder
        local = path.parent / home_path(base)
        near = base.endswith((".yaml", ".yml")) or (base not in available_presets() and local.is_dir())
        chain += read_preset(local if near else base, _seen + (path.resolve(),), warn_rootless)
    elif warn_rootless and path.parent not in preset_dirs():
        _warn_if_rootless(path, data)
    chain.append((str(path.name if path.parent in preset_dirs() else path), data))
    return chain


def preset_description(path: Path) -> str:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return ""
    return str(data.get("description", "")).strip() if isinstance(data, dict) else ""


def load_config(preset: str | Path | None = "tiny", overrides: list[str] | tuple[str, ...] = (),
                warn_rootless: bool = True) -> Config:
    """Defaults -> preset (and its bases) -> `--set` overrides, all checked. `warn_rootless=False`
    for commands that use no model (`o3d mesh`): a preset without `base:` is no mistake there."""
    cfg = Config()
    if preset is not None:
        for source, data in read_preset(preset, warn_rootless=warn_rootless):
            apply_dict(cfg, data, f"preset {source}")
    for text in overrides:
        key, value = parse_override(text)
        set_dotted(cfg, key, value, f"--set {text}")
    check_config(cfg)
    return cfg


def _warn_if_rootless(path: Path, data: dict) -> None:
    """Warn about a user's preset file that starts from the built-in defaults (no `base:`) without
    choosing the weights: the defaults are a model with no weights (tiny's architecture at 256 px), so a
    file holding only, say, a mesh section would run an untrained model. A full config (one that
    sets model.weights, like an asset's config.yaml) is not warned about."""
    model = data.get("model")
    if isinstance(model, dict) and "weights" in model:
        return
    import logging

    logging.getLogger("o3d").warning(
        "preset %s has no 'base:' and sets no model.weights, so it starts from o3d's built-in defaults "
        "(the tiny model's architecture at 256 px, untrained: model.weights none), not from the tiny preset. "
        "To change the shipped model's settings, start the file with 'base: tiny'", path)


def check_config(cfg) -> None:
    """Run every section's range checks (`check()` methods) recursively."""
    if hasattr(cfg, "check"):
        cfg.check()
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            check_config(v)


def dump_config(cfg: Config, header: str = "", keys: list[str] | None = None) -> str:
    """YAML text of the resolved config; loading it as a preset reproduces `cfg` (with `keys`:
    only those fields, a preset that sets just them)."""
    data = cfg.to_dict()
    if keys is not None:
        picked: dict = {}
        for key in keys:
            *path, last = key.split(".")
            src, dst = data, picked
            for p in path:
                src, dst = src[p], dst.setdefault(p, {})
            dst[last] = src[last]
        data = picked
    body = yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
    return (header + body) if header else body
