"""Asset names and asset folders: the name each input's results go by (an `Item`; collisions
suffixed -2, -3, ...), the names of o3d's own files in the output folder, and the o3d-asset.json
that marks a folder as o3d's asset for one source, so no input overwrites another's results or a
folder that is not o3d's.

Names are first chosen for a whole batch (`assign_names`, `unique_names`), but a name is only
taken under its item lock (`claim_name`): the lock is acquired, the folder checked again (another
process may have made it another input's asset since), and only then marked with the input's
o3d-asset.json. Every process that writes an asset folder does so holding its lock, so two
processes never claim one folder; the one that finds it taken moves on to the next free name.

Without the lock only one verdict is trusted: an o3d-asset.json naming another input (which no
o3d process changes, but to follow that input's bytes to where they were moved). Anything else seen without the lock may be another process's publish
half seen: a path looked up in the earlier asset folder just as it is swapped out and removed, or,
where folders cannot be swapped in one step, the moment between two renames, when the asset
folder is absent; a check that straddles it sees "not a folder" or "files but no
o3d-asset.json". Such a folder is judged the user's only with its lock held.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from o3dcli import __version__
from o3dcli.atomic import atomic_write_text, sha256_file
from o3dcli.cache import Cache, ItemLock, ItemLocked

REPORT_NAME = "o3d-report.json"
MESH_REPORT_NAME = "o3d-mesh-report.json"
ASSET_META = "o3d-asset.json"
RESERVED_NAMES = frozenset({REPORT_NAME, MESH_REPORT_NAME})
"""Names in the output folder that belong to o3d, never to an asset."""
RENDER_MANIFEST = "o3d-renders.json"
"""Which input each name in an `o3d render` output folder belongs to."""
RENDER_SUFFIXES = ("_turntable.gif", "_turntable.mp4", "_views.png")
"""The files `o3d render` writes for a name: OUTPUT/<name><suffix>."""


def read_render_manifest(path: Path) -> tuple[dict, str | None]:
    """An `o3d render` folder's RENDER_MANIFEST: (names -> input, None), ({}, None) where there is
    none, or ({}, why) where it cannot be read (damaged, cut short, not a JSON object)."""
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError) as e:
        return {}, getattr(e, "strerror", None) or str(e)
    return (data, None) if isinstance(data, dict) else ({}, "not a JSON object")


@dataclass(frozen=True)
class Item:
    """One input of a batch and the asset name it gets."""

    source: Path
    name: str


NAME_MAX_BYTES = 255 - len("." + "_turntable.mp4" + ".tmp-4194304")
"""Longest name (UTF-8 bytes) o3d gives an asset, a render or an eval object: 228, so that every
name derived from it fits the 255-byte file names of common file systems. The longest are o3d
render's files' atomic-write temporaries (`.<name>_turntable.mp4.tmp-<pid>`, pids up to Linux's
2**22); others are the publish staging folders (`.<name>.o3d-new-<pid>`, `.<name>.o3d-old-<pid>`),
eval's renders (`.<name>.png.tmp-<pid>`) and the cache's `.o3d/items/<name>/`. Suffixes -2, -3, ...
are fitted within it too (`fit_name`)."""


def fit_name(stem: str, suffix: str = "") -> str:
    """`stem + suffix` if it is at most NAME_MAX_BYTES long (UTF-8), else the stem cut short (never
    inside a character) and tagged with 8 hex digits of its SHA-256: `<start of stem>-1a2b3c4d<suffix>`.
    Still recognisable, the same on every run, different for long names that differ only past the
    cut; names that fit are left as they are (existing outputs and caches go by them)."""
    import hashlib

    if len((stem + suffix).encode()) <= NAME_MAX_BYTES:
        return stem + suffix
    tag = "-" + hashlib.sha256(stem.encode()).hexdigest()[:8]
    room = NAME_MAX_BYTES - len((tag + suffix).encode())
    return stem.encode()[:room].decode("utf-8", "ignore").rstrip(" .") + tag + suffix


def clean_name(stem: str) -> str:
    """`stem` with the characters a file name cannot safely hold replaced by "_", of any length: the
    base to give `next_free_name` with `fit_name`, so that a long name's hash is of all of it.
    Composed first (NFC): a name from macOS's older file systems or a zip made there spells "é"
    as "e" and a combining accent, which alone is no letter (`legacy_name` is how o3d spelt such
    names before)."""
    import unicodedata

    return legacy_name(unicodedata.normalize("NFC", stem))


def legacy_name(stem: str) -> str:
    """`clean_name` as o3d had it before names were composed: a decomposed accent became "_"
    (`cafe_`). An asset folder made then keeps its name (`assign_names`)."""
    cleaned = "".join(c if (c.isalnum() or c in "-_.+ ") else "_" for c in stem).strip(" .")
    return cleaned or "item"


def safe_name(stem: str) -> str:
    """A name for an asset's folder (or a render's, an eval object's files) that stays inside the
    output folder and fits NAME_MAX_BYTES: `fit_name(clean_name(stem))`."""
    return fit_name(clean_name(stem))


GENERIC_STEMS = frozenset({"gaussians", "model", "mesh", "point_cloud", "scene", "splat"})
"""File names that say what a file is, not which object: o3d's own outputs and other 3DGS tools'."""


def asset_stem(path: Path) -> str:
    """The name an input goes by: a folder's name; a file's stem, or for a generic file name
    (an asset folder's gaussians.ply or model.glb) the name of the folder holding it."""
    path = Path(path)
    if path.is_dir():
        return path.resolve().name
    if path.stem.lower() in GENERIC_STEMS and path.resolve().parent.name:
        return path.resolve().parent.name
    return path.stem


def next_free_name(base: str, taken: Callable[[str], bool], make: Callable[[str], str] | None = None) -> str:
    """``base``, or the first of ``base-2``, ``base-3``, ... that ``taken`` does not refuse.
    ``make(suffix)`` builds a candidate from a suffix ("" first) when plain concatenation will not
    do (e.g. a name shortened to fit a file name's length)."""
    make = make or (lambda suffix: base + suffix)
    name, n = make(""), 1
    while taken(name):
        n += 1
        name = make(f"-{n}")
    return name


def unique_names(paths: list[Path], owned_by_other: Callable[[str, Path], bool] | None = None,
                 rank: Callable[[Path], int] | None = None, out_dir: Path | None = None,
                 source_of: Callable[[Path], Path] | None = None) -> list[str]:
    """One output name per input path (`asset_stem`, made safe and fitted to NAME_MAX_BYTES),
    collisions suffixed -2, -3, ... (paths of a lower `rank` claim theirs first: `claim_order`).

    `owned_by_other(name, path)` says whether an earlier run wrote `name` for another input:
    such a name is skipped too, so no input overwrites another's results. With `out_dir`, a path
    whose results an earlier run wrote there (for `source_of(path)`) keeps that folder's name
    (`OutputFolders.kept`).
    """
    folders = OutputFolders(out_dir, lambda name: name) if out_dir is not None else None
    return _claim_names(paths, rank, lambda path, taken: clean_name(asset_stem(path)),
                        lambda name, path: owned_by_other is not None and owned_by_other(name, path),
                        folders, source_of or (lambda path: path))


def _claim_names(paths: list[Path], rank: Callable[[Path], int] | None, base_of: Callable[[Path, set[str]], str],
                 refused: Callable[[str, Path], bool], folders: OutputFolders | None,
                 source_of: Callable[[Path], Path]) -> list[str]:
    """The names of `paths`, claimed in `claim_order`: each its `base_of(path, taken)` (`taken`: the
    folded names given out so far), or the folder an earlier run made for `source_of(path)`
    (`folders.kept`), else the first of base, base-2, ... that is neither given out nor `refused`."""
    fold = folders.fold if folders is not None else (lambda name: name)
    taken: set[str] = set()
    names: list[str] = [""] * len(paths)
    for i in claim_order(paths, rank):
        path = paths[i]
        base = base_of(path, taken)
        name = folders.kept(base, source_of(path), taken) if folders is not None else None
        if name is None:
            name = next_free_name(base, lambda name: fold(name) in taken or refused(name, path),
                                  make=lambda suffix: fit_name(base, suffix))
        taken.add(fold(name))
        names[i] = name
    return names


def claim_order(paths: list[Path], rank: Callable[[Path], int] | None) -> list[int]:
    """The order in which `paths` claim their names: by `rank` (lower first: a kind the command reads,
    by its suffix, before a kind it knows but does not read, before anything else), each rank in the
    given order. A file given beside a photo of the same stem (an iPhone's `IMG_0001.AAE` beside
    `IMG_0001.HEIC`, a camera's `IMG_0001.CR2` beside `IMG_0001.JPG`) fails, and it must not take
    the photo's name: the photo's asset would then move when the other file goes."""
    if rank is None:
        return list(range(len(paths)))
    ranks = [rank(p) for p in paths]
    return sorted(range(len(paths)), key=lambda i: (ranks[i], i))


class OutputFolders:
    """The folders of an output folder, listed once (names compared through `fold`: str.lower where
    the disk ignores letter case), to find the folder an input's results already have."""

    def __init__(self, out_dir: Path, fold: Callable[[str], str]):
        self.out_dir, self.fold = Path(out_dir), fold
        try:
            names = [e.name for e in os.scandir(self.out_dir) if e.is_dir()]
        except OSError:  # not made yet
            names = []
        self.present = {fold(n): n for n in names}
        self.numbers: dict[str, set[int]] = {}  # folded name before "-N" -> the Ns there are
        for folded in self.present:
            stem, dash, digits = folded.rpartition("-")
            if dash and digits.isdigit() and digits.isascii():
                self.numbers.setdefault(stem, set()).add(int(digits))

    def kept(self, base: str, src: Path, taken: set[str]) -> str | None:
        """The folder among `base`, `base-2`, ... (as `fit_name` makes them) that is already `src`'s
        asset and not in `taken` (folded names this batch has given out), None when there is none: an
        input keeps the folder it has even when a name before it has come free (another file of that
        stem, given before, failed then and is gone now), rather than making a second asset of the
        same photo. Only the numbers the folder's names end in are tried."""
        candidates = {1}
        for width in range(1, 8):  # a long name is cut shorter for a longer suffix
            stem = self.fold(fit_name(base, "-" + "9" * width))[:-(width + 1)]
            candidates |= {n for n in self.numbers.get(stem, ()) if len(str(n)) == width}
        for n in sorted(candidates):
            folded = self.fold(fit_name(base, "" if n == 1 else f"-{n}"))
            if folded in self.present and folded not in taken and _is_asset_of(self.out_dir / self.present[folded], src):
                return self.present[folded]
        return None


def ignores_case(folder: Path) -> bool:
    """Whether names in `folder` (or, while it does not exist, in its nearest existing parent, where
    it will be made) are looked up whatever their letter case: macOS and Windows disks by default,
    and Windows drives under WSL. Seen from an entry whose name has letters (`.o3d` in an output
    folder o3d has written to), found again under its name in the other case; where the folder has
    none, from a file written there for the purpose and removed. False when nothing tells (a
    read-only folder without such an entry)."""
    here = Path(folder).absolute()
    while not here.is_dir() and here.parent != here:
        here = here.parent

    def same(path: str) -> bool | None:
        """Whether `path`'s name in the other case is the same entry; None: it is gone (another
        process's temporary) or cannot be looked at."""
        name = os.path.basename(path)
        try:
            a = os.lstat(path)
        except OSError:
            return None
        try:
            b = os.lstat(os.path.join(os.path.dirname(path), name.swapcase()))
        except FileNotFoundError:
            return False
        except OSError:
            return None
        return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)

    try:
        with os.scandir(here) as entries:
            for e in entries:
                if e.name != e.name.swapcase() and (answer := same(e.path)) is not None:
                    return answer
    except OSError:
        return False
    import tempfile

    try:
        fd, probe = tempfile.mkstemp(prefix=".o3d-case-probe-", dir=here)
    except OSError:
        return False
    try:
        os.close(fd)
        return bool(same(probe))
    finally:
        try:
            os.unlink(probe)
        except OSError:
            pass


