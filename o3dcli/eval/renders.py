"""The renders folder of an evaluation, OUT/renders/<variant>/<object>.png, kept in step with the report.

A re-run into the same output folder writes the renders of the objects and variants it
scores; the renders an earlier run wrote that this one did not (another variant or object,
or an object that failed this time) would then sit beside a report that no longer lists
them. Eval records the renders it writes in OUT/renders/.o3d-renders.json and, when a run
finishes, removes those of earlier runs that this run did not write: never any other file.
"""

from __future__ import annotations

import json
from pathlib import Path

RENDERS_MANIFEST = ".o3d-renders.json"


def _renders_written_before(out: Path) -> set[str]:
    """The renders (paths relative to OUT/renders) earlier runs of eval wrote: those its manifest
    lists, and for a folder an older o3d wrote, those its last eval.json scored."""
    renders = out / "renders"
    if (renders / RENDERS_MANIFEST).is_file():
        try:
            listed = json.loads((renders / RENDERS_MANIFEST).read_text())["renders"]
            return {k for k in listed if isinstance(k, str)}
        except (OSError, ValueError, KeyError, TypeError):
            return set()  # unreadable: remove nothing
    known = set()
    try:  # an older o3d's folder (no manifest): it wrote renders/<variant>/<object>.png for each object scored
        for r in json.loads((out / "eval.json").read_text()).get("results", []):
            if r.get("status") == "ok" and isinstance(r.get("variant"), str) and isinstance(r.get("object"), str):
                known.add(f"{r['variant']}/{r['object']}.png")
    except (OSError, ValueError, AttributeError):
        pass
    return known


def clean_renders(out: Path, written: list[Path], finished: bool = True) -> list[str]:
    """Make OUT/renders/ hold this run's renders (``written``): remove those an earlier run of eval
    wrote that this run did not (other variants or objects, or an object that failed this time), so
    the folder agrees with eval.json. Files eval did not write are never touched. With ``finished``
    False (an interrupted run) nothing is removed, and the manifest keeps every render eval wrote.
    Returns the removed paths (relative to OUT/renders)."""
    from o3dcli.atomic import atomic_write_text

    renders = out / "renders"
    before = _renders_written_before(out)
    now = set()
    for path in written:
        try:
            now.add(Path(path).relative_to(renders).as_posix())
        except ValueError:
            pass
    removed = []
    if finished:
        for rel in sorted(before - now):
            path = renders / rel
            # only a PNG directly in a variant's folder: a manifest edited by hand cannot reach elsewhere
            inside = not Path(rel).is_absolute() and path.resolve().parent.parent == renders.resolve()
            if len(Path(rel).parts) == 2 and ".." not in Path(rel).parts and inside and path.suffix == ".png" \
                    and path.is_file():
                try:
                    path.unlink()
                except OSError:
                    continue
                removed.append(rel)
                try:
                    path.parent.rmdir()  # only when eval's files were all it held
                except OSError:
                    pass
    keep = now if finished else now | before
    if keep or (renders / RENDERS_MANIFEST).is_file():
        renders.mkdir(parents=True, exist_ok=True)
        atomic_write_text(renders / RENDERS_MANIFEST, json.dumps({"renders": sorted(keep)}, indent=1))
    return removed
