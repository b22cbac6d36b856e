"""The install metadata matches the source tree, and the CLI starts fast and light."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib  # novm (the ImportError below is 3.10)
except ImportError:  # Python 3.10, which o3d supports, has no tomllib
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "o3dcli").rglob("__init__.py")}
    data = {".".join(p.relative_to(ROOT).parts) for p in (ROOT / "o3dcli" / "assets").iterdir() if p.is_dir()
            and p.name != "__pycache__"}  # the shipped examples and weights
    assert found | data | {"o3dcli.presets"} == listed


def test_help_does_not_import_heavy_libraries():
    code = (
        "import sys; from typer.testing import CliRunner; from o3dcli.cli import app;"
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output;"
        "heavy = [m for m in ('torch', 'open3d', 'gsplat', 'diffusers', 'pymeshlab', 'xatlas', 'trimesh') if m in sys.modules];"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_documents_the_code_cites_are_in_the_repository():
    # source files point readers to docs/*.md for conventions and protocols; each must exist
    import re

    cited = {}
    for path in list((ROOT / "o3dcli").rglob("*.py")) + list((ROOT / "scripts").glob("*")):
        if path.is_file():
            for name in re.findall(r"\bdocs/[\w./-]+\.md\b", path.read_text(errors="replace")):
                cited.setdefault(name, path.relative_to(ROOT))
    assert "docs/design.md" in cited  # the conventions page is what most modules cite
    missing = {name: str(where) for name, where in cited.items() if not (ROOT / name).is_file()}
    assert not missing, missing


def test_command_help_paragraphs_are_one_line_each_so_the_terminal_wraps_them():
    # Typer's rich help keeps a docstring's line breaks; a hard-wrapped paragraph breaks lines
    # in mid-sentence at any terminal width but the one it was wrapped for
    from typer.main import get_command

    from o3dcli.cli import app

    def commands(cmd, name):
        yield name, cmd
        for sub, child in getattr(cmd, "commands", {}).items():
            yield from commands(child, f"{name} {sub}")

    broken = [name for name, cmd in commands(get_command(app), "o3d")
              if any("\n" in para.strip() for para in (cmd.help or "").split("\n\n"))]
    assert broken == []


def test_stop_after_help_names_every_stage_and_mesh_method_its_threshold():
    # the stage names and the carve threshold are the code's: the help must not go stale
    from typer.main import get_command

    from o3dcli.cli import app
    from o3dcli.config import Config
    from o3dcli.config_view import describe
    from o3dcli.mesh.config import CARVE_BELOW
    from o3dcli.stages import generate_stages

    (stop_after,) = [p for p in get_command(app).commands["generate"].params if p.name == "stop_after"]
    assert [s.name for s in generate_stages()] == [n for n in stop_after.help.replace(",", " ").replace(".", " ").split()
                                                   if n in {s.name for s in generate_stages()}]
    (method,) = [r for r in describe(Config()) if r[0] == "mesh.method"]
    assert f"carve below {CARVE_BELOW:,} Gaussians" in " ".join(map(str, method))


def test_the_min_deps_check_installs_exactly_the_declared_floors():
    # scripts/check_min_deps.sh runs the tests on scripts/constraints-min.txt: a floor raised or lowered
    # in pyproject.toml without it would no longer be the release that was checked
    import re

    from packaging.requirements import Requirement
    from packaging.version import Version

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    floors: dict[str, Version] = {}
    for line in project["dependencies"] + project["optional-dependencies"]["video"] + project["optional-dependencies"]["dev"]:
        req = Requirement(line)
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        lows = [Version(s.version) for s in req.specifier if s.operator == ">="]
        if req.marker is not None and not lows:  # a cap on some platforms (numpy<2 on Intel Macs): no floor
            continue
        assert len(lows) == 1, f"{line}: one >= floor expected"
        floors.setdefault(name, lows[0])  # core first: the dev extra's trimesh>=5.1 is not the core floor
    pinned = {}
    for line in (ROOT / "scripts" / "constraints-min.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pinned[re.sub(r"[-_.]+", "-", name).lower()] = Version(version)
    assert pinned == floors


def test_the_code_needs_no_newer_python_than_it_declares():
    # requires-python says 3.10, but the machines here run 3.11: vermin reads what each module,
    # function and syntax needs, so 3.11-only code (tomllib, datetime.UTC, except*) fails this here
    pytest.importorskip("vermin", reason="vermin is in the dev extra")
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert declared.startswith(">=")
    vermin = [sys.executable, "-c", "import sys, vermin; sys.exit(vermin.main())"]  # no `python -m vermin`
    proc = subprocess.run([*vermin, f"-t={declared[2:]}-", "--no-tips", "--eval-annotations",
                           "--violations", "--exclude", "str.decode",  # bytes.decode, which it takes for Python 2's str
                           "o3dcli", "scripts", "tests"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
def test_the_wheel_alone_installs_and_generates_with_the_shipped_weights(tmp_path):
    # Every other test runs from the source tree (an editable install). A user's `pip install o3dcli`
    # gets the wheel: it must hold the presets, the example images and the weights, and its build
    # must not lean on anything setuptools has deprecated (the build breaks when that is removed).
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", str(ROOT), "-w", str(wheels)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    said = build.stdout + build.stderr
    assert "Deprecat" not in said, "the build warns of something deprecated"
    assert "Warning: Package" not in said, "setuptools warns that it may leave out a folder of the package"
    (wheel,) = wheels.glob("o3dcli-*.whl")
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
                   capture_output=True, text=True, check=True)
    # away from the source tree, with the wheel's copy first on the path (the dependencies are this
    # environment's); the console script is the one the wheel declares
    env = {**os.environ, "PYTHONPATH": str(site)}
    work = tmp_path / "work"
    work.mkdir()

    def o3d(*args):
        return subprocess.run([sys.executable, str(site / "bin" / "o3d"), *args], cwd=work, env=env,
                              capture_output=True, text=True)

    info = o3d("info")
    assert info.returncode == 0, info.stdout + info.stderr
    presets = o3d("presets", "list")
    assert presets.returncode == 0 and "tiny" in presets.stdout and "ouroboros3d-svd-lgm" in presets.stdout, presets.stdout
    # one of the example images the wheel ships, through every stage
    examples = sorted((site / "o3dcli" / "assets" / "examples").glob("*.png"))
    assert len(examples) == 4, examples
    gen = o3d("generate", str(examples[0]), "--steps", "2", "-o", "out")
    assert gen.returncode == 0, gen.stdout[-3000:] + gen.stderr[-3000:]
    (weights,) = [line for line in gen.stderr.splitlines() if line.startswith("model weights: ")]  # the log is stderr
    assert weights.startswith(f"model weights: {site / 'o3dcli' / 'assets' / 'weights' / 'tiny.safetensors'}"), weights
    (glb,) = (work / "out").glob("*/*.glb")
    assert glb.stat().st_size > 10_000, glb
