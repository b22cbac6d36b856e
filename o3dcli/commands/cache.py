"""`o3d cache ...`: the stage cache of an `o3d generate` output folder (OUT/.o3d)."""

from __future__ import annotations

from pathlib import Path

import typer

from o3dcli.commands import path_param

app = typer.Typer(help="The stage cache in an o3d generate output folder (OUTPUT/.o3d).", no_args_is_help=True)


@app.command("prune")
def prune(
    output: Path = typer.Argument(..., parser=path_param, metavar="OUTPUT", help="An o3d generate output folder (the one given to -o).", show_default=False),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Say what would be removed, and how much it frees; remove nothing."),
    drop_unfinished: bool = typer.Option(False, "--drop-unfinished", help="Also remove what interrupted or failed runs made towards assets they did not finish (kept by default, so that running them again resumes)."),
):
    """Remove the cache entries no asset is made from.

    Kept, for each asset folder: the cache entries its files were made from (recorded in its o3d-asset.json by o3d generate), so running the same command again still recomputes nothing; and what interrupted or failed runs made towards assets they did not finish, their denoising's saved steps included, so that running them again resumes (--drop-unfinished removes that too; for a cache o3d made before it recorded such runs: while the last batch's report lists the item unfinished). Removed: the entries of other settings, seeds and inputs (earlier runs), and the whole cache of an asset folder that was deleted. Assets that o3d generate made before it recorded their entries are left as they are: run o3d generate on them once. Items an o3d process is working on are skipped. The asset folders themselves are never touched, nor anything outside OUTPUT (an item folder that is a link is left as it is).

    Exit code: 0 = done, 1 = some entries could not be removed (named in the table), 2 = usage error (no o3d cache in OUTPUT).
    """
    from o3dcli.cli import _usage_error, require_file_locks

    require_file_locks("cache prune")

    import json
    import shutil

    from rich.markup import escape
    from rich.table import Table

    from o3dcli.cache import CACHE_DIRNAME, ItemCache, ItemLocked
    from o3dcli.console import console, out
    from o3dcli.naming import ASSET_META

    items = output / CACHE_DIRNAME / "items"
    if not output.exists():
        raise _usage_error(f"{output}: not found")
    if not output.is_dir():
        raise _usage_error(f"{output}: a file, not a folder; give the folder o3d generate wrote to")
    if not items.is_dir():
        parent = output.absolute().parent
        if output.absolute().name == CACHE_DIRNAME and (output / "items").is_dir():
            raise _usage_error(f"{output}: the cache itself; give the output folder it is in, {parent}")
        if (parent / CACHE_DIRNAME / "items" / output.absolute().name).is_dir():
            raise _usage_error(f"{output}: an asset folder; give the output folder it is in, {parent}")
        raise _usage_error(f"{output}: holds no o3d cache ({CACHE_DIRNAME}/items); give the folder o3d generate wrote to")
    in_report: set[str] = set()
    try:
        report = json.loads((output / "o3d-report.json").read_text())
        # an item the last batch did not finish (failed, interrupted): its cache is kept for the next run;
        # one it finished ("ok") whose folder is gone was deleted by the user
        in_report = {i["name"] for i in report.get("items", []) if isinstance(i, dict)
                     and isinstance(i.get("name"), str) and i.get("status") != "ok"}
    except (OSError, ValueError, AttributeError):
        pass

    table = Table(title=f"o3d cache prune{' --dry-run' if dry_run else ''}: {escape(str(output))}")
    for column in ("item", "entries removed", "MB freed", "kept"):
        table.add_column(column, justify="right" if column in ("entries removed", "MB freed") else "left",
                         overflow="fold")  # a path in full, over lines
    freed = removed = skipped = failed = unlockable = 0
    for item_dir in sorted(p for p in items.iterdir() if p.is_dir()):
        name = item_dir.name
        if item_dir.is_symlink():  # not o3d's: removing in it would remove outside OUTPUT
            table.add_row(escape(name), "0", "0.0", "all: a link to another folder, not o3d's")
            skipped += 1
            continue
        if all(p.name == ".lock" for p in item_dir.iterdir()):  # nothing cached (o3d mesh locks names here too)
            continue
        lock = ItemCache(item_dir).lock()
        try:
            lock.acquire()
        except ItemLocked:
            table.add_row(escape(name), "0", "0.0", "all: an o3d process is working on it")
            skipped += 1
            continue
        except OSError as e:
            if not dry_run:  # a read-only disk, a cache of another user's: nothing can be removed there
                table.add_row(escape(name), "0", "0.0", f"all: cannot lock it ({escape(e.strerror or str(e))})")
                unlockable += 1
                continue
            lock = None  # a dry run only reads (a read-only disk cannot hold a lock)
        try:
            ic = ItemCache(item_dir)
            unfinished = None if drop_unfinished else ic.unfinished()
            keep, why = _to_keep(output / name / ASSET_META, name in in_report, unfinished, drop_unfinished)
            source = ic.unfinished_source() if unfinished else None
            if source and not Path(source).exists():
                why += f"; its input {source} is no longer there: --drop-unfinished removes it"
            if keep is None:
                table.add_row(escape(name), "0", "0.0", why)
                skipped += 1
                continue
            gone = [p for p in sorted(item_dir.iterdir()) if p.name != ".lock" and p.name not in keep]
            sizes = {p: _size(p) for p in gone}
            errors = []
            if not dry_run:
                for p in gone:
                    try:
                        if p.is_dir() and not p.is_symlink():
                            shutil.rmtree(p)
                        else:
                            p.unlink()
                    except OSError as e:  # the rest of the item, and of the cache, is still pruned
                        errors.append(p.name)
                        del sizes[p]  # not counted as freed (part of it may be)
                        console.print(f"[red]error[/red]: {escape(str(p))}: cannot remove it ({escape(e.strerror or str(e))})",
                                      soft_wrap=True)
            done = [p for p in gone if p in sizes]
            size = sum(sizes.values())
            note = f"; could not remove {len(errors)}" if errors else ""
            table.add_row(escape(name), str(len(done)), f"{size / 1e6:.1f}", why + note)
            freed += size
            removed += len(done)
            failed += len(errors)
        finally:
            if lock is not None:
                lock.release()
    out.print(table)
    verb = "would free" if dry_run else "freed"
    console.print(f"{verb} {freed / 1e6:.1f} MB ({removed} cache entries)"
                  + (f"; {skipped} item(s) left as they are" if skipped else "")
                  + (f"; {failed} could not be removed (named above)" if failed else "")
                  + (f"; {unlockable} item(s) could not be pruned (see above)" if unlockable else ""), soft_wrap=True)
    if failed or unlockable:
        raise typer.Exit(1)


