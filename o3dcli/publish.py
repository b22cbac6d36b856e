"""Publishing an asset folder in one step: at every moment `OUT/<name>/` is the earlier asset,
whole, or the new one, whole, never a mix of the two.

The new content is put together in a hidden staging folder beside the asset folder, so on the
same file system whatever `OUT/.o3d/` is (a link to another disk included):
`OUT/.<name>.o3d-new-<pid>/` holds the new files (hard links to the cached files where the file
system allows, so that an asset takes no disk beside its cache; else hard links to the asset
folder's files where those are unchanged, else copies) and the files of the asset folder that are
not o3d's (a user's notes, `.DS_Store`: hard-linked, so that nothing is copied and nothing is lost). The staging folder then
takes the asset folder's place in one `renameat2(RENAME_EXCHANGE)` (Linux); where the system or
the file system cannot exchange (macOS, exFAT, some network file systems), the asset folder is
first renamed to `OUT/.<name>.o3d-old-<pid>/` and the staging folder renamed into its place.
Ctrl-C and SIGTERM wait during that short swap, so an interrupt either finds the earlier asset
(while the new one is staged; the staging folder is removed) or lets the swap finish. A process
killed half-way leaves only those hidden folders, beside the asset (never only inside `.o3d/`,
which may be deleted), and the next process to lock that asset name tidies them (`recover`): an
asset folder moved out and not replaced is put back; staged content is removed, never taken as
an asset. Every function here is called with the item's lock held.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import signal
import stat
import threading
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

from o3dcli.atomic import _fsync_dir, same_file_content

def _target(asset_dir: Path) -> Path:
    """The folder that is swapped: the asset folder, or where it points when it is a link."""
    asset_dir = Path(asset_dir)
    return asset_dir.resolve() if asset_dir.is_symlink() else asset_dir


def staging_prefix(asset_dir: Path) -> Path:
    """The start of the names of `asset_dir`'s staging folders (`OUT/.<name>.o3d-`): hidden, beside
    the asset folder, so that the swap is a rename within one folder."""
    target = _target(asset_dir)
    return target.parent / f".{target.name}.o3d-"


def _leftovers(asset_dir: Path, kind: str) -> list[Path]:
    """This asset name's staging folders of `kind` ("new" or "old") left by other processes."""
    start = staging_prefix(asset_dir)
    prefix = f"{start.name}{kind}-"
    try:
        entries = list(start.parent.iterdir())
    except OSError:
        return []
    return [p for p in entries if p.name.startswith(prefix) and p.name[len(prefix):].isdigit()]


def recover(asset_dir: Path) -> None:
    """Tidy what a process killed while publishing `asset_dir` left (call with its lock held): an
    asset folder moved out and not replaced goes back; staged content is removed. A moved-out
    asset is removed only when a whole o3d asset stands in its place (the swap finished); when
    something else does (a folder made by hand since), both are kept and a warning names them."""
    from o3dcli.naming import ASSET_META

    target = _target(asset_dir)
    for old in sorted(_leftovers(asset_dir, "old")):
        if not os.path.lexists(target):
            os.rename(old, target)  # killed between the two renames: the earlier asset, whole
            _fsync_dir(target.parent)
        elif (target / ASSET_META).is_file():
            shutil.rmtree(old, ignore_errors=True)  # killed after the swap: the earlier asset is done with
        else:
            logging.getLogger("o3d").warning(
                "%s: an earlier asset moved aside by an o3d process that was stopped while publishing; %s is "
                "not an o3d asset now, so both are kept: move the one you want to keep into place", old, target)
    for new in _leftovers(asset_dir, "new"):
        shutil.rmtree(new, ignore_errors=True)


