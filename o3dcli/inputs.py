"""The input side of a batch: image files collected from files and folders, and the checks
made before any work (the output folder, an item's error message).
"""

from __future__ import annotations

import os
from pathlib import Path

from o3dcli.atomic import look_steady
from o3dcli.errors import UserError
from o3dcli.naming import ASSET_META, RENDER_SUFFIXES, RENDER_MANIFEST, read_render_manifest

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".bmp", ".tif", ".tiff", ".gif")
"""Image files every installation reads; `readable_suffixes()` adds those this one reads as well."""
OPTIONAL_SUFFIXES = {"AVIF": (".avif",), "HEIF": (".heic", ".heif")}
"""Suffixes of the formats read where the installed packages can (o3dcli.io.images.readable_formats)."""
OTHER_IMAGE_SUFFIXES = frozenset({".heic", ".heif", ".avif", ".jxl", ".jp2", ".psd", ".exr", ".hdr", ".svg", ".ico",
                                  ".dng", ".raw", ".cr2", ".cr3", ".nef", ".arw", ".orf", ".rw2", ".raf"})
"""Image formats o3d does not read: a folder scan says how many it passed over."""
EVAL_MARKER = ".o3d-eval"
"""Written by o3d eval into its output folder (which holds benchmark input views and renders)."""
OUTPUT_MARKERS = (ASSET_META, ".o3d-renders.json", EVAL_MARKER)
"""Files that mark a folder as o3d's output (an asset folder, o3d eval's output folder and its
renders/ with their o3dcli.eval.renders.RENDERS_MANIFEST): a scan skips it. Not o3d render's
folder: it may be a folder of photos that renders were written into, so only the files its
RENDER_MANIFEST records are skipped (`_render_files`)."""


def readable_suffixes() -> tuple[str, ...]:
    """IMAGE_SUFFIXES plus .avif and .heic/.heif where this installation reads those formats."""
    from o3dcli.io.images import readable_formats

    formats = readable_formats()
    return IMAGE_SUFFIXES + tuple(x for name, suffixes in OPTIONAL_SUFFIXES.items() if name in formats for x in suffixes)


def image_rank(path: Path) -> int:
    """How early `path` claims its asset name (`naming.claim_order`): 0 named as an image o3d reads
    (HEIC and AVIF too, whether this installation reads them, so that names do not depend on the
    packages installed), 1 an image format o3d does not read (RAW, PSD, ...), 2 anything else."""
    suffix = Path(path).suffix.lower()
    if suffix in IMAGE_SUFFIXES or any(suffix in group for group in OPTIONAL_SUFFIXES.values()):
        return 0
    return 1 if suffix in OTHER_IMAGE_SUFFIXES else 2


def _unread_hint(suffixes: set[str]) -> str:
    """What to do about images in the given unread formats."""
    from o3dcli.io.images import HEIF_HINT, avif_hint

    hints = []
    if suffixes & set(OPTIONAL_SUFFIXES["HEIF"]):
        hints.append(f"for HEIC: {HEIF_HINT}")
    if suffixes & set(OPTIONAL_SUFFIXES["AVIF"]):
        hints.append(f"for AVIF: {avif_hint()}")
    if suffixes - set(OPTIONAL_SUFFIXES["HEIF"]) - set(OPTIONAL_SUFFIXES["AVIF"]) or not hints:
        hints.append("convert the others to PNG or JPEG" if hints else "convert them to PNG or JPEG")
    return "; ".join(hints)


