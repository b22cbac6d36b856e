"""The compiled libraries the mesh stages load, and the system libraries they in turn need.

open3d links against libEGL and libusb, and pymeshlab's filter plugins against libOpenGL: on a
slim system (a `python:3.x-slim` container, a minimal server) these are missing. open3d then
fails to import, and pymeshlab imports but prints a page of Qt plugin errors to stdout and
lacks its filters. `cannot_run` finds either before any work, naming the missing
system library and the Debian/Ubuntu package that installs it (on macOS, the Homebrew formula,
where a wheel links against one of Homebrew's libraries).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

# every pymeshlab filter o3d calls (tests/test_native.py checks this against the code)
PYMESHLAB_FILTERS = (
    "compute_selection_from_mesh_border", "generate_copy_of_current_mesh", "get_topological_measures",
    "load_new_mesh", "meshing_close_holes", "meshing_decimation_quadric_edge_collapse",
    "meshing_decimation_quadric_edge_collapse_with_texture", "meshing_isotropic_explicit_remeshing",
    "meshing_remove_duplicate_faces", "meshing_remove_duplicate_vertices", "meshing_remove_null_faces",
    "meshing_remove_selected_faces", "meshing_remove_unreferenced_vertices", "meshing_repair_non_manifold_edges",
    "meshing_repair_non_manifold_vertices",
)

# the system libraries these wheels were seen to need, and the Debian/Ubuntu package of each
DEBIAN_PACKAGES = {
    "libEGL.so.1": "libegl1",
    "libOpenGL.so.0": "libopengl0",
    "libGL.so.1": "libgl1",
    "libGLX.so.0": "libglx0",
    "libGLdispatch.so.0": "libglvnd0",
    "libusb-1.0.so.0": "libusb-1.0-0",
    "libgomp.so.1": "libgomp1",
    "libX11.so.6": "libx11-6",
    "libglib-2.0.so.0": "libglib2.0-0",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libfontconfig.so.1": "libfontconfig1",
    "libdbus-1.so.3": "libdbus-1-3",
}

# Linux (glibc's loader), and macOS (dyld: "Library not loaded: /opt/homebrew/opt/libomp/lib/libomp.dylib",
# the path quoted by some releases): macOS wheels of open3d have linked against Homebrew's libomp and libusb
_MISSING = re.compile(r"(lib[\w.+-]+\.so[\w.]*): cannot open shared object file"
                      r"|Library not loaded: '?(/[^\s']+\.dylib)")
# a Homebrew library's path names its formula: /opt/homebrew/opt/FORMULA/lib/... (/usr/local on Intel Macs)
_HOMEBREW = re.compile(r"^/(?:opt/homebrew|usr/local)/opt/([\w@.+-]+)/lib/")


def missing_system_libraries(text: str) -> list[str]:
    """The shared libraries a loader error text says it could not find (a Linux soname, or a macOS
    library's path), in order, once each."""
    return list(dict.fromkeys(so or dylib for so, dylib in _MISSING.findall(text)))


def install_hint(libraries: list[str]) -> str:
    """'(Debian/Ubuntu: apt-get install libegl1 libopengl0)', '(macOS: brew install libusb)', or the
    libraries to look for elsewhere."""
    brew = {lib: m.group(1) for lib in libraries if (m := _HOMEBREW.match(lib))}
    known = [DEBIAN_PACKAGES[lib] for lib in libraries if lib in DEBIAN_PACKAGES]
    unknown = [lib for lib in libraries if lib not in DEBIAN_PACKAGES and lib not in brew]
    parts = []
    if known:
        parts.append(f"Debian/Ubuntu: apt-get install {' '.join(dict.fromkeys(known))}")
    if brew:
        parts.append(f"macOS: brew install {' '.join(dict.fromkeys(brew.values()))}")
    if unknown:
        parts.append(f"install the system package that provides {', '.join(unknown)}")
    return f" ({'; '.join(parts)})" if parts else ""


def _import_quietly(module: str) -> tuple[BaseException | None, str]:
    """Import a module with the process's stdout and stderr (file descriptors 1 and 2, which C++
    code writes to) sent to a file for the moment: (the import's exception or None, what was printed)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    error: BaseException | None = None
    with tempfile.TemporaryFile() as capture:
        try:
            os.dup2(capture.fileno(), 1)
            os.dup2(capture.fileno(), 2)
            try:
                __import__(module)
            except Exception as e:  # an ImportError, or a library's own error at load time
                error = e
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
        capture.seek(0)
        printed = capture.read().decode(errors="replace")
    return error, printed


def _unloadable(what: str, error: BaseException, printed: str) -> str:
    """A failed import in one line: the system libraries it could not load and their packages, when
    the loader named them, else the error itself."""
    libraries = missing_system_libraries(f"{error}\n{printed}")
    if libraries:
        return f"{what} cannot load the system library {', '.join(libraries)}{install_hint(libraries)}"
    return f"{what} fails to import: {type(error).__name__}: {error}"


def _open3d_problem() -> str | None:
    if "open3d" in sys.modules:
        return None
    error, printed = _import_quietly("open3d")
    return None if error is None else _unloadable("open3d", error, printed)


def _pymeshlab_problem() -> str | None:
    error, printed = _import_quietly("pymeshlab") if "pymeshlab" not in sys.modules else (None, "")
    if error is not None:
        return _unloadable("pymeshlab", error, printed)
    import pymeshlab

    lacking = [name for name in PYMESHLAB_FILTERS if not hasattr(pymeshlab.MeshSet, name)]
    if not lacking:
        return None
    if missing_system_libraries(printed):  # the plugins failed to load, the module itself did not
        return _unloadable("pymeshlab's filter plugins", ImportError(), printed)
    return f"pymeshlab lacks the filters {', '.join(lacking[:3])}{', ...' if len(lacking) > 3 else ''} (its plugins did not load)"


def torch_problem() -> str | None:
    """Why torch does not import (a broken or mismatched install), with the fix; None when it does."""
    try:
        import torch  # noqa: F401
    except Exception as e:  # said as one line rather than as a traceback
        return f"torch does not import ({type(e).__name__}: {e}); reinstall it (pip install --force-reinstall torch)"
    return None


def _numpy_problem() -> str | None:
    """torch before 2.3 is built for NumPy 1.x: beside NumPy 2 it imports (with a warning) but every
    exchange of arrays fails ("Numpy is not available"). pip pairs them where torch 2.2 is the
    newest (Intel Macs: pyproject.toml holds numpy below 2 there) or where a user keeps an older
    torch."""
    import numpy

    if problem := torch_problem():
        return problem
    import torch

    try:
        torch.from_numpy(numpy.zeros(1))
    except RuntimeError as e:
        return (f"torch {torch.__version__} cannot exchange arrays with numpy {numpy.__version__} ({e}): torch "
                'before 2.3 is built for NumPy 1.x; install numpy 1.x (pip install "numpy<2") or torch 2.3 or later')
    return None


_CHECKS = {"open3d": _open3d_problem, "pymeshlab": _pymeshlab_problem, "numpy": _numpy_problem}
_found: dict[str, str | None] = {}


def library_problem(name: str) -> str | None:
    """Why `name` (open3d, pymeshlab, or numpy beside torch) cannot work here, in one line naming
    the missing system library and its package (or the fix); None when it can. Checked once per process: the first check also
    keeps pymeshlab's plugin errors off the terminal."""
    if name not in _found:
        _found[name] = _CHECKS[name]()
    return _found[name]


def cannot_run(what: str) -> str | None:
    """The usage error for `what` (a command, or its stages) when open3d, pymeshlab or numpy (with
    torch) cannot work here, one line per library; None when all can."""
    problems = [p for p in map(library_problem, _CHECKS) if p]
    if not problems:
        return None
    return f"{what} cannot run on this system (found before anything is written):\n  " + "\n  ".join(problems)
