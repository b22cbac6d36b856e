"""Typer commands that live outside cli.py (each imports heavy modules lazily)."""

from pathlib import Path


def path_param(value: str) -> Path:
    """A path given on the command line, refused when empty: `-o "$OUT"` with OUT unset would
    otherwise be ".", and o3d would write into (or read every image of) the working folder."""
    if not str(value).strip():
        import typer

        raise typer.BadParameter("an empty path (an unset variable?); give a folder or file, or . for this one")
    return home_path(value)


def home_path(value: str) -> Path:
    """`value` as a path, with a leading `~` (or `~/`) for the home folder: the shell does not
    expand it after `=` (`--output=~/assets`) or in quotes. `~name` and a later `~` are kept as they are."""
    import os

    text = str(value)
    if text == "~" or text.startswith("~/") or text.startswith("~" + os.sep):
        return Path(text).expanduser()
    return Path(text)


def once_each(inputs: list, key, verb: str) -> list:
    """`inputs` with each one kept once, first come first kept, where `key(input)` says what it is (a
    resolved path: the same file given twice or through a link, an asset folder and its
    gaussians.ply). A note tells how many were dropped; `verb` says what is done with each ("meshed")."""
    seen: dict = {}
    for p in inputs:
        seen.setdefault(key(p), p)
    if len(seen) < len(inputs):
        from o3dcli.console import console

        console.print(f"[yellow]note[/yellow]: {len(inputs) - len(seen)} input(s) given more than once; "
                      f"each is {verb} once", soft_wrap=True)
    return list(seen.values())