def assign_names(sources: list[Path], out_dir: Path, rank: Callable[[Path], int] | None = None) -> list[Item]:
    """Asset names from file stems; collisions get -2, -3, ... in the given order, sources of a lower
    `rank` (images o3d reads) first (`claim_order`). An input whose asset an earlier run made
    keeps that folder's name (`OutputFolders.kept`). Where the output
    folder's disk ignores letter case, names differing only in case collide too (`Fox.png` and
    `fox.jpg` are `Fox` and `fox-2`), so that which input gets which name does not depend on which
    claims its folder first (`o3d generate --jobs`).

    An existing asset folder that belongs to another source file (its
    o3d-asset.json says so) is never reused, so no input overwrites another's asset.
    """
    # lower, not casefold: these disks keep `Straße` and `Strasse` apart
    fold = str.lower if ignores_case(out_dir) else (lambda name: name)

    def base_of(src: Path, taken: set[str]) -> str:
        base, legacy = clean_name(src.stem), legacy_name(src.stem)
        if legacy != base and fold(legacy) not in taken and _is_asset_of(out_dir / legacy, src):
            return legacy  # made before names were composed: the asset keeps its folder and cache
        return base

    names = _claim_names(sources, rank, base_of,
                         lambda name, src: name.lower() in RESERVED_NAMES or folder_taken(out_dir, name, src),
                         OutputFolders(out_dir, fold), lambda src: src)
    return [Item(src, name) for src, name in zip(sources, names)]