@contextlib.contextmanager
def staging(asset_dir: Path) -> Iterator[Path]:
    """An empty folder to put `asset_dir`'s next content in, then give to `commit`; removed on the
    way out if it was not committed (an error, Ctrl-C, a full disk)."""
    start = staging_prefix(asset_dir)
    staged = start.with_name(f"{start.name}new-{os.getpid()}")
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir()
    try:
        yield staged
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def add_file(dst: Path, src: Path, current: Path | None = None, link_src: bool = False) -> None:
    """Put `src`'s content at `dst` (in a staging folder): with `link_src`, a hard link to `src`
    itself where the file system allows it (a cache file, which is never written again: the
    asset and the cache then share one copy of the bytes); else a hard link to `current` (the
    asset folder's file) when that already holds the same bytes, else a copy, written to disk."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if link_src and not src.is_symlink() and _link(src, dst):
        return
    if current is not None and current.is_file() and not current.is_symlink() and same_file_content(src, current):
        if _link(current, dst):
            return
    shutil.copyfile(src, dst)
    _fsync_file(dst)


def add_bytes(dst: Path, data: bytes, current: Path | None = None) -> None:
    """Put `data` at `dst` (in a staging folder), a hard link to `current` when it holds the same bytes."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        same = current is not None and current.is_file() and not current.is_symlink() and current.read_bytes() == data
    except OSError:
        same = False
    if same and _link(current, dst):
        return
    with open(dst, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def digests(staged: Path, is_ours: Callable[[str], bool]) -> dict[str, str]:
    """{relative posix path: SHA-256} of the o3d files in `staged` (o3d-asset.json records them, so
    that the next publish can tell a file changed since: `keep_edits`)."""
    from o3dcli.atomic import sha256_file
    from o3dcli.naming import ASSET_META

    out = {}
    for path in sorted(p for p in staged.rglob("*") if p.is_file() and not p.is_symlink()):
        rel = path.relative_to(staged).as_posix()
        if rel != ASSET_META and is_ours(rel):
            out[rel] = sha256_file(path)
    return out


class KeptEdit(NamedTuple):
    """A file of o3d's that was edited and is kept under another name (`keep_edits`)."""

    rel: str
    """Its path in the asset folder."""
    backup: str
    """Where the edit is kept, in the same folder."""
    replaced: bool
    """The new asset has a file of that name (else it drops the file)."""
    companions: tuple[str, ...] = ()
    """Files kept with it under names of the user's: an OBJ's material file and its textures."""

    def message(self, asset_dir: Path) -> str:
        """What the user is told (with the item, and in the report)."""
        return (f"{asset_dir / self.rel} was changed since o3d wrote it: the edit is kept as {self.backup}"
                + (f" (with {', '.join(self.companions)})" if self.companions else "")
                + (f" and o3d's {self.rel} takes its place" if self.replaced else ""))


def keep_edits(asset_dir: Path, staged: Path, published: dict[str, str],
               is_ours: Callable[[str], bool]) -> list[KeptEdit]:
    """Before `commit`: each file o3d published in `asset_dir` (`published`: {relative path: its
    SHA-256 then}, from the asset's o3d-asset.json) that has been changed since (a texture painted
    over, a mesh saved over in place) and that the new asset replaces with other bytes or drops is
    linked into `staged` under a name of the user's (`model.png` -> `model.edited.png`, then
    `model.edited-2.png`, ...), so that the edit is kept."""
    from o3dcli.atomic import sha256_file

    target, kept = _target(asset_dir), []
    inside = os.path.realpath(target) + os.sep
    with_obj: set[str] = set()  # kept already, as it is now, with an edited OBJ or MTL that names it
    # OBJs, then MTLs: the materials and textures an edited one names are kept with it, once
    order = {".obj": 0, ".mtl": 1}
    for rel, digest in sorted(published.items(), key=lambda item: (order.get(Path(item[0]).suffix.lower(), 2), item[0])):
        if not is_ours(rel) or rel in with_obj:
            continue  # o3d-asset.json is a file a user may edit: only o3d's files are looked at
        current, new = target / rel, staged / rel
        try:
            if not current.is_file() or current.is_symlink() or not os.path.realpath(current).startswith(inside):
                continue  # a link on the way out of the folder: not o3d's file
            if new.is_file() and os.path.samefile(current, new):
                continue  # the new asset holds this very file
            if sha256_file(current) == digest or (new.is_file() and same_file_content(current, new)):
                continue  # as o3d wrote it, or the new asset holds the same bytes
        except OSError:
            continue
        taken = lambda name: os.path.lexists(target / name) or os.path.lexists(staged / name)  # noqa: E731
        backup = _edit_name(rel, is_ours, taken)
        replaced = os.path.lexists(new)
        _copy_entry(current, staged / backup)
        companions = []
        if rel.lower().endswith((".obj", ".mtl")):
            companions = _keep_obj_materials(target, staged, backup, lambda name: _edit_name(name, is_ours, taken),
                                             is_ours)
            with_obj.update(source for source, _ in companions)
        kept.append(KeptEdit(rel, backup, replaced, tuple(new for _, new in companions)))
    return kept


MTL_MAPS = {b"map_kd", b"map_ka", b"map_ks", b"map_ns", b"map_d", b"map_bump", b"bump", b"disp", b"decal", b"norm",
            b"map_pr", b"map_pm", b"map_ps", b"map_ke"}
"""MTL statements whose last word is an image file."""


def _keep_obj_materials(target: Path, staged: Path, backup: str, edit_name: Callable[[str], str],
                        is_ours: Callable[[str], bool]) -> list[tuple[str, str]]:
    """An edited OBJ kept as ``staged/backup`` names its material files (and they their textures)
    by names the new asset drops, or fills with another mesh's: those of o3d's files are kept too,
    as they are now, under names of the user's (`model.mtl` -> `model.edited.mtl`), and the kept
    OBJ and material files name those (the user's own files, which stay, keep their names). An
    edited MTL kept alone likewise keeps the textures it names. Only files in the asset folder
    itself are followed. Returns (name, the kept copy's name) of each."""
    written: list[tuple[str, str]] = []
    renamed: dict[bytes, bytes] = {}

    def keep(name: bytes, rewrite=None) -> bytes | None:
        """The kept copy's name of the asset folder's file `name`, or None when there is none."""
        if name in renamed:
            return renamed[name]
        text = name.decode("utf-8", "surrogateescape")
        src = target / text
        if "/" in text or "\\" in text or not is_ours(text) or not src.is_file() or src.is_symlink():
            return None
        new = edit_name(text)
        written.append((text, new))
        renamed[name] = new.encode("utf-8", "surrogateescape")
        data = src.read_bytes()
        (staged / new).write_bytes(rewrite(data) if rewrite else data)
        return renamed[name]

    def relink(data: bytes, statements: set[bytes], every_word: bool) -> bytes:
        lines = data.split(b"\n")
        for i, line in enumerate(lines):
            words = line.split()
            if not words or words[0].lower() not in statements:
                continue
            for j in range(1, len(words)) if every_word else [len(words) - 1]:
                kept = keep(words[j].rstrip(b"\r"))
                if kept is not None:
                    words[j] = kept
            lines[i] = b" ".join(words) + (b"\r" if line.endswith(b"\r") else b"")
        return b"\n".join(lines)

    kept_file = staged / backup
    data = kept_file.read_bytes()
    if backup.lower().endswith(".mtl"):
        rewritten = relink(data, MTL_MAPS, every_word=False)
    else:
        materials = {w for line in data.split(b"\n") if line.split()[:1] == [b"mtllib"] for w in line.split()[1:]}
        for mtl in sorted(materials):
            keep(mtl.rstrip(b"\r"), rewrite=lambda text: relink(text, MTL_MAPS, every_word=False))
        rewritten = relink(data, {b"mtllib"}, every_word=True) if written else data
    if written:
        kept_file.unlink()  # a link to the edited file: the copy is rewritten, not the user's file
        kept_file.write_bytes(rewritten)
    return written


def _edit_name(rel: str, is_ours: Callable[[str], bool], exists: Callable[[str], bool]) -> str:
    """The name an edited o3d file is kept under: beside it (`model.png` -> `model.edited.png`, then
    `model.edited-2.png`, ...), or at the top of the asset folder where its folder is o3d's, which
    the next publish replaces (`intermediate/step_00.png` -> `intermediate_step_00.edited.png`)."""
    from o3dcli.naming import next_free_name

    suffix = Path(rel).suffix
    stem = rel[: len(rel) - len(suffix)]
    if is_ours(f"{stem}.edited{suffix}"):
        stem = stem.replace("/", "_")
    return next_free_name(f"{stem}.edited", lambda name: is_ours(name + suffix) or exists(name + suffix)) + suffix


def commit(asset_dir: Path, staged: Path, is_ours: Callable[[str], bool]) -> bool:
    """Make `asset_dir` the staged content plus the entries of the present asset folder that are
    not o3d's (`is_ours(relative posix path)` false, and not a temporary file left by a killed
    write), in one step. Returns False when the asset folder already held exactly that (nothing
    is touched then)."""
    target = _target(asset_dir)
    if target.is_dir():
        if _same_content(target, staged, is_ours):
            shutil.rmtree(staged, ignore_errors=True)
            return False
        _carry_over(target, staged, is_ours)
        try:
            os.chmod(staged, stat.S_IMODE(target.stat().st_mode))
        except OSError:
            pass
    _fsync_tree(staged)
    with signals_deferred():
        if not target.exists():
            os.rename(staged, target)
        elif _exchange(staged, target):
            shutil.rmtree(staged, ignore_errors=True)  # it holds the earlier asset now
        else:
            start = staging_prefix(asset_dir)
            old = start.with_name(f"{start.name}old-{os.getpid()}")
            os.rename(target, old)
            try:
                os.rename(staged, target)
            except BaseException:
                os.rename(old, target)
                raise
            shutil.rmtree(old, ignore_errors=True)
        _fsync_dir(target.parent)
    return True


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) and SIGTERM until the block ends, then act on them as they would have
    (in the main thread; elsewhere signals are not delivered to the thread anyway)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def hold(signum, frame):
        pending.append(signum)

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(sig)
        if handler is not None:  # None: set outside Python, cannot be put back
            previous[sig] = signal.signal(sig, hold)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(pending):
            handler = previous[sig]
            if callable(handler):
                handler(sig, None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(sig)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where the system or the
    file system cannot."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _is_temporary(name: str) -> bool:
    """A file an atomic write was making when its process was killed (`.<name>.tmp-<pid>`)."""
    head, sep, pid = name.rpartition(".tmp-")
    return name.startswith(".") and bool(sep) and len(head) > 1 and pid.isdigit()


def _own_files(folder: Path, is_ours: Callable[[str], bool]) -> dict[str, Path]:
    found = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            p = Path(dirpath) / name
            rel = p.relative_to(folder).as_posix()
            if is_ours(rel):
                found[rel] = p
    return found


def _same_content(target: Path, staged: Path, is_ours: Callable[[str], bool]) -> bool:
    """Whether the asset folder's own files are already the staged ones (and nothing else of its
    is to go: no stale o3d file, no leftover temporary file)."""
    new = {p.relative_to(staged).as_posix(): p for p in staged.rglob("*") if p.is_file()}
    have = _own_files(target, is_ours)
    if set(new) != set(have) or any(_is_temporary(p.name) for p in target.rglob(".*")):
        return False
    for rel, p in new.items():
        cur = have[rel]
        if cur.is_symlink() or not cur.is_file():
            return False
        if os.path.samefile(p, cur):
            continue
        if p.stat().st_nlink > 1:  # a link to a cached file, where the asset has a copy: swapped in,
            return False          # so that the two share their bytes (once, e.g. after --force)
        if not same_file_content(p, cur):
            return False
    return True


def _carry_over(target: Path, staged: Path, is_ours: Callable[[str], bool]) -> None:
    """Hard-link (or copy) into `staged` every entry of `target` that is not o3d's: files, links
    and folders a user put in the asset folder stay in it."""
    for dirpath, dirnames, filenames in os.walk(target):
        here = Path(dirpath)
        rel_dir = here.relative_to(target)
        for d in list(dirnames):
            src = here / d
            rel = (rel_dir / d).as_posix()
            if src.is_symlink():  # a link to a folder: kept as a link
                dirnames.remove(d)
                if not is_ours(rel):
                    _copy_entry(src, staged / rel)
            elif not is_ours(rel) and not (staged / rel).exists():
                (staged / rel).mkdir(parents=True)
                shutil.copymode(src, staged / rel)
        for name in filenames:
            rel = (rel_dir / name).as_posix()
            if is_ours(rel) or _is_temporary(name) or os.path.lexists(staged / rel):
                continue
            _copy_entry(here / name, staged / rel)


def _copy_entry(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_symlink():
        os.symlink(os.readlink(src), dst)
    elif src.is_file():
        if not _link(src, dst):
            shutil.copy2(src, dst)
            _fsync_file(dst)
    # sockets, pipes and devices have no content to keep


def _link(src: Path, dst: Path) -> bool:
    try:
        os.link(src, dst)
        return True
    except OSError as e:  # another file system, links not allowed (protected_hardlinks), ...
        if e.errno in (errno.ENOSPC, errno.EDQUOT):  # a full disk: a copy would not fit either
            raise
        return False


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _fsync_tree(folder: Path) -> None:
    """Write the staged folders' entries to disk, so that the swap never makes an asset folder
    whose files a power cut would lose."""
    for dirpath, _, _ in os.walk(folder):
        _fsync_dir(Path(dirpath))