def _to_keep(meta_path: Path, reported: bool, unfinished: set[str] | None = None,
             drop_unfinished: bool = False) -> tuple[set[str] | None, str]:
    """The names of an item's cache entries to keep, and what is kept in words; (None, why) to
    leave the item as it is. `reported`: the last batch's report lists the item unfinished (what
    told an unfinished run before runs recorded their entries); `unfinished`: the entries an
    unfinished run recorded (ItemCache.unfinished), kept with their saved states;
    `drop_unfinished`: keep only what assets are made from."""
    import json

    from o3dcli.cache import UNFINISHED
    from o3dcli.naming import published

    kept_too = set() if not unfinished else unfinished | {f"{e}.state" for e in unfinished} | {UNFINISHED}
    run = "what an unfinished run made (run it again to resume)"
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        if kept_too:
            return kept_too, run
        if reported and not drop_unfinished:
            return None, "all: no asset yet, and the last batch's report lists it unfinished"
        if meta_path.parent.is_dir():
            return None, f"all: its asset folder has no {meta_path.name}"
        return set(), "nothing: its asset folder is gone"
    except (OSError, ValueError) as e:
        return None, f"all: {meta_path.name} cannot be read ({e})"
    entries = meta.get("cache") if isinstance(meta, dict) else None
    if not (isinstance(entries, list) and all(isinstance(e, str) for e in entries)):
        if published(meta_path.parent):
            return None, "all: made before o3d recorded its entries (run o3d generate on it once)"
        if kept_too:  # claimed by a run that did not finish it (killed?)
            return kept_too, run
        if drop_unfinished:
            return set(), "nothing: its asset was never finished"
        return None, "all: its asset is unfinished (run o3d generate again to finish it)"
    # with the saved state of a stage it records but was not made (a --stop-after run that left it
    # out after an interrupted one): the progress towards this asset's own settings
    states = set() if drop_unfinished else {f"{e}.state" for e in entries}
    return set(entries) | states | kept_too, "what its asset is made from" + (f", and {run}" if kept_too else "")


def _size(path: Path) -> int:
    """The bytes removing `path` frees: a file another name still holds (an asset folder's file,
    published as a hard link to the cache's) frees nothing."""
    def freed(p: Path) -> int:
        st = p.lstat()
        return st.st_size if st.st_nlink < 2 else 0

    if path.is_file() or path.is_symlink():
        return freed(path)
    return sum(freed(p) for p in path.rglob("*") if p.is_file() and not p.is_symlink())