def published(asset_dir: Path) -> bool:
    """Whether `asset_dir` holds an asset a run published (every publish writes its config.yaml; a
    failed or interrupted run leaves such an asset whole). False when it cannot be looked at."""
    try:
        return (Path(asset_dir) / "config.yaml").is_file()
    except OSError:
        return False


def asset_meta(asset_dir: Path) -> dict:
    """`asset_dir`'s o3d-asset.json, {} when there is none or it cannot be read."""
    try:
        meta = json.loads((Path(asset_dir) / ASSET_META).read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def published_files(asset_dir: Path) -> dict[str, str]:
    """{relative path: SHA-256} of the files o3d put in `asset_dir` when it last published it, as its
    o3d-asset.json records them ({} for a folder published before they were recorded)."""
    files = asset_meta(asset_dir).get("files")
    if not isinstance(files, dict):
        return {}
    return {rel: digest for rel, digest in files.items() if isinstance(rel, str) and isinstance(digest, str)
            and ".." not in Path(rel).parts and not Path(rel).is_absolute()}


def _is_asset_of(asset_dir: Path, src: Path) -> bool:
    """Whether `asset_dir`'s o3d-asset.json names `src` as its source."""
    return same_file(asset_meta(asset_dir).get("source"), src)


def _owned_by_other(asset_dir: Path, src: Path) -> bool:
    """Whether `asset_dir` is not free for `src`'s results: its o3d-asset.json names another
    source, or it is not o3d's at all (a file, or a folder holding files but no o3d-asset.json:
    the user's, which o3d must neither fill nor prune)."""
    if asset_dir.exists() and not asset_dir.is_dir():
        return True
    meta = asset_dir / ASSET_META
    if not meta.is_file():
        try:  # hidden entries (.DS_Store, a write's leftover temporary) do not make it the user's
            return asset_dir.is_dir() and any(not e.name.startswith(".") for e in asset_dir.iterdir())
        except OSError:
            return True
    return _names_other_source(asset_dir, src)


def _names_other_source(asset_dir: Path, src: Path) -> bool:
    """Whether `asset_dir`'s o3d-asset.json names another source: the one verdict that holds
    without the folder's lock (no o3d process changes an asset's source)."""
    try:
        meta = json.loads((asset_dir / ASSET_META).read_text())
        source = meta.get("source")
    except (OSError, ValueError, AttributeError):
        return False
    if same_file(source, src):
        return False
    # the same bytes as the recorded source, which is gone: the photos were moved or renamed (a
    # reorganised folder, a drive mounted elsewhere), and the asset and its cache are still theirs
    moved = isinstance(source, str) and not os.path.lexists(source) and isinstance(meta.get("source_sha256"), str)
    return not (moved and meta["source_sha256"] == _content_digest(src))


def same_file(recorded: object, path: Path) -> bool:
    """Whether `recorded` (a path o3d wrote down; anything else, such as the None of a name recorded
    with no input, is no file) and `path` name one file, whichever way each was spelt: absolute or
    relative, through a link, or in another letter case on a file system that ignores case (macOS
    and Windows by default, where resolving a path keeps the case it was typed in). Compared as
    files (device and inode) while both exist, else as resolved paths."""
    if not isinstance(recorded, str):
        return False
    if recorded == str(path):
        return True
    try:
        return os.path.samefile(recorded, path)
    except (OSError, ValueError):  # one is gone (a moved photo): what their paths resolve to
        return Path(recorded).resolve() == Path(path).resolve()


def folder_taken(out_dir: Path, name: str, src: Path) -> bool:
    """Whether `OUT/name` is not free for `src`'s results (`_owned_by_other`), for choosing names
    before any is claimed. A folder that looks the user's (no o3d-asset.json) is judged so with its
    lock held, when no o3d process holds it: one that does may be publishing it, and `claim_name`
    decides that name under the lock."""
    asset_dir = Path(out_dir) / name
    if _names_other_source(asset_dir, src):
        return True
    if not _owned_by_other(asset_dir, src):
        return False
    lock = Cache(Path(out_dir)).item(name).lock()
    try:
        lock.acquire(allow_unlocked=True)
    except ItemLocked:
        return False
    except OSError:  # no lock can be had (a read-only output folder): judged as it looks
        return True
    try:
        return _owned_by_other(asset_dir, src)
    finally:
        lock.release()


def drop_if_empty(asset_dir: Path) -> None:
    """Remove an asset folder that holds nothing but its o3d-asset.json (an item that failed
    before publishing anything), so that only real assets have folders."""
    try:
        if asset_dir.is_dir() and [p.name for p in asset_dir.iterdir()] == [ASSET_META]:
            (asset_dir / ASSET_META).unlink()
            asset_dir.rmdir()
    except OSError:
        pass


def write_asset_meta(asset_dir: Path, src: Path) -> None:
    """Mark `asset_dir` as the results for `src` (see `_owned_by_other`)."""
    atomic_write_text(asset_dir / ASSET_META, asset_meta_text(src))


def claim_name(out_dir: Path, source: Path, name: str, base: str | None = None,
               taken: Callable[[str], bool] | None = None, blocking: bool = False) -> tuple[str, ItemLock]:
    """Lock the asset name `name` (e.g. from `assign_names`) for `source`'s results, or the next free
    name after it when its folder turns out to be another input's (or not o3d's). Returns the name
    and its held lock: release it when done with the folder.

    The folder is checked with the lock held, after tidying what a killed publish left in it
    (o3dcli.publish.recover), so the check cannot be overtaken by another process. A name whose
    folder is already another input's is passed over without waiting for its lock. When another
    process holds the lock of a folder that is not (yet) another input's, that process may be
    working on this very input, or be about to claim the name: ItemLocked is raised
    (blocking=False), or the lock waited for and the folder checked then (blocking=True). Names are
    tried as `next_free_name(base)` does, fitted with `fit_name` (base: the name less its -N, as
    `clean_name` gives it, before fitting), skipping those `taken` refuses (e.g. the other inputs of this batch)."""
    from o3dcli.publish import recover

    out_dir = Path(out_dir)
    base = base or name
    taken = taken or (lambda n: False)
    tried: set[str] = set()
    cache = Cache(out_dir)
    while True:
        # Without the lock only another input's o3d-asset.json passes a name over: what else the
        # folder looks like may be a publish half seen (see the module's doc)
        if not _names_other_source(out_dir / name, source):
            lock = cache.item(name).lock()
            try:
                lock.acquire(blocking=blocking, allow_unlocked=True)
            except ItemLocked:
                if not _names_other_source(out_dir / name, source):  # claimed for another input meanwhile?
                    raise
            else:
                try:
                    recover(out_dir / name)
                    free = name.lower() not in RESERVED_NAMES and not _owned_by_other(out_dir / name, source)
                except BaseException:
                    lock.release()
                    raise
                if free:
                    return name, lock
                lock.release()
        tried.add(name)
        name = next_free_name(base, lambda n: n in tried or taken(n) or n.lower() in RESERVED_NAMES
                              or _names_other_source(out_dir / n, source), make=lambda suffix: fit_name(base, suffix))


def mark_asset_dir(asset_dir: Path, src: Path) -> None:
    """Make `asset_dir` (claimed with `claim_name`, its lock held) `src`'s: created if need be and
    its o3d-asset.json written, so that other processes see it taken; temporary files left in it by
    a killed write are removed."""
    asset_dir.mkdir(parents=True, exist_ok=True)
    for stale in asset_dir.rglob(".*.tmp-*"):  # left by a process killed mid-write (we hold the lock)
        if stale.is_file():
            stale.unlink(missing_ok=True)
    meta = asset_dir / ASSET_META
    try:
        recorded = json.loads(meta.read_text())
        mine = _asset_meta(src)
        same = {k: recorded.get(k) for k in mine} == mine  # its cache entries are the publish's to record
        # an asset published for this input (from other bytes, or by another version) keeps the record
        # that describes it until a new one is published: a run that fails leaves it as it was
        same = same or (same_file(recorded.get("source"), src) and published(asset_dir))
    except (OSError, ValueError, AttributeError):
        same = False
    if not same:
        # the files o3d put here keep their record (a moved or renamed input's asset is its own still):
        # a publish then keeps what was edited since (publish.keep_edits)
        files = published_files(asset_dir)
        atomic_write_text(asset_dir / ASSET_META, asset_meta_text(src, files=files or None))


def _asset_meta(src: Path, sha256: str | None = None) -> dict:
    meta = {"source": str(src), "o3d": __version__}
    digest = sha256 or _content_digest(src)
    if digest is not None:  # the input's bytes: the asset stays its own when the file is moved
        meta["source_sha256"] = digest
    return meta


def _content_digest(path: Path) -> str | None:
    """SHA-256 of a regular file's bytes; None for a folder (an asset given to `o3d mesh`), a pipe,
    or a file that cannot be read."""
    try:
        return sha256_file(path) if Path(path).is_file() else None
    except OSError:
        return None


def recorded_entries(asset_dir: Path) -> set[str]:
    """The cache entries `asset_dir`'s o3d-asset.json says its files were made from (none when it
    records none or cannot be read)."""
    try:
        entries = json.loads((asset_dir / ASSET_META).read_text()).get("cache")
    except (OSError, ValueError, AttributeError):
        return set()
    return {e for e in entries if isinstance(e, str)} if isinstance(entries, list) else set()


def asset_meta_text(src: Path, cache: list[str] | None = None, sha256: str | None = None,
                    files: dict[str, str] | None = None) -> str:
    """The o3d-asset.json that marks a folder as `src`'s results; `cache`: the entries of the item's
    cache folder the asset was made from (`o3d cache prune` keeps those); `sha256`: the source's
    digest where the caller has it (else it is read); `files`: the SHA-256 of each file o3d put in
    the folder (`published_files`)."""
    meta = _asset_meta(src, sha256)
    if cache is not None:
        meta["cache"] = sorted(cache)
    if files is not None:
        meta["files"] = dict(sorted(files.items()))
    return json.dumps(meta, indent=1)
