"""A system without the libraries open3d and pymeshlab load (a slim container) is told so up front."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from o3dcli.native import PYMESHLAB_FILTERS, install_hint, missing_system_libraries

ROOT = Path(__file__).resolve().parents[1]

# what the two libraries said on a minimal Debian 13 with Python 3.13 (no libegl1, no libopengl0)
OPEN3D_ERROR = "libEGL.so.1: cannot open shared object file: No such file or directory"
PYMESHLAB_PRINTED = """Warning:
Unable to load the following plugins:

\tlibfilter_meshing.so: libfilter_meshing.so does not seem to be a Qt Plugin.

Cannot load library /venv/lib/python3.13/site-packages/pymeshlab/lib/plugins/libfilter_meshing.so: (libOpenGL.so.0: cannot open shared object file: No such file or directory)
\tlibio_base.so: libio_base.so does not seem to be a Qt Plugin.

Cannot load library /venv/lib/python3.13/site-packages/pymeshlab/lib/plugins/libio_base.so: (libOpenGL.so.0: cannot open shared object file: No such file or directory)
"""


def test_the_missing_library_and_its_package_are_read_from_the_loaders_words():
    assert missing_system_libraries(OPEN3D_ERROR) == ["libEGL.so.1"]
    assert missing_system_libraries(PYMESHLAB_PRINTED) == ["libOpenGL.so.0"]  # once, though said twice
    assert missing_system_libraries("ImportError: No module named 'open3d'") == []
    assert install_hint(["libEGL.so.1", "libOpenGL.so.0"]) == " (Debian/Ubuntu: apt-get install libegl1 libopengl0)"
    assert install_hint(["libfoo.so.3"]) == " (install the system package that provides libfoo.so.3)"


def test_a_macos_library_not_loaded_names_its_homebrew_formula():
    # dyld's words on an Apple Silicon Mac without Homebrew's libomp (open3d issue 5986), and
    # an Intel Mac's older form, which quotes the path
    arm = ("dlopen(/venv/lib/python3.11/site-packages/open3d/cpu/pybind.cpython-311-darwin.so, 0x0002): "
           "Library not loaded: /opt/homebrew/opt/libomp/lib/libomp.dylib\n  Referenced from: <0718BFA0> "
           "/venv/lib/python3.11/site-packages/open3d/cpu/pybind.cpython-311-darwin.so\n  Reason: tried: "
           "'/opt/homebrew/opt/libomp/lib/libomp.dylib' (no such file)")
    intel = "dlopen(pybind.so, 2): Library not loaded: '/usr/local/opt/libusb/lib/libusb-1.0.0.dylib'\n  Referenced from: x"
    assert missing_system_libraries(arm) == ["/opt/homebrew/opt/libomp/lib/libomp.dylib"]
    assert missing_system_libraries(intel) == ["/usr/local/opt/libusb/lib/libusb-1.0.0.dylib"]
    assert install_hint(missing_system_libraries(arm + intel)) == " (macOS: brew install libomp libusb)"
    assert install_hint(["/usr/lib/libfoo.dylib"]) == " (install the system package that provides /usr/lib/libfoo.dylib)"


def test_every_pymeshlab_filter_the_code_calls_is_checked_and_exists():
    import pymeshlab

    called = set()
    for path in (ROOT / "o3dcli").rglob("*.py"):
        called |= set(re.findall(r"\bms\.((?:meshing|compute|generate|get|load)_\w+)\(", path.read_text()))
    assert called and called <= set(PYMESHLAB_FILTERS), called - set(PYMESHLAB_FILTERS)
    assert all(hasattr(pymeshlab.MeshSet, name) for name in PYMESHLAB_FILTERS)  # real names, found when plugins load


def _slim_system(tmp_path: Path) -> dict:
    """An environment whose open3d fails to load libEGL and whose pymeshlab loads without its
    plugins (libOpenGL missing), as on a slim container: stand-in packages first on the path."""
    fake = tmp_path / "slim"
    (fake / "open3d").mkdir(parents=True)
    (fake / "open3d" / "__init__.py").write_text(f"raise ImportError({OPEN3D_ERROR!r})\n")
    (fake / "pymeshlab").mkdir()
    (fake / "pymeshlab" / "__init__.py").write_text(
        f"import os\nos.write(1, {PYMESHLAB_PRINTED.encode()!r})\n\n\nclass MeshSet:\n    pass\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake), str(ROOT)])}


def _o3d(args, env, cwd):
    return subprocess.run([sys.executable, "-m", "o3dcli.cli", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_generate_mesh_and_eval_refuse_up_front_naming_the_packages(tmp_path):
    env = _slim_system(tmp_path)
    out = tmp_path / "assets"
    res = _o3d(["generate", "--examples", "-o", str(out)], env, tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    text = " ".join(res.stderr.split())
    assert "open3d cannot load the system library libEGL.so.1 (Debian/Ubuntu: apt-get install libegl1)" in text
    assert ("pymeshlab's filter plugins cannot load the system library libOpenGL.so.0 (Debian/Ubuntu: apt-get "
            "install libopengl0)") in text
    assert "Qt Plugin" not in res.stdout + res.stderr  # pymeshlab's page of plugin errors is kept off the terminal
    assert not out.exists()  # before anything is written

    # the stages before meshing need neither library
    res = _o3d(["generate", "--examples", "-o", str(out), "--stop-after", "preprocess", "--no-progress"], env, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr

    (tmp_path / "m.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    res = _o3d(["mesh", str(tmp_path / "m.obj"), "-o", str(tmp_path / "meshes")], env, tmp_path)
    assert res.returncode == 2 and "apt-get install libegl1" in " ".join(res.stderr.split())
    assert not (tmp_path / "meshes").exists()

    res = _o3d(["eval", "--benchmark", "synthetic", "--limit", "1", "-o", str(tmp_path / "eval")], env, tmp_path)
    assert res.returncode == 2 and "apt-get install libopengl0" in " ".join(res.stderr.split())
    assert not (tmp_path / "eval").exists()


def test_info_says_which_library_is_not_usable_and_keeps_stdout_clean(tmp_path):
    res = _o3d(["info"], {**_slim_system(tmp_path), "COLUMNS": "400"}, tmp_path)  # each row on one line
    assert res.returncode == 0, res.stderr
    text = " ".join(res.stdout.split())
    assert "not usable: open3d cannot load the system library libEGL.so.1" in text
    assert "libopengl0" in text and "Qt Plugin" not in res.stdout + res.stderr


def test_an_item_that_meets_a_missing_library_names_its_package():
    # o3d render loads open3d only for a mesh input, and reports per item
    from o3dcli.inputs import item_message

    assert item_message(Path("a.glb"), ImportError(OPEN3D_ERROR)) == OPEN3D_ERROR + " (Debian/Ubuntu: apt-get install libegl1)"
    assert item_message(Path("a.glb"), ValueError(OPEN3D_ERROR)) == OPEN3D_ERROR  # only a loader's error


def test_a_torch_built_for_numpy_1_beside_numpy_2_is_refused_up_front(tmp_path, good_images):
    # torch before 2.3 beside NumPy 2 (pip's pick on an Intel Mac, or an older torch kept): torch
    # imports, then every array exchange raises this; each item failed on it, one by one
    fake = tmp_path / "numpy2"
    fake.mkdir()
    (fake / "sitecustomize.py").write_text(
        "import torch\n\n\ndef _no_numpy(*args, **kwargs):\n    raise RuntimeError('Numpy is not available')\n\n\n"
        "torch.from_numpy = _no_numpy\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake), str(ROOT)]), "COLUMNS": "400"}
    (tmp_path / "m.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    (tmp_path / "data").mkdir()
    fix = 'torch before 2.3 is built for NumPy 1.x; install numpy 1.x (pip install "numpy<2") or torch 2.3 or later'
    for args in (["generate", str(good_images / "apple.png"), "-o", "out", "--stop-after", "preprocess"],
                 ["mesh", str(tmp_path / "m.obj"), "-o", "out"],
                 ["render", str(tmp_path / "m.obj"), "-o", "out"],
                 ["train", "--data", str(tmp_path / "data"), "-o", "out"]):
        res = _o3d(args, env, tmp_path)
        text = " ".join(res.stderr.split())
        assert res.returncode == 2 and "cannot exchange arrays with numpy" in text and fix in text, (args, text)
        assert not (tmp_path / "out").exists(), args
    res = _o3d(["info"], env, tmp_path)
    assert res.returncode == 0 and "not usable: torch" in res.stdout and fix in " ".join(res.stdout.split())


def _broken(tmp_path: Path, package: str, error: str) -> dict:
    """An environment where `package` is installed (its metadata) but fails to import."""
    fake = tmp_path / f"broken-{package}"
    (fake / package).mkdir(parents=True)
    (fake / package / "__init__.py").write_text(f"raise ImportError({error!r})\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake), str(ROOT)]), "COLUMNS": "400"}


def test_a_torch_that_does_not_import_is_said_by_info_and_refused_by_the_commands(tmp_path, good_images):
    env = _broken(tmp_path, "torch", "libtorch_cpu.so: cannot open shared object file")
    res = _o3d(["info"], env, tmp_path)  # the diagnostics command is what a user runs then
    assert res.returncode == 0, res.stdout + res.stderr
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in res.stdout.splitlines() if line.count("│") == 3}
    assert rows["torch"].endswith("(fails to import: ImportError: libtorch_cpu.so: cannot open shared object file)")
    assert rows["device"] == "unknown: torch does not import (see its row)" and "fails" not in rows["numpy"]
    (tmp_path / "m.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    (tmp_path / "data").mkdir()
    for args in (["generate", str(good_images / "apple.png"), "-o", "out"],
                 ["mesh", str(tmp_path / "m.obj"), "-o", "out"],
                 ["render", str(tmp_path / "m.obj"), "-o", "out"],
                 ["train", "--data", str(tmp_path / "data"), "-o", "out"],
                 ["eval", "--benchmark", "synthetic", "--limit", "1", "-o", "out"],
                 ["data", "synth", "-n", "1", "-o", "out"]):
        res = _o3d(args, env, tmp_path)
        text = " ".join(res.stderr.split())
        assert res.returncode == 2 and "Traceback" not in res.stdout + res.stderr, (args, res.stderr[-2000:])
        assert ("torch does not import (ImportError: libtorch_cpu.so: cannot open shared object file); reinstall it "
                "(pip install --force-reinstall torch)") in text, (args, text)
        assert not (tmp_path / "out").exists(), args


def test_info_tries_what_o3d_takes_from_diffusers(tmp_path):
    # diffusers loads its classes lazily: one that does not work beside its huggingface_hub imports,
    # then fails at the first class taken from it (generate's scheduler)
    fake = tmp_path / "lazy-diffusers"
    (fake / "diffusers").mkdir(parents=True)
    (fake / "diffusers" / "__init__.py").write_text(
        "def __getattr__(name):\n    raise ImportError(\"cannot import name 'cached_download' from 'huggingface_hub'\")\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake), str(ROOT)]), "COLUMNS": "400"}
    res = _o3d(["info"], env, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert ("(fails to import: ImportError: cannot import name 'cached_download' from 'huggingface_hub')"
            in " ".join(res.stdout.split()))