def collect_inputs(inputs: list[Path], recursive: bool = False, notes: list[str] | None = None) -> list[Path]:
    """Files given directly plus image files inside given folders, sorted, without duplicates
    (a file reached twice, e.g. through a link, counts once, under the first path it was found by,
    but where a folder scan finds both a file and a link to it, under the file's; paths are kept
    as given, so a link names its asset, not its target).

    A folder scan skips hidden files and everything inside hidden folders (o3d's cache
    `.o3d/`, `.git/`, ...) and o3d's own outputs: asset folders and `o3d eval`'s output folders
    (they hold one of OUTPUT_MARKERS), so that output written inside the input folder,
    or the input folder itself used as output, never feeds o3d's files back in; in a folder `o3d render`
    wrote into, only the renders it wrote (`_render_files`), never the other images there. What it passed
    over that a user may have meant as input (images in formats o3d does not read, o3d output folders,
    renders) is appended to `notes` as sentences. Raises UserError for a path that does not exist (nothing
    has run yet, so failing early loses nothing and catches typos).
    """
    readable = readable_suffixes()
    found: dict[object, Path] = {}  # by the file's identity: one photo reached by two paths is one input
    other: dict[str, int] = {}
    outputs: set[Path] = set()
    broken: list[Path] = []
    rendered: dict[Path, int] = {}  # render folder -> renders skipped there
    guessed: dict[Path, list[Path]] = {}  # render folder with an unreadable manifest -> files skipped by name
    render_files: dict[Path, set[str] | None] = {}
    scanned_links: set[Path] = set()  # the links to files a folder scan found (not those given by name)
    for p in inputs:
        p = Path(p)
        if not p.exists():
            raise UserError(f"input not found: {p}")
        if not p.is_dir():
            found.setdefault(_identity(p), p.absolute())
            continue
        marked: dict[Path, bool | None] = {}

        def passed_over(folder: Path) -> bool:
            if folder not in marked:
                marked[folder] = _is_output_folder(folder)
            return marked[folder] is not False

        for f in sorted(_entries(p, recursive)):
            rel = f.relative_to(p)
            if any(part.startswith(".") for part in rel.parts):
                continue
            if not f.is_file():
                if f.is_symlink() and not f.exists() and f.suffix.lower() in readable:
                    broken.append(f)  # a link whose target is gone
                continue
            folders = [p / Path(*rel.parts[:i]) for i in range(len(rel.parts))]
            hit = next((d for d in folders if passed_over(d)), None)
            if hit is not None:
                if marked[hit]:
                    outputs.add(hit)
                continue
            suffix = f.suffix.lower()
            if suffix in readable:
                if f.parent not in render_files:
                    render_files[f.parent] = _render_files(f.parent)
                recorded = render_files[f.parent]
                if recorded is None and f.name.endswith(RENDER_SUFFIXES):
                    guessed.setdefault(f.parent, []).append(f)
                elif recorded and f.name in recorded:
                    rendered[f.parent] = rendered.get(f.parent, 0) + 1
                else:
                    key = _identity(f)
                    if key in found and found[key] in scanned_links and not f.is_symlink():
                        del found[key]  # a file and a link to it in a scan: the file names the asset
                    if key not in found:
                        found[key] = f.absolute()
                        if f.is_symlink():
                            scanned_links.add(f.absolute())
            elif suffix in OTHER_IMAGE_SUFFIXES:
                other[suffix] = other.get(suffix, 0) + 1
    if notes is not None:
        if other:
            kinds = ", ".join(f"{n} {s}" for s, n in sorted(other.items()))
            notes.append(f"skipped {sum(other.values())} image(s) in formats o3d does not read here ({kinds}); "
                         f"{_unread_hint(set(other))} (readable: {', '.join(readable)})")
        if outputs:
            shown = ", ".join(str(d) for d in sorted(outputs)[:3]) + (", ..." if len(outputs) > 3 else "")
            notes.append(f"skipped {len(outputs)} folder(s) of o3d's own outputs ({shown})")
        if rendered:
            shown = ", ".join(str(d) for d in sorted(rendered)[:3]) + (", ..." if len(rendered) > 3 else "")
            notes.append(f"skipped {sum(rendered.values())} image(s) written by o3d render ({shown})")
        for folder, files in sorted(guessed.items()):
            shown = ", ".join(f.name for f in files[:3]) + (", ..." if len(files) > 3 else "")
            notes.append(f"{folder / RENDER_MANIFEST} cannot be read, so {len(files)} image(s) named like o3d "
                         f"render's were taken for its renders and skipped ({shown}); rename any that are "
                         "your own images")
        if broken:
            shown = ", ".join(str(f) for f in broken[:3]) + (", ..." if len(broken) > 3 else "")
            notes.append(f"skipped {len(broken)} link(s) whose target is missing ({shown})")
    return [found[k] for k in sorted(found, key=lambda k: found[k])]


def _is_output_folder(folder: Path) -> bool | None:
    """Whether `folder` holds one of OUTPUT_MARKERS; None when it is gone (it holds no input then).
    Another o3d process may be republishing it (`look_steady`): a look between two renames found
    no marker, and the asset's own input.png was taken as an input."""
    return look_steady(folder, lambda: any((folder / m).is_file() for m in OUTPUT_MARKERS))


def _render_files(folder: Path) -> set[str] | None:
    """The names of the files `o3d render` wrote in `folder` (`<name><suffix>` for each name its
    RENDER_MANIFEST records): an empty set where it has none, None where it cannot be read
    (damaged, cut short): the scan then skips the files named like renders (RENDER_SUFFIXES) and
    says which, rather than take them all as inputs: renders fed back in make assets of o3d's own
    pictures on every run, while a photo named `<x>_views.png` is rare and the note names it.
    render records a name before writing that name's first file, and replaces the manifest in one
    step, so a manifest read after the folder was listed records every render listed."""
    manifest = folder / RENDER_MANIFEST
    if not os.path.lexists(manifest):
        return set()
    names, problem = read_render_manifest(manifest)
    if problem or not manifest.is_file():  # damaged, or a link to nothing / not a file
        return None
    return {f"{name}{suffix}" for name in names for suffix in RENDER_SUFFIXES}


def _entries(folder: Path, recursive: bool) -> list[Path]:
    """The entries of `folder`, and with `recursive` those of its sub-folders but hidden ones. A
    folder that is gone by the time the scan goes into it is passed over: another o3d process at
    work in an output folder under `folder` moves folders as it goes (a cache stage's temporary
    folder renamed when done, an asset's staging folder swapped in), and such a folder is never
    input (Path.glob raised FileNotFoundError there).

    Links to folders are followed (a folder of photos linked in is scanned as if it were there),
    each folder once: a link back up the tree, or to a folder already scanned, is not entered again."""
    found: list[Path] = []
    seen = {_identity(folder)}
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=recursive):
        found += [Path(dirpath) / name for name in dirnames + filenames]
        if not recursive:
            dirnames[:] = []
            continue
        enter = []
        for d in sorted(dirnames):  # sorted: which of two paths to one folder is scanned does not vary
            if d.startswith("."):
                continue
            folder_id = _identity(Path(dirpath) / d)
            if folder_id not in seen:
                seen.add(folder_id)
                enter.append(d)
        dirnames[:] = enter
    return found


def _identity(path: Path) -> object:
    """The file or folder `path` leads to: (device, inode), which also tells two spellings of one
    path apart from two files on a disk that ignores letter case; its resolved path where it cannot
    be looked at."""
    try:
        st = os.stat(path)
        return (st.st_dev, st.st_ino)
    except OSError:
        return Path(path).resolve()


def item_message(path: Path, error: BaseException) -> str:
    """An item's error for a line that already starts with its path: the message without a
    leading "<path>: " (errors name their file, so the path is not said twice)."""
    message = str(error) or type(error).__name__
    if isinstance(error, ImportError):  # a compiled library without a system library it loads: say which package
        from o3dcli.native import install_hint, missing_system_libraries

        message += install_hint(missing_system_libraries(message))
    for prefix in (f"{path}: ", f"{Path(path).resolve()}: "):
        if message.startswith(prefix):
            return message[len(prefix):]
    return message


def check_output_dir(path: Path) -> None:
    """UserError when `path` cannot be an output folder: it exists and is not a folder, or the
    folder it would be made in is a file or not writable (found before any work, not at the end)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"output {path} exists and is not a folder; give a folder with -o")
    cache = path / ".o3d"  # o3d's cache and locks: a folder another user made may be read-only to this one
    if cache.is_dir() and not os.access(cache, os.W_OK | os.X_OK):
        raise UserError(f"output {path}: " + ("its disk is read-only" if _read_only_disk(cache) else
                                              f"no permission to write in {cache} (o3d's cache and locks there)")
                        + "; give another folder with -o")
    base = Path(os.path.abspath(path))
    while not base.exists() and base != base.parent:
        if base.is_symlink():  # a link to a missing folder, the output or above it: mkdir would fail on it
            raise UserError(f"output {path} cannot be made: {base} is a link to {os.readlink(base)}, which does "
                            "not exist (or loops back); make that folder, or give another with -o")
        base = base.parent
    if not base.is_dir():
        raise UserError(f"output {path} cannot be made: {base} is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise UserError(f"output {path}: " + ("its disk is read-only" if _read_only_disk(base)
                                              else f"no permission to write in {base}") + "; give another folder with -o")


def _read_only_disk(path: Path) -> bool:
    """Whether `path` is on a file system mounted read-only (where permissions are not the reason)."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs (Windows)
        return False

